"""The CLI reproduces the official implementation: every golden case through `qwen3tts say`.

Codes must be identical. Audio is written as 16-bit PCM (the CLI has no float output; wav and flac are
both 16-bit): `float_to_pcm16` rounds x * 32767 to the nearest integer, so reading the samples back as
int16 / 32767 is within 0.5 / 32767 = 1.53e-5 of our float output, which itself is within ~1e-6 of the
official waveform. The bound asserted is that rounding bound plus 5e-6, well inside the required 1e-4.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_cli import FAST, cli_env, read_pcm16, run_cli, write_float_wav
from test_cli import converted as converted  # noqa: F401  (the session fixture, shared)

from qwen3tts_cli import spec
from qwen3tts_cli.model import LoadedModel
from qwen3tts_cli.tts import TTS, SamplingOptions

PCM16_ROUNDING = 0.5 / 32767
FLOAT_SLACK = 5e-6  # our float waveform vs the official one (measured ~1e-6)
REF_TEXT = "Reference words."
CASES = (
    "cv_english",
    "cv_dylan_auto_instruct_stream",
    "vd_english",
    "clone_icl_stream",
    "clone_icl_nonstream",
    "clone_xvector",
    "cv_english_eos",
)
SIZES = ("tiny", "tiny-wide")


def say_arguments(case: dict[str, Any], ref_wav: Path) -> list[str]:
    """The `say` options that ask for what the official call in fixture.json did."""
    kwargs = case["kwargs"]
    args = [kwargs["text"], "--language", kwargs["language"]]
    if case["kind"] == spec.KIND_CUSTOM_VOICE:
        args += ["--speaker", kwargs["speaker"]]
        if "instruct" in kwargs:
            args += ["--instruct", kwargs["instruct"]]
    if case["kind"] == spec.KIND_VOICE_DESIGN:
        args += ["--design", kwargs["instruct"]]
    if case["clone_prompt"] == "icl":
        args += ["--ref-audio", str(ref_wav), "--ref-text", REF_TEXT]
    elif case["clone_prompt"] == "xvector":
        args += ["--ref-audio", str(ref_wav), "--x-vector-only"]
    if "non_streaming_mode" in kwargs:
        args.append("--non-streaming-text" if kwargs["non_streaming_mode"] else "--streaming-text")
    return args


def expected_audio(golden_case: dict[str, np.ndarray], frames: int) -> np.ndarray:
    """The part of the official waveform our frame-aligned output covers.

    Official ICL decodes reference + generated codes and cuts int(ref / total * n_samples) samples, which
    float rounding can leave one sample short of ref * 1920; we cut exactly ref * 1920 (frame-aligned), so
    the official output may have one extra leading sample that belongs to the reference.
    """
    wav = golden_case["wav"]
    if "ref_code" not in golden_case:
        return wav
    ref = len(golden_case["ref_code"])
    total = (ref + frames) * spec.SAMPLES_PER_FRAME
    official_cut = int(ref / (ref + frames) * total)
    extra = ref * spec.SAMPLES_PER_FRAME - official_cut
    assert extra in (0, 1)
    return wav[extra:]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case_name", CASES)
def test_every_golden_case_through_say(
    case_name: str, size: str, golden, converted: Callable[..., Path], tmp_path: Path
) -> None:
    case = golden.fixture(size)["cases"][case_name]
    expected = golden.case(size, case_name)
    model = converted(case["kind"], size, "eos" if case_name.endswith("_eos") else "")
    ref_wav = write_float_wav(tmp_path / "ref.wav", golden.ref_audio(size))
    audio_format = "flac" if SIZES.index(size) else "wav"  # both are 16-bit PCM; flac must be lossless
    out = tmp_path / f"out.{audio_format}"
    args = ["say", *say_arguments(case, ref_wav), "--model-dir", model, *FAST, "--max-frames", "7"]
    args += ["--codes-out", tmp_path / "codes.npy", "-o", out, "--format", audio_format]
    result = run_cli(args, cli_env(tmp_path))
    assert result.code == 0, result.stderr

    codes = np.load(tmp_path / "codes.npy")
    assert codes.dtype == np.int64
    assert np.array_equal(codes, expected["codes"])
    assert len(codes) == case["frames"]  # 4 for the forced-EOS case, else max_new_tokens - 1 = 7
    samples = read_pcm16(out)
    reference = expected_audio(expected, len(codes))
    assert len(samples) == len(reference) == len(codes) * spec.SAMPLES_PER_FRAME
    diff = float(np.max(np.abs(samples / 32767.0 - reference)))
    assert diff <= PCM16_ROUNDING + FLOAT_SLACK < 1e-4, diff


# ---- streaming output == whole output ------------------------------------------------------------------
TWO_PIECES = "The first sentence is long enough to stand alone.\n\nA second paragraph is a second piece."


def test_stdout_stream_equals_the_file_sample_for_sample(
    converted: Callable[..., Path], tmp_path: Path
) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    env = cli_env(tmp_path)
    base = ["say", TWO_PIECES, "--model-dir", model, *FAST, "--max-frames", "5", "--speaker", "ryan"]
    to_file = run_cli([*base, "-o", tmp_path / "whole.wav", "--json"], env)
    raw = run_cli([*base, "-o", "-", "--format", "pcm"], env)
    wav = run_cli([*base, "-o", "-"], env)
    assert to_file.code == raw.code == wav.code == 0, to_file.stderr + raw.stderr + wav.stderr
    assert to_file.json()["pieces"] == 2
    whole = read_pcm16(tmp_path / "whole.wav")
    streamed = np.frombuffer(raw.stdout, dtype="<i2")
    assert len(whole) == len(streamed) > 2 * 5 * spec.SAMPLES_PER_FRAME  # two pieces and a pause
    assert np.array_equal(whole, streamed)
    assert (
        wav.stdout[:4] == b"RIFF" and wav.stdout[44:] == raw.stdout
    )  # a pipe gets the same PCM after a header


def test_library_stream_equals_synthesize(converted: Callable[..., Path]) -> None:
    options: dict[str, Any] = {
        "speaker": "ryan",
        "sampling": SamplingOptions(greedy=True),
        "max_frames": 5,
    }
    with TTS(LoadedModel(converted(spec.KIND_CUSTOM_VOICE), threads=1, exact=True)) as tts:
        whole = tts.synthesize(TWO_PIECES, **options)
        seen: dict[int, list[np.ndarray]] = {}
        chunks = list(
            tts.stream(TWO_PIECES, on_codes=lambda i, c: seen.setdefault(i, []).append(c), **options)
        )
    assert len(whole.pieces) == 2 and len(chunks) > 2
    assert np.array_equal(np.concatenate([c.samples for c in chunks]), whole.samples)
    for index, codes in enumerate(whole.codes):
        assert np.array_equal(np.concatenate(seen[index]), codes)


# ---- a saved voice speaks like the inline clone -----------------------------------------------------------
@pytest.mark.parametrize("x_vector_only", [False, True], ids=["icl", "xvector"])
def test_saved_voice_equals_inline_clone(
    x_vector_only: bool, golden, converted: Callable[..., Path], tmp_path: Path
) -> None:
    model = converted(spec.KIND_BASE)
    env = cli_env(tmp_path)
    ref_wav = write_float_wav(tmp_path / "ref.wav", golden.ref_audio("tiny"))
    mode = ["--x-vector-only"] if x_vector_only else []
    made = run_cli(
        ["clone", ref_wav, "--text", REF_TEXT, "--name", "narrator", "--model-dir", model, *mode], env
    )
    assert made.code == 0, made.stderr
    assert "saved voice 'narrator'" in made.out

    speak = [
        "say",
        "Nice to meet you.",
        "-l",
        "English",
        "--model-dir",
        model,
        *FAST,
        "--max-frames",
        "6",
        "-o",
        "-",
    ]
    saved = run_cli([*speak, "--voice", "narrator", "--codes-out", tmp_path / "saved.npy"], env)
    by_path = run_cli([*speak, "--voice", tmp_path / "voices" / "narrator.json"], env)
    inline_ref = ["--ref-audio", ref_wav, "--ref-text", REF_TEXT, *mode]
    inline = run_cli([*speak, *inline_ref, "--codes-out", tmp_path / "inline.npy"], env)
    assert saved.code == by_path.code == inline.code == 0, saved.stderr + by_path.stderr + inline.stderr
    assert np.array_equal(np.load(tmp_path / "saved.npy"), np.load(tmp_path / "inline.npy"))
    assert saved.stdout == inline.stdout == by_path.stdout
    if not x_vector_only:  # the ICL voice reproduces the golden clone codes (same prompt, same reference)
        golden_codes = golden.case("tiny", "clone_icl_stream")["codes"][:6]
        assert np.array_equal(np.load(tmp_path / "saved.npy"), golden_codes)
