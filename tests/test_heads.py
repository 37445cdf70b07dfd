"""8-bit code-predictor heads (convert/heads.py layout, engine/heads.py MatMulNBits sessions).

The tiny fixture's predictor width (64) is a multiple of the 32-input block, so its q8_0 conversion stores
8-bit heads; f16/f32 conversions store none. At run time the 8-bit logits stay within 2% of the f32 ones,
rows do not depend on the rest of the batch (so batched == solo codes), and exact mode keeps f32 heads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from qwen3tts_cli import spec
from qwen3tts_cli.convert.converter import convert_checkpoint
from qwen3tts_cli.convert.heads import BLOCK, can_quantize, dequantize_head, quantize_head
from qwen3tts_cli.convert.safetensors import SafetensorsFile, write_safetensors
from qwen3tts_cli.engine.tables import (
    MTP_PROJECTION_BIAS,
    MTP_PROJECTION_Q8,
    MTP_PROJECTION_WEIGHT,
    Tables,
    predictor_head_name,
    predictor_head_q8_names,
)


@pytest.fixture(scope="module")
def converted(
    checkpoint_factory: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """quant -> the tiny CustomVoice fixture converted at that quant (the golden seed, as test_batch's
    prompts expect)."""
    folders: dict[str, Path] = {}

    def get(quant: str) -> Path:
        if quant not in folders:
            source = checkpoint_factory(spec.KIND_CUSTOM_VOICE, "tiny")
            out = tmp_path_factory.mktemp(f"heads-{quant}") / "model"
            folders[quant] = convert_checkpoint(source, out, quant, threads=1)
        return folders[quant]

    return get


def hidden_states(tables: Tables, rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, tables.predictor_hidden)).astype(np.float32)


# ---- quantisation math ------------------------------------------------------------------------------------
def test_quantize_head_round_trip_is_within_half_a_step() -> None:
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((40, 3 * BLOCK)).astype(np.float32) * 0.05
    weight[3, :BLOCK] = 0.0  # an all-zero block
    codes, scales = quantize_head(weight)
    assert codes.dtype == np.uint8 and codes.shape == (40, 3, BLOCK)
    assert scales.dtype == np.float32 and scales.shape == (40, 3)
    assert codes.min() >= 1 and scales[3, 0] == 0 and np.all(codes[3, 0] == 128)
    error = np.abs(dequantize_head(codes, scales) - weight).reshape(40, 3, BLOCK)
    assert np.all(error <= scales[..., None] * 0.5 + 1e-7)


def test_widths_that_are_not_whole_blocks_are_refused() -> None:
    assert can_quantize(64) and not can_quantize(48) and not can_quantize(0)
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_head(np.zeros((4, 48), dtype=np.float32))


# ---- conversion --------------------------------------------------------------------------------------------
def test_integer_quant_stores_8bit_heads_and_keeps_the_f32_ones(converted: Callable[[str], Path]) -> None:
    stored = SafetensorsFile(converted("q8_0") / "tables.safetensors")
    for group in range(1, spec.NUM_CODE_GROUPS):
        codes, scales = predictor_head_q8_names(group)
        n, k = stored.shape(predictor_head_name(group))
        assert stored.dtype(codes) == "U8" and stored.shape(codes) == (n, k // BLOCK, BLOCK)
        assert stored.dtype(scales) == "F32" and stored.shape(scales) == (n, k // BLOCK)
        expected = quantize_head(stored.read(predictor_head_name(group)))
        np.testing.assert_array_equal(stored.read(codes), expected[0])
        np.testing.assert_array_equal(stored.read(scales), expected[1])


@pytest.mark.parametrize("quant", ["f16", "f32"])
def test_float_quants_store_no_8bit_heads(quant: str, converted: Callable[[str], Path]) -> None:
    folder = converted(quant)
    assert not [name for name in SafetensorsFile(folder / "tables.safetensors") if "_q8." in name]
    assert not Tables(folder / "tables.safetensors", int8_heads=True).int8_heads  # f32 heads then


# ---- run time ----------------------------------------------------------------------------------------------
def test_int8_logits_stay_close_to_f32(converted: Callable[[str], Path]) -> None:
    path = converted("q8_0") / "tables.safetensors"
    exact, fast = Tables(path), Tables(path, int8_heads=True)
    assert fast.int8_heads and not exact.int8_heads
    hidden = hidden_states(exact, 200)
    agreement = []
    for group in range(1, exact.num_groups):
        want, got = exact.predictor_head(group, hidden), fast.predictor_head(group, hidden)
        assert got.shape == want.shape and got.dtype == np.float32
        relative = np.abs(got - want).max() / np.abs(want).max()
        assert relative < 0.02, f"group {group}: relative max error {relative:.4f}"
        agreement.append(np.mean(got.argmax(-1) == want.argmax(-1)))
    assert np.mean(agreement) >= 0.9 and min(agreement) >= 0.8, agreement
    # one vector in, one vector out, as the solo loop calls it
    assert fast.predictor_head(1, hidden[0]).shape == (exact.predictor_head(1, hidden[0]).shape[0],)


@pytest.mark.parametrize("int8", [True, False])
def test_rows_equal_single_calls_bit_for_bit(int8: bool, converted: Callable[[str], Path]) -> None:
    tables = Tables(converted("q8_0") / "tables.safetensors", int8_heads=int8)
    assert tables.int8_heads == int8
    for rows in (1, 2, 3, 5, 8, 17):
        hidden = hidden_states(tables, rows, seed=rows) * np.float32(rows)
        for group in (1, 7, tables.num_groups - 1):
            single = np.stack([tables.predictor_head(group, row) for row in hidden])
            np.testing.assert_array_equal(tables.predictor_head_rows(group, hidden), single)


def test_int8_path_never_reads_the_f32_heads(converted: Callable[[str], Path], tmp_path: Path) -> None:
    """The same file with NaN f32 heads: the 8-bit path is unaffected, the f32 path sees the NaNs."""
    source = SafetensorsFile(converted("q8_0") / "tables.safetensors")
    heads = {predictor_head_name(g) for g in range(1, spec.NUM_CODE_GROUPS)}
    tensors = {
        name: np.full(source.shape(name), np.nan, np.float32) if name in heads else source.raw(name)
        for name in source
    }
    poisoned = tmp_path / "tables.safetensors"
    write_safetensors(poisoned, tensors, {name: source.dtype(name) for name in source})
    fast, reference = Tables(poisoned, int8_heads=True), Tables(source.path, int8_heads=True)
    hidden = hidden_states(fast, 3)
    for group in range(1, fast.num_groups):
        np.testing.assert_array_equal(
            fast.predictor_head(group, hidden), reference.predictor_head(group, hidden)
        )
    assert np.isnan(Tables(poisoned).predictor_head(1, hidden)).all()


def test_released_pages_read_back_unchanged(converted: Callable[[str], Path]) -> None:
    """Tables drops the 8-bit arrays' pages after the sessions repacked them: views must stay valid."""
    stored = SafetensorsFile(converted("q8_0") / "tables.safetensors")
    codes, scales = predictor_head_q8_names(3)
    before = stored.read(codes).copy(), stored.read(scales).copy()
    stored.release(codes)
    stored.release(scales)
    np.testing.assert_array_equal(stored.read(codes), before[0])
    np.testing.assert_array_equal(stored.read(scales), before[1])


def test_exact_mode_keeps_the_f32_heads(converted: Callable[[str], Path]) -> None:
    from qwen3tts_cli.model import LoadedModel

    folder = converted("q8_0")
    for exact in (True, False):
        model = LoadedModel(folder, threads=1, exact=exact)
        try:
            assert model.tables.int8_heads is (not exact)
        finally:
            model.close()


# ---- the 8-bit input projection (talker width != predictor width, as in the 1.7B) ------------------------
@pytest.fixture(scope="module")
def wide_q8(checkpoint_factory: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-wide: talker 96 -> predictor 64, so it has a `small_to_mtp_projection` (96 = 3 whole blocks)."""
    source = checkpoint_factory(spec.KIND_CUSTOM_VOICE, "tiny-wide")
    out = tmp_path_factory.mktemp("heads-wide") / "model"
    return convert_checkpoint(source, out, "q8_0", threads=1) / "tables.safetensors"


def test_integer_quant_stores_an_8bit_projection(wide_q8: Path) -> None:
    stored = SafetensorsFile(wide_q8)
    codes, scales = MTP_PROJECTION_Q8
    expected = quantize_head(stored.read(MTP_PROJECTION_WEIGHT))
    np.testing.assert_array_equal(stored.read(codes), expected[0])
    np.testing.assert_array_equal(stored.read(scales), expected[1])


def test_int8_projection_stays_close_to_f32_and_keeps_rows_independent(wide_q8: Path) -> None:
    exact, fast = Tables(wide_q8), Tables(wide_q8, int8_heads=True)
    assert exact.talker_hidden != exact.predictor_hidden
    x = np.random.default_rng(3).standard_normal((40, exact.talker_hidden)).astype(np.float32)
    want, got = exact.project(x), fast.project(x)
    assert got.shape == want.shape == (40, exact.predictor_hidden) and got.dtype == np.float32
    assert not np.array_equal(got, want)  # the 8-bit matrix is really used
    assert np.abs(got - want).max() / np.abs(want).max() < 0.02
    # solo calls project one row at a time, batches several: the same values either way
    np.testing.assert_array_equal(np.stack([fast.project(row) for row in x]), got)
    # exact mode: the f32 matrix, as numpy computes it
    weight = SafetensorsFile(wide_q8).read(MTP_PROJECTION_WEIGHT)
    bias = SafetensorsFile(wide_q8).read(MTP_PROJECTION_BIAS)
    np.testing.assert_array_equal(want, x @ weight.T + bias)
