"""Log-mel front end and ECAPA-TDNN speaker encoder (ONNX): parity with the official mel and embedding.

Goldens: `tests/golden/<size>/components/speaker.npz` holds the official `mel_spectrogram` output as
`extract_speaker_embedding` computes it (time-major) and the official embedding of the Base fixture.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from qwen3tts_cli import spec
from qwen3tts_cli.convert.checkpoint import Checkpoint
from qwen3tts_cli.convert.speaker import SpeakerShape, write_speaker_onnx
from qwen3tts_cli.engine import mel as melmod
from qwen3tts_cli.engine.encoder import SpeakerEncoder
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.fixtures.checkpoint import build_checkpoint

GOLDEN = Path(__file__).parent / "golden"
SIZES = ("tiny", "tiny-wide")  # the embedding width follows the talker width, so each size has a golden
MEL_TOLERANCE = 1e-4
EMBEDDING_TOLERANCE = 1e-4


def _fixture_seed(size: str, kind: str) -> int:
    return int(json.loads((GOLDEN / size / "fixture.json").read_text())["checkpoints"][kind]["seed"])


def _golden(size: str) -> dict[str, np.ndarray]:
    speaker = dict(np.load(GOLDEN / size / "components" / "speaker.npz"))
    speaker.setdefault("wav", np.load(GOLDEN / size / "ref_audio.npz")["wav"])
    return speaker


@pytest.fixture(scope="module", params=SIZES)
def converted(request, tmp_path_factory) -> tuple[str, Path, Checkpoint]:
    size = request.param
    folder = tmp_path_factory.mktemp(f"ckpt-{size}")
    build_checkpoint(folder, spec.KIND_BASE, size, seed=_fixture_seed(size, spec.KIND_BASE))
    ckpt = Checkpoint(folder)
    out = folder / "speaker_encoder.onnx"
    write_speaker_onnx(ckpt, out)
    return size, out, ckpt


@pytest.fixture(scope="module")
def encoder(converted) -> tuple[str, SpeakerEncoder]:
    size, path, _ = converted
    return size, SpeakerEncoder(path, threads=1)


# ---- mel front end ------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_mel_matches_official(size):
    golden = _golden(size)
    ours = melmod.log_mel(golden["wav"])
    assert ours.dtype == np.float32
    assert ours.shape == golden["mel"].shape == (121, 128)  # floor((31200 + 768 - 1024) / 256) + 1
    assert np.abs(ours - golden["mel"]).max() <= MEL_TOLERANCE


def test_frame_count_formula():
    for samples in (385, 1279, 1280, 31200, 120_017):
        assert melmod.log_mel(np.zeros(samples, np.float32)).shape[0] == melmod.num_mel_frames(samples)
    assert melmod.num_mel_frames(31200) == 121


def test_min_samples_for_frames_is_tight():
    for frames in (1, 5, 40):
        samples = melmod.min_samples_for_frames(frames)
        assert melmod.num_mel_frames(samples) >= frames
        if samples - 1 > melmod.PAD:
            assert melmod.num_mel_frames(samples - 1) < frames


def test_window_is_periodic_hann():
    window = melmod.periodic_hann(1024)
    assert window[0] == 0.0 and window[512] == pytest.approx(1.0)
    assert window[1] == pytest.approx(window[1023])  # periodic: w[n] == w[N - n], no trailing zero


def test_filterbank_is_slaney_normalised():
    filters = melmod.mel_filterbank()
    assert filters.shape == (128, 513)
    assert (filters >= 0).all() and (filters.sum(axis=1) > 0).all()
    # Slaney norm: each triangle has height 2 / (its width in Hz), i.e. unit area in Hz (up to the
    # error of summing a triangle at 23.4 Hz bin spacing, large for the narrow low filters)
    areas = filters.sum(axis=1) * (24000 / 1024)
    np.testing.assert_allclose(areas, 1.0, atol=0.1)
    np.testing.assert_allclose(areas[64:], 1.0, atol=0.04)
    # the scale is linear below 1 kHz (200/3 Hz per mel) and logarithmic above
    assert melmod.hz_to_mel(np.array([500.0]))[0] == pytest.approx(7.5)
    assert melmod.mel_to_hz(melmod.hz_to_mel(np.array([50.0, 1000.0, 7000.0]))) == pytest.approx(
        [50, 1000, 7000]
    )


def test_mel_rejects_stereo_and_tiny_input():
    with pytest.raises(Qwen3TTSError, match="mono"):
        melmod.log_mel(np.zeros((2, 5000), np.float32))
    with pytest.raises(Qwen3TTSError, match="too short"):
        melmod.log_mel(np.zeros(melmod.PAD, np.float32))


# ---- speaker encoder -----------------------------------------------------------------------------------
def test_embedding_from_official_mel(encoder):
    size, enc = encoder
    golden = _golden(size)
    ours = enc.embed_mel(golden["mel"])
    assert ours.shape == golden["embedding"].shape
    assert np.abs(ours - golden["embedding"]).max() <= EMBEDDING_TOLERANCE


def test_embedding_end_to_end_from_audio(encoder):
    size, enc = encoder
    golden = _golden(size)
    ours = enc.embed(golden["wav"])
    assert ours.dtype == np.float32
    assert np.abs(ours - golden["embedding"]).max() <= EMBEDDING_TOLERANCE


def test_embedding_width_is_talker_hidden(converted, encoder):
    _, _, ckpt = converted
    _, enc = encoder
    assert enc.embedding_dim == ckpt.talker_shape.hidden
    assert enc.embed(_golden(converted[0])["wav"]).shape == (ckpt.talker_shape.hidden,)


def test_shortest_accepted_audio(encoder):
    _, enc = encoder
    wav = np.random.default_rng(0).uniform(-0.3, 0.3, enc.min_samples).astype(np.float32)
    assert np.isfinite(enc.embed(wav)).all()
    with pytest.raises(Qwen3TTSError, match="too short"):
        enc.embed(wav[:-1])
    with pytest.raises(Qwen3TTSError, match="empty"):
        enc.embed(np.zeros(0, np.float32))


def test_graph_interface(converted):
    _, path, _ = converted
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["mel"]
    assert [o.name for o in model.graph.output] == ["embedding"]
    assert {p.key: p.value for p in model.metadata_props}["qwen3tts.min_frames"] == "5"


def test_min_frames_follows_reflect_padding():
    # the widest "same" pad of the default config is k3 dilation 4: 4 frames each side -> 5 frames needed
    assert SpeakerShape.from_config({}).min_frames() == 5
    assert SpeakerShape.from_config({"enc_dilations": [1, 2, 3, 8, 1]}).min_frames() == 9


def test_non_base_checkpoint_has_no_speaker_encoder(tmp_path):
    build_checkpoint(tmp_path, spec.KIND_CUSTOM_VOICE, "tiny", seed=0)
    with pytest.raises(Qwen3TTSError, match="no speaker encoder"):
        write_speaker_onnx(Checkpoint(tmp_path), tmp_path / "speaker_encoder.onnx")
