"""Free disk space check before a conversion: refuse up front with the numbers instead of failing halfway.

The estimate comes from the source tensor sizes (safetensors headers only, nothing is read) and the quant:
the files in the order they are written, plus what exists only while one is written (the f32 GGUF that is
quantized, the spooled ONNX initializers of the graph being built), plus a margin.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from qwen3tts_cli import spec
from qwen3tts_cli.convert.checkpoint import Checkpoint
from qwen3tts_cli.convert.lm import predictor_plan, table_sources, talker_plan
from qwen3tts_cli.convert.quantize import LLAMA_FTYPES
from qwen3tts_cli.convert.safetensors import SafetensorsFile
from qwen3tts_cli.disk_space import require_free_space
from qwen3tts_cli.engine import tables as table_names

# bytes per weight of the LM GGUFs (upper bounds: the *_k_m mixes keep some tensors at 6 bits, norms f32)
GGUF_BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.1, "q8_0": 1.07, "q5_k_m": 0.76, "q4_k_m": 0.66, "q4_0": 0.6}
_MARGIN = 1.05
_SLACK = 64 << 20  # configs, tokenizer, manifest, filesystem overhead


def _elements(weights: SafetensorsFile, prefixes: tuple[str, ...]) -> int:
    return sum(
        int(np.prod(weights.shape(name), dtype=np.int64)) for name in weights if name.startswith(prefixes)
    )


def _tensor_bytes(weights: SafetensorsFile, name: str) -> int:
    """Bytes of tensor `name` in tables.safetensors: the bf16 text embedding is copied, the rest is f32."""
    keeps_bf16 = name == table_names.TEXT_EMBEDDING and weights.dtype(name) == "BF16"
    return int(np.prod(weights.shape(name), dtype=np.int64)) * (2 if keeps_bf16 else 4)


def estimate_bytes(ckpt: Checkpoint, quant: str) -> int:
    """Bytes a conversion of `ckpt` to `quant` needs on the output's disk at its peak."""
    weights, codec = ckpt.weights, ckpt.codec_weights
    talker = sum(int(np.prod(t.shape, dtype=np.int64)) for t in talker_plan(ckpt))
    predictor = sum(int(np.prod(t.shape, dtype=np.int64)) for t in predictor_plan(ckpt))
    sources = [name for name in table_sources(ckpt) if name in weights]
    tables = sum(_tensor_bytes(weights, name) for name in sources)
    if quant in LLAMA_FTYPES:  # 8-bit copies of the heads: ~1.13 bytes per weight
        tables += (
            sum(int(np.prod(weights.shape(n))) for n in sources if ".lm_head." in n or "mtp" in n) * 1.13
        )
    graphs = [4 * _elements(codec, ("decoder.",)), 4 * _elements(codec, ("encoder.",))]
    if ckpt.kind == spec.KIND_BASE:
        graphs.append(4 * _elements(weights, ("speaker_encoder.",)))
    # the files in the order they are written, each with what exists only while it is written: the f32
    # GGUF beside its quantized copy, an ONNX graph's spooled initializers beside the model file
    per_weight = GGUF_BYTES_PER_WEIGHT[quant]
    steps = [(tables, 0.0)]
    steps += [(lm * per_weight, 4.0 * lm if quant != "f32" else 0.0) for lm in (talker, predictor)]
    steps += [(size, size) for size in graphs]
    written = peak = 0.0
    for final, transient in steps:
        peak = max(peak, written + final + transient)
        written += final
    return int(peak * _MARGIN) + _SLACK


def check_free_space(needs: Iterable[tuple[Path, int]]) -> None:
    """Raise when the output's disk (and any other folder's, summed per disk) lacks the bytes asked of it."""
    require_free_space(
        needs, "converting", "free some disk space, or convert into a folder on a disk with more room"
    )
