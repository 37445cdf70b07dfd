"""The `qwen3tts` command line end to end: subprocesses for real runs, `cli.run` in-process for cheap ones.

Also holds the helpers test_cli_parity.py and test_cli_errors.py import: `run_cli`, `cli_env`, and the
session fixture `converted` (tiny fixture checkpoints converted once at f32, the parity setting).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hubserver import LoopbackHub

import qwen3tts_cli
from qwen3tts_cli import catalog, cli, spec
from qwen3tts_cli.convert.converter import convert_checkpoint
from qwen3tts_cli.convert.safetensors import SafetensorsFile, f32_to_bf16, write_safetensors

REPO_ROOT = Path(__file__).resolve().parents[1]
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Variables of the caller that would change what the CLI does (debug output, caches, offline mode).
_LEAKY_VARS = (
    "QWEN3TTS_DEBUG",
    "QWEN3TTS_HOME",
    "QWEN3TTS_CACHE",
    "QWEN3TTS_VOICES_DIR",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_HOME",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)
FAST = ["--threads", "1", "--greedy", "--exact"]


# ---- helpers shared by the CLI test modules --------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    code: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8")

    def json(self) -> dict:
        return json.loads(self.stdout)

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment: caches and voice library under `home`, single-threaded, offline by default."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_VARS}
    env.update(SINGLE_THREAD)
    env.update(
        QWEN3TTS_CACHE=str(home / "cache"),
        QWEN3TTS_VOICES_DIR=str(home / "voices"),
        HF_HOME=str(home / "hf"),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(REPO_ROOT),
    )
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str | Path],
    env: dict[str, str],
    *,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
) -> Result:
    """`python -m qwen3tts_cli.cli ARGS` (what the installed `qwen3tts` script runs)."""
    done = subprocess.run(
        [sys.executable, "-m", "qwen3tts_cli.cli", *map(str, args)],
        env=env,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        cwd=cwd,
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout, done.stderr.decode("utf-8", "replace"))


def assert_clean_error(result: Result, *fragments: str) -> str:
    """Exit != 0, exactly one `error:` line holding every fragment, and no traceback."""
    assert result.code != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.error_lines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def read_pcm16(path: Path) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="int16")
    assert rate == spec.SAMPLE_RATE
    return data


def write_float_wav(path: Path, samples: np.ndarray, rate: int = spec.SAMPLE_RATE) -> Path:
    sf.write(str(path), np.asarray(samples, dtype=np.float32), rate, subtype="FLOAT")
    return path


# Conversions are cheap for tiny fixtures but shared by three modules: one per (kind, size, variant).
_CONVERTED: dict[tuple[str, str, str], Path] = {}


def _with_eos_row(source: Path, target: Path, row: np.ndarray) -> Path:
    """A copy of a checkpoint whose talker codec_head row 2150 (EOS) is `row` (golden cv_english_eos)."""
    shutil.copytree(source, target)
    weights = SafetensorsFile(source / "model.safetensors")
    tensors = {name: np.array(weights.raw(name)) for name in weights}
    dtypes = {name: weights.dtype(name) for name in weights}
    head = tensors["talker.codec_head.weight"]
    head[spec.CODEC_EOS_ID] = f32_to_bf16(row) if dtypes["talker.codec_head.weight"] == "BF16" else row
    write_safetensors(target / "model.safetensors", tensors, dtypes)
    return target


def _with_size_tag(source: Path, target: Path, size_tag: str) -> Path:
    """A copy of a checkpoint that says it is another size (e.g. "0b6": CustomVoice drops instructions)."""
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config["tts_model_size"] = size_tag
    (target / "config.json").write_text(json.dumps(config, indent=2))
    return target


@pytest.fixture(scope="session")
def converted(
    tmp_path_factory: pytest.TempPathFactory, checkpoint_factory: Callable[..., Path], golden
) -> Callable[..., Path]:
    """converted(kind, size="tiny", variant="") -> an f32 model folder; variant "eos" or "0b6"."""

    def make(kind: str, size: str = "tiny", variant: str = "") -> Path:
        key = (kind, size, variant)
        if key not in _CONVERTED:
            source = checkpoint_factory(kind, size)
            work = tmp_path_factory.mktemp(f"cli-{kind}-{size}-{variant or 'plain'}")
            if variant == "eos":
                row = golden.case(size, "cv_english_eos")["codec_head_eos_row"]
                source = _with_eos_row(source, work / "ckpt", row)
            elif variant == "0b6":
                source = _with_size_tag(source, work / "ckpt", catalog.SIZE_0_6B)
            _CONVERTED[key] = convert_checkpoint(source, work / "model", "f32")
        return _CONVERTED[key]

    return make


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    return cli_env(home)


@pytest.fixture
def cli_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., Result]:
    """`qwen3tts ARGS` run inside the test process (no interpreter start-up) with cli_env(tmp_path)."""
    for var in _LEAKY_VARS:
        monkeypatch.delenv(var, raising=False)
    for var, value in cli_env(tmp_path).items():
        if var in _LEAKY_VARS:
            monkeypatch.setenv(var, value)

    def call(*args: str | Path) -> Result:
        code = cli.run([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out.encode(), captured.err)

    return call


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---- text input, outputs, summaries ----------------------------------------------------------------------
def test_text_from_argument_file_and_stdin_give_the_same_audio(
    converted: Callable[..., Path], env: dict[str, str], home: Path
) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    text = "Hello world."
    (home / "text.txt").write_text("\ufeff" + text + "\n", encoding="utf-8")  # a BOM is not spoken
    common = ["--model-dir", model, *FAST, "--max-frames", "4", "--format", "pcm", "-o", "-"]
    runs = {
        "argument": run_cli(["say", text, *common], env),
        "file": run_cli(["say", "-f", home / "text.txt", *common], env),
        "stdin-dash": run_cli(["say", "-f", "-", *common], env, stdin=text.encode()),
        "piped": run_cli(["say", *common], env, stdin=text.encode()),
    }
    for name, result in runs.items():
        assert result.code == 0, (name, result.stderr)
    reference = runs["argument"].stdout
    assert len(reference) == 4 * spec.SAMPLES_PER_FRAME * 2
    assert all(r.stdout == reference for r in runs.values())


def test_json_summary_and_codes_out_layouts(
    converted: Callable[..., Path], env: dict[str, str], home: Path
) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    pieces = ["The first sentence is long enough to stand alone.", "A second paragraph is a second piece."]
    text = "\n\n".join(pieces)
    base = ["say", text, "--model-dir", model, *FAST, "--max-frames", "3"]
    npy = run_cli([*base, "-o", home / "a.wav", "--codes-out", home / "codes.npy", "--json"], env)
    assert npy.code == 0, npy.stderr
    summary = npy.json()
    assert summary["pieces"] == 2 and summary["frames"] == 6 and summary["kind"] == spec.KIND_CUSTOM_VOICE
    assert summary["output"] == str(home / "a.wav") and summary["format"] == "wav"
    assert summary["samples"] == len(read_pcm16(home / "a.wav"))
    assert npy.stdout.count(b"\n") == 1  # one line
    codes = np.load(home / "codes.npy")
    assert codes.dtype == np.int64 and codes.shape == (6, spec.NUM_CODE_GROUPS)
    sidecar = json.loads((home / "codes.pieces.json").read_text())
    assert sidecar["piece_frames"] == [3, 3] and sidecar["piece_start"] == [0, 3]
    assert sidecar["pieces"] == pieces

    npz = run_cli([*base, "-o", home / "b.flac", "--codes-out", home / "codes.npz", "--quiet"], env)
    assert npz.code == 0 and npz.stderr == "" and npz.stdout == b""
    with np.load(home / "codes.npz") as data:
        assert np.array_equal(data["codes"], codes)
        assert data["piece_frames"].tolist() == [3, 3] and data["piece_start"].tolist() == [0, 3]
        assert data["piece_text"].tolist() == sidecar["pieces"]
    assert np.array_equal(read_pcm16(home / "b.flac"), read_pcm16(home / "a.wav"))  # flac is lossless


def test_stdout_wav_and_a_terminal_never_gets_binary_audio(
    converted: Callable[..., Path], env: dict[str, str]
) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    args = ["say", "Hello world.", "--model-dir", model, *FAST, "--max-frames", "2"]
    piped = run_cli(args, env)  # no -o and stdout is a pipe: WAV on stdout
    assert piped.code == 0, piped.stderr
    assert piped.stdout[:4] == b"RIFF" and piped.stdout[8:12] == b"WAVE"
    assert len(piped.stdout) == 44 + 2 * 2 * spec.SAMPLES_PER_FRAME

    refused = _run_with_terminal_stdout([*args, "-o", "-"], env)
    assert refused.code == 1 and "refusing to write binary audio to a terminal" in refused.stderr
    playing = _run_with_terminal_stdout(args, env)  # no -o on a terminal means --play
    if importlib.util.find_spec("sounddevice") is None:
        assert playing.code == 1 and "--play needs the optional 'sounddevice' package" in playing.stderr
    assert "Traceback" not in refused.stderr + playing.stderr


def _run_with_terminal_stdout(args: Sequence[str | Path], env: dict[str, str]) -> Result:
    import pty

    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "qwen3tts_cli.cli", *map(str, args)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=300,
        )
    finally:
        os.close(follower)
        os.close(leader)
    return Result(done.returncode, b"", done.stderr.decode("utf-8", "replace"))


def test_seed_makes_sampling_reproducible(converted: Callable[..., Path], env: dict[str, str]) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    args = ["say", "Hello world.", "--model-dir", model, "--threads", "1", "--max-frames", "4", "-o", "-"]
    first, again = run_cli([*args, "--seed", "7"], env), run_cli([*args, "--seed", "7"], env)
    other = run_cli([*args, "--seed", "8", "--temperature", "1.3", "--top-k", "200"], env)
    assert first.code == again.code == other.code == 0
    assert first.stdout == again.stdout
    assert other.stdout != first.stdout


# ---- voice library commands -------------------------------------------------------------------------------
def test_clone_then_voices_list_show_export_import_rm(
    converted: Callable[..., Path], env: dict[str, str], home: Path, golden
) -> None:
    model = converted(spec.KIND_BASE)
    ref = write_float_wav(home / "ref.wav", golden.ref_audio("tiny"))
    made = run_cli(
        [
            "clone",
            ref,
            "--text",
            "Reference words.",
            "--name",
            "me",
            "--model-dir",
            model,
            "-t",
            "1",
            "--json",
        ],
        env,
    )
    assert made.code == 0, made.stderr
    info = made.json()
    assert info["name"] == "me" and info["mode"] == "icl" and info["frames"] == 17
    assert Path(info["path"]) == home / "voices" / "me.json" and Path(info["path"]).is_file()

    listed = run_cli(["voices", "list", "--json"], env)
    assert listed.code == 0
    voices = listed.json()["voices"]
    assert [v["name"] for v in voices] == ["me"]
    assert voices[0]["mode"] == "icl" and voices[0]["error"] is None and voices[0]["talker_hidden_size"] == 64

    shown = run_cli(["voices", "show", "me", "--json"], env).json()
    assert shown["reference_text"] == "Reference words." and shown["frames"] == 17
    text = run_cli(["voices", "show", "me"], env).out
    assert "reference_text:" in text and "Reference words." in text

    again = run_cli(["clone", ref, "--text", "x", "--name", "me", "--model-dir", model], env)
    assert_clean_error(again, "already exists", "--force")

    exported = run_cli(["voices", "export", "me", home / "shared.json"], env)
    assert exported.code == 0 and (home / "shared.json").is_file()
    imported = run_cli(["voices", "import", home / "shared.json", "--name", "me too"], env)
    assert imported.code == 0, imported.stderr
    assert run_cli(["voices", "rm", "me"], env).code == 0
    names = [v["name"] for v in run_cli(["voices", "list", "--json"], env).json()["voices"]]
    assert names == ["me too"]
    assert_clean_error(run_cli(["voices", "rm", "me"], env), "no voice named 'me'")


# ---- JSON listings ---------------------------------------------------------------------------------------
def test_speakers_and_languages_json(
    capsys: pytest.CaptureFixture[str], converted: Callable[..., Path]
) -> None:
    code, out, _ = in_process(capsys, "speakers", "--json")
    assert code == 0
    speakers = json.loads(out)["speakers"]
    assert [s["name"] for s in speakers] == list(spec.SPEAKER_IDS)
    assert {s["name"]: s["dialect"] for s in speakers}["dylan"] == "beijing_dialect"

    code, out, _ = in_process(capsys, "languages", "--json")
    document = json.loads(out)
    assert code == 0 and document["languages"] == ["auto", *spec.LANGUAGE_IDS]
    assert document["dialects"] == list(spec.DIALECT_IDS)

    model = converted(spec.KIND_CUSTOM_VOICE)
    code, out, _ = in_process(capsys, "speakers", "--model-dir", str(model), "--json")
    assert code == 0 and {s["name"] for s in json.loads(out)["speakers"]} == set(spec.SPEAKER_IDS)
    code, _, err = in_process(capsys, "speakers", "--model", "0.6b-base")
    assert code == 1 and err.startswith("error: model 0.6b-base has no preset speakers")


def test_doctor_json(env: dict[str, str]) -> None:
    result = run_cli(["doctor", "--json"], env)
    assert result.code == 0, result.stderr
    facts = result.json()
    expected = {
        "qwen3tts",
        "python",
        "platform",
        "versions",
        "llama_cpp",
        "onnxruntime",
        "threads",
        "paths",
        "models",
    }
    assert expected <= set(facts)
    assert facts["versions"]["llama-cpp-python"] == "0.3.36"
    llama = facts["llama_cpp"]
    assert "error" not in llama and llama["system_info"] and llama["features"]
    assert all(value.isdigit() for value in llama["features"].values())
    assert facts["threads"]["usable_cores"] >= facts["threads"]["free_cores"] >= 1
    assert facts["paths"]["cache"] == env["QWEN3TTS_CACHE"]
    assert facts["paths"]["voices"] == env["QWEN3TTS_VOICES_DIR"]
    assert set(facts["models"]["catalog"]) == set(catalog.CATALOG)
    assert "CPUExecutionProvider" in facts["onnxruntime"]["providers"]
    text = run_cli(["doctor"], env)
    assert text.code == 0 and "llama.cpp:" in text.out and "models:" in text.out


def test_models_list_json_and_voices_list_json_when_empty(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QWEN3TTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("QWEN3TTS_VOICES_DIR", str(tmp_path / "voices"))
    code, out, _ = in_process(capsys, "models", "list", "--json")
    document = json.loads(out)
    assert code == 0 and document["cache"] == str(tmp_path / "cache") and document["local"] == []
    models = {m["name"]: m for m in document["models"]}
    assert set(models) == set(catalog.CATALOG)
    assert models["0.6b-custom"]["default_for"] == ["presets"] and models["0.6b-custom"]["installed"] == []
    assert {"repo", "kind", "talker_hidden", "description", "modes"} <= set(models["1.7b-design"])
    code, out, _ = in_process(capsys, "voices", "list", "--json")
    assert code == 0 and json.loads(out) == {"voices_dir": str(tmp_path / "voices"), "voices": []}


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = in_process(capsys, "say", "hi", "--bogus")
    assert code == 2 and err.strip() == "error: No such option: --bogus (see `qwen3tts say --help`)"
    code, _, err = in_process(capsys, "say", "hi", "--voice", "a", "--ref-audio", "b.wav")
    assert code == 2 and err.startswith("error: --voice and --ref-audio both given")
    code, _, err = in_process(capsys, "say", "hi", "--design", "calm", "--speaker", "ryan")
    assert code == 2 and "--design describes a new voice" in err
    code, _, err = in_process(capsys, "say", "hi", "--format", "wav", "--play")
    assert code == 2 and "--format needs an output" in err
    code, out, _ = in_process(capsys, "--version")
    assert code == 0 and out.strip() == f"qwen3tts {qwen3tts_cli.__version__}"
    assert "bench" in typer_commands()


def typer_commands() -> list[str]:
    import typer

    group = typer.main.get_command(cli.app)
    return sorted(group.commands)  # type: ignore[attr-defined]


def test_convert_command(checkpoint_factory: Callable[..., Path], env: dict[str, str], home: Path) -> None:
    out = home / "converted"
    result = run_cli(
        ["convert", checkpoint_factory(spec.KIND_CUSTOM_VOICE), out, "--quant", "f16", "--quiet"], env
    )
    assert result.code == 0, result.stderr
    assert (
        Path(result.out.strip()) == out and json.loads((out / "manifest.json").read_text())["quant"] == "f16"
    )
    again = run_cli(["convert", checkpoint_factory(spec.KIND_CUSTOM_VOICE), out], env)
    assert_clean_error(again, "already exists", "--force")


# ---- first run against a (loopback) hub ------------------------------------------------------------------
BIG_FILE = "model.safetensors"


@pytest.fixture
def hub_server(checkpoint_factory: Callable[..., Path]) -> Iterator[LoopbackHub]:
    server = LoopbackHub().start()
    server.add_repo(catalog.CATALOG["0.6b-custom"].repo, checkpoint_factory(spec.KIND_CUSTOM_VOICE))
    yield server
    server.stop()


def _hub_env(home: Path, server: LoopbackHub) -> dict[str, str]:
    env = cli_env(home, HF_ENDPOINT=server.url)
    del env["HF_HUB_OFFLINE"]
    return env


def _big_file_gets(server: LoopbackHub) -> int:
    """GETs of the talker weights (not speech_tokenizer/model.safetensors)."""
    commit = server.repos[catalog.CATALOG["0.6b-custom"].repo].commit
    return sum(1 for r in server.requests if r.method == "GET" and r.path.endswith(f"/{commit}/{BIG_FILE}"))


def test_first_run_downloads_converts_and_speaks_then_uses_the_cache(
    hub_server: LoopbackHub, home: Path
) -> None:
    env = _hub_env(home, hub_server)
    say = ["say", "Hello", "-o", home / "hello.wav", "--model", "0.6b-custom", "--max-frames", "3", "-t", "1"]
    first = run_cli(say, env)
    assert first.code == 0, first.stderr
    assert "downloading" in first.stderr and "converting" in first.stderr
    assert len(read_pcm16(home / "hello.wav")) == 3 * spec.SAMPLES_PER_FRAME
    requests = len(hub_server.requests)
    assert requests > 0 and _big_file_gets(hub_server) == 1

    second = run_cli([*say[:3], home / "again.wav", *say[4:]], env)
    assert second.code == 0, second.stderr
    assert len(hub_server.requests) == requests  # no request at all: the cache is enough
    assert "downloading" not in second.stderr
    assert (home / "again.wav").is_file()

    listed = run_cli(["models", "list", "--json"], env).json()
    installed = {m["name"]: m["installed"] for m in listed["models"]}["0.6b-custom"]
    assert [(i["quant"], i["complete"]) for i in installed] == [(catalog.DEFAULT_QUANT, True)]
    path = run_cli(["models", "path", "0.6b-custom"], env)
    assert path.code == 0 and Path(path.out.strip()) == home / "cache" / "models" / "0.6b-custom" / "q8_0"
    assert_clean_error(run_cli(["models", "path", "0.6b-base"], env), "not converted yet", "models pull")
    removed = run_cli(["models", "rm", "0.6b-custom"], env)
    assert removed.code == 0 and not (home / "cache" / "models" / "0.6b-custom").exists()
    assert_clean_error(run_cli(["models", "rm", "0.6b-custom"], env), "not in the cache")
    # pull converts again from the downloaded checkpoint; the big file is not fetched a second time
    pulled = run_cli(["models", "pull", "0.6b-custom", "-q", "f16", "--quiet"], env)
    assert pulled.code == 0 and pulled.stderr == "", pulled.stderr
    assert Path(pulled.out.strip()) == home / "cache" / "models" / "0.6b-custom" / "f16"
    assert _big_file_gets(hub_server) == 1
    table = run_cli(["models", "list"], env).out
    assert any(line.split()[:3] == ["0.6b-custom", "custom_voice", "f16"] for line in table.splitlines())


def test_first_run_survives_a_dropped_connection(hub_server: LoopbackHub, home: Path) -> None:
    # huggingface-hub retries a connection that drops mid-file by itself (resuming with a Range request when
    # it had flushed data), so the interrupted first run still succeeds and the file is intact.
    hub_server.cut_once(BIG_FILE, 1_000_000)
    env = _hub_env(home, hub_server)
    result = run_cli(
        ["say", "Hello", "-o", home / "hello.wav", "-m", "0.6b-custom", "--max-frames", "2"], env
    )
    assert result.code == 0, result.stderr
    assert _big_file_gets(hub_server) == 2  # the cut one and its continuation
    assert len(read_pcm16(home / "hello.wav")) == 2 * spec.SAMPLES_PER_FRAME


def test_offline_first_run_is_a_clear_error(home: Path) -> None:
    result = run_cli(["say", "Hello", "-o", home / "x.wav", "-m", "0.6b-custom"], cli_env(home))
    assert_clean_error(result, "not downloaded yet", "HF_HUB_OFFLINE")
    assert not (home / "x.wav").exists()
