"""Designed voices kept as packs (design, then clone), provenance, and cloning from a segment of a recording.

Tiny fixture models: the VoiceDesign one speaks the sample, the Base one clones it. The chain is checked
bit for bit: the pack's codes and embedding are the Base encoders' output for exactly the samples the
VoiceDesign model produces for that seed.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from starlette.testclient import TestClient
from test_cli import assert_clean_error, cli_env, run_cli

from qwen3tts_cli import audio, catalog, cli, spec
from qwen3tts_cli.audio import Qwen3TTSWarning, load_reference_audio
from qwen3tts_cli.convert.converter import convert_checkpoint
from qwen3tts_cli.design_voice import (
    DEFAULT_SAMPLES,
    default_sample_text,
    design_sample,
    design_voice,
    keep_designed_voice,
)
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.model import LoadedModel
from qwen3tts_cli.tts import TTS
from qwen3tts_cli.voices import (
    MAX_PROVENANCE_BYTES,
    VoiceLibrary,
    pack_from_json,
    pack_to_document,
    pack_to_json,
    packs_equal,
    read_pack,
    write_pack,
)

RATE = spec.SAMPLE_RATE
DESCRIPTION = "A warm, low female narrator"
SAMPLE_FRAMES = 40  # library tests cap the sample (3.2 s); the CLI runs the default cap


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoints: dict[str, Path]) -> dict[str, Path]:
    """f32 conversions of the tiny VoiceDesign and Base checkpoints (what --design-model/--model-dir take)."""
    root = tmp_path_factory.mktemp("design-models")
    return {
        kind: convert_checkpoint(tiny_checkpoints[kind], root / kind, "f32")
        for kind in (spec.KIND_VOICE_DESIGN, spec.KIND_BASE)
    }


@pytest.fixture(scope="module")
def designer(folders: dict[str, Path]) -> Iterator[TTS]:
    with TTS(LoadedModel(folders[spec.KIND_VOICE_DESIGN], threads=1)) as tts:  # what `clone -t 1` loads
        yield tts


@pytest.fixture(scope="module")
def base(folders: dict[str, Path]) -> Iterator[TTS]:
    with TTS(LoadedModel(folders[spec.KIND_BASE], threads=1)) as tts:
        yield tts


def _quiet_design(designer: TTS, **options: object):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Qwen3TTSWarning)  # the tiny model never stops: the cap warns
        return design_sample(designer, DESCRIPTION, max_frames=SAMPLE_FRAMES, **options)


def speech_like(seconds: float, rate: int = RATE, channels: int = 1, seed: int = 1) -> np.ndarray:
    """Noise at speech level: neither silent nor anywhere near full scale."""
    rng = np.random.default_rng(seed)
    shape = (round(seconds * rate), channels) if channels > 1 else (round(seconds * rate),)
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)


def write_wav(path: Path, data: np.ndarray, rate: int = RATE) -> Path:
    sf.write(str(path), data, rate, subtype="FLOAT")
    return path


# ---- design, then keep -------------------------------------------------------------------------------------
def test_the_pack_holds_the_base_encoding_of_exactly_the_designed_audio(designer: TTS, base: TTS) -> None:
    sample = _quiet_design(designer, seed=7)
    pack = keep_designed_voice(base, sample, name="narrator")

    # the same request made directly: the VoiceDesign model's audio for seed 7, one utterance
    text = DEFAULT_SAMPLES["english"]
    direct = designer.synthesize(
        text, instruct=DESCRIPTION, language="english", seed=7, split=False, max_frames=SAMPLE_FRAMES
    )
    assert np.array_equal(sample.samples, direct.samples)
    assert len(direct.samples) == SAMPLE_FRAMES * spec.SAMPLES_PER_FRAME and sample.capped
    expected_codes = base.model.codec_encoder.encode(direct.samples)
    assert pack.mode == "icl" and np.array_equal(pack.reference_codes, expected_codes)
    assert np.array_equal(pack.speaker_embedding, base.model.speaker_encoder.embed(direct.samples))
    assert pack.reference_text == text and pack.reference_language == "english"
    assert pack.description == DESCRIPTION and pack.audio_sha256 is None  # no file was cloned

    other = keep_designed_voice(base, _quiet_design(designer, seed=8), name="narrator")
    assert not np.array_equal(other.reference_codes, pack.reference_codes)  # the seed picks the voice


def test_provenance_is_recorded_and_survives_write_and_read(designer: TTS, base: TTS, tmp_path: Path) -> None:
    pack = keep_designed_voice(base, _quiet_design(designer, seed=3), name="narrator", description="Book 1")
    assert pack.description == "Book 1"
    provenance = dict(pack.provenance or {})
    assert provenance == {
        "method": "design",
        "description": DESCRIPTION,
        "sample_text": DEFAULT_SAMPLES["english"],
        "language": "english",
        "seed": 3,
        "design_model": {"id": "voice_design", "quant": "f32"},  # the converted folder's source name
        "base_model": {"id": "base", "quant": "f32"},
        "tool_version": pack.tool_version,
    }
    path = write_pack(pack, tmp_path / "narrator.json")
    again = read_pack(path)
    assert packs_equal(again, pack) and again.provenance == provenance
    assert json.loads(path.read_text())["provenance"] == provenance

    # metadata: outside the payload checksum, and a pack without it is byte-identical to the old format
    plain = replace(pack, provenance=None)
    assert "provenance" not in pack_to_document(plain)
    assert pack_to_document(plain)["payload_sha256"] == pack_to_document(pack)["payload_sha256"]
    old = pack_to_json(plain)
    assert pack_to_json(pack_from_json(old)) == old and pack_from_json(old).provenance is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (5, "JSON object"),
        ({1: "x"}, "string keys"),
        ({"seed": float("nan")}, "plain JSON"),
        ({"x": object()}, "plain JSON"),
        ({"description": "x" * MAX_PROVENANCE_BYTES}, "larger than"),
    ],
    ids=["number", "int-key", "nan", "object", "too-big"],
)
def test_bad_provenance_is_refused(base: TTS, tmp_path: Path, value: object, problem: str) -> None:
    pack = base.clone(write_wav(tmp_path / "r.wav", speech_like(4.0)), "Words.", name="v")
    with pytest.raises(Qwen3TTSError, match=problem):
        replace(pack, provenance=value)
    document = pack_to_document(pack) | {"provenance": value if not isinstance(value, dict) else 5}
    with pytest.raises(Qwen3TTSError, match="in.json.*JSON object"):
        pack_from_json(json.dumps(document), source="in.json")


def test_a_designed_voice_speaks_with_the_base_model(designer: TTS, base: TTS) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Qwen3TTSWarning)
        pack = design_voice(designer, base, DESCRIPTION, name="n", seed=5, max_frames=SAMPLE_FRAMES)
    two_steps = keep_designed_voice(base, _quiet_design(designer, seed=5), name="n")
    assert np.array_equal(pack.reference_codes, two_steps.reference_codes)
    spoken = base.synthesize(
        "A new line in the kept voice.", voice=pack, language="english", seed=1, max_frames=3
    )
    again = base.synthesize(
        "A new line in the kept voice.", voice=two_steps, language="english", seed=1, max_frames=3
    )
    assert len(spoken.samples) == 3 * spec.SAMPLES_PER_FRAME and np.abs(spoken.samples).max() > 0
    assert np.array_equal(spoken.samples, again.samples)


def test_sample_text_language_and_model_checks(designer: TTS, base: TTS) -> None:
    german = _quiet_design(designer, seed=1, language="german")
    assert german.text == DEFAULT_SAMPLES["german"] and german.language == "german"
    own = _quiet_design(designer, seed=1, text="My own words for the sample.")
    assert own.text == "My own words for the sample." and own.language == "auto"
    assert default_sample_text("auto") == DEFAULT_SAMPLES["english"]
    assert set(DEFAULT_SAMPLES) == set(spec.LANGUAGE_IDS)  # a default line for every language
    with pytest.raises(Qwen3TTSError, match="VoiceDesign model"):
        design_sample(base, DESCRIPTION)
    with pytest.raises(Qwen3TTSError, match="needs a description"):
        design_sample(designer, "  ")
    with pytest.raises(Qwen3TTSError, match="sample text is empty"):
        design_sample(designer, DESCRIPTION, text=" ")
    random_seed = _quiet_design(designer)
    assert isinstance(random_seed.seed, int) and 0 <= random_seed.seed < 2**31


def test_the_base_model_for_a_design_model_is_the_one_of_its_size() -> None:
    design = catalog.default_model(catalog.MODE_DESIGN)
    assert catalog.model_of_kind(spec.KIND_BASE, design.size_tag) == catalog.get("1.7b-base")
    assert catalog.model_of_kind(spec.KIND_BASE, "tiny") is None  # then --model/--model-dir is asked for


# ---- the CLI -----------------------------------------------------------------------------------------------
def test_clone_design_end_to_end(designer: TTS, base: TTS, folders: dict[str, Path], tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    made = run_cli(
        [
            "clone",
            "--design",
            DESCRIPTION,
            "--name",
            "narrator",
            "--seed",
            "11",
            "--keep-sample",
            tmp_path / "sample.wav",
            "--model-dir",
            folders[spec.KIND_BASE],
            "--design-model",
            folders[spec.KIND_VOICE_DESIGN],
            "-t",
            "1",
            "--json",
        ],
        env,
    )
    assert made.code == 0, made.stderr
    assert "Traceback" not in made.stderr and "VoiceDesign model is closed" in made.stderr
    info = made.json()
    assert info["name"] == "narrator" and info["mode"] == "icl"
    assert info["provenance"]["method"] == "design" and info["provenance"]["seed"] == 11
    pack = VoiceLibrary(tmp_path / "voices").show("narrator")
    assert pack.description == DESCRIPTION and pack.provenance == info["provenance"]

    # the same design in the library (default cap, same seed, one thread): the same sample and voice
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Qwen3TTSWarning)
        sample = design_sample(designer, DESCRIPTION, seed=11)
    kept, rate = sf.read(str(tmp_path / "sample.wav"), dtype="float32")
    assert rate == RATE and len(kept) == len(sample.samples)
    assert np.abs(kept - np.clip(sample.samples, -1, 1)).max() <= 1 / 32767  # 16-bit copy of the sample
    assert np.array_equal(pack.reference_codes, keep_designed_voice(base, sample).reference_codes)

    shown = run_cli(["voices", "show", "narrator"], env)
    assert shown.code == 0, shown.stderr
    assert "provenance:" in shown.out and "method:" in shown.out and "design" in shown.out
    assert f"description:       {DESCRIPTION}" in shown.out and "seed:" in shown.out and "11" in shown.out

    speak = run_cli(
        ["say", "Chapter one.", "--voice", "narrator", "--model-dir", folders[spec.KIND_BASE], "-t", "1",
         "--max-frames", "2", "--format", "pcm", "-o", "-"],
        env,
    )  # fmt: skip
    assert speak.code == 0 and len(speak.stdout) == 2 * spec.SAMPLES_PER_FRAME * 2, speak.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["ref.wav", "--design", DESCRIPTION, "--name", "x"], "REFERENCE recording and --design both given"),
        (["--name", "x"], "nothing to clone"),
        (["--design", DESCRIPTION, "--name", "x", "--start", "1"], "--start cannot be used with --design"),
        (["--design", DESCRIPTION, "--name", "x", "--x-vector-only"], "--x-vector-only cannot be used"),
        (["ref.wav", "--name", "x", "--seed", "3"], "--seed only go with --design"),
        (["ref.wav", "--name", "x", "--keep-sample", "s.wav"], "--keep-sample only go with --design"),
        (["--design", " ", "--name", "x"], "--design needs a description"),
        (["--design", DESCRIPTION], "needs a name"),
    ],
    ids=["both", "neither", "design-start", "design-xvector", "seed", "keep-sample", "blank", "no-name"],
)
def test_clone_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args, fragment
) -> None:
    monkeypatch.setenv("QWEN3TTS_VOICES_DIR", str(tmp_path / "voices"))
    code = cli.run(["clone", *args])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and fragment in errors[0], err
    assert "Traceback" not in err and not (tmp_path / "voices").exists()


def test_clone_design_checks_language_and_sample_path_before_any_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QWEN3TTS_CACHE", str(tmp_path / "empty-cache"))  # a model lookup would fail
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for args, fragment in (
        (["--language", "klingon"], "unknown language 'klingon'"),
        (["--keep-sample", tmp_path / "no" / "s.wav"], "output folder does not exist"),
    ):
        code = cli.run(["clone", "--design", DESCRIPTION, "--name", "n", *map(str, args)])
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("error: ") and fragment in err, err
    assert not (tmp_path / "empty-cache").exists()


# ---- cloning from a segment --------------------------------------------------------------------------------
def test_a_cut_equals_cloning_the_pre_cut_file(base: TTS, tmp_path: Path) -> None:
    data = speech_like(6.0)
    whole = write_wav(tmp_path / "whole.wav", data)
    cut = write_wav(tmp_path / "cut.wav", data[1 * RATE : int(4.5 * RATE)])
    from_segment = base.clone(whole, "Words of the part.", name="a", start=1.0, end=4.5)
    from_file = base.clone(cut, "Words of the part.", name="a")
    assert np.array_equal(from_segment.speaker_embedding, from_file.speaker_embedding)
    assert np.array_equal(from_segment.reference_codes, from_file.reference_codes)
    assert from_segment.provenance == {"method": "clone", "segment": [1.0, 4.5]}
    assert from_segment.audio_sha256 == load_reference_audio(whole).sha256  # it names the recording
    assert from_file.provenance is None

    # at another rate and with two channels the cut is made before downmixing and resampling
    stereo = speech_like(6.0, 44_100, channels=2)
    whole = write_wav(tmp_path / "s.wav", stereo, 44_100)
    cut = write_wav(tmp_path / "s-cut.wav", stereo[2 * 44_100 :], 44_100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Qwen3TTSWarning)  # two channels
        tail = load_reference_audio(whole, start=2.0)
        assert np.array_equal(tail.samples, load_reference_audio(cut).samples)
    assert tail.segment == (2.0, 6.0)


@pytest.mark.parametrize(
    ("start", "end", "fragment"),
    [
        (3.0, 2.0, "not before its end"),
        (2.0, 2.0, "not before its end"),
        (1.0, 7.5, "end 7.5 s is past the end"),
        (6.5, None, "start 6.5 s is past the end"),
        (2.0, 2.5, "is 0.50 s; at least 1 s"),
        (-1.0, None, "must be a number of seconds >= 0"),
        (float("nan"), None, "must be a number of seconds >= 0"),
    ],
)
def test_bad_segments_are_clear_errors(
    tmp_path: Path, start: float, end: float | None, fragment: str
) -> None:
    path = write_wav(tmp_path / "r.wav", speech_like(6.0))
    with pytest.raises(Qwen3TTSError, match=fragment) as info:
        load_reference_audio(path, start=start, end=end)
    assert "0-6.00 s" in info.value.hint or "widen" in info.value.hint


def test_cli_segment_out_of_range_is_one_error_line(folders: dict[str, Path], tmp_path: Path) -> None:
    path = write_wav(tmp_path / "r.wav", speech_like(6.0))
    result = run_cli(
        ["clone", path, "--text", "x", "--name", "v", "--start", "5", "--end", "9", "--model-dir",
         folders[spec.KIND_BASE], "-t", "1"],
        cli_env(tmp_path),
    )  # fmt: skip
    assert result.code == 1
    assert_clean_error(result, "segment end 9 s is past the end", "r.wav (6.00 s long)")
    assert not (tmp_path / "voices" / "v.json").exists()


# ---- warnings: short and clipped ---------------------------------------------------------------------------
def _warnings_of(path: Path, **cut: float) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_reference_audio(path, **cut)
    return [str(w.message) for w in caught if issubclass(w.category, Qwen3TTSWarning)]


def clipped(data: np.ndarray, share: float, seed: int = 2) -> np.ndarray:
    """`share` of the samples driven to full scale, as an overdriven input would."""
    rng = np.random.default_rng(seed)
    out = data.copy()
    hits = rng.choice(len(out), size=int(share * len(out)), replace=False)
    out[hits] = np.sign(rng.standard_normal(len(hits))).astype(np.float32)
    return out


def test_short_and_clipped_references_warn_and_a_clean_one_does_not(tmp_path: Path) -> None:
    clean = speech_like(5.0)
    assert _warnings_of(write_wav(tmp_path / "clean.wav", clean)) == []
    short = _warnings_of(write_wav(tmp_path / "long.wav", clean), start=1.0, end=3.0)
    assert len(short) == 1 and "long.wav [1-3 s]: only 2.0 s of audio" in short[0]

    # 16-bit PCM at full scale (32767 and -32768) counts as well as float 1.0
    sf.write(str(tmp_path / "clip.wav"), clipped(clean, 0.01), RATE, subtype="PCM_16")
    loud = _warnings_of(tmp_path / "clip.wav")
    assert len(loud) == 1 and "clipped (1.0% of the samples at full scale)" in loud[0]
    barely = _warnings_of(write_wav(tmp_path / "few.wav", clipped(clean, 0.0005)))
    assert barely == []  # a few full-scale peaks (a peak-normalized file) are not clipping
    # the segment is judged, not the whole file: a clean part of a clipped recording is quiet
    mixed = np.concatenate([clean, clipped(speech_like(5.0, seed=3), 0.02)])
    assert _warnings_of(write_wav(tmp_path / "mixed.wav", mixed), end=5.0) == []
    assert audio.clipped_share(clipped(clean, 0.02)) == pytest.approx(0.02)


def test_cli_clipped_reference_is_one_warning_line(folders: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "loud.wav"
    sf.write(str(path), clipped(speech_like(5.0), 0.01), RATE, subtype="PCM_16")
    result = run_cli(
        [
            "clone",
            path,
            "--text",
            "Words.",
            "--name",
            "loud",
            "--model-dir",
            folders[spec.KIND_BASE],
            "-t",
            "1",
        ],
        cli_env(tmp_path),
    )
    assert result.code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "clipped" in lines[0], result.stderr


# ---- the server's voice upload takes the same segment ------------------------------------------------------
def test_server_upload_with_start_and_end(folders: dict[str, Path], tmp_path: Path) -> None:
    from qwen3tts_cli.server.app import create_app
    from qwen3tts_cli.server.synthesis import ServerSettings

    data = speech_like(6.0)
    write_wav(tmp_path / "whole.wav", data)
    write_wav(tmp_path / "cut.wav", data[RATE : 4 * RATE])
    voices = VoiceLibrary(tmp_path / "voices")
    with TTS(LoadedModel(folders[spec.KIND_BASE], threads=1), voices) as tts:
        client = TestClient(create_app(tts, ServerSettings(model_id="base")), raise_server_exceptions=False)

        def upload(name: str, **fields: str):
            body = (tmp_path / "whole.wav").read_bytes()
            return client.post(
                "/v1/audio/voices",
                data={"name": name, "ref_text": "Words.", **fields},
                files={"audio_sample": ("whole.wav", body, "audio/wav")},
            )

        created = upload("part", start="1", end="4")
        assert created.status_code == 201, created.text
        assert created.json()["reference_seconds"] == pytest.approx(3.0, abs=0.1)
        expected = tts.clone(tmp_path / "cut.wav", "Words.", name="part")
        stored = voices.show("part")
        assert np.array_equal(stored.reference_codes, expected.reference_codes)
        assert stored.provenance == {"method": "clone", "segment": [1.0, 4.0]}

        late = upload("late", start="5.5")
        assert late.status_code == 400 and late.json()["error"]["param"] == "audio_sample"
        assert "is 0.50 s; at least 1 s" in late.json()["error"]["message"]
        assert "/tmp" not in late.text and "qwen3tts-upload" not in late.text
        bad = upload("bad", end="soon")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "end"
        assert voices.names() == ["part"]
