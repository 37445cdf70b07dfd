"""The 12 Hz codec decoder as a stateful streaming ONNX graph, built directly from the checkpoint weights.

Official module: `Qwen3TTSTokenizerV2Decoder` (qwen-tts 0.1.1). It is fully causal: causal convs (left
zero padding), causal transposed convs (the last k - stride samples dropped) and sliding-window attention
(key j is visible to query i iff i - window < j <= i). So feeding the frames in chunks and carrying what
each layer needs from the past reproduces the full decode exactly, up to float rounding.

Graph interface (batch 1, any number N >= 1 of new frames per call):
    inputs   codes            int64   [1, N, 16]  codebook ids in [0, codebook_size)
             past.<name>      float32 / int64     carried state (see below)
    outputs  audio            float32 [1, N * 1920], clamped to [-1, 1]
             present.<name>   the state to pass as past.<name> to the next call
The initial state is all zeros; it equals the official left zero padding: conv histories are the zero
pad (transposed convs are computed as causal convs over their input, see `causal_conv_transpose`), the
position counter starts at 0 and attention ignores the cache slots that lie before position 0.

Cost: the conv stack is ~60 GFLOP per audio second and runs near the CPU's GEMM peak. Every call also
reads the low-rate layers' weights (transformer, ConvNeXt, first conv: ~65 M parameters) for only a few
columns each, so chunks of >= 4 frames decode noticeably cheaper per frame than single frames.

State entries:
    position                  int64 [1]              frames decoded so far (RoPE position, cache validity)
    pre_conv                  [1, codebook_dim, 2]   input history of the k3 pre-conv
    layer<i>.key / .value     [1, kv_heads, window - 1, head_dim]  RoPE'd keys / values of the last frames
    upsample<j>.dwconv        [1, latent, 6]         ConvNeXt depthwise-conv input history
    decoder0                  [1, latent, 6]         input history of the first k7 conv
    block<b>.convt            [1, C, 1]              transposed-conv input history (after SnakeBeta)
    block<b>.res<u>.conv1     [1, C/2, 6 * dilation] dilated-conv input history (after SnakeBeta)
    final_conv                [1, C_last, 6]         input history of the last k7 conv
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from qwen3tts_cli import spec
from qwen3tts_cli.convert import onnx_graph as og
from qwen3tts_cli.convert.onnx_graph import GraphBuilder
from qwen3tts_cli.errors import Qwen3TTSError

CODES_INPUT = "codes"
AUDIO_OUTPUT = "audio"
PAST_PREFIX = "past."
PRESENT_PREFIX = "present."
POSITION_STATE = "position"
GRAPH_VERSION = "1"

_CLUSTER_USAGE_EPS = 1e-5  # EuclideanCodebook.epsilon
_SNAKE_EPS = 1e-9  # SnakeBeta.no_div_by_zero
_CONVNEXT_LN_EPS = 1e-6
_RESIDUAL_DILATIONS = (1, 3, 9)
_CAUSAL_KERNEL = 7


class CodecWeights(Protocol):
    """What the builder reads (a `Checkpoint` provides it): the decoder config and codec tensors as f32."""

    @property
    def decoder_config(self) -> dict[str, Any]: ...

    def codec_tensor(self, name: str) -> np.ndarray: ...


@dataclass(frozen=True)
class DecoderShape:
    """The dimensions of `decoder_config` that the graph depends on."""

    num_quantizers: int
    codebook_size: int
    codebook_dim: int
    latent_dim: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    window: int
    rope_theta: float
    rms_eps: float
    upsampling_ratios: tuple[int, ...]
    upsample_rates: tuple[int, ...]
    decoder_dim: int

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> DecoderShape:
        if cfg.get("hidden_act", "silu") != "silu":
            raise Qwen3TTSError(
                f"codec decoder hidden_act {cfg['hidden_act']!r} is not supported", "expected silu"
            )
        rope = cfg.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise Qwen3TTSError(
                f"codec decoder rope_scaling {rope} is not supported", "expected default RoPE"
            )
        heads = int(cfg.get("num_attention_heads", 16))
        hidden = int(cfg.get("hidden_size", 1024))
        return cls(
            num_quantizers=int(cfg.get("num_quantizers", 16)),
            codebook_size=int(cfg.get("codebook_size", 2048)),
            codebook_dim=int(cfg.get("codebook_dim", 512)),
            latent_dim=int(cfg.get("latent_dim", 1024)),
            hidden=hidden,
            layers=int(cfg.get("num_hidden_layers", 8)),
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads", heads)),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            window=int(cfg.get("sliding_window", 72)),
            rope_theta=float(cfg.get("rope_theta", 10000)),
            rms_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            upsampling_ratios=tuple(int(r) for r in cfg.get("upsampling_ratios", (2, 2))),
            upsample_rates=tuple(int(r) for r in cfg.get("upsample_rates", (8, 5, 4, 3))),
            decoder_dim=int(cfg.get("decoder_dim", 1536)),
        )

    @property
    def samples_per_frame(self) -> int:
        return int(np.prod(self.upsampling_ratios + self.upsample_rates))


def write_decoder_onnx(ckpt: CodecWeights, out: str | Path) -> None:
    """Write `codec_decoder.onnx` (the streaming graph described in the module docstring) to `out`."""
    shape = DecoderShape.from_config(ckpt.decoder_config)
    if shape.samples_per_frame != spec.SAMPLES_PER_FRAME:
        raise Qwen3TTSError(
            f"codec decoder upsamples by {shape.samples_per_frame}, expected {spec.SAMPLES_PER_FRAME}",
            "use a Qwen3-TTS 12Hz checkpoint",
        )
    builder = _DecoderGraphBuilder(ckpt, shape, spool_dir=Path(out).parent)
    try:
        builder.build()
        builder.g.save(out)
    finally:
        builder.g.close()


class _DecoderGraphBuilder:
    """Emits the decoder graph stage by stage; values are [1, C, T] except inside the transformer."""

    def __init__(self, ckpt: CodecWeights, shape: DecoderShape, spool_dir: Path | None = None) -> None:
        self.ckpt = ckpt
        self.shape = shape
        self.g = GraphBuilder("qwen3tts_codec_decoder", spool_dir=spool_dir)
        self._rotation: str | None = None
        self.g.metadata.update(
            {
                "qwen3tts.graph": "codec_decoder",
                "qwen3tts.graph_version": GRAPH_VERSION,
                "qwen3tts.samples_per_frame": str(shape.samples_per_frame),
                "qwen3tts.num_quantizers": str(shape.num_quantizers),
                "qwen3tts.codebook_size": str(shape.codebook_size),
            }
        )

    # ---- weights and state --------------------------------------------------------------------------
    def tensor(self, name: str) -> np.ndarray:
        return np.asarray(self.ckpt.codec_tensor(f"decoder.{name}"), dtype=np.float32)

    def past(self, name: str, shape: list[int], dtype: type = np.float32) -> str:
        return self.g.add_input(PAST_PREFIX + name, dtype, shape)

    def present(self, name: str, value: str, shape: list[int], dtype: type = np.float32) -> None:
        self.g.add_output(value, PRESENT_PREFIX + name, dtype, shape)

    # ---- graph ----------------------------------------------------------------------------------------
    def build(self) -> None:
        s = self.shape
        codes = self.g.add_input(CODES_INPUT, np.int64, [1, "frames", s.num_quantizers])
        hidden = self.quantizer(codes)  # [1, N, codebook_dim]
        hidden = og.transpose(self.g, hidden, [0, 2, 1])
        hidden = self.causal_conv(hidden, "pre_conv.conv", "pre_conv")
        hidden = og.transpose(self.g, hidden, [0, 2, 1])  # [1, N, latent]
        hidden = self.transformer(hidden)
        hidden = og.transpose(self.g, hidden, [0, 2, 1])  # [1, latent, N]
        for j in range(len(s.upsampling_ratios)):
            # kernel == stride: no overlap, nothing to carry
            hidden = self.causal_conv_transpose(
                hidden, f"upsample.{j}.0.conv", s.upsampling_ratios[j], f"upsample{j}.convt"
            )
            hidden = self.convnext(hidden, j)
        hidden = self.causal_conv(hidden, "decoder.0.conv", "decoder0")
        for b in range(len(s.upsample_rates)):
            hidden = self.decoder_block(hidden, b)
        last = len(s.upsample_rates) + 1
        hidden = self.snake(hidden, f"decoder.{last}", "final_snake")
        hidden = self.causal_conv(hidden, f"decoder.{last + 1}.conv", "final_conv")
        hidden = self.g.op("Clip", hidden, self.g.const(-1.0, np.float32), self.g.const(1.0, np.float32))
        audio = og.reshape(self.g, hidden, [1, -1])
        self.g.add_output(audio, AUDIO_OUTPUT, np.float32, [1, "samples"])

    def quantizer(self, codes: str) -> str:
        """SplitRVQ decode as in the official: sum the dequantised rows of rvq_first (level 0) and of
        rvq_rest (levels 1..) separately, project each sum by its RVQ's 1x1 output_proj (no bias), add.
        The codebooks stay unprojected ([K, 256] instead of [K, 512]): half the largest initializer."""
        s = self.shape
        tables = [self.codebook("rvq_first", 0)]
        tables += [self.codebook("rvq_rest", level) for level in range(s.num_quantizers - 1)]
        table = np.concatenate(tables, axis=0)  # [Q * K, vq_dim]
        offsets = self.g.const(np.arange(s.num_quantizers, dtype=np.int64) * s.codebook_size)
        rows = self.g.op(
            "Gather", self.g.weight(table, "codebooks"), self.g.op("Add", codes, offsets), axis=0
        )  # [1, N, Q, vq_dim]
        projected: list[str] = []
        for rvq, start, end in (("rvq_first", 0, 1), ("rvq_rest", 1, s.num_quantizers)):
            group = og.slice_axis(self.g, rows, 2, start, end, hint=f"{rvq}.rows")
            summed = og.reduce_sum(self.g, group, [2], keepdims=False, hint=f"{rvq}.sum")
            projected.append(og.linear(self.g, summed, self.output_proj(rvq), hint=f"{rvq}.output_proj"))
        return self.g.op("Add", *projected, hint="codebook_sum")

    def codebook(self, rvq: str, level: int) -> np.ndarray:
        """Dequantised codebook (embedding_sum / usage): [K, vq_dim]."""
        prefix = f"quantizer.{rvq}.vq.layers.{level}._codebook"
        usage = np.maximum(self.tensor(f"{prefix}.cluster_usage"), _CLUSTER_USAGE_EPS)
        return (self.tensor(f"{prefix}.embedding_sum") / usage[:, None]).astype(np.float32)

    def output_proj(self, rvq: str) -> np.ndarray:
        """The RVQ's 1x1 Conv1d output_proj as a linear weight: [codebook_dim, vq_dim]."""
        return self.tensor(f"quantizer.{rvq}.output_proj.weight")[:, :, 0]

    # ---- causal convolutions with carried history ----------------------------------------------------
    def causal_conv(self, x: str, weight_name: str, state: str, dilation: int = 1, groups: int = 1) -> str:
        weight, bias = self.tensor(f"{weight_name}.weight"), self.tensor(f"{weight_name}.bias")
        return self.conv_with_history(x, weight, bias, state, dilation, groups)

    def conv_with_history(
        self, x: str, weight: np.ndarray, bias: np.ndarray, state: str, dilation: int = 1, groups: int = 1
    ) -> str:
        """Conv1d over [history, x]: the history is the conv's own left zero padding on the first call."""
        history = (weight.shape[2] - 1) * dilation
        if history == 0:
            return og.conv1d(self.g, x, weight, bias, groups=groups, hint=state)
        channels = weight.shape[1] * groups
        past = self.past(state, [1, channels, history])
        padded = og.concat(self.g, [past, x], axis=2, hint=f"{state}.padded")
        kept = og.slice_axis(self.g, padded, 2, -history, hint=f"{state}.hist")
        self.present(state, kept, [1, channels, history])
        return og.conv1d(self.g, padded, weight, bias, dilation=dilation, groups=groups, hint=state)

    def causal_conv_transpose(self, x: str, weight_name: str, stride: int, state: str) -> str:
        """Causal ConvTranspose1d (kernel = taps * stride; the official drops the last kernel - stride
        samples) computed as a plain causal conv with `taps` taps whose output channels are the `stride`
        phases, then interleaved: y[o, i*stride + p] = b[o] + sum_j W[:, o, p + j*stride] . x[:, i - j].
        Same products as the official op, but onnxruntime's Conv kernel is about twice as fast as its
        ConvTranspose here, and the carried state is just the last taps - 1 input frames."""
        weight = self.tensor(f"{weight_name}.weight")  # [C_in, C_out, kernel]
        bias = self.tensor(f"{weight_name}.bias")
        c_in, c_out, kernel = weight.shape
        if kernel % stride:
            raise Qwen3TTSError(f"unsupported transposed conv: kernel {kernel}, stride {stride}", "")
        taps = kernel // stride
        by_tap = weight.reshape(c_in, c_out, taps, stride)[
            :, :, ::-1, :
        ]  # conv tap t reads x[i - (taps-1-t)]
        phase_weight = by_tap.transpose(1, 3, 0, 2).reshape(c_out * stride, c_in, taps)  # rows (o, p)
        phases = self.conv_with_history(x, phase_weight, np.repeat(bias, stride), state)  # [1, C_out*s, N]
        grouped = og.reshape(self.g, phases, [1, c_out, stride, -1])
        interleaved = og.transpose(self.g, grouped, [0, 1, 3, 2], hint=f"{state}.interleave")
        return og.reshape(self.g, interleaved, [1, c_out, -1], hint=f"{state}.out")

    # ---- activations and blocks -----------------------------------------------------------------------
    def snake(self, x: str, param_prefix: str, hint: str) -> str:
        """SnakeBeta: x + sin(x * e^alpha)^2 / (e^beta + 1e-9); exponentials folded at build time."""
        alpha = np.exp(self.tensor(f"{param_prefix}.alpha")).reshape(1, -1, 1)
        inv_beta = (1.0 / (np.exp(self.tensor(f"{param_prefix}.beta")) + _SNAKE_EPS)).reshape(1, -1, 1)
        sine = self.g.op("Sin", self.g.op("Mul", x, self.g.weight(alpha.astype(np.float32), f"{hint}.alpha")))
        bump = self.g.op(
            "Mul", self.g.op("Mul", sine, sine), self.g.weight(inv_beta.astype(np.float32), f"{hint}.ib")
        )
        return self.g.op("Add", x, bump, hint=hint)

    def decoder_block(self, x: str, b: int) -> str:
        prefix = f"decoder.{b + 1}.block"
        rate = self.shape.upsample_rates[b]
        hidden = self.snake(x, f"{prefix}.0", f"block{b}.snake")
        hidden = self.causal_conv_transpose(hidden, f"{prefix}.1.conv", rate, f"block{b}.convt")
        for u, dilation in enumerate(_RESIDUAL_DILATIONS):
            hidden = self.residual_unit(hidden, f"{prefix}.{u + 2}", dilation, f"block{b}.res{u}")
        return hidden

    def residual_unit(self, x: str, prefix: str, dilation: int, name: str) -> str:
        hidden = self.snake(x, f"{prefix}.act1", f"{name}.act1")
        hidden = self.causal_conv(hidden, f"{prefix}.conv1.conv", f"{name}.conv1", dilation=dilation)
        hidden = self.snake(hidden, f"{prefix}.act2", f"{name}.act2")
        hidden = self.causal_conv(hidden, f"{prefix}.conv2.conv", f"{name}.conv2")
        return self.g.op("Add", hidden, x, hint=f"{name}.out")

    def convnext(self, x: str, j: int) -> str:
        prefix = f"upsample.{j}.1"
        latent = self.shape.latent_dim
        hidden = self.causal_conv(x, f"{prefix}.dwconv.conv", f"upsample{j}.dwconv", groups=latent)
        hidden = og.transpose(self.g, hidden, [0, 2, 1])
        hidden = og.layer_norm(
            self.g,
            hidden,
            self.tensor(f"{prefix}.norm.weight"),
            self.tensor(f"{prefix}.norm.bias"),
            _CONVNEXT_LN_EPS,
        )
        hidden = og.gelu(
            self.g,
            og.linear(
                self.g,
                hidden,
                self.tensor(f"{prefix}.pwconv1.weight"),
                self.tensor(f"{prefix}.pwconv1.bias"),
                hint=f"upsample{j}.pw1",
            ),
        )
        gamma = self.tensor(f"{prefix}.gamma")
        hidden = og.linear(
            self.g,
            hidden,
            self.tensor(f"{prefix}.pwconv2.weight") * gamma[:, None],
            self.tensor(f"{prefix}.pwconv2.bias") * gamma,
            hint=f"upsample{j}.pw2",
        )
        return self.g.op("Add", x, og.transpose(self.g, hidden, [0, 2, 1]), hint=f"upsample{j}.out")

    # ---- sliding-window transformer with KV cache -----------------------------------------------------
    def transformer(self, x: str) -> str:
        s = self.shape
        prefix = "pre_transformer"
        hidden = og.linear(
            self.g, x, self.tensor(f"{prefix}.input_proj.weight"), self.tensor(f"{prefix}.input_proj.bias")
        )
        cos, sin, mask = self.rope_and_mask(hidden)
        for i in range(s.layers):
            hidden = self.transformer_layer(hidden, i, cos, sin, mask)
        hidden = og.rms_norm(
            self.g, hidden, self.tensor(f"{prefix}.norm.weight"), s.rms_eps, hint="final_norm"
        )
        return og.linear(
            self.g,
            hidden,
            self.tensor(f"{prefix}.output_proj.weight"),
            self.tensor(f"{prefix}.output_proj.bias"),
        )

    def rope_and_mask(self, x: str) -> tuple[str, str, str]:
        """cos/sin [N, 1, head_dim] for positions pos..pos+N-1, and the additive attention mask
        [N, window - 1 + N] over (cached keys, new keys)."""
        s = self.shape
        g = self.g
        cache = s.window - 1
        position = self.past(POSITION_STATE, [1], np.int64)
        frames = og.dim_of(g, x, 1, hint="frames")
        self.present(POSITION_STATE, g.op("Add", position, frames, hint="next_position"), [1], np.int64)
        zero, one = g.const(0), g.const(1)
        steps = g.op("Range", zero, og.squeeze(g, frames, [0]), one, hint="steps")  # [N]
        positions = g.op("Add", steps, position, hint="positions")
        half = np.arange(0, s.head_dim, 2, dtype=np.int64).astype(np.float32) / s.head_dim
        inv_freq = (1.0 / (s.rope_theta**half)).astype(np.float32)
        inv_freq = np.concatenate([inv_freq, inv_freq])[None, None, :]  # rotate_half pairs i with i + D/2
        # [N, 1, D]: broadcasts over the heads axis of [1, N, heads, D]
        angles = g.op(
            "Mul", og.unsqueeze(g, g.op("Cast", positions, to=1), [1, 2]), g.weight(inv_freq, "inv_freq")
        )
        cos, sin = g.op("Cos", angles, hint="rope_cos"), g.op("Sin", angles, hint="rope_sin")
        # key slot j holds absolute position pos - cache + j; query i sits at pos + i
        key_slots = g.op("Range", zero, og.squeeze(g, g.op("Add", frames, g.const([cache])), [0]), one)
        distance = g.op("Sub", g.op("Add", og.unsqueeze(g, steps, [1]), g.const(cache)), key_slots)  # [N, L]
        in_window = g.op(
            "And",
            g.op("GreaterOrEqual", distance, zero),
            g.op("Less", distance, g.const(s.window)),
        )
        exists = g.op("GreaterOrEqual", g.op("Add", key_slots, position), g.const(cache))  # abs pos >= 0
        allowed = g.op("And", in_window, exists, hint="allowed")
        mask = g.op(
            "Where", allowed, g.const(0.0, np.float32), g.const(-np.inf, np.float32), hint="attn_mask"
        )
        return cos, sin, mask

    def transformer_layer(self, x: str, i: int, cos: str, sin: str, mask: str) -> str:
        s = self.shape
        g = self.g
        p = f"pre_transformer.layers.{i}"
        name = f"layer{i}"
        normed = og.rms_norm(
            g, x, self.tensor(f"{p}.input_layernorm.weight"), s.rms_eps, hint=f"{name}.norm1"
        )
        q_weight = self.tensor(f"{p}.self_attn.q_proj.weight") * s.head_dim**-0.5  # attention scale folded
        k_weight = self.tensor(f"{p}.self_attn.k_proj.weight")
        v_weight = self.tensor(f"{p}.self_attn.v_proj.weight")
        fused = np.concatenate([q_weight, k_weight, v_weight], axis=0)
        projected = og.linear(g, normed, fused, hint=f"{name}.qkv")
        q_size, kv_size = s.heads * s.head_dim, s.kv_heads * s.head_dim
        q, k, v = g.op_multi(
            "Split", projected, g.const([q_size, kv_size, kv_size]), axis=2, outputs=3, hint=f"{name}.split"
        )
        q = self.heads_first(self.apply_rope(q, cos, sin), s.heads)
        k = self.heads_first(self.apply_rope(k, cos, sin), s.kv_heads)
        v = self.heads_first(v, s.kv_heads)
        keys = self.cached(k, f"{name}.key")
        values = self.cached(v, f"{name}.value")
        keys, values = self.repeat_kv(keys), self.repeat_kv(values)
        scores = g.op("MatMul", q, og.transpose(g, keys, [0, 1, 3, 2]), hint=f"{name}.scores")
        probs = g.op("Softmax", g.op("Add", scores, mask), axis=-1, hint=f"{name}.probs")
        context = og.transpose(g, g.op("MatMul", probs, values), [0, 2, 1, 3])
        context = og.reshape(g, context, [1, -1, q_size])
        attn_scale = self.tensor(f"{p}.self_attn_layer_scale.scale")
        attn_out = og.linear(g, context, self.tensor(f"{p}.self_attn.o_proj.weight") * attn_scale[:, None])
        hidden = g.op("Add", x, attn_out, hint=f"{name}.attn_res")

        normed = og.rms_norm(g, hidden, self.tensor(f"{p}.post_attention_layernorm.weight"), s.rms_eps)
        gate_up = np.concatenate(
            [self.tensor(f"{p}.mlp.gate_proj.weight"), self.tensor(f"{p}.mlp.up_proj.weight")]
        )
        half = g.const([gate_up.shape[0] // 2] * 2)
        gate, up = g.op_multi(
            "Split", og.linear(g, normed, gate_up, hint=f"{name}.mlp"), half, axis=2, outputs=2
        )
        mlp_scale = self.tensor(f"{p}.mlp_layer_scale.scale")
        down = og.linear(
            g,
            g.op("Mul", og.silu(g, gate), up),
            self.tensor(f"{p}.mlp.down_proj.weight") * mlp_scale[:, None],
        )
        return g.op("Add", hidden, down, hint=f"{name}.out")

    def apply_rope(self, x: str, cos: str, sin: str) -> str:
        """x * cos + rotate_half(x) * sin on [1, N, heads * head_dim] viewed per head. rotate_half is a
        MatMul with a signed permutation matrix: exact, and one node instead of slice/neg/concat."""
        g = self.g
        d = self.shape.head_dim
        if self._rotation is None:
            rotation = np.zeros((d, d), np.float32)
            half = d // 2
            rotation[np.arange(half) + half, np.arange(half)] = -1.0  # out[j] = -x[j + D/2]
            rotation[np.arange(half), np.arange(half) + half] = 1.0  # out[j + D/2] = x[j]
            self._rotation = g.weight(rotation, "rotate_half")
        x4 = og.reshape(g, x, [1, 0, -1, d])
        rotated = g.op("MatMul", x4, self._rotation, hint="rotate_half")
        return g.op("Add", g.op("Mul", x4, cos), g.op("Mul", rotated, sin), hint="rope")

    def heads_first(self, x: str, heads: int) -> str:
        """[1, N, heads, D] (or [1, N, heads * D]) -> [1, heads, N, D]."""
        x4 = og.reshape(self.g, x, [1, 0, heads, self.shape.head_dim])
        return og.transpose(self.g, x4, [0, 2, 1, 3])

    def cached(self, new: str, state: str) -> str:
        """[cache, new] along time; its last window - 1 frames become the new cache."""
        s = self.shape
        cache_shape = [1, s.kv_heads, s.window - 1, s.head_dim]
        past = self.past(state, cache_shape)
        joined = og.concat(self.g, [past, new], axis=2, hint=state)
        self.present(
            state, og.slice_axis(self.g, joined, 2, -(s.window - 1), hint=f"{state}.keep"), cache_shape
        )
        return joined

    def repeat_kv(self, x: str) -> str:
        s = self.shape
        groups = s.heads // s.kv_heads
        if groups == 1:
            return x
        expanded = self.g.op("Expand", og.unsqueeze(self.g, x, [2]), self.g.const([1, 1, groups, 1, 1]))
        return og.reshape(self.g, expanded, [1, s.heads, -1, s.head_dim])
