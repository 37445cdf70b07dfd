"""Codec encoder (Mimi + split RVQ) as ONNX: parity with the official codes, frame counts, causality, errors.

The golden codes were computed by the official `Qwen3TTSTokenizer.encode` on the seeded fixture checkpoint
(tests/golden/README.md); here the same checkpoint is rebuilt with numpy, converted and run with onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from qwen3tts_cli import spec
from qwen3tts_cli.convert.checkpoint import Checkpoint
from qwen3tts_cli.convert.codec_encoder import MimiEncoderShape, dequantized_codebook, write_encoder_onnx
from qwen3tts_cli.engine.encoder import CodecEncoder
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.fixtures.checkpoint import build_checkpoint

GOLDEN = Path(__file__).parent / "golden"
# tiny and tiny-wide share a byte-identical codec, so the encoder golden exists for tiny only
SIZES = ("tiny",)
KIND = spec.KIND_CUSTOM_VOICE  # the kind whose codec produced the golden (identical in every kind)


def _fixture_seed(size: str, kind: str) -> int:
    return int(json.loads((GOLDEN / size / "fixture.json").read_text())["checkpoints"][kind]["seed"])


def _reference_wav(size: str) -> np.ndarray:
    return np.load(GOLDEN / size / "ref_audio.npz")["wav"]


@pytest.fixture(scope="module", params=SIZES)
def converted(request, tmp_path_factory) -> tuple[str, Path]:
    """(size, codec_encoder.onnx) converted from the fixture checkpoint the goldens were made from."""
    size = request.param
    folder = tmp_path_factory.mktemp(f"ckpt-{size}")
    build_checkpoint(folder, KIND, size, seed=_fixture_seed(size, KIND))
    out = folder / "codec_encoder.onnx"
    write_encoder_onnx(Checkpoint(folder), out)
    return size, out


@pytest.fixture(scope="module")
def encoder(converted) -> tuple[str, CodecEncoder]:
    size, path = converted
    return size, CodecEncoder(path, threads=1)


def test_codes_equal_official_golden(encoder):
    size, enc = encoder
    golden = np.load(GOLDEN / size / "components" / "encoder.npz")
    codes = enc.encode(_reference_wav(size))
    assert codes.dtype == np.int64
    assert codes.shape == golden["codes"].shape == (17, 16)  # ceil(31200 / 1920)
    mismatches = np.argwhere(codes != golden["codes"])
    assert mismatches.size == 0, f"codes differ at (frame, group) {mismatches[:10].tolist()}"


@pytest.mark.parametrize("samples", [1, 1919, 1920, 1921, 3840, 5761])
def test_frame_count_is_ceil_of_samples_over_1920(encoder, samples):
    _, enc = encoder
    wav = np.random.default_rng(samples).uniform(-0.5, 0.5, samples).astype(np.float32)
    codes = enc.encode(wav)
    assert codes.shape == (-(-samples // spec.SAMPLES_PER_FRAME), spec.NUM_CODE_GROUPS)
    assert codes.min() >= 0 and codes.max() < spec.CODEBOOK_SIZE


def test_encoder_is_causal(encoder):
    """Every layer is causal, so a prefix of whole frames gets exactly the leading codes of the full clip."""
    size, enc = encoder
    wav = _reference_wav(size)
    full = enc.encode(wav)
    prefix = enc.encode(wav[: 8 * spec.SAMPLES_PER_FRAME])
    np.testing.assert_array_equal(prefix, full[:8])


def test_graph_declares_its_interface(converted):
    _, path = converted
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["waveform"]
    assert [o.name for o in model.graph.output] == ["codes"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["qwen3tts.num_quantizers"] == "16"
    assert meta["qwen3tts.samples_per_frame"] == "1920"


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (np.zeros(0, np.float32), "empty"),
        (np.zeros((2, 4000), np.float32), "mono"),
        (np.zeros(4000, np.int16), "float"),
        (np.full(4000, np.nan, np.float32), "NaN"),
    ],
)
def test_bad_audio_gives_a_clear_error(encoder, bad, fragment):
    _, enc = encoder
    with pytest.raises(Qwen3TTSError, match=fragment):
        enc.encode(bad)


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(Qwen3TTSError, match="does not exist"):
        CodecEncoder(tmp_path / "nope.onnx")


def test_codebook_divides_by_clamped_usage():
    embed_sum = np.array([[2.0, 4.0], [1.0, 1.0], [3.0, 0.0]], np.float32)
    usage = np.array([2.0, 0.0, -1.0], np.float32)
    expected = np.array([[1.0, 2.0], [1e5, 1e5], [3e5, 0.0]], np.float32)
    np.testing.assert_allclose(dequantized_codebook(embed_sum, usage), expected, rtol=1e-6)


def test_config_defaults_fill_a_sparse_released_config():
    shape = MimiEncoderShape.from_config({"upsampling_ratios": [8, 6, 5, 4]})
    assert shape.ratios == (4, 5, 6, 8)  # the encoder downsamples in reverse order
    assert (shape.heads, shape.head_dim, shape.layers, shape.num_quantizers) == (8, 64, 8, 32)
    assert shape.rvq_projects  # 512 -> 256 input projection


def test_unsupported_config_is_rejected():
    with pytest.raises(Qwen3TTSError, match="non-causal"):
        MimiEncoderShape.from_config({"use_causal_conv": False})
