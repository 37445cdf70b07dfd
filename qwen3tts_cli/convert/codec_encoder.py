"""Codec encoder (HF `MimiModel` encoder half + split RVQ) -> ONNX, built straight from the weights.

Graph: `waveform` [1, samples] float32 at 24 kHz -> `codes` [frames, 16] int64, frames = ceil(samples / 1920),
exactly what the official `Qwen3TTSTokenizer.encode` returns for one mono 24 kHz clip.

Pipeline (transformers 4.57.3 `modeling_mimi.py`, qwen-tts 0.1.1 tokenizer v2):
  SEANet: causal conv k7 -> per ratio (reversed upsampling_ratios): residual units (ELU, conv k3, ELU,
  conv k1, identity skip) -> ELU -> strided conv k=2r -> ... -> ELU -> conv k3 (25 Hz)
  transformer: pre-LayerNorm (with bias), MHA with RoPE, LayerScale, GELU MLP, LayerScale.
  downsample: conv k4 stride 2 without bias, *replicate* padding (12.5 Hz).
  split RVQ: the semantic RVQ (level 0) and the acoustic RVQ (levels 1..) both quantise the same vector after
  their own 1x1 input projection; inside an RVQ each level quantises the previous residual.

Facts the graph reproduces on purpose:
  * Causal conv padding: left (k-1)*d + 1 - stride, right up to a whole number of strides. Padding the right
    side with a fixed stride-1 samples gives the same outputs (the extra samples are never reached).
  * The encoder transformer uses a plain causal mask. Mimi's config has `sliding_window` 250, but in
    transformers 4.57.3 only the flash-attention path applies it; the eager and sdpa paths the official
    package runs on CPU attend to the whole past, so we do too.
  * Codebook vectors are embed_sum / clamp(cluster_usage, 1e-5); nearest neighbour as torch.cdist does it for
    large codebooks (||x||^2 + ||e||^2 - 2 x.e, clamp, sqrt) and argmin takes the first index on ties.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qwen3tts_cli import spec
from qwen3tts_cli.convert.checkpoint import Checkpoint
from qwen3tts_cli.convert.onnx_graph import (
    GraphBuilder,
    concat,
    conv1d,
    dim_of,
    elu,
    gelu,
    layer_norm,
    linear,
    reduce_sum,
    reshape,
    scale_channels,
    squeeze,
    transpose,
    unsqueeze,
)
from qwen3tts_cli.errors import Qwen3TTSError

TensorReader = Callable[[str], np.ndarray]

PREFIX = "encoder."
CODEBOOK_EPS = 1e-5  # MimiEuclideanCodebook epsilon
_CDIST_FLOOR = 1e-30  # torch's mm-based cdist clamps squared distances to this before sqrt

# MimiConfig defaults (transformers 4.57.3) of the fields we read: a config.json may omit any of them
MIMI_DEFAULTS: dict[str, Any] = {
    "audio_channels": 1,
    "hidden_size": 512,
    "num_residual_layers": 1,
    "upsampling_ratios": [8, 6, 5, 4],
    "dilation_growth_rate": 2,
    "use_causal_conv": True,
    "pad_mode": "constant",
    "num_quantizers": 32,
    "use_conv_shortcut": False,
    "vector_quantization_hidden_dimension": 256,
    "num_semantic_quantizers": 1,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "head_dim": None,
    "hidden_act": "gelu",
    "norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "attention_bias": False,
}


@dataclass(frozen=True)
class MimiEncoderShape:
    """The encoder-side MimiConfig fields the graph depends on (conv sizes come from the weights)."""

    ratios: tuple[int, ...]  # in encoder order (the reverse of upsampling_ratios)
    dilation_growth_rate: int
    num_residual_layers: int
    use_conv_shortcut: bool
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    norm_eps: float
    rope_theta: float
    attention_bias: bool
    num_quantizers: int
    num_semantic: int
    rvq_projects: bool  # input_proj exists only when the VQ width differs from the hidden size

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MimiEncoderShape:
        cfg = {**MIMI_DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
        _check_supported(cfg)
        ratios = tuple(int(r) for r in cfg["upsampling_ratios"])
        return cls(
            ratios=tuple(reversed(ratios)),
            dilation_growth_rate=int(cfg["dilation_growth_rate"]),
            num_residual_layers=int(cfg["num_residual_layers"]),
            use_conv_shortcut=bool(cfg["use_conv_shortcut"]),
            layers=int(cfg["num_hidden_layers"]),
            heads=int(cfg["num_attention_heads"]),
            kv_heads=int(cfg["num_key_value_heads"]),
            head_dim=int(cfg["head_dim"] or cfg["hidden_size"] // cfg["num_attention_heads"]),
            norm_eps=float(cfg["norm_eps"]),
            rope_theta=float(cfg["rope_theta"]),
            attention_bias=bool(cfg["attention_bias"]),
            num_quantizers=int(cfg["num_quantizers"]),
            num_semantic=int(cfg["num_semantic_quantizers"]),
            rvq_projects=int(cfg["vector_quantization_hidden_dimension"]) != int(cfg["hidden_size"]),
        )


def _check_supported(cfg: dict[str, Any]) -> None:
    problems = []
    if not cfg["use_causal_conv"]:
        problems.append("non-causal convolutions")
    if cfg["pad_mode"] != "constant":
        problems.append(f"pad_mode {cfg['pad_mode']!r}")
    if cfg["hidden_act"] != "gelu":
        problems.append(f"activation {cfg['hidden_act']!r}")
    if int(cfg["audio_channels"]) != 1:
        problems.append("stereo input")
    if problems:
        raise Qwen3TTSError(
            f"unsupported codec encoder config: {', '.join(problems)}",
            "only the official Qwen3-TTS 12 Hz speech tokenizer is supported",
        )


# ---- SEANet --------------------------------------------------------------------------------------------
def _causal_conv(
    g: GraphBuilder,
    x: str,
    read: TensorReader,
    name: str,
    *,
    stride: int = 1,
    dilation: int = 1,
    bias: bool = True,
) -> str:
    """MimiConv1d (causal, zero padding) on [1, C, T]; output length ceil(T / stride)."""
    weight = read(f"{name}.conv.weight")
    effective_kernel = (weight.shape[2] - 1) * dilation + 1
    left = effective_kernel - stride
    return conv1d(
        g,
        x,
        weight,
        read(f"{name}.conv.bias") if bias else None,
        stride=stride,
        dilation=dilation,
        pads=(left, stride - 1),
        hint=name,
    )


def _residual_unit(
    g: GraphBuilder, x: str, read: TensorReader, name: str, shape: MimiEncoderShape, dilation: int
) -> str:
    h = _causal_conv(g, elu(g, x), read, f"{name}.block.1", dilation=dilation)
    h = _causal_conv(g, elu(g, h), read, f"{name}.block.3")
    skip = _causal_conv(g, x, read, f"{name}.shortcut") if shape.use_conv_shortcut else x
    return g.op("Add", skip, h, hint=f"{name}.out")


def _seanet(g: GraphBuilder, x: str, read: TensorReader, shape: MimiEncoderShape) -> str:
    """[1, 1, samples] -> [1, hidden, ceil(samples / hop)] (25 Hz)."""
    base = f"{PREFIX}encoder.layers"
    x = _causal_conv(g, x, read, f"{base}.0")
    index = 1  # position in MimiEncoder.layers (ELUs occupy an index too)
    for ratio in shape.ratios:
        for j in range(shape.num_residual_layers):
            x = _residual_unit(g, x, read, f"{base}.{index}", shape, shape.dilation_growth_rate**j)
            index += 1
        x = _causal_conv(g, elu(g, x), read, f"{base}.{index + 1}", stride=ratio)
        index += 2
    return _causal_conv(g, elu(g, x), read, f"{base}.{index + 1}")


def _downsample(g: GraphBuilder, x: str, read: TensorReader) -> str:
    """Causal conv (k4) stride 2, no bias, replicate padding (edge values repeated), 25 Hz -> 12.5 Hz."""
    weight = read(f"{PREFIX}downsample.conv.weight")
    stride = 2
    left = weight.shape[2] - stride
    padded = g.op("Pad", x, g.const([0, 0, left, 0, 0, stride - 1]), mode="edge", hint="downsample.pad")
    return conv1d(g, padded, weight, None, stride=stride, hint="downsample")


# ---- transformer ---------------------------------------------------------------------------------------
def _rope_inverse_frequencies(head_dim: int, theta: float) -> np.ndarray:
    # float32 throughout, as transformers computes inv_freq
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    return (np.float32(1.0) / np.power(np.float32(theta), exponents)).astype(np.float32)


def _rope_tables(g: GraphBuilder, x: str, shape: MimiEncoderShape) -> tuple[str, str]:
    """cos/sin [T, head_dim] for positions 0..T-1 of x [1, T, C] (rotate-half layout: halves repeated)."""
    length = squeeze(g, dim_of(g, x, 1, hint="rope.len"), [0], hint="rope.len")
    positions = g.op("Cast", g.op("Range", g.const(0), length, g.const(1), hint="rope.pos"), to=1)
    inv_freq = _rope_inverse_frequencies(shape.head_dim, shape.rope_theta)
    freqs = g.op(
        "Mul", unsqueeze(g, positions, [1]), g.weight(inv_freq[None, :], "rope.inv_freq"), hint="rope"
    )
    angles = concat(g, [freqs, freqs], axis=1, hint="rope.angles")
    return g.op("Cos", angles, hint="rope.cos"), g.op("Sin", angles, hint="rope.sin")


def _apply_rope(g: GraphBuilder, x: str, cos: str, sin: str, half: int, hint: str) -> str:
    """x [1, H, T, D] * cos + rotate_half(x) * sin."""
    first, second = g.op_multi("Split", x, g.const([half, half]), axis=3, outputs=2, hint=f"{hint}.split")
    rotated = concat(g, [g.op("Neg", second, hint=hint), first], axis=3, hint=f"{hint}.rot")
    return g.op("Add", g.op("Mul", x, cos, hint=hint), g.op("Mul", rotated, sin, hint=hint), hint=hint)


def _causal_mask(g: GraphBuilder, x: str) -> str:
    """Additive [T, T] mask: 0 where key <= query, float32 min elsewhere (as the eager path builds it)."""
    length = squeeze(g, dim_of(g, x, 1, hint="mask.len"), [0], hint="mask.len")
    steps = g.op("Range", g.const(0), length, g.const(1), hint="mask.range")
    future = g.op("Greater", unsqueeze(g, steps, [0]), unsqueeze(g, steps, [1]), hint="mask.future")
    blocked = g.const(np.finfo(np.float32).min, np.float32)
    return g.op("Where", future, blocked, g.const(0.0, np.float32), hint="mask")


def _split_heads(g: GraphBuilder, x: str, heads: int, head_dim: int, hint: str) -> str:
    return transpose(g, reshape(g, x, [0, 0, heads, head_dim], hint=hint), [0, 2, 1, 3], hint=hint)


def _attention(
    g: GraphBuilder,
    x: str,
    read: TensorReader,
    name: str,
    shape: MimiEncoderShape,
    rope: tuple[str, str],
    mask: str,
) -> str:
    def proj(which: str, h: str) -> str:
        bias = read(f"{name}.{which}.bias") if shape.attention_bias else None
        return linear(g, h, read(f"{name}.{which}.weight"), bias, hint=f"{name}.{which}")

    def rotated(which: str, heads: int) -> str:
        hint = f"{name}.{which}"
        split = _split_heads(g, proj(f"{which}_proj", x), heads, shape.head_dim, hint)
        return _apply_rope(g, split, *rope, shape.head_dim // 2, hint)

    q = rotated("q", shape.heads)
    k = rotated("k", shape.kv_heads)
    v = _split_heads(g, proj("v_proj", x), shape.kv_heads, shape.head_dim, f"{name}.v")
    if shape.kv_heads != shape.heads:  # grouped-query attention: repeat each kv head
        repeat = shape.heads // shape.kv_heads
        k = _repeat_kv(g, k, repeat, shape, f"{name}.k")
        v = _repeat_kv(g, v, repeat, shape, f"{name}.v")
    scores = g.op("MatMul", q, transpose(g, k, [0, 1, 3, 2], hint=f"{name}.kt"), hint=f"{name}.scores")
    scores = g.op("Mul", scores, g.const(1.0 / np.sqrt(shape.head_dim), np.float32), hint=f"{name}.scores")
    weights = g.op(
        "Softmax", g.op("Add", scores, mask, hint=f"{name}.masked"), axis=-1, hint=f"{name}.softmax"
    )
    context = transpose(
        g, g.op("MatMul", weights, v, hint=f"{name}.context"), [0, 2, 1, 3], hint=f"{name}.context"
    )
    merged = reshape(g, context, [0, 0, shape.heads * shape.head_dim], hint=f"{name}.merge")
    return proj("o_proj", merged)


def _repeat_kv(g: GraphBuilder, x: str, repeat: int, shape: MimiEncoderShape, hint: str) -> str:
    tiled = g.op("Tile", unsqueeze(g, x, [2]), g.const([1, 1, repeat, 1, 1]), hint=f"{hint}.repeat")
    return reshape(g, tiled, [0, shape.heads, -1, shape.head_dim], hint=f"{hint}.repeat")


def _transformer_layer(
    g: GraphBuilder,
    x: str,
    read: TensorReader,
    name: str,
    shape: MimiEncoderShape,
    rope: tuple[str, str],
    mask: str,
) -> str:
    def norm(which: str, h: str) -> str:
        return layer_norm(
            g,
            h,
            read(f"{name}.{which}.weight"),
            read(f"{name}.{which}.bias"),
            shape.norm_eps,
            f"{name}.{which}",
        )

    attn = _attention(g, norm("input_layernorm", x), read, f"{name}.self_attn", shape, rope, mask)
    x = g.op(
        "Add", x, scale_channels(g, attn, read(f"{name}.self_attn_layer_scale.scale"), -1, f"{name}.ls1")
    )
    hidden = gelu(
        g, linear(g, norm("post_attention_layernorm", x), read(f"{name}.mlp.fc1.weight"), hint=f"{name}.fc1")
    )
    mlp = linear(g, hidden, read(f"{name}.mlp.fc2.weight"), hint=f"{name}.fc2")
    return g.op("Add", x, scale_channels(g, mlp, read(f"{name}.mlp_layer_scale.scale"), -1, f"{name}.ls2"))


def _transformer(g: GraphBuilder, x: str, read: TensorReader, shape: MimiEncoderShape) -> str:
    """[1, T, C] -> [1, T, C] through the encoder transformer."""
    rope = _rope_tables(g, x, shape)
    mask = _causal_mask(g, x)
    for layer in range(shape.layers):
        x = _transformer_layer(g, x, read, f"{PREFIX}encoder_transformer.layers.{layer}", shape, rope, mask)
    return x


# ---- split residual vector quantiser -------------------------------------------------------------------
def dequantized_codebook(embed_sum: np.ndarray, cluster_usage: np.ndarray) -> np.ndarray:
    """Codebook vectors [size, dim] float32, computed in float32 as MimiEuclideanCodebook.embed does."""
    usage = np.maximum(cluster_usage.astype(np.float32), np.float32(CODEBOOK_EPS))
    return (embed_sum.astype(np.float32) / usage[:, None]).astype(np.float32)


def _nearest_code(g: GraphBuilder, residual: str, codebook: str, code_norms: np.ndarray, hint: str) -> str:
    """Index [F, 1] int64 of the nearest codebook row to each row of residual [F, D]."""
    row_norms = reduce_sum(g, g.op("Mul", residual, residual, hint=f"{hint}.sq"), [1], hint=f"{hint}.norm")
    dots = g.op("Gemm", residual, codebook, transB=1, hint=f"{hint}.dot")
    sums = g.op("Add", row_norms, g.weight(code_norms[None, :], f"{hint}.code_norms"), hint=f"{hint}.sum")
    squared = g.op(
        "Sub", sums, g.op("Mul", dots, g.const(2.0, np.float32), hint=f"{hint}.2dot"), hint=f"{hint}.d2"
    )
    distance = g.op(
        "Sqrt", g.op("Max", squared, g.const(_CDIST_FLOOR, np.float32), hint=hint), hint=f"{hint}.dist"
    )
    return g.op("ArgMin", distance, axis=1, keepdims=1, select_last_index=0, hint=f"{hint}.argmin")


def _rvq(
    g: GraphBuilder, latent: str, read: TensorReader, name: str, levels: int, project: bool
) -> list[str]:
    """Codes of the first `levels` levels of one residual VQ; latent is [F, hidden]."""
    residual = latent
    if project:  # bias-free 1x1 conv == a linear map on each frame
        residual = linear(g, latent, read(f"{name}.input_proj.weight")[:, :, 0], hint=f"{name}.input_proj")
    codes = []
    for level in range(levels):
        base = f"{name}.layers.{level}.codebook"
        vectors = dequantized_codebook(read(f"{base}.embed_sum"), read(f"{base}.cluster_usage"))
        norms = np.sum(vectors.astype(np.float64) ** 2, axis=1).astype(np.float32)
        codebook = g.weight(vectors, f"{base}.embed")  # one copy serves the distances and the lookup
        code = _nearest_code(g, residual, codebook, norms, hint=base)
        codes.append(code)
        if level + 1 < levels:
            chosen = g.op("Gather", codebook, squeeze(g, code, [1]), axis=0, hint=base)
            residual = g.op("Sub", residual, chosen, hint=f"{base}.residual")
    return codes


def _quantize(g: GraphBuilder, latent: str, read: TensorReader, shape: MimiEncoderShape, valid: int) -> str:
    """latent [F, hidden] -> codes [F, valid] int64 (semantic levels first, then acoustic)."""
    semantic_levels = min(valid, shape.num_semantic)
    name = f"{PREFIX}quantizer.semantic_residual_vector_quantizer"
    codes = _rvq(g, latent, read, name, semantic_levels, shape.rvq_projects)
    if valid > semantic_levels:
        name = f"{PREFIX}quantizer.acoustic_residual_vector_quantizer"
        codes += _rvq(g, latent, read, name, valid - semantic_levels, shape.rvq_projects)
    return concat(g, codes, axis=1, hint="codes")


# ---- entry points --------------------------------------------------------------------------------------
def build_encoder_graph(
    codec_config: dict[str, Any], read: TensorReader, spool_dir: Path | None = None
) -> GraphBuilder:
    """The codec encoder graph from a speech_tokenizer config and a reader of its (prefixed) tensors."""
    shape = MimiEncoderShape.from_config(codec_config.get("encoder_config", {}))
    valid = int(codec_config.get("encoder_valid_num_quantizers", spec.NUM_CODE_GROUPS))
    if not shape.num_semantic <= valid <= shape.num_quantizers:
        raise Qwen3TTSError(
            f"encoder_valid_num_quantizers {valid} is out of range", "use an official checkpoint"
        )
    g = GraphBuilder("qwen3tts_codec_encoder", doc=__doc__.split("\n\n")[0], spool_dir=spool_dir)
    wav = g.add_input("waveform", np.float32, [1, "samples"])
    x = _seanet(g, unsqueeze(g, wav, [1], hint="wav"), read, shape)
    x = transpose(g, _transformer(g, transpose(g, x, [0, 2, 1]), read, shape), [0, 2, 1])
    latent = squeeze(g, transpose(g, _downsample(g, x, read), [0, 2, 1], hint="latent"), [0], hint="latent")
    g.add_output(_quantize(g, latent, read, shape, valid), "codes", np.int64, ["frames", valid])
    g.metadata.update(
        {
            "qwen3tts.sample_rate": str(codec_config.get("input_sample_rate", spec.SAMPLE_RATE)),
            "qwen3tts.samples_per_frame": str(
                codec_config.get("encode_downsample_rate", spec.SAMPLES_PER_FRAME)
            ),
            "qwen3tts.num_quantizers": str(valid),
        }
    )
    return g


def write_encoder_onnx(ckpt: Checkpoint, out: Path) -> None:
    """Write `codec_encoder.onnx` for the checkpoint's speech tokenizer."""
    graph = build_encoder_graph(ckpt.codec_config, ckpt.codec_tensor, spool_dir=Path(out).parent)
    try:
        graph.save(out)
    finally:
        graph.close()
