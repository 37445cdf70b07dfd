"""The Windows branches, simulated on Linux (tests/windows_sim.py) and run through the real code paths.

What only a real Windows run can show is listed in runtime/WINDOWS.md.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import windows_sim
from test_cli import FAST, REPO_ROOT, cli_env
from test_cli import converted as converted  # noqa: F401  (the session fixture, shared)

from qwen3tts_cli import platform_compat, spec
from qwen3tts_cli.audio import AtomicAudioFileWriter, PipeAudioWriter
from qwen3tts_cli.convert import converter
from qwen3tts_cli.engine.tables import Tables
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.longform.batch import BatchSettings, folder_lock, run_batch
from qwen3tts_cli.voices import VoiceLibrary, VoicePack

SIM = Path(windows_sim.__file__)
CHINESE, JAPANESE = "你好，世界。", "ナレーターの声"


def simulate(monkeypatch: pytest.MonkeyPatch, *features: str) -> None:
    windows_sim.apply(set(features), monkeypatch.setitem, monkeypatch.delattr)


def run_simulated(features: str, args: list[str | Path], env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SIM), features, "--", *map(str, args)],
        env={**env, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(SIM.parent)])},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


# ---- no os.pread / os.sendfile / os.posix_fadvise ------------------------------------------------------
def test_conversion_and_table_lookups_without_pread_are_byte_identical(
    checkpoint_factory: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = checkpoint_factory(spec.KIND_BASE, "tiny")
    normal = converter.convert_checkpoint(source, tmp_path / "posix", "f32")
    normal_tables = Tables(normal / "tables.safetensors")
    rows = min(table.shape[0] for table in normal_tables._embeddings)
    ids = np.random.default_rng(3).integers(0, rows, size=64)
    expected = [normal_tables.codec_embed(g, ids) for g in range(normal_tables.num_groups)]

    simulate(monkeypatch, "nopread")
    assert not hasattr(os, "pread") and not hasattr(os, "sendfile")
    windows = converter.convert_checkpoint(source, tmp_path / "windows", "f32")
    names = sorted(p.name for p in normal.iterdir())
    assert names == sorted(p.name for p in windows.iterdir())
    for name in names:
        if name != "manifest.json":  # it records the time of conversion
            assert (normal / name).read_bytes() == (windows / name).read_bytes(), name
    files = json.loads((normal / "manifest.json").read_text(encoding="utf-8"))["files"]
    assert files == json.loads((windows / "manifest.json").read_text(encoding="utf-8"))["files"]

    # the seek+read fallback shares one file position: lookups from many threads must not mix rows
    tables = Tables(windows / "tables.safetensors")
    got: dict[tuple[int, int], np.ndarray] = {}

    def look(worker: int) -> None:
        for group in range(tables.num_groups):
            got[(worker, group)] = tables.codec_embed(group, ids)

    threads = [threading.Thread(target=look, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for (_, group), rows in got.items():
        np.testing.assert_array_equal(rows, expected[group])


# ---- folder lock: msvcrt instead of fcntl --------------------------------------------------------------
def _never(_mode: str, _width: int):
    raise AssertionError("no line needs a model")


def test_batch_folder_lock_with_msvcrt_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = (
        "import sys, windows_sim\n"
        "windows_sim.apply({'nofcntl', 'msvcrt'})\n"
        "from pathlib import Path\n"
        "from qwen3tts_cli.longform.batch import folder_lock\n"
        "with folder_lock(Path(sys.argv[1])):\n"
        "    print('locked', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(SIM.parent)])}
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n", holder.stderr.read()  # type: ignore[union-attr]
        assert (tmp_path / platform_compat.LOCK_FILE_NAME).is_file()  # the msvcrt branch's lock file
        simulate(monkeypatch, "nofcntl", "msvcrt")
        with pytest.raises(Qwen3TTSError, match="another batch run is writing"):
            run_batch([], _never, {}, BatchSettings(out_dir=tmp_path))
        holder.stdin.write("\n")  # type: ignore[union-attr]
        holder.stdin.flush()  # type: ignore[union-attr]
        assert holder.wait(timeout=30) == 0, holder.stderr.read()  # type: ignore[union-attr]
    finally:
        if holder.poll() is None:
            holder.kill()
    report = run_batch([], _never, {}, BatchSettings(out_dir=tmp_path))  # free again
    assert report.results == [] and list(tmp_path.iterdir()) == []  # the lock file went with the lock
    msvcrt = sys.modules["msvcrt"]
    # in one process too, as with Windows handles: a second lock on the same folder is refused
    with folder_lock(tmp_path):
        assert len(msvcrt.held) == 1  # type: ignore[attr-defined]
        with pytest.raises(Qwen3TTSError, match="another batch run is writing"):
            run_batch([], _never, {}, BatchSettings(out_dir=tmp_path))
    assert msvcrt.held == {}  # type: ignore[attr-defined]


def test_folder_lock_without_fcntl_or_msvcrt_is_no_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate(monkeypatch, "nofcntl")
    monkeypatch.setitem(sys.modules, "msvcrt", None)
    with platform_compat.exclusive_folder_lock(tmp_path) as locked, folder_lock(tmp_path):
        assert locked is False


# ---- pid_alive: never os.kill(pid, 0) on Windows (that is a Ctrl-C to the whole console) -----------------
class FakeKernel32:
    """OpenProcess/GetExitCodeProcess/CloseHandle answered from the real process table of this machine."""

    ERROR_INVALID_PARAMETER = 87

    def __init__(self, denied: frozenset[int] = frozenset()) -> None:
        self.denied = denied
        self.error = 0
        self.open_handles: set[int] = set()

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:  # noqa: N802 (the Win32 name)
        assert access == 0x1000 and not inherit  # PROCESS_QUERY_LIMITED_INFORMATION, not inheritable
        if pid in self.denied:
            self.error = 5
            return 0
        if not Path(f"/proc/{pid}").exists():
            self.error = self.ERROR_INVALID_PARAMETER
            return 0
        self.open_handles.add(pid)
        return pid

    def GetExitCodeProcess(self, handle: int, code_ref) -> int:  # noqa: N802
        state = Path(f"/proc/{handle}/stat").read_text().rsplit(")", 1)[1].split()[0]
        code_ref._obj.value = 0 if state == "Z" else 259  # a zombie has exited: its handle still opens
        return 1

    def CloseHandle(self, handle: int) -> int:  # noqa: N802
        self.open_handles.discard(handle)
        return 1


def test_pid_alive_on_windows_asks_the_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 60
    while Path(f"/proc/{exited.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)  # exited, not reaped: the process exists but is no longer running
    reaped = subprocess.Popen([sys.executable, "-c", "pass"])
    reaped.wait()
    kernel32 = FakeKernel32(denied=frozenset({1}))
    monkeypatch.setattr(platform_compat, "_kernel32", lambda: (kernel32, lambda: kernel32.error))
    monkeypatch.setattr(platform_compat, "is_windows", lambda: True)

    def no_kill(*_args: object) -> None:
        raise AssertionError("os.kill(pid, 0) is GenerateConsoleCtrlEvent(CTRL_C_EVENT) on Windows")

    monkeypatch.setattr(os, "kill", no_kill)
    try:
        assert platform_compat.pid_alive(os.getpid())
        assert platform_compat.pid_alive(1)  # access denied: someone else's, alive
        assert not platform_compat.pid_alive(exited.pid)
        assert not platform_compat.pid_alive(reaped.pid)
        assert kernel32.open_handles == set()  # every handle closed
        # the converter's clean-up of killed conversions goes through it
        dst = tmp_path / "model"
        dead, live = tmp_path / f".model.tmp-{reaped.pid}", tmp_path / f".model.tmp-{os.getpid()}"
        dead.mkdir()
        live.mkdir()
        converter._remove_stale_temp_folders(dst)
        assert not dead.exists() and live.exists()
    finally:
        monkeypatch.undo()
        exited.wait()


# ---- os.replace racing other programs --------------------------------------------------------------------
@contextmanager
def replace_blocked(monkeypatch: pytest.MonkeyPatch, target: Path, times: int):
    """os.replace onto `target` fails with PermissionError `times` times (a scanner or player has it open)."""
    real = os.replace
    calls: list[float] = []

    def flaky(src, dst, *args, **kwargs):
        if Path(dst) == target:
            calls.append(time.monotonic())
            if len(calls) <= times:
                raise PermissionError(13, "Access is denied", str(src), None, str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", flaky)
    yield calls
    monkeypatch.setattr(os, "replace", real)


def _write_wav(path: Path) -> None:
    with AtomicAudioFileWriter(path) as writer:
        writer.write(np.full(2400, 0.25, dtype=np.float32))


def test_replace_is_retried_on_windows_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.wav"
    out.write_bytes(b"old")
    with replace_blocked(monkeypatch, out, times=3) as calls:  # Linux: a permission problem, at once
        with pytest.raises(PermissionError):
            _write_wav(out)
    assert len(calls) == 1 and out.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.wav"]

    monkeypatch.setattr(platform_compat, "is_windows", lambda: True)
    with replace_blocked(monkeypatch, out, times=3) as calls:  # Windows: a scanner let go after a moment
        _write_wav(out)
    assert len(calls) == 4 and sf.info(str(out)).frames == 2400 and os.listdir(tmp_path) == ["out.wav"]

    out.write_bytes(b"old")
    monkeypatch.setattr(platform_compat, "REPLACE_RETRY_SECONDS", 0.3)
    with replace_blocked(monkeypatch, out, times=10**6) as calls:  # a player keeps it open
        with pytest.raises(PermissionError, match="another program has the file open") as caught:
            _write_wav(out)
    assert caught.value.filename == str(out)
    assert 0.3 <= calls[-1] - calls[0] < 1.5 and len(calls) > 3
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.wav"]  # nothing half-written


def test_cli_names_the_file_another_program_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from qwen3tts_cli.cli.app import run

    library = VoiceLibrary(tmp_path / "voices")
    library.save(_voice("me"))
    monkeypatch.setenv("QWEN3TTS_VOICES_DIR", str(library.root))
    monkeypatch.setattr(platform_compat, "is_windows", lambda: True)
    monkeypatch.setattr(platform_compat, "REPLACE_RETRY_SECONDS", 0.1)
    target = library.root / "me.json"
    before = target.read_bytes()
    with replace_blocked(monkeypatch, target, times=10**6):
        code = run(["voices", "import", str(target), "--name", "me", "--force"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip() == (
        "error: another program has the file open (close it, e.g. a player or editor, and run again): "
        f"{target}"
    )
    left = sorted(name for name in os.listdir(library.root) if name != ".lock")  # the library's own lock
    assert target.read_bytes() == before and left == ["me.json"]  # no temporary file left


# ---- console encodings -----------------------------------------------------------------------------------
def _voice(name: str) -> VoicePack:
    return VoicePack(
        name=name,
        mode="xvector",
        talker_hidden_size=8,
        speaker_embedding=np.linspace(-1, 1, 8, dtype=np.float32),
        reference_text=CHINESE,
        description=JAPANESE,
    )


def test_cp1252_console_replaces_what_it_cannot_show(tmp_path: Path) -> None:
    library = VoiceLibrary(tmp_path / "voices")
    library.save(_voice("旁白"))
    env = cli_env(tmp_path, PYTHONIOENCODING="cp1252:strict")  # a legacy Windows console or pipe
    cli = [sys.executable, "-m", "qwen3tts_cli.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*cli, *args], env=env, capture_output=True, timeout=120)

    listed = run("voices", "list")
    assert listed.returncode == 0, listed.stderr.decode("cp1252", "replace")
    text = listed.stdout.decode("cp1252")  # what the console shows: cp1252 bytes, '?' for the rest
    assert "NAME" in text and "xvector" in text and "??" in text and "???????" in text
    shown = run("voices", "show", "旁白")
    assert shown.returncode == 0 and b"Traceback" not in shown.stderr
    assert "reference_text:      ??????" in shown.stdout.decode("cp1252")

    as_json = run("voices", "show", "旁白", "--json")  # JSON stays exact: \u escapes, not '?'
    assert as_json.returncode == 0
    document = json.loads(as_json.stdout.decode("cp1252"))
    assert document["reference_text"] == CHINESE and document["description"] == JAPANESE
    assert document["name"] == "旁白"

    missing = run("voices", "show", "不在")  # an error line naming a name the console cannot show
    assert missing.returncode == 1 and b"Traceback" not in missing.stderr
    # Python gives stderr 'backslashreplace' of its own: left as it is
    assert missing.stderr.decode("cp1252").startswith("error: no voice named '\\u4e0d\\u5728' in ")

    utf8 = subprocess.run(
        [*cli, "voices", "show", "旁白"], env={**env, "PYTHONIOENCODING": "utf-8"}, capture_output=True
    )
    assert f"reference_text:      {CHINESE}" in utf8.stdout.decode("utf-8")  # UTF-8 streams untouched


def test_console_streams_changed_only_when_they_cannot_encode() -> None:
    cp1252 = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")
    utf8 = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    lenient = io.TextIOWrapper(io.BytesIO(), encoding="cp1252", errors="backslashreplace")
    assert platform_compat.tolerate_console_encoding(cp1252, utf8, lenient, io.StringIO()) == [cp1252]
    assert (cp1252.errors, utf8.errors, lenient.errors) == ("replace", "strict", "backslashreplace")
    print(f"voice {CHINESE}", file=cp1252, flush=True)
    assert cp1252.buffer.getvalue() == b"voice ??????\n"  # type: ignore[attr-defined]


class FakeConsole:
    """GetConsoleMode/SetConsoleMode of a console handle (any other handle is not a console)."""

    def __init__(self, console: int, mode: int, settable: bool = True) -> None:
        self.console, self.mode, self.settable = console, mode, settable

    def GetConsoleMode(self, handle: int, mode_ref) -> int:  # noqa: N802 (the Win32 name)
        if handle != self.console:
            return 0
        mode_ref._obj.value = self.mode
        return 1

    def SetConsoleMode(self, handle: int, mode: int) -> int:  # noqa: N802
        if handle != self.console or not self.settable:
            return 0
        self.mode = mode
        return 1


def test_status_line_escapes_turned_on_for_a_windows_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate(monkeypatch, "msvcrt")
    monkeypatch.setattr(platform_compat, "is_windows", lambda: True)
    with open(tmp_path / "console", "w", encoding="utf-8") as console, open(tmp_path / "file", "w") as file:
        legacy = FakeConsole(
            windows_sim.HANDLE_BASE + console.fileno(), mode=0x0003
        )  # processed + wrap, no VT
        monkeypatch.setattr(platform_compat, "_kernel32", lambda: (legacy, lambda: 0))
        assert platform_compat.enable_terminal_escapes(console) and legacy.mode == 0x0007
        assert not platform_compat.enable_terminal_escapes(file)  # a redirected stream: not a console
        old = FakeConsole(
            windows_sim.HANDLE_BASE + console.fileno(), mode=0x0003, settable=False
        )  # before Windows 10
        monkeypatch.setattr(platform_compat, "_kernel32", lambda: (old, lambda: 0))
        assert not platform_compat.enable_terminal_escapes(console) and old.mode == 0x0003
        assert not platform_compat.enable_terminal_escapes(io.StringIO())  # no file descriptor
    monkeypatch.setattr(platform_compat, "is_windows", lambda: False)
    assert platform_compat.enable_terminal_escapes(io.StringIO())  # POSIX terminals: always


# ---- Ctrl-Break: Windows' polite stop -------------------------------------------------------------------
def test_ctrl_break_unwinds_like_sigterm(converted: Callable[..., Path], tmp_path: Path) -> None:  # noqa: F811
    model = converted(spec.KIND_CUSTOM_VOICE)
    out = tmp_path / "out.wav"
    out.write_bytes(b"old audio")
    (tmp_path / "big.txt").write_text("A short sentence that goes on. " * 3000, encoding="utf-8")
    args = ["say", "-f", tmp_path / "big.txt", "--model-dir", model, *FAST, "--max-frames", "2", "-o", out]
    process = run_simulated("sigbreak", args, cli_env(tmp_path))
    try:
        deadline = time.monotonic() + 120
        while not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]:  # audio is being written
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signal.SIGUSR1)  # the simulation's SIGBREAK
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr
    assert b"Traceback" not in stderr
    assert out.read_bytes() == b"old audio" and sorted(os.listdir(tmp_path)) == ["big.txt", "out.wav"]


# ---- WAV to a redirected stdout without fcntl -----------------------------------------------------------
def test_stdout_wav_without_fcntl_keeps_unknown_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = np.sin(np.linspace(0, 40, 4800, dtype=np.float32)) * 0.5

    def stream_to(path: Path) -> bytes:
        with open(path, "wb") as handle, PipeAudioWriter(handle) as writer:
            writer.write(samples)
        return path.read_bytes()

    patched = stream_to(tmp_path / "posix.wav")
    simulate(monkeypatch, "nofcntl")  # no way to ask for O_APPEND: never seek back, never corrupt
    unknown = stream_to(tmp_path / "windows.wav")
    assert patched[44:] == unknown[44:] and len(unknown) == 44 + 2 * len(samples)
    assert unknown[4:8] == unknown[40:44] == b"\xff\xff\xff\xff"
    assert int.from_bytes(patched[40:44], "little") == 2 * len(samples)
    np.testing.assert_array_equal(
        sf.read(str(tmp_path / "windows.wav"))[0], sf.read(str(tmp_path / "posix.wav"))[0]
    )


# ---- names and addresses Windows does not have ----------------------------------------------------------
@pytest.mark.parametrize("name", ["con", "NUL", "com1", "Aux.v2", "lpt9"])
def test_voice_names_that_are_windows_devices_are_refused(name: str, tmp_path: Path) -> None:
    library = VoiceLibrary(tmp_path)
    with pytest.raises(Qwen3TTSError, match="reserved device name on Windows"):
        library.save(_voice(name))
    (tmp_path / f"{name}.json").write_text("{}", encoding="utf-8")  # copied in from elsewhere: not listed
    library.save(_voice("console"))  # a name that only starts like one is fine
    assert library.names() == ["console"] and [e.name for e in library.entries()] == ["console"]


def test_wyoming_unix_socket_on_windows_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from qwen3tts_cli.cli.app import run

    monkeypatch.setattr(platform_compat, "is_windows", lambda: True)
    code = run(["serve", "--no-http", "--wyoming", f"unix://{tmp_path}/s", "--model-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (
        "error: --wyoming unix://... is not available on Windows (use tcp://127.0.0.1:10200)"
    )
