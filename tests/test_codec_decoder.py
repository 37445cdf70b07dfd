"""The streaming codec-decoder graph: official goldens, chunked == one-shot, state handling, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from qwen3tts_cli import spec
from qwen3tts_cli.convert.checkpoint import Checkpoint
from qwen3tts_cli.convert.codec_decoder import (
    AUDIO_OUTPUT,
    CODES_INPUT,
    PAST_PREFIX,
    PRESENT_PREFIX,
    write_decoder_onnx,
)
from qwen3tts_cli.convert.onnx_graph import GraphBuilder
from qwen3tts_cli.engine.decoder import StreamingDecoder
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.fixtures.checkpoint import build_checkpoint

GOLDEN = Path(__file__).parent / "golden"
# every fixture size ships the same codec (tests/test_fixtures.py checks it), so one size covers the decoder
SIZES = ("tiny",)


@pytest.fixture(scope="module", params=SIZES)
def decoder_onnx(request, tmp_path_factory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp(f"ckpt-{request.param}")
    build_checkpoint(folder, "custom_voice", request.param, seed=0)
    out = folder / "codec_decoder.onnx"
    write_decoder_onnx(Checkpoint(folder), out)
    return request.param, out


@pytest.fixture(scope="module")
def decoder(decoder_onnx) -> StreamingDecoder:
    return StreamingDecoder(decoder_onnx[1], threads=1)


def load_golden(size: str, name: str) -> dict[str, np.ndarray]:
    path = GOLDEN / size / "components" / name
    assert path.is_file(), f"golden {path} missing: run tests/parity/make_goldens.py"
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def random_codes(frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, spec.CODEBOOK_SIZE, (frames, spec.NUM_CODE_GROUPS))


# ---- parity with the official decoder -----------------------------------------------------------------
def test_one_shot_matches_official_decode_37_frames(decoder_onnx, decoder):
    golden = load_golden(decoder_onnx[0], "decoder_37.npz")
    wav = decoder.decode(golden["codes"], chunk_frames=37)
    assert wav.dtype == np.float32 and wav.shape == golden["wav_forward"].shape
    assert np.abs(wav - golden["wav_forward"]).max() <= 1e-4
    assert np.abs(wav - golden["wav_api"]).max() <= 1e-4


def test_340_frames_match_official_full_forward(decoder_onnx, decoder):
    golden = load_golden(decoder_onnx[0], "decoder_340.npz")
    for chunk in (340, 25):
        wav = decoder.decode(golden["codes"], chunk_frames=chunk)
        assert np.abs(wav - golden["wav_full"]).max() <= 1e-4, f"chunk {chunk}"


# ---- streaming ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 3, 4, 12])
def test_streaming_equals_one_shot(decoder, chunk):
    codes = random_codes(37, seed=11)
    one_shot = decoder.decode(codes, chunk_frames=37)
    streamed = decoder.decode(codes, chunk_frames=chunk)
    assert streamed.shape == (37 * spec.SAMPLES_PER_FRAME,)
    assert np.abs(streamed - one_shot).max() <= 1e-5
    assert np.abs(one_shot).max() > 0.05  # a real signal, not silence that would match trivially


def test_long_stream_crosses_the_attention_window(decoder):
    """150 frames > 2 x window 72: the rolling KV cache and position counter must stay exact."""
    codes = random_codes(150, seed=12)
    one_shot = decoder.decode(codes, chunk_frames=150)
    assert np.abs(decoder.decode(codes, chunk_frames=7) - one_shot).max() <= 1e-5


def test_push_carries_state_and_reset_forgets_it(decoder):
    codes = random_codes(10, seed=13)
    decoder.reset()
    first = np.concatenate([decoder.push(codes[:4]), decoder.push(codes[4:])])
    assert decoder.frames_decoded == 10
    decoder.reset()
    assert decoder.frames_decoded == 0
    again = decoder.decode(codes, chunk_frames=10)
    assert np.abs(first - again).max() <= 1e-5
    # the same frames decoded after some history sound different: the state really is carried
    decoder.reset()
    decoder.push(random_codes(5, seed=14))
    assert np.abs(decoder.push(codes[:4]) - first[: 4 * spec.SAMPLES_PER_FRAME]).max() > 1e-3
    decoder.reset()


def test_output_is_clamped(decoder):
    wav = decoder.decode(random_codes(20, seed=15))
    assert np.all(np.abs(wav) <= 1.0)


# ---- graph interface ------------------------------------------------------------------------------------
def test_graph_interface(decoder_onnx):
    model = onnx.load(str(decoder_onnx[1]))
    onnx.checker.check_model(model)
    inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    assert CODES_INPUT in inputs and AUDIO_OUTPUT in outputs
    states = {n[len(PAST_PREFIX) :] for n in inputs if n.startswith(PAST_PREFIX)}
    assert {n[len(PRESENT_PREFIX) :] for n in outputs if n.startswith(PRESENT_PREFIX)} == states
    assert "position" in states and "layer0.key" in states and "block3.res2.conv1" in states
    assert model.opset_import[0].version >= 17


# ---- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (np.zeros((4, 15), np.int64), "shape"),
        (np.zeros((16,), np.int64), "shape"),
        (np.zeros((1, 4, 16), np.int64), "shape"),
        (np.full((2, 16), 2048, np.int64), "[0, 2048)"),
        (np.full((2, 16), -1, np.int64), "[0, 2048)"),
        (np.zeros((2, 16), np.float32) + 0.5, "integers"),
    ],
)
def test_bad_codes_raise_clear_errors(decoder, codes, message):
    with pytest.raises(
        Qwen3TTSError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        decoder.push(codes)
    with pytest.raises(Qwen3TTSError):
        decoder.decode(codes)


def test_empty_push_returns_no_audio(decoder):
    assert decoder.push(np.zeros((0, 16), np.int64)).shape == (0,)


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(Qwen3TTSError, match="does not exist"):
        StreamingDecoder(tmp_path / "nope.onnx")


def test_bad_chunk_size(decoder):
    with pytest.raises(Qwen3TTSError, match="chunk"):
        decoder.decode(random_codes(3, seed=1), chunk_frames=-1)


def test_wrong_or_corrupt_model_file_is_a_clear_error(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    with pytest.raises(Qwen3TTSError, match="cannot load"):
        StreamingDecoder(corrupt)
    g = GraphBuilder("other")
    g.add_output(g.op("Identity", g.add_input("x", np.float32, [1])), "y", np.float32, [1])
    other = tmp_path / "other.onnx"
    g.save(other)
    with pytest.raises(Qwen3TTSError, match="not a qwen3tts codec decoder"):
        StreamingDecoder(other)
