"""8-bit matrices of the code predictor (its residual heads, the 1.7B input projection): one ONNX Runtime
`MatMulNBits` session per matrix.

The weights come from tables.safetensors (convert/heads.py layout). With accuracy_level 4 the op also
quantizes the hidden state per 32-block to int8 and uses the CPU's integer dot products: all 15 heads of
the 0.6B model take ~2 ms per frame instead of ~9 ms for the f32 matrix-vector products in numpy.

One session per head, not one graph with 15 outputs: a session runs its whole graph whatever outputs are
fetched, so a shared graph costs all 15 products per head (measured: 15 single fetches = 15x one run).
Each session runs on the calling thread (1 intra-op thread, no spinning): llama.cpp and the codec decoder
thread already own the cores.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from qwen3tts_cli.engine.onnx_session import cpu_options

# 4 = int8 activations (integer dot products); level 0 dequantizes to f32 and is ~40x slower
ACCURACY_LEVEL = 4
_IR_VERSION = 9  # onnxruntime refuses the newest IR versions the onnx helper writes by default
_INPUT, _OUTPUT, _CODES, _SCALES = "hidden", "logits", "codes", "scales"


def head_model(rows: int, width: int, block: int) -> bytes:
    """A one-node ONNX model `logits [M, rows] = hidden [M, width] @ W.T`, W stored as 8-bit blocks.

    The weights are external initializers, supplied at session creation (`_session`): ONNX Runtime then
    reads the caller's arrays instead of a serialized copy (embedding them kept ~2 extra copies alive:
    +160 MB RSS for the 0.6B heads instead of +65 MB).
    """
    node = helper.make_node(
        "MatMulNBits",
        [_INPUT, _CODES, _SCALES],
        [_OUTPUT],
        domain="com.microsoft",
        K=width,
        N=rows,
        bits=8,
        block_size=block,
        accuracy_level=ACCURACY_LEVEL,
    )
    graph = helper.make_graph(
        [node],
        "predictor_head",
        [helper.make_tensor_value_info(_INPUT, TensorProto.FLOAT, ["M", width])],
        [helper.make_tensor_value_info(_OUTPUT, TensorProto.FLOAT, ["M", rows])],
        [
            _external(_CODES, TensorProto.UINT8, [rows, width // block, block]),
            _external(_SCALES, TensorProto.FLOAT, [rows * (width // block)]),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        ir_version=_IR_VERSION,
        producer_name="qwen3tts",
    )
    return model.SerializeToString()


def _external(name: str, dtype: int, shape: list[int]) -> TensorProto:
    """An initializer without data: its values are handed over with `add_external_initializers`."""
    tensor = TensorProto(name=name, data_type=dtype, dims=shape, data_location=TensorProto.EXTERNAL)
    tensor.external_data.add(key="location", value=f"{name}.bin")  # never opened
    return tensor


def _session(model: bytes, weights: list[ort.OrtValue]) -> ort.InferenceSession:
    options = cpu_options(1)
    options.add_external_initializers([_CODES, _SCALES], weights)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class Int8Matrix:
    """`x @ W.T` for one matrix W [N, K] stored as 8-bit blocks `(codes, scales)` (convert/heads.py). The
    arrays are used in place (memory-mapped ones too) and must not change."""

    def __init__(self, codes: np.ndarray, scales: np.ndarray, name: str = "matrix") -> None:
        rows, blocks, block = codes.shape
        # onnxruntime borrows the weights (each OrtValue keeps its array alive): keep them with the session
        self._weights = [
            ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(codes, dtype=np.uint8)),
            ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(scales, dtype=np.float32).reshape(-1)),
        ]
        self._session = _session(head_model(rows, blocks * block, block), self._weights)
        self.width, self.rows, self.name = blocks * block, rows, name

    def apply(self, x: np.ndarray) -> np.ndarray:
        """[..., N] from [..., K]; rows are computed independently, so a row's result does not depend on
        the other rows of the call (bit for bit, tested)."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1] != self.width:
            raise ValueError(f"{self.name} takes {self.width} inputs, got shape {list(x.shape)}")
        rows = np.ascontiguousarray(x.reshape(-1, self.width))
        if rows.shape[0] == 0:
            return np.zeros((*x.shape[:-1], self.rows), dtype=np.float32)
        (out,) = self._session.run(None, {_INPUT: rows})
        return out.reshape(*x.shape[:-1], self.rows)


class Int8Heads:
    """Logits of the residual groups from their 8-bit heads; `heads[group] = (codes, scales)` as stored."""

    def __init__(self, heads: Mapping[int, tuple[np.ndarray, np.ndarray]]) -> None:
        self._heads = {
            group: Int8Matrix(codes, scales, f"head {group}") for group, (codes, scales) in heads.items()
        }

    def logits(self, group: int, hidden: np.ndarray) -> np.ndarray:
        """[..., N] logits of `group` from hidden states [..., K]."""
        return self._heads[group].apply(hidden)
