"""Build ONNX graphs from numpy weights with `onnx.helper`, no torch export.

`GraphBuilder` owns the graph: it emits unique value names, turns numpy arrays into initializers
(small integer constants are shared), adds nodes and declares inputs/outputs. The free functions
below are the layers the codec graphs are made of (Conv1d, Linear, RMSNorm, LayerNorm, GELU, ...);
each takes the builder first and returns the name of its output value.

Weight layouts are the PyTorch ones as stored in the checkpoints: Linear [out, in],
Conv1d [out, in/groups, k], ConvTranspose1d [in, out/groups, k]. Conv layers work on
channels-first [B, C, T] values, Linear and the norms on the last axis.

Example:
    g = GraphBuilder("tiny")
    x = g.add_input("x", np.float32, [1, "T", 8])
    y = silu(g, linear(g, x, w, b))
    g.add_output(y, "y", np.float32, [1, "T", 4])
    g.save(path)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
import onnx
from google.protobuf.message import Message
from onnx import helper, numpy_helper

DEFAULT_OPSET = 17
# protobuf cannot serialise a message over 2 GiB: larger models keep their weights in a side file
_MAX_INLINE_BYTES = 1_800_000_000
INT64_MAX = np.iinfo(np.int64).max

Dim = int | str | None


def _tensor_type(dtype: np.dtype | type | int) -> int:
    if isinstance(dtype, int):
        return dtype
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


class GraphBuilder:
    """Accumulates nodes, initializers, inputs and outputs of one ONNX graph."""

    def __init__(
        self,
        name: str = "graph",
        opset: int = DEFAULT_OPSET,
        doc: str = "",
        spool_dir: str | Path | None = None,
    ) -> None:
        self.name = name
        self.opset = opset
        self.doc = doc
        self.nodes: list[onnx.NodeProto] = []
        # Initializers are serialized as they are made into an anonymous file (in `spool_dir`, default the
        # system temp folder) and copied into the model file by `save`: the weights are never all in memory.
        self._spool: IO[bytes] = tempfile.TemporaryFile(dir=spool_dir)
        self._spool_bytes = 0
        self._weight_bytes = 0
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.metadata: dict[str, str] = {}
        self._used_names: set[str] = set()
        self._const_cache: dict[tuple[str, tuple[int, ...], bytes], str] = {}

    # ---- names ----------------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        """A value/node name not used before, derived from `hint`."""
        name, n = hint, 1
        while name in self._used_names:
            name = f"{hint}_{n}"
            n += 1
        self._used_names.add(name)
        return name

    def _claim(self, name: str) -> str:
        if name in self._used_names:
            raise ValueError(f"graph name {name!r} is already used")
        self._used_names.add(name)
        return name

    # ---- values ---------------------------------------------------------------------------------------
    def add_input(self, name: str, dtype: np.dtype | type | int, shape: Sequence[Dim]) -> str:
        self.inputs.append(helper.make_tensor_value_info(self._claim(name), _tensor_type(dtype), list(shape)))
        return name

    def add_output(self, value: str, name: str, dtype: np.dtype | type | int, shape: Sequence[Dim]) -> None:
        """Expose `value` as graph output `name` (an Identity node renames it when the names differ)."""
        if value != name:
            self.nodes.append(
                helper.make_node("Identity", [value], [self._claim(name)], name=self.fresh("out"))
            )
        self.outputs.append(helper.make_tensor_value_info(name, _tensor_type(dtype), list(shape)))

    def weight(self, array: np.ndarray, hint: str = "w") -> str:
        """A new initializer holding `array` (its dtype is kept; pass float32 for weights)."""
        name = self.fresh(hint)
        array = np.ascontiguousarray(array)
        self._weight_bytes += int(array.nbytes)
        if array.dtype.kind in "biuf" and array.dtype.byteorder != ">":
            # numpy_helper.from_array's message (dims, data_type, name, raw_data = the array's bytes), framed
            # by hand so the data goes from the array to the spool without two more copies
            head = onnx.TensorProto(dims=array.shape, data_type=_tensor_type(array.dtype), name=name)
            header = head.SerializeToString() + _tag(_TENSOR_RAW_DATA) + _varint(array.nbytes)
            self._spool_bytes += self._spool.write(
                _tag(_GRAPH_INITIALIZER) + _varint(len(header) + array.nbytes) + header
            )
            self._spool_bytes += self._spool.write(array.data) if array.nbytes else 0
        else:
            tensor = numpy_helper.from_array(array, name)
            self._spool_bytes += self._spool.write(_field(_GRAPH_INITIALIZER, tensor.SerializeToString()))
        return name

    @property
    def initializers(self) -> list[onnx.TensorProto]:
        """Every initializer so far, parsed back from the spool (for tests and in-memory models)."""
        self._spool.seek(0)
        data = self._spool.read(self._spool_bytes)
        self._spool.seek(0, 2)
        holder = onnx.GraphProto()
        holder.ParseFromString(data)  # the spool is a run of GraphProto `initializer` fields
        return list(holder.initializer)

    def const(
        self, values: Sequence[int] | Sequence[float] | np.ndarray | int | float, dtype=np.int64
    ) -> str:
        """A small constant initializer, shared between every use of the same value."""
        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._const_cache:
            self._const_cache[key] = self.weight(array, hint=f"const_{array.dtype.name}")
        return self._const_cache[key]

    # ---- nodes ----------------------------------------------------------------------------------------
    def op(self, op_type: str, *inputs: str, hint: str | None = None, outputs: int = 1, **attrs) -> str:
        """Add one node; returns its (first) output name. Use `op_multi` for several outputs."""
        return self.op_multi(op_type, *inputs, hint=hint, outputs=outputs, **attrs)[0]

    def op_multi(
        self, op_type: str, *inputs: str, hint: str | None = None, outputs: int = 1, **attrs
    ) -> list[str]:
        base = hint or op_type.lower()
        out_names = [self.fresh(base if outputs == 1 else f"{base}_out{i}") for i in range(outputs)]
        self.nodes.append(
            helper.make_node(op_type, list(inputs), out_names, name=self.fresh(f"{base}_node"), **attrs)
        )
        return out_names

    # ---- output ---------------------------------------------------------------------------------------
    def to_model(self, *, with_weights: bool = True) -> onnx.ModelProto:
        initializers = self.initializers if with_weights else []
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", self.opset)], producer_name="qwen3tts"
        )
        model.ir_version = min(model.ir_version, 10)  # readable by onnxruntime >= 1.18
        model.doc_string = self.doc
        for key, value in self.metadata.items():
            model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
        return model

    def weight_bytes(self) -> int:
        return self._weight_bytes

    def save(self, path: str | Path) -> None:
        """Write the model; past ~1.8 GB the weights go to `<name>.data` next to it (ONNX external data).

        Inline models are written as protobuf would serialize `to_model()` (fields in number order), with
        the spooled initializers copied in between the graph's fields 1-4 and 6+: same bytes, one tensor
        in memory at a time.
        """
        path = Path(path)
        if self.weight_bytes() < _MAX_INLINE_BYTES:
            self._write_streamed(path)
            return
        model = self.to_model()
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
        )

    def _write_streamed(self, path: Path) -> None:
        model = self.to_model(with_weights=False)
        graph_head, graph_tail = _split_fields(model.graph, _GRAPH_INITIALIZER)
        model.ClearField("graph")
        model_head, model_tail = _split_fields(model, _MODEL_GRAPH)
        graph_size = len(graph_head) + self._spool_bytes + len(graph_tail)
        self._spool.flush()
        with open(path, "wb", buffering=0) as out:  # unbuffered: sendfile moves the file position itself
            _write_all(out, model_head + _tag(_MODEL_GRAPH) + _varint(graph_size) + graph_head)
            _copy_spool(self._spool, out, self._spool_bytes)
            _write_all(out, graph_tail + model_tail)

    def close(self) -> None:
        self._spool.close()


def _write_all(out: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:  # an unbuffered write may take only part of the buffer
        view = view[out.write(view) :]


def _copy_spool(spool: IO[bytes], out: IO[bytes], count: int) -> None:
    """Append the first `count` bytes of `spool` to `out`: in the kernel where it can, else in 4 MB blocks."""
    if hasattr(os, "sendfile"):
        try:
            offset = 0
            while offset < count:
                sent = os.sendfile(out.fileno(), spool.fileno(), offset, count - offset)
                if sent == 0:
                    raise OSError("the spool ended early")
                offset += sent
            return
        except OSError:
            if offset:  # part of it was sent: redoing it in user space would duplicate bytes
                raise
    spool.seek(0)
    shutil.copyfileobj(spool, out, 1 << 22)


# ---- protobuf framing (wire format: tag = field number << 3 | 2 for length-delimited, varint lengths) -----
_MODEL_GRAPH = 7  # ModelProto.graph
_GRAPH_INITIALIZER = 5  # GraphProto.initializer
_TENSOR_RAW_DATA = 9  # TensorProto.raw_data (after dims 1, data_type 2, name 8; nothing later is set)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(number: int) -> bytes:
    return _varint(number << 3 | 2)


def _field(number: int, payload: bytes) -> bytes:
    return _tag(number) + _varint(len(payload)) + payload


def _split_fields(message: Message, number: int) -> tuple[bytes, bytes]:
    """The serialized fields of `message` numbered below `number`, and those above it."""
    head, tail = type(message)(), type(message)()
    head.CopyFrom(message)
    tail.CopyFrom(message)
    for field, _ in message.ListFields():
        (tail if field.number < number else head).ClearField(field.name)
    return head.SerializeToString(), tail.SerializeToString()


# ---- shape and indexing helpers -----------------------------------------------------------------------
def slice_axis(
    g: GraphBuilder, x: str, axis: int, start: int, end: int = INT64_MAX, hint: str = "slice"
) -> str:
    """x[start:end] along `axis` (negative indices count from the end, as in Python)."""
    return g.op("Slice", x, g.const([start]), g.const([end]), g.const([axis]), hint=hint)


def concat(g: GraphBuilder, values: Sequence[str], axis: int, hint: str = "concat") -> str:
    return g.op("Concat", *values, axis=axis, hint=hint)


def transpose(g: GraphBuilder, x: str, perm: Sequence[int], hint: str = "transpose") -> str:
    return g.op("Transpose", x, perm=list(perm), hint=hint)


def reshape(g: GraphBuilder, x: str, shape: Sequence[int], hint: str = "reshape") -> str:
    """Reshape with a constant target (0 keeps that input dim, -1 infers one)."""
    return g.op("Reshape", x, g.const(list(shape)), hint=hint)


def unsqueeze(g: GraphBuilder, x: str, axes: Sequence[int], hint: str = "unsqueeze") -> str:
    return g.op("Unsqueeze", x, g.const(list(axes)), hint=hint)


def squeeze(g: GraphBuilder, x: str, axes: Sequence[int], hint: str = "squeeze") -> str:
    return g.op("Squeeze", x, g.const(list(axes)), hint=hint)


def dim_of(g: GraphBuilder, x: str, axis: int, hint: str = "dim") -> str:
    """The size of `x` along `axis` as an int64 tensor of shape [1]."""
    return g.op("Shape", x, start=axis, end=axis + 1 if axis != -1 else INT64_MAX, hint=hint)


def reduce_mean(
    g: GraphBuilder, x: str, axes: Sequence[int], keepdims: bool = True, hint: str = "mean"
) -> str:
    if g.opset >= 18:  # axes moved from attribute to input in opset 18
        return g.op("ReduceMean", x, g.const(list(axes)), keepdims=int(keepdims), hint=hint)
    return g.op("ReduceMean", x, axes=list(axes), keepdims=int(keepdims), hint=hint)


def reduce_sum(g: GraphBuilder, x: str, axes: Sequence[int], keepdims: bool = True, hint: str = "sum") -> str:
    return g.op("ReduceSum", x, g.const(list(axes)), keepdims=int(keepdims), hint=hint)


# ---- layers ---------------------------------------------------------------------------------------------
def linear(
    g: GraphBuilder, x: str, weight: np.ndarray, bias: np.ndarray | None = None, hint: str = "linear"
) -> str:
    """x @ weight.T + bias on the last axis; `weight` is [out, in] as in torch.nn.Linear."""
    y = g.op(
        "MatMul", x, g.weight(np.ascontiguousarray(weight.T, dtype=np.float32), f"{hint}.weight_t"), hint=hint
    )
    if bias is not None:
        y = g.op("Add", y, g.weight(np.asarray(bias, dtype=np.float32), f"{hint}.bias"), hint=hint)
    return y


def conv1d(
    g: GraphBuilder,
    x: str,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    pads: tuple[int, int] = (0, 0),
    hint: str = "conv",
) -> str:
    """Conv1d on [B, C_in, T]; `weight` [C_out, C_in/groups, k]; `pads` = zero padding (left, right)."""
    inputs = [x, g.weight(np.asarray(weight, dtype=np.float32), f"{hint}.weight")]
    if bias is not None:
        inputs.append(g.weight(np.asarray(bias, dtype=np.float32), f"{hint}.bias"))
    return g.op(
        "Conv",
        *inputs,
        kernel_shape=[int(weight.shape[2])],
        strides=[stride],
        dilations=[dilation],
        group=groups,
        pads=[pads[0], pads[1]],
        hint=hint,
    )


def conv_transpose1d(
    g: GraphBuilder,
    x: str,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    stride: int = 1,
    groups: int = 1,
    hint: str = "convt",
) -> str:
    """ConvTranspose1d on [B, C_in, T] with no padding: output length (T - 1) * stride + k.
    `weight` is [C_in, C_out/groups, k] as in torch.nn.ConvTranspose1d."""
    inputs = [x, g.weight(np.asarray(weight, dtype=np.float32), f"{hint}.weight")]
    if bias is not None:
        inputs.append(g.weight(np.asarray(bias, dtype=np.float32), f"{hint}.bias"))
    return g.op(
        "ConvTranspose",
        *inputs,
        kernel_shape=[int(weight.shape[2])],
        strides=[stride],
        group=groups,
        hint=hint,
    )


def rms_norm(g: GraphBuilder, x: str, weight: np.ndarray, eps: float, hint: str = "rms_norm") -> str:
    """weight * x / sqrt(mean(x^2, last axis) + eps), written in the op pattern onnxruntime fuses
    into SimplifiedLayerNormalization."""
    square = g.op("Pow", x, g.const(2.0, np.float32), hint=hint)
    variance = reduce_mean(g, square, [-1], hint=hint)
    root = g.op("Sqrt", g.op("Add", variance, g.const(eps, np.float32), hint=hint), hint=hint)
    normed = g.op("Div", x, root, hint=hint)
    return g.op("Mul", normed, g.weight(np.asarray(weight, dtype=np.float32), f"{hint}.weight"), hint=hint)


def layer_norm(
    g: GraphBuilder, x: str, weight: np.ndarray, bias: np.ndarray | None, eps: float, hint: str = "layer_norm"
) -> str:
    """LayerNorm over the last axis (ONNX LayerNormalization, opset >= 17)."""
    inputs = [x, g.weight(np.asarray(weight, dtype=np.float32), f"{hint}.weight")]
    if bias is not None:
        inputs.append(g.weight(np.asarray(bias, dtype=np.float32), f"{hint}.bias"))
    return g.op("LayerNormalization", *inputs, axis=-1, epsilon=float(eps), hint=hint)


def gelu(g: GraphBuilder, x: str, hint: str = "gelu") -> str:
    """Exact (erf) GELU, torch.nn.GELU() default; onnxruntime fuses the pattern into one Gelu kernel."""
    scaled = g.op("Div", x, g.const(np.sqrt(2.0), np.float32), hint=hint)
    one_plus_erf = g.op("Add", g.op("Erf", scaled, hint=hint), g.const(1.0, np.float32), hint=hint)
    return g.op("Mul", g.op("Mul", x, one_plus_erf, hint=hint), g.const(0.5, np.float32), hint=hint)


def silu(g: GraphBuilder, x: str, hint: str = "silu") -> str:
    return g.op("Mul", x, g.op("Sigmoid", x, hint=hint), hint=hint)


def elu(g: GraphBuilder, x: str, alpha: float = 1.0, hint: str = "elu") -> str:
    return g.op("Elu", x, alpha=float(alpha), hint=hint)


def scale_channels(g: GraphBuilder, x: str, scale: np.ndarray, channel_axis: int, hint: str = "scale") -> str:
    """x * scale broadcast along `channel_axis` of a rank-3 value (e.g. 1 for [B, C, T], -1 for [B, T, C])."""
    shape = [1, 1, 1]
    shape[channel_axis] = -1
    return g.op("Mul", x, g.weight(scale.astype(np.float32).reshape(shape), f"{hint}.scale"), hint=hint)
