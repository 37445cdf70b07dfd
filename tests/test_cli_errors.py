"""Bad inputs through the CLI: one clear `error:` line, no traceback (unless --debug), nothing lost.

"Nothing lost" means: an existing output file stays byte-identical when a run fails or is interrupted,
and no temporary file is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_cli import FAST, Result, assert_clean_error, cli_env, read_pcm16, run_cli, write_float_wav
from test_cli import cli_in_process as cli_in_process  # noqa: F401  (fixtures shared with test_cli)
from test_cli import converted as converted  # noqa: F401

from qwen3tts_cli import spec

REF_TEXT = "Reference words."
OLD_BYTES = b"RIFF old audio that must survive"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def _sentences(total_chars: int) -> str:
    """Plain English-like sentences, about 60 characters each (many text pieces)."""
    rng = np.random.default_rng(1)
    words = "the quick brown fox jumps over a lazy dog while seven happy birds sing in green trees".split()
    parts, size = [], 0
    while size < total_chars:
        sentence = " ".join(rng.choice(words, rng.integers(6, 14))).capitalize() + ". "
        parts.append(sentence)
        size += len(sentence)
    return "".join(parts)[:total_chars]


# ---- text ---------------------------------------------------------------------------------------------
def test_empty_and_unspeakable_text(
    env: dict[str, str], tmp_path: Path, cli_in_process: Callable[..., Result]
) -> None:
    out = ["-o", tmp_path / "a.wav"]
    assert_clean_error(run_cli(["say", *out], env, stdin=b""), "the text is empty")  # piped, empty
    assert_clean_error(cli_in_process("say", "", *out), "the text is empty")
    assert_clean_error(cli_in_process("say", "?!... --", *out), "nothing to speak")
    assert_clean_error(cli_in_process("say", "[happy]", *out), "the text is empty")  # a tag is not text
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    assert_clean_error(cli_in_process("say", "-f", tmp_path / "latin1.txt"), "is not UTF-8 text")
    assert_clean_error(cli_in_process("say", "-f", tmp_path / "missing.txt"), "text file not found")
    assert_clean_error(cli_in_process("say", "Hi.", "-f", tmp_path / "latin1.txt"), "not both")
    assert not (tmp_path / "a.wav").exists()


def _run_measured(args: list[str | Path], env: dict[str, str]) -> tuple[Result, int]:
    """Run the CLI; returns its result and the child's own peak RSS in KiB (wait4, not RUSAGE_CHILDREN)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "qwen3tts_cli.cli", *map(str, args)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = process.stdout.read(), process.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return Result(process.returncode, stdout, stderr.decode()), usage.ru_maxrss


def test_100_kb_of_text_streams_in_bounded_memory(
    converted: Callable[..., Path], env: dict[str, str], tmp_path: Path
) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    (tmp_path / "big.txt").write_text(_sentences(100_000))
    (tmp_path / "small.txt").write_text(_sentences(1_000))
    base = ["say", "--model-dir", model, *FAST, "--max-frames", "2", "--json"]
    small, small_rss = _run_measured([*base, "-f", tmp_path / "small.txt", "-o", tmp_path / "s.wav"], env)
    big, big_rss = _run_measured([*base, "-f", tmp_path / "big.txt", "-o", tmp_path / "b.wav"], env)
    assert small.code == big.code == 0, small.stderr + big.stderr
    summary = big.json()
    assert summary["pieces"] > 1000 and summary["frames"] == 2 * summary["pieces"]
    assert len(read_pcm16(tmp_path / "b.wav")) == summary["samples"]
    # The whole output of the big run is ~10 M samples (40 MB as float32): holding it would show.
    assert summary["samples"] > 9_000_000
    assert big_rss - small_rss < 25 * 1024, (big_rss, small_rss)


# ---- speakers, languages, instructions, design --------------------------------------------------------
def test_unknown_speaker_and_language(
    converted: Callable[..., Path], cli_in_process: Callable[..., Result], tmp_path: Path
) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    local = ["--model-dir", model, *FAST, "-o", tmp_path / "a.wav"]
    speaker = cli_in_process("say", "Hi.", "--speaker", "bob", *local)
    assert_clean_error(speaker, "unknown speaker 'bob'", "vivian")
    language = cli_in_process("say", "Hi.", "-l", "klingon", *local)
    assert_clean_error(language, "unknown language 'klingon'", "english")
    # For catalog models the names are checked before anything is downloaded (the env is offline anyway).
    catalog_run = cli_in_process("say", "Hi.", "--speaker", "bob", "-o", tmp_path / "a.wav")
    assert_clean_error(catalog_run, "unknown speaker 'bob'")
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "a.wav").exists()


def test_instruct_on_a_model_without_instruct_warns_and_speaks(
    converted: Callable[..., Path], env: dict[str, str], tmp_path: Path
) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE, "tiny", "0b6")  # says it is 0.6B: instructions are dropped
    base = [
        "say",
        "Hello world.",
        "--model-dir",
        model,
        *FAST,
        "--max-frames",
        "3",
        "--speaker",
        "vivian",
        "-o",
        "-",
    ]
    styled = run_cli([*base, "--instruct", "Speak slowly."], env)
    plain = run_cli(base, env)
    assert styled.code == plain.code == 0, styled.stderr
    warnings = [line for line in styled.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: this model takes no style instruction; ignoring 'Speak slowly.'"]
    assert styled.stdout == plain.stdout and len(plain.stdout) > 44  # spoke, exactly as without it
    assert "Traceback" not in styled.stderr


def test_design_needs_a_description(
    converted: Callable[..., Path], cli_in_process: Callable[..., Result], tmp_path: Path
) -> None:
    model = converted(spec.KIND_VOICE_DESIGN)
    out = ["-o", tmp_path / "a.wav"]
    assert_clean_error(cli_in_process("say", "Hi.", "--model-dir", model, *FAST, *out), "needs a description")
    assert_clean_error(cli_in_process("say", "Hi.", "--design", " ", *out), "--design needs a description")
    custom = converted(spec.KIND_CUSTOM_VOICE)
    wrong = cli_in_process("say", "Hi.", "--design", "A calm voice.", "--model-dir", custom, *FAST, *out)
    assert_clean_error(wrong, "--design needs a VoiceDesign model")


# ---- cloning and reference audio ----------------------------------------------------------------------
def test_clone_without_transcript_falls_back_to_x_vector(
    converted: Callable[..., Path], env: dict[str, str], tmp_path: Path, golden
) -> None:
    model = converted(spec.KIND_BASE)
    ref = write_float_wav(tmp_path / "ref.wav", golden.ref_audio("tiny"))
    made = run_cli(["clone", ref, "--name", "quick", "--model-dir", model, "-t", "1", "--json"], env)
    assert made.code == 0, made.stderr
    assert made.json()["mode"] == "xvector"
    assert "warning: no transcript given: cloning from the speaker embedding only" in made.stderr
    spoken = run_cli(
        ["say", "Hi.", "--ref-audio", ref, "--model-dir", model, *FAST, "--max-frames", "2", "-o", "-"], env
    )
    assert spoken.code == 0 and "x-vector mode" in spoken.stderr


def _reference_files(folder: Path, golden) -> dict[str, Path]:
    voice = golden.ref_audio("tiny")  # 1.3 s at 24 kHz
    rng = np.random.default_rng(0)
    files = {
        "corrupt": folder / "corrupt.wav",
        "empty": folder / "empty.wav",
        "silent": write_float_wav(folder / "silent.wav", np.zeros(72_000, np.float32)),
        "8khz": write_float_wav(folder / "8k.wav", np.tile(voice[::3], 3), 8_000),
        "stereo": folder / "stereo.wav",
        "2min": write_float_wav(folder / "long.wav", np.tile(voice, 93)[: 120 * spec.SAMPLE_RATE]),
    }
    files["corrupt"].write_bytes(b"RIFF" + rng.bytes(4000))
    files["empty"].write_bytes(b"")
    sf.write(str(files["stereo"]), np.stack([voice, voice * 0.5], axis=1), spec.SAMPLE_RATE, subtype="FLOAT")
    return files


def test_bad_reference_audio(
    converted: Callable[..., Path], env: dict[str, str], tmp_path: Path, golden
) -> None:
    model = converted(spec.KIND_BASE)
    files = _reference_files(tmp_path, golden)
    say = ["say", "Hi.", "--model-dir", model, *FAST, "--max-frames", "2", "-o", "-", "--x-vector-only"]

    def clone_inline(name: str) -> Result:
        return run_cli([*say, "--ref-audio", files[name]], env)

    assert_clean_error(clone_inline("corrupt"), "cannot decode reference audio")
    assert_clean_error(clone_inline("empty"), "reference audio is empty")
    assert_clean_error(clone_inline("silent"), "reference audio is silent")
    assert_clean_error(
        run_cli([*say, "--ref-audio", tmp_path / "nope.wav"], env), "reference audio not found"
    )
    for name, expected in (
        ("8khz", "sampled at 8000 Hz"),
        ("stereo", "2 channels"),
        ("2min", "120 s of audio"),
    ):
        result = clone_inline(name)
        assert result.code == 0, (name, result.stderr)
        assert any(line.startswith("warning:") and expected in line for line in result.stderr.splitlines()), (
            name
        )
        assert len(result.stdout) == 44 + 2 * 2 * spec.SAMPLES_PER_FRAME


def test_bad_voice_packs(
    converted: Callable[..., Path],
    env: dict[str, str],
    cli_in_process: Callable[..., Result],
    tmp_path: Path,
    golden,
) -> None:
    tiny, wide = converted(spec.KIND_BASE), converted(spec.KIND_BASE, "tiny-wide")
    ref = write_float_wav(tmp_path / "ref.wav", golden.ref_audio("tiny"))
    for model, name in ((tiny, "good"), (wide, "wide")):
        made = run_cli(
            ["clone", ref, "--text", REF_TEXT, "--name", name, "--model-dir", model, "-t", "1"], env
        )
        assert made.code == 0, made.stderr
    voices = tmp_path / "voices"
    good = (voices / "good.json").read_text()
    (tmp_path / "malformed.json").write_text(good.replace('"mode": "icl"', '"mode": "both"'))
    (tmp_path / "truncated.json").write_text(good[: len(good) // 2])
    (tmp_path / "notjson.json").write_text("hello")
    say = ["say", "Hi.", "--model-dir", tiny, *FAST, "--max-frames", "2", "-o", tmp_path / "a.wav"]

    def with_voice(voice: str | Path) -> Result:
        return cli_in_process(*say, "--voice", voice)

    assert_clean_error(with_voice(tmp_path / "malformed.json"), "checksum mismatch")
    assert_clean_error(with_voice(tmp_path / "truncated.json"), "not valid JSON", "truncated")
    assert_clean_error(with_voice(tmp_path / "notjson.json"), "not valid JSON")
    assert_clean_error(with_voice("wide"), "talker width 96", "this model is talker width 64")
    assert_clean_error(with_voice("ghost"), "no voice named 'ghost'")
    assert not (tmp_path / "a.wav").exists()
    assert with_voice("good").code == 0
    listed = cli_in_process("voices", "list", "--json").json()["voices"]
    assert [v["name"] for v in listed] == ["good", "wide"]
    (voices / "broken.json").write_text(good[:100])
    listed = cli_in_process("voices", "list", "--json").json()["voices"]
    assert {v["name"]: bool(v["error"]) for v in listed} == {"broken": True, "good": False, "wide": False}


# ---- outputs --------------------------------------------------------------------------------------------
def test_output_problems_are_found_before_any_work(
    converted: Callable[..., Path], cli_in_process: Callable[..., Result], tmp_path: Path
) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    say = ["say", "Hi.", "--model-dir", model, *FAST, "--max-frames", "2"]
    missing = cli_in_process(*say, "-o", tmp_path / "missing" / "a.wav")
    assert_clean_error(missing, "output folder does not exist")
    assert_clean_error(cli_in_process(*say, "-o", tmp_path / "a.xyz"), "unsupported audio format 'xyz'")
    assert_clean_error(cli_in_process(*say, "-o", "-", "--format", "mp3"), "unsupported audio format 'mp3'")
    codes_txt = cli_in_process(*say, "-o", tmp_path / "a.wav", "--codes-out", tmp_path / "c.txt")
    assert_clean_error(codes_txt, "must end in .npy or .npz")
    codes_nowhere = cli_in_process(*say, "-o", tmp_path / "a.wav", "--codes-out", tmp_path / "no" / "c.npy")
    assert_clean_error(codes_nowhere, "folder does not exist")
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a cache


def test_existing_output_is_replaced_only_after_success(
    converted: Callable[..., Path], env: dict[str, str], tmp_path: Path
) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    out = tmp_path / "out.wav"
    out.write_bytes(OLD_BYTES)
    # Fails inside the stream, after the temporary output file was opened: one piece too long for the
    # talker context.
    (tmp_path / "long.txt").write_text(_sentences(20_000))
    failed = run_cli(
        ["say", "-f", tmp_path / "long.txt", "--no-split", "--model-dir", model, *FAST, "-o", out], env
    )
    assert_clean_error(failed, "fills the talker context")
    assert out.read_bytes() == OLD_BYTES and _leftovers(tmp_path) == []
    ok = run_cli(["say", "Hi there.", "--model-dir", model, *FAST, "--max-frames", "2", "-o", out], env)
    assert ok.code == 0, ok.stderr
    assert len(read_pcm16(out)) == 2 * spec.SAMPLES_PER_FRAME and _leftovers(tmp_path) == []


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_leaves_nothing_half_written(
    signum: int, code: int, converted: Callable[..., Path], env: dict[str, str], tmp_path: Path
) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    out = tmp_path / "out.wav"
    out.write_bytes(OLD_BYTES)
    (tmp_path / "big.txt").write_text(_sentences(100_000))
    args = ["say", "-f", tmp_path / "big.txt", "--model-dir", model, *FAST, "--max-frames", "2"]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qwen3tts_cli.cli",
            *map(str, [*args, "-o", out, "--codes-out", tmp_path / "c.npy"]),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not _leftovers(tmp_path):  # the temporary output exists: audio is being written
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.05)
        time.sleep(0.5)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, stderr
    if signum == signal.SIGINT:
        assert b"error: interrupted" in stderr
    assert b"Traceback" not in stderr
    assert out.read_bytes() == OLD_BYTES
    assert _leftovers(tmp_path) == [] and not (tmp_path / "c.npy").exists()


def test_debug_shows_the_traceback(
    converted: Callable[..., Path], env: dict[str, str], tmp_path: Path
) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    args = ["say", "Hi.", "--speaker", "bob", "--model-dir", model, "-o", tmp_path / "a.wav"]
    for debug_args in (["--debug", *args], [*args, "--debug"]):
        result = run_cli(debug_args, env)
        assert result.code == 1
        assert "Traceback (most recent call last)" in result.stderr
        assert "Qwen3TTSError" in result.stderr
        assert result.stderr.rstrip().splitlines()[-1].startswith("error: unknown speaker 'bob'")
    via_env = run_cli(args, dict(env, QWEN3TTS_DEBUG="1"))
    assert "Traceback (most recent call last)" in via_env.stderr
