"""Table rows read from the file: the same values as the mapped tensor, without mapping the table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qwen3tts_cli.convert.safetensors import SafetensorsFile, write_safetensors


@pytest.fixture()
def table_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    values = np.random.default_rng(3).standard_normal((300, 24)).astype(np.float32)
    path = tmp_path / "t.safetensors"
    write_safetensors(
        path, {"pad": np.arange(5, dtype=np.float32), "table": values}, {"pad": "F32", "table": "F32"}
    )
    return path, values


def test_rows_equal_the_mapped_tensor_for_any_index_shape(table_file: tuple[Path, np.ndarray]) -> None:
    path, values = table_file
    rows = SafetensorsFile(path).rows("table")
    assert rows.shape == (300, 24) and rows.dtype == np.float32
    ids = np.array([[0, 299, 7], [7, 7, 150]])  # repeats and a 2-D index, as frame_embed uses them
    assert np.array_equal(rows[ids], values[ids])
    assert np.array_equal(rows[5], values[5]) and rows[5].shape == (24,)
    assert rows[np.zeros(0, np.int64)].shape == (0, 24)


@pytest.mark.parametrize("bad", [300, -1])
def test_rows_outside_the_table_are_refused(table_file: tuple[Path, np.ndarray], bad: int) -> None:
    rows = SafetensorsFile(table_file[0]).rows("table")
    with pytest.raises(IndexError, match=r"\[0, 300\)"):
        rows[[1, bad]]


def test_tables_look_up_codec_embeddings_by_reading_rows(tmp_path: Path, checkpoint_factory) -> None:
    from qwen3tts_cli.convert.converter import convert_checkpoint
    from qwen3tts_cli.engine.tables import Tables, predictor_embedding_name

    folder = convert_checkpoint(checkpoint_factory("custom_voice", "tiny"), tmp_path / "m", "f32")
    tables = Tables(folder / "tables.safetensors")
    stored = SafetensorsFile(folder / "tables.safetensors")
    codes = np.random.default_rng(0).integers(0, 64, (3, tables.num_groups))
    expected = (
        sum(stored.read(predictor_embedding_name(g))[codes[:, g]] for g in range(1, tables.num_groups))
        + stored.read("talker.model.codec_embedding.weight")[codes[:, 0]]
    )
    assert np.allclose(tables.frame_embed(codes), expected, atol=1e-6)
    assert np.array_equal(tables.codec_embed(2, [4, 9]), stored.read(predictor_embedding_name(2))[[4, 9]])
