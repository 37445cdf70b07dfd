"""Catalog, download, cache and lock, tested for real against a loopback hub (never the real Hugging Face)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hubserver import LoopbackHub, Request

from qwen3tts_cli import catalog, hub, spec
from qwen3tts_cli.convert.manifest import Manifest
from qwen3tts_cli.errors import Qwen3TTSError

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
CUSTOM = catalog.CATALOG["0.6b-custom"]
BIG_FILE = "model.safetensors"
# Served alongside the checkpoint but not needed by the converter: must never be downloaded.
EXTRA_FILES = {"README.md": "# model card\n", ".gitattributes": "*.safetensors filter=lfs\n"}


# ---- helpers -----------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FakeConverter:
    """Stands in for the real converter in download tests: copies the checkpoint, writes a real manifest."""

    def __init__(self, log: Path | None = None) -> None:
        self.log = log
        self.calls: list[Path] = []

    def __call__(
        self,
        src: Path,
        dst: Path,
        quant: str,
        *,
        source_repo: str | None,
        source_revision: str | None,
        overwrite: bool,
        progress: Callable[[str], None] | None,
    ) -> Path:
        src, dst = Path(src), Path(dst)
        assert overwrite or not dst.exists()
        tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}"
        shutil.copytree(src, tmp)  # snapshot files are symlinks into blobs/: copies their content
        config = json.loads((src / "config.json").read_text())
        manifest = Manifest(
            kind=config["tts_model_type"],
            size_tag=str(config.get("tts_model_size", "")),
            quant=quant,
            codec_precision="fp32",
            source_repo=source_repo,
            source_revision=source_revision,
        )
        manifest.record_files(tmp)
        manifest.write(tmp)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
        self.calls.append(src)
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(f"{os.getpid()} {src}\n")
        return dst


# A separate process running `pull_model` with the fake converter, as a second user or a killed run would.
_CHILD = """
import sys
sys.path[:0] = [{tests!r}, {root!r}]
from pathlib import Path
from test_hub import FakeConverter
from qwen3tts_cli import hub
say = lambda msg: print(msg, file=sys.stderr, flush=True)
print(hub.pull_model("0.6b-custom", convert=FakeConverter(Path(sys.argv[1])), progress=say))
"""


def _start_child(log: Path, stderr: Path) -> subprocess.Popen[str]:
    """`pull_model` in another process; its progress messages go to the file `stderr`."""
    code = _CHILD.format(tests=str(TESTS_DIR), root=str(REPO_ROOT))
    env = dict(os.environ, HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONPATH=str(REPO_ROOT))
    with open(stderr, "w") as err:
        return subprocess.Popen(
            [sys.executable, "-c", code, str(log)], env=env, stdout=subprocess.PIPE, stderr=err, text=True
        )


def _big_file_gets(loopback: LoopbackHub) -> list[Request]:
    commit = loopback.repos[CUSTOM.repo].commit
    return [r for r in loopback.requests if r.method == "GET" and r.path.endswith(f"/{commit}/{BIG_FILE}")]


def _wait_until(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# ---- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def served_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded custom-voice checkpoint (official layout) plus files the converter does not need."""
    from qwen3tts_cli.fixtures.checkpoint import build_checkpoint

    folder = build_checkpoint(tmp_path_factory.mktemp("served") / "ckpt", spec.KIND_CUSTOM_VOICE, size="tiny")
    for name, text in EXTRA_FILES.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def loopback(served_checkpoint: Path) -> Iterator[LoopbackHub]:
    server = LoopbackHub().start()
    server.add_repo(CUSTOM.repo, served_checkpoint)
    yield server
    server.stop()


@pytest.fixture
def env(loopback: LoopbackHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_ENDPOINT at the loopback hub, HF_HOME and the qwen3tts cache in a tmp dir; returns the tmp dir."""
    import huggingface_hub.constants

    for var in (
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "QWEN3TTS_HOME",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", loopback.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("QWEN3TTS_CACHE", str(tmp_path / "cache"))
    # huggingface-hub reads HF_HUB_OFFLINE once at import: make sure an outer setting cannot leak in.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return tmp_path


def _snapshot(env_dir: Path, commit: str) -> Path:
    return env_dir / "hf" / "hub" / ("models--" + CUSTOM.repo.replace("/", "--")) / "snapshots" / commit


# ---- catalog -----------------------------------------------------------------------------------------------
def test_catalog_names_repos_kinds_and_widths() -> None:
    expected = {
        "0.6b-custom": ("Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice", spec.KIND_CUSTOM_VOICE, 1024),
        "0.6b-base": ("Qwen/Qwen3-TTS-12Hz-0.6B-Base", spec.KIND_BASE, 1024),
        "1.7b-custom": ("Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice", spec.KIND_CUSTOM_VOICE, 2048),
        "1.7b-base": ("Qwen/Qwen3-TTS-12Hz-1.7B-Base", spec.KIND_BASE, 2048),
        "1.7b-design": ("Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign", spec.KIND_VOICE_DESIGN, 2048),
    }
    assert {n: (e.repo, e.kind, e.talker_hidden) for n, e in catalog.CATALOG.items()} == expected


def test_capabilities_follow_the_official_rules() -> None:
    caps = {name: entry.capabilities for name, entry in catalog.CATALOG.items()}
    assert caps["0.6b-custom"] == catalog.Capabilities(
        presets=True, instruct=False, design=False, clone=False
    )
    assert caps["1.7b-custom"] == catalog.Capabilities(presets=True, instruct=True, design=False, clone=False)
    assert caps["1.7b-design"] == catalog.Capabilities(presets=False, instruct=True, design=True, clone=False)
    assert caps["0.6b-base"].clone and caps["1.7b-base"].clone and not caps["0.6b-base"].presets
    assert catalog.CATALOG["1.7b-design"].modes == (catalog.MODE_DESIGN,)
    # A fixture's size tag ("tiny") is not "0b6", so the official code keeps its instructions too.
    assert catalog.instruct_honoured(spec.KIND_CUSTOM_VOICE, "tiny")


def test_default_model_per_mode() -> None:
    assert catalog.default_model("presets").name == "0.6b-custom"
    assert catalog.default_model("presets", instruct=True).name == "1.7b-custom"
    assert catalog.default_model("design").name == "1.7b-design"
    assert catalog.default_model("clone").name == "0.6b-base"
    for mode in catalog.MODES:
        assert catalog.default_model(mode).capabilities.supports(mode)
        assert catalog.default_model(mode) in catalog.models_for(mode)
    assert [e.name for e in catalog.models_for("clone")] == ["0.6b-base", "1.7b-base"]
    with pytest.raises(Qwen3TTSError, match="unknown mode"):
        catalog.default_model("sing")


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(Qwen3TTSError) as info:
        catalog.get("2b-custom")
    assert "2b-custom" in info.value.message
    assert all(name in info.value.hint for name in catalog.CATALOG)
    assert catalog.get("QWEN/Qwen3-TTS-12Hz-1.7B-Base").name == "1.7b-base"  # repo ids work too
    with pytest.raises(Qwen3TTSError, match="unknown quantization"):
        catalog.check_quant("q3")


def test_quant_list_matches_the_converter() -> None:
    from qwen3tts_cli.convert.converter import DEFAULT_QUANT
    from qwen3tts_cli.convert.quantize import QUANT_TYPES

    assert catalog.DEFAULT_QUANT == DEFAULT_QUANT
    assert set(catalog.QUANTS) == set(QUANT_TYPES)


# ---- cache places ------------------------------------------------------------------------------------------
def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QWEN3TTS_CACHE", raising=False)
    monkeypatch.delenv("QWEN3TTS_HOME", raising=False)
    default = hub.cache_root()
    assert default.name == "qwen3tts"
    monkeypatch.setenv("QWEN3TTS_HOME", str(tmp_path / "home"))
    assert hub.cache_root() == tmp_path / "home"
    monkeypatch.setenv("QWEN3TTS_CACHE", str(tmp_path / "cache"))
    assert hub.cache_root() == tmp_path / "cache"
    assert hub.cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert hub.model_dir("1.7b-design", "q4_k_m") == tmp_path / "cache" / "models" / "1.7b-design" / "q4_k_m"


def test_hf_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
    assert hub.hf_cache_dir() == tmp_path / "hfhome" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "direct"))
    assert hub.hf_cache_dir() == tmp_path / "direct"


# ---- download + convert ------------------------------------------------------------------------------------
def test_first_resolve_downloads_exactly_the_needed_files(
    env: Path, loopback: LoopbackHub, served_checkpoint: Path
) -> None:
    convert = FakeConverter()
    resolved = hub.resolve_model("0.6b-custom", convert=convert)

    commit = loopback.repos[CUSTOM.repo].commit
    assert resolved.path == env / "cache" / "models" / "0.6b-custom" / catalog.DEFAULT_QUANT
    assert resolved.origin == "catalog" and resolved.entry is CUSTOM
    assert (resolved.manifest.source_repo, resolved.manifest.source_revision) == (CUSTOM.repo, commit)
    assert len(convert.calls) == 1
    snapshot = _snapshot(env, commit)  # HF_HOME honoured
    downloaded = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    served = {
        p.relative_to(served_checkpoint).as_posix() for p in served_checkpoint.rglob("*") if p.is_file()
    }
    assert downloaded == sorted(served & set(hub.ALLOW_PATTERNS))
    assert "speech_tokenizer/configuration.json" in served and "README.md" in served
    for rel in downloaded:
        assert _sha256(snapshot / rel) == _sha256(served_checkpoint / rel), rel
    assert loopback.count("GET", "/README.md") == 0 and loopback.count(path_suffix="configuration.json") == 0
    hub.verify_model(resolved.path)  # full sha256 of the converted folder


def test_second_resolve_uses_the_cache_without_network(env: Path, loopback: LoopbackHub) -> None:
    convert = FakeConverter()
    first = hub.resolve_model("0.6b-custom", convert=convert)
    before = len(loopback.requests)
    assert before > 0
    second = hub.resolve_model("0.6b-custom", convert=convert)
    assert second.path == first.path
    assert len(loopback.requests) == before  # zero new requests
    assert len(convert.calls) == 1


@pytest.mark.parametrize("cut_after", [1_000_000, 12_000_000])
def test_dropped_connection_resumes_to_an_identical_file(
    env: Path, loopback: LoopbackHub, served_checkpoint: Path, cut_after: int
) -> None:
    loopback.cut_once(BIG_FILE, cut_after)
    path = hub.pull_model("0.6b-custom", convert=FakeConverter())

    assert _sha256(path / BIG_FILE) == _sha256(served_checkpoint / BIG_FILE)
    big_gets = _big_file_gets(loopback)
    assert len(big_gets) == 2  # the cut one and its continuation
    if cut_after > 10 * 1024 * 1024:  # huggingface-hub writes 10 MiB chunks: a later cut resumes with Range
        assert big_gets[1].range is not None and big_gets[1].status == 206
    hub.verify_model(path)


def test_killed_download_restarts_cleanly(env: Path, loopback: LoopbackHub, served_checkpoint: Path) -> None:
    loopback.throttle(BIG_FILE, 0.02)  # ~6 s for the big file: time to kill the process halfway
    child = _start_child(env / "convert.log", env / "child.err")
    try:
        _wait_until(lambda: loopback.sent.get(BIG_FILE, 0) > 1_000_000)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL, (env / "child.err").read_text()
    destination = hub.model_dir("0.6b-custom")
    assert not hub.is_converted(destination)
    assert not (env / "convert.log").exists()
    # Age whatever partial file the killed process left, so it counts as abandoned.
    partials = list((env / "hf" / "hub").rglob("*.incomplete"))
    assert partials  # the killed download left its partial file
    for partial in partials:
        os.utime(partial, (0, 0))

    loopback.faults.throttles.clear()
    path = hub.pull_model("0.6b-custom", convert=FakeConverter())
    assert path == destination
    assert _sha256(path / BIG_FILE) == _sha256(served_checkpoint / BIG_FILE)
    assert not list((env / "hf" / "hub").rglob("*.incomplete"))  # nothing left behind
    hub.verify_model(path)


def test_offline_with_a_cached_model_works(
    env: Path, loopback: LoopbackHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = hub.pull_model("0.6b-custom", convert=FakeConverter())
    loopback.stop()  # no hub at all
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = hub.resolve_model("0.6b-custom", convert=FakeConverter())
    assert resolved.path == path


def test_offline_converts_an_already_downloaded_checkpoint(
    env: Path, loopback: LoopbackHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.download_checkpoint("0.6b-custom")
    before = len(loopback.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    convert = FakeConverter()
    resolved = hub.resolve_model("0.6b-custom", convert=convert)
    assert len(convert.calls) == 1 and hub.is_converted(resolved.path)
    assert len(loopback.requests) == before


def test_offline_without_cache_names_the_model_and_the_fix(
    env: Path, loopback: LoopbackHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Qwen3TTSError) as info:
        hub.resolve_model("0.6b-custom", convert=FakeConverter())
    assert "0.6b-custom" in info.value.message and "HF_HUB_OFFLINE" in info.value.message
    assert "qwen3tts models pull 0.6b-custom" in info.value.hint
    assert loopback.requests == []


def test_repo_missing_on_the_mirror_is_a_clear_error(env: Path, loopback: LoopbackHub) -> None:
    with pytest.raises(Qwen3TTSError) as info:
        hub.resolve_model("1.7b-design", convert=FakeConverter())
    assert "Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign" in info.value.message and "HF_ENDPOINT" in info.value.hint


def test_unknown_revision_is_a_clear_error(env: Path, loopback: LoopbackHub) -> None:
    with pytest.raises(Qwen3TTSError, match="no such revision"):
        hub.pull_model("0.6b-custom", revision="v9", convert=FakeConverter())


def test_pinned_commit_downloads(env: Path, loopback: LoopbackHub) -> None:
    commit = loopback.repos[CUSTOM.repo].commit
    path = hub.pull_model("0.6b-custom", revision=commit, convert=FakeConverter())
    assert Manifest.read(path).source_revision == commit


def test_unreachable_hub_is_a_clear_error(env: Path, loopback: LoopbackHub) -> None:
    loopback.stop()
    with pytest.raises(Qwen3TTSError) as info:
        hub.resolve_model("0.6b-custom", convert=FakeConverter())
    assert "cannot reach" in info.value.message and "0.6b-custom" in info.value.message


def test_two_concurrent_first_runs_build_one_intact_cache(env: Path, loopback: LoopbackHub) -> None:
    gate = loopback.hold(BIG_FILE)
    log = env / "convert.log"
    first = _start_child(log, env / "first.err")
    # The first is now downloading (and holds the lock); the second must wait for it.
    _wait_until(lambda: len(_big_file_gets(loopback)) == 1)
    second = _start_child(log, env / "second.err")
    _wait_until(lambda: "waiting for another qwen3tts process" in (env / "second.err").read_text())
    gate.set()
    outputs = [child.communicate(timeout=300)[0] for child in (first, second)]

    errors = [(env / name).read_text() for name in ("first.err", "second.err")]
    assert [child.returncode for child in (first, second)] == [0, 0], errors
    assert {out.strip() for out in outputs} == {str(hub.model_dir("0.6b-custom"))}
    assert len(log.read_text().splitlines()) == 1  # converted once
    assert len(_big_file_gets(loopback)) == 1  # downloaded once
    hub.verify_model(hub.model_dir("0.6b-custom"))


def test_damaged_cache_is_rebuilt(env: Path, loopback: LoopbackHub) -> None:
    convert = FakeConverter()
    path = hub.pull_model("0.6b-custom", convert=convert)
    with open(path / BIG_FILE, "r+b") as f:
        f.truncate(100)
    messages: list[str] = []
    resolved = hub.resolve_model("0.6b-custom", convert=convert, progress=messages.append)
    assert len(convert.calls) == 2 and any("rebuilding" in m for m in messages)
    hub.verify_model(resolved.path)


# ---- local folders -----------------------------------------------------------------------------------------
def test_local_checkpoint_is_converted_once_per_content(
    env: Path, served_checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "my-ckpt"
    shutil.copytree(served_checkpoint, folder)
    convert = FakeConverter()
    first = hub.resolve_model(str(folder), convert=convert)
    assert first.origin == "checkpoint" and first.entry is None
    assert first.path.parent.parent == env / "cache" / "local" and first.path.name == catalog.DEFAULT_QUANT
    assert first.manifest.source_repo == str(folder.resolve())
    assert hub.resolve_model(folder, convert=convert).path == first.path
    assert len(convert.calls) == 1

    os.utime(folder / BIG_FILE, ns=(0, 10**18))  # the weights changed: a new conversion
    changed = hub.resolve_model(folder, convert=convert)
    assert changed.path != first.path and len(convert.calls) == 2


def test_converted_folder_is_used_as_is(env: Path, loopback: LoopbackHub) -> None:
    path = hub.pull_model("0.6b-custom", convert=FakeConverter())
    resolved = hub.resolve_model(str(path))
    assert (resolved.path, resolved.origin) == (path, "converted")
    assert resolved.capabilities == catalog.Capabilities.of(spec.KIND_CUSTOM_VOICE, "tiny")
    with pytest.raises(Qwen3TTSError, match="not q4_k_m"):
        hub.resolve_model(path, "q4_k_m")
    with open(path / "vocab.json", "ab") as f:
        f.write(b" ")
    with pytest.raises(Qwen3TTSError, match="wrong size"):
        hub.resolve_model(path)


def test_bad_names_and_folders(env: Path, tmp_path: Path) -> None:
    with pytest.raises(Qwen3TTSError) as info:
        hub.resolve_model("3b-custom")
    assert all(name in info.value.hint for name in catalog.CATALOG)
    with pytest.raises(Qwen3TTSError, match="does not exist"):
        hub.resolve_model(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(Qwen3TTSError, match="neither a converted model"):
        hub.resolve_model(tmp_path / "empty")


# ---- list / path / rm --------------------------------------------------------------------------------------
def test_list_and_remove(env: Path, loopback: LoopbackHub) -> None:
    assert hub.list_models() == []
    path = hub.pull_model("0.6b-custom", convert=FakeConverter())
    listed = hub.list_models()
    assert [(m.name, m.quant, m.path, m.complete) for m in listed] == [("0.6b-custom", "q8_0", path, True)]
    assert listed[0].size_bytes == sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    assert hub.remove_model("0.6b-custom") == [path]
    assert hub.list_models() == [] and not path.parent.exists()
    assert hub.remove_model("0.6b-custom") == []
    hf_folder = env / "hf" / "hub" / ("models--" + CUSTOM.repo.replace("/", "--"))
    assert hf_folder.is_dir()
    assert hub.remove_model("0.6b-custom", download=True) == [hf_folder] and not hf_folder.exists()


# ---- REAL CONVERTER END TO END (runs whenever qwen3tts_cli.convert.converter imports) ----------------------
def test_e2e_real_converter_from_loopback_hub(env: Path, loopback: LoopbackHub) -> None:
    from qwen3tts_cli.convert import converter  # noqa: F401

    resolved = hub.resolve_model("0.6b-custom", progress=lambda _m: None)
    files = set(resolved.manifest.files)
    assert {
        "talker.gguf",
        "predictor.gguf",
        "tables.safetensors",
        "tokenizer.json",
        "codec_decoder.onnx",
    } <= files
    assert resolved.manifest.kind == spec.KIND_CUSTOM_VOICE
    assert resolved.manifest.source_revision == loopback.repos[CUSTOM.repo].commit
    hub.verify_model(resolved.path)
    before = len(loopback.requests)
    assert hub.resolve_model("0.6b-custom").path == resolved.path and len(loopback.requests) == before
