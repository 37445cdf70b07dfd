"""Speaker encoder (ECAPA-TDNN, Base checkpoints only) -> ONNX, built straight from the weights.

Graph: `mel` [1, frames, 128] float32 (time-major log-mel from `qwen3tts_cli.engine.mel.log_mel`, the
layout the official `speaker_encoder` is called with) -> `embedding` [enc_dim] float32 (enc_dim = talker
hidden size).

Official module: qwen-tts 0.1.1 `Qwen3TTSSpeakerEncoder`. Every convolution is `padding="same"` with
`padding_mode="reflect"` (left pad d*(k-1)//2, the rest on the right); every TDNN block is Conv1d + ReLU;
there is no BatchNorm. Blocks: TDNN k5 -> 3 SE-Res2Net blocks (TDNN 1x1, Res2Net with `scale` chunks,
TDNN 1x1, squeeze-excitation, residual) -> concat of the 3 block outputs -> TDNN (MFA) -> attentive
statistics pooling (global mean/std appended, TDNN, tanh, 1x1 conv, softmax over time, weighted mean/std;
variance floor 1e-12) -> 1x1 conv to enc_dim. Reflect padding needs more frames than the largest one-sided
pad (4 with the defaults), so the runtime must feed at least `min_frames(config)` frames.
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
    reduce_mean,
    reduce_sum,
    reshape,
    transpose,
)
from qwen3tts_cli.errors import Qwen3TTSError

TensorReader = Callable[[str], np.ndarray]

PREFIX = "speaker_encoder."
_STD_FLOOR = 1e-12  # AttentiveStatisticsPooling.eps, applied to the variance before sqrt

# Qwen3TTSSpeakerEncoderConfig defaults; the released config.json only sets enc_dim and sample_rate
SPEAKER_DEFAULTS: dict[str, Any] = {
    "mel_dim": 128,
    "enc_dim": 1024,
    "enc_channels": [512, 512, 512, 512, 1536],
    "enc_kernel_sizes": [5, 3, 3, 3, 1],
    "enc_dilations": [1, 2, 3, 4, 1],
    "enc_attention_channels": 128,
    "enc_res2net_scale": 8,
    "enc_se_channels": 128,
    "sample_rate": spec.SAMPLE_RATE,
}


@dataclass(frozen=True)
class SpeakerShape:
    mel_dim: int
    enc_dim: int
    channels: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    dilations: tuple[int, ...]
    res2net_scale: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SpeakerShape:
        cfg = {**SPEAKER_DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
        channels = tuple(int(c) for c in cfg["enc_channels"])
        kernels = tuple(int(k) for k in cfg["enc_kernel_sizes"])
        dilations = tuple(int(d) for d in cfg["enc_dilations"])
        if not len(channels) == len(kernels) == len(dilations) or len(channels) < 3:
            raise Qwen3TTSError(
                "speaker_encoder_config has inconsistent layer lists", "use an official checkpoint"
            )
        if int(cfg["sample_rate"]) != spec.SAMPLE_RATE:
            raise Qwen3TTSError(
                f"speaker encoder sample rate {cfg['sample_rate']} is not 24000", "use an official checkpoint"
            )
        return cls(
            mel_dim=int(cfg["mel_dim"]),
            enc_dim=int(cfg["enc_dim"]),
            channels=channels,
            kernel_sizes=kernels,
            dilations=dilations,
            res2net_scale=int(cfg["enc_res2net_scale"]),
        )

    def min_frames(self) -> int:
        """Fewest mel frames every reflect pad accepts (torch needs pad < length)."""
        return max((d * (k - 1) + 1) // 2 for k, d in zip(self.kernel_sizes, self.dilations, strict=True)) + 1


def min_frames(speaker_config: dict[str, Any]) -> int:
    return SpeakerShape.from_config(speaker_config).min_frames()


# ---- layers --------------------------------------------------------------------------------------------
def _same_conv(g: GraphBuilder, x: str, read: TensorReader, name: str, dilation: int = 1) -> str:
    """nn.Conv1d(padding="same", padding_mode="reflect") on [1, C, T]."""
    weight = read(f"{name}.weight")
    total = dilation * (weight.shape[2] - 1)
    left = total // 2
    if total:
        x = g.op("Pad", x, g.const([0, 0, left, 0, 0, total - left]), mode="reflect", hint=f"{name}.pad")
    return conv1d(g, x, weight, read(f"{name}.bias"), dilation=dilation, hint=name)


def _tdnn(g: GraphBuilder, x: str, read: TensorReader, name: str, dilation: int = 1) -> str:
    return g.op("Relu", _same_conv(g, x, read, f"{name}.conv", dilation), hint=name)


def _res2net(
    g: GraphBuilder, x: str, read: TensorReader, name: str, channels: int, scale: int, dilation: int
) -> str:
    """Chunk 0 passes through; chunk 1 -> TDNN; chunk i >= 2 -> TDNN(chunk_i + previous output)."""
    width = channels // scale
    chunks = g.op_multi("Split", x, g.const([width] * scale), axis=1, outputs=scale, hint=f"{name}.split")
    outputs = [chunks[0]]
    previous = None
    for i in range(1, scale):
        part = chunks[i] if previous is None else g.op("Add", chunks[i], previous, hint=f"{name}.{i}")
        previous = _tdnn(g, part, read, f"{name}.blocks.{i - 1}", dilation)
        outputs.append(previous)
    return concat(g, outputs, axis=1, hint=f"{name}.out")


def _squeeze_excite(g: GraphBuilder, x: str, read: TensorReader, name: str) -> str:
    pooled = reduce_mean(g, x, [2], hint=f"{name}.mean")
    squeezed = g.op("Relu", _same_conv(g, pooled, read, f"{name}.conv1"), hint=name)
    gate = g.op("Sigmoid", _same_conv(g, squeezed, read, f"{name}.conv2"), hint=name)
    return g.op("Mul", x, gate, hint=name)


def _se_res2net_block(
    g: GraphBuilder, x: str, read: TensorReader, name: str, shape: SpeakerShape, index: int
) -> str:
    h = _tdnn(g, x, read, f"{name}.tdnn1")
    h = _res2net(
        g,
        h,
        read,
        f"{name}.res2net_block",
        shape.channels[index],
        shape.res2net_scale,
        shape.dilations[index],
    )
    h = _tdnn(g, h, read, f"{name}.tdnn2")
    h = _squeeze_excite(g, h, read, f"{name}.se_block")
    return g.op("Add", h, x, hint=f"{name}.out")


def _mean_and_std(g: GraphBuilder, x: str, weights: str | None, hint: str) -> tuple[str, str]:
    """Per-channel mean and std over time ([1, C, 1] each), uniform when `weights` is None."""
    if weights is None:
        mean = reduce_mean(g, x, [2], hint=f"{hint}.mean")
        variance = reduce_mean(
            g, g.op("Pow", g.op("Sub", x, mean), g.const(2.0, np.float32)), [2], hint=f"{hint}.var"
        )
    else:
        mean = reduce_sum(g, g.op("Mul", x, weights, hint=hint), [2], hint=f"{hint}.mean")
        deviation = g.op("Pow", g.op("Sub", x, mean, hint=hint), g.const(2.0, np.float32), hint=hint)
        variance = reduce_sum(g, g.op("Mul", weights, deviation, hint=hint), [2], hint=f"{hint}.var")
    floored = g.op("Max", variance, g.const(_STD_FLOOR, np.float32), hint=f"{hint}.var")
    return mean, g.op("Sqrt", floored, hint=f"{hint}.std")


def _attentive_pooling(g: GraphBuilder, x: str, read: TensorReader, name: str) -> str:
    """[1, C, T] -> [1, 2C, 1]: attention-weighted mean and std, the attention seeing global statistics."""
    mean, std = _mean_and_std(g, x, None, f"{name}.global")
    full = g.op("Shape", x, hint=f"{name}.shape")
    context = concat(
        g, [x, g.op("Expand", mean, full, hint=name), g.op("Expand", std, full, hint=name)], axis=1, hint=name
    )
    hidden = g.op("Tanh", _tdnn(g, context, read, f"{name}.tdnn"), hint=name)
    attention = g.op("Softmax", _same_conv(g, hidden, read, f"{name}.conv"), axis=2, hint=f"{name}.softmax")
    mean, std = _mean_and_std(g, x, attention, f"{name}.weighted")
    return concat(g, [mean, std], axis=1, hint=f"{name}.pooled")


# ---- entry points --------------------------------------------------------------------------------------
def build_speaker_graph(
    speaker_config: dict[str, Any], read: TensorReader, spool_dir: Path | None = None
) -> GraphBuilder:
    """The speaker encoder graph from `speaker_encoder_config` and a reader of `speaker_encoder.*` tensors."""
    shape = SpeakerShape.from_config(speaker_config)
    g = GraphBuilder("qwen3tts_speaker_encoder", doc=__doc__.split("\n\n")[0], spool_dir=spool_dir)
    mel = g.add_input("mel", np.float32, [1, "frames", shape.mel_dim])
    x = _tdnn(g, transpose(g, mel, [0, 2, 1]), read, f"{PREFIX}blocks.0", shape.dilations[0])
    block_outputs = []
    for index in range(1, len(shape.channels) - 1):
        x = _se_res2net_block(g, x, read, f"{PREFIX}blocks.{index}", shape, index)
        block_outputs.append(x)
    x = _tdnn(g, concat(g, block_outputs, axis=1, hint="mfa.in"), read, f"{PREFIX}mfa", shape.dilations[-1])
    pooled = _attentive_pooling(g, x, read, f"{PREFIX}asp")
    embedding = reshape(g, _same_conv(g, pooled, read, f"{PREFIX}fc"), [-1], hint="embedding")
    g.add_output(embedding, "embedding", np.float32, [shape.enc_dim])
    g.metadata.update(
        {
            "qwen3tts.min_frames": str(shape.min_frames()),
            "qwen3tts.mel_dim": str(shape.mel_dim),
            "qwen3tts.embedding_dim": str(shape.enc_dim),
        }
    )
    return g


def write_speaker_onnx(ckpt: Checkpoint, out: Path) -> None:
    """Write `speaker_encoder.onnx` (Base checkpoints; others have no speaker encoder)."""
    if ckpt.kind != spec.KIND_BASE:
        raise Qwen3TTSError(
            f"a {ckpt.kind} checkpoint has no speaker encoder", "voice cloning needs a Base model"
        )
    graph = build_speaker_graph(ckpt.config.get("speaker_encoder_config", {}), ckpt.tensor, Path(out).parent)
    try:
        graph.save(out)
    finally:
        graph.close()
