"""Bounded-memory conversion: spooled ONNX initializers, streamed reads, disk-space check, tensor progress."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from qwen3tts_cli.convert.onnx_graph import GraphBuilder, _field, silu

ARRAYS = [
    np.zeros((0, 3), np.float32),
    np.asarray(2.0, np.float32),
    np.arange(7, dtype=np.int64),
    np.ones((2, 3, 4), np.float16),
    np.array([True, False]),
    np.arange(300, dtype=np.uint8).reshape(3, 100).T,  # not contiguous
]


def test_spooled_initializers_are_framed_as_protobuf_would(tmp_path: Path) -> None:
    g = GraphBuilder(spool_dir=tmp_path)
    names = [g.weight(a, "w") for a in ARRAYS]
    g._spool.seek(0)
    spooled = g._spool.read()
    expected = b"".join(
        _field(5, numpy_helper.from_array(np.ascontiguousarray(a), n).SerializeToString())
        for a, n in zip(ARRAYS, names, strict=True)
    )
    assert spooled == expected
    assert g.weight_bytes() == sum(a.nbytes for a in ARRAYS)
    g.close()


def test_saved_model_bytes_equal_onnx_save_model(tmp_path: Path) -> None:
    g = GraphBuilder("tiny", doc="a doc", spool_dir=tmp_path)
    x = g.add_input("x", np.float32, [1, "T", 8])
    rng = np.random.default_rng(0)
    y = g.op("MatMul", x, g.weight(rng.standard_normal((8, 4)).astype(np.float32)))
    g.add_output(silu(g, y), "y", np.float32, [1, "T", 4])
    g.metadata["key"] = "value"
    g.save(tmp_path / "streamed.onnx")
    onnx.save_model(g.to_model(), str(tmp_path / "reference.onnx"))
    assert (tmp_path / "streamed.onnx").read_bytes() == (tmp_path / "reference.onnx").read_bytes()
    onnx.checker.check_model(str(tmp_path / "streamed.onnx"))
    assert list(tmp_path.iterdir()) != [] and all(p.suffix == ".onnx" for p in tmp_path.iterdir())
    g.close()
