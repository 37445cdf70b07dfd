"""Quantized models run the fast path (q8_0 KV cache, 8-bit heads); f32/f16 models and `exact` do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qwen3tts_cli.convert.converter import convert_checkpoint
from qwen3tts_cli.model import LoadedModel
from qwen3tts_cli.tts import TTS, SamplingOptions

TEXT = "A short sentence for the fast path."


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, checkpoint_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fast-path")
    checkpoint = checkpoint_factory("custom_voice", "tiny-hd32", seed=4)
    return {quant: convert_checkpoint(checkpoint, root / quant, quant) for quant in ("q8_0", "f16")}


def _codes(model: LoadedModel) -> np.ndarray:
    tts = TTS(model)
    result = tts.synthesize(
        TEXT, speaker="vivian", language="english", max_frames=12, sampling=SamplingOptions(greedy=True)
    )
    assert result.seconds > 0 and np.isfinite(result.samples).all()
    return result.codes[0]


def test_quantized_model_uses_q8_kv_and_8bit_heads(folders: dict[str, Path]) -> None:
    with LoadedModel(folders["q8_0"], threads=2) as fast, LoadedModel(folders["q8_0"], exact=True) as exact:
        assert (fast.talker.options.kv_type, fast.talker.options.flash_attn) == ("q8_0", "on")
        assert fast.tables.int8_heads and not exact.tables.int8_heads
        assert exact.talker.options.kv_type_id() == 0  # f32 KV, flash attention off: the parity mode
        fast_codes, exact_codes = _codes(fast), _codes(exact)
    # random weights have no margin, so a greedy run may drift once a code differs; the first frame is
    # decided by the same prompt in both, and most codes agree
    assert fast_codes.shape == exact_codes.shape == (12, 16)
    assert np.mean(fast_codes[0] == exact_codes[0]) >= 0.75
    assert fast_codes[0, 0] == exact_codes[0, 0]


def test_f16_model_keeps_f16_kv_and_f32_heads(folders: dict[str, Path]) -> None:
    with LoadedModel(folders["f16"], threads=2) as model:
        assert model.talker.options.kv_type == "f16" and not model.tables.int8_heads
        assert _codes(model).shape == (12, 16)


def test_tiny_heads_too_narrow_for_q8_kv_fall_back_to_f16(tmp_path: Path, checkpoint_factory) -> None:
    folder = convert_checkpoint(checkpoint_factory("custom_voice", "tiny"), tmp_path / "m", "q8_0")
    with LoadedModel(folder, threads=1) as model:  # head_dim 16: not a whole q8_0 block
        assert model.talker.options.kv_type == "f16" and model.tables.int8_heads
