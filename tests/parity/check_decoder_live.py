#!/usr/bin/env python3
"""Live parity of the streaming codec-decoder ONNX graph against the official PyTorch decoder.

Runs in the reference venv (torch + qwen-tts 0.1.1), e.g.
    OMP_NUM_THREADS=1 /work/refenv/bin/python tests/parity/check_decoder_live.py --size tiny
It builds the official `Qwen3TTSTokenizerV2Decoder` from a config, fills it with seeded random weights,
converts those weights with `write_decoder_onnx` (torch-free, the product path), and compares:
  * one-shot ONNX decode of 37 frames vs the official forward and the official `decode` API,
  * 340 frames vs the official FULL forward (the API's 300/25 chunking is an approximation beyond 300),
  * streaming in chunks of 1, 3, 4, 12 frames vs the one-shot ONNX output.
`--size real` uses the real decoder_config (architecture.md section 7.2) and also times ORT.
Prints one JSON object with the measured differences; exits non-zero when a bound is exceeded.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(Path(__file__).parent)]

import official  # noqa: E402,F401  (sets the offline flags and registers the torchaudio stub)
import torch  # noqa: E402
from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import (  # noqa: E402
    Qwen3TTSTokenizerV2DecoderConfig,
)
from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Decoder  # noqa: E402

from qwen3tts_cli.convert.codec_decoder import write_decoder_onnx  # noqa: E402
from qwen3tts_cli.engine.decoder import StreamingDecoder  # noqa: E402

SIZES = {
    "tiny": dict(
        codebook_dim=32,
        latent_dim=48,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
        num_hidden_layers=2,
        decoder_dim=64,
    ),
    "real": dict(
        codebook_dim=512,
        latent_dim=1024,
        hidden_size=512,
        intermediate_size=1024,
        num_attention_heads=16,
        num_key_value_heads=16,
        head_dim=64,
        num_hidden_layers=8,
        decoder_dim=1536,
    ),
}
COMMON = dict(
    codebook_size=2048,
    num_quantizers=16,
    upsample_rates=[8, 5, 4, 3],
    upsampling_ratios=[2, 2],
    sliding_window=72,
    max_position_embeddings=8000,
    rope_theta=10000,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    layer_scale_initial_scale=0.01,
    attention_bias=False,
)


def decoder_config(size: str) -> dict:
    return dict(COMMON, **SIZES[size])


@torch.no_grad()
def seeded_decoder(size: str, seed: int) -> Qwen3TTSTokenizerV2Decoder:
    """Official decoder with seeded weights scaled so activations stay O(1) through the conv stack."""
    cfg = Qwen3TTSTokenizerV2DecoderConfig(**decoder_config(size))
    cfg._attn_implementation = "eager"
    model = Qwen3TTSTokenizerV2Decoder(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    for name, param in sorted(model.state_dict().items()):
        param.copy_(_init_value(name, param, gen))
    return model


def _init_value(name: str, param: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    def normal(std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(param.shape, generator=gen) * std + mean

    leaf = name.rsplit(".", 1)[-1]
    if leaf == "cluster_usage":
        return torch.rand(param.shape, generator=gen) + 0.5
    if leaf == "embedding_sum":
        return normal(1.0)
    if leaf in ("alpha", "beta"):
        return normal(0.1)
    if leaf in ("scale", "gamma"):
        return torch.rand(param.shape, generator=gen) * 0.1 + 0.05
    if "norm" in name and leaf == "weight":
        return normal(0.1, 1.0)
    if leaf == "bias":
        return normal(0.05)
    if param.dim() == 3 and ".block.1.conv." in name:  # transposed conv [in, out, k], stride k/2
        return normal((param.shape[0] * 2) ** -0.5)
    if param.dim() == 3:  # conv [out, in, k]
        gain = 0.25 if ".conv2." in name else 0.05 if param.shape[0] == 1 else 1.0
        return normal(gain * (param.shape[1] * param.shape[2]) ** -0.5)
    if param.dim() == 2:  # linear [out, in]
        return normal(param.shape[1] ** -0.5)
    raise RuntimeError(f"no init rule for {name} {tuple(param.shape)}")


class StateDictWeights:
    """The `CodecWeights` view of an official decoder state dict (names get the `decoder.` prefix)."""

    def __init__(self, model: Qwen3TTSTokenizerV2Decoder, size: str) -> None:
        self._tensors = {f"decoder.{k}": v.float().numpy() for k, v in model.state_dict().items()}
        self.decoder_config = decoder_config(size)

    def codec_tensor(self, name: str) -> np.ndarray:
        return self._tensors[name]


def official_forward(model: Qwen3TTSTokenizerV2Decoder, codes: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(codes.T[None].copy())).numpy().reshape(-1)


def official_api_decode(model: Qwen3TTSTokenizerV2Decoder, codes: np.ndarray) -> np.ndarray:
    """What `Qwen3TTSTokenizerV2Model.decode` does for one unpadded sequence: 300/25-frame chunked decode."""
    with torch.inference_mode():
        return model.chunked_decode(torch.from_numpy(codes.T[None].copy())).numpy().reshape(-1)


def random_codes(frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2048, size=(frames, 16), dtype=np.int64)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def parity(size: str, seed: int, workdir: Path) -> dict:
    model = seeded_decoder(size, seed)
    onnx_path = workdir / f"codec_decoder_{size}.onnx"
    t0 = time.perf_counter()
    write_decoder_onnx(StateDictWeights(model, size), onnx_path)
    result: dict = {"size": size, "build_s": round(time.perf_counter() - t0, 2)}
    result["onnx_mb"] = round(onnx_path.stat().st_size / 1e6, 1)
    dec = StreamingDecoder(onnx_path, threads=1)

    codes37 = random_codes(37, seed + 1)
    ref37 = official_forward(model, codes37)
    one_shot = dec.decode(codes37, chunk_frames=37)
    result["oneshot37_vs_forward"] = max_diff(one_shot, ref37)
    result["oneshot37_vs_api"] = max_diff(one_shot, official_api_decode(model, codes37))
    result["ref37_absmax"] = float(np.abs(ref37).max())
    for chunk in (1, 3, 4, 12):
        result[f"stream{chunk}_vs_oneshot37"] = max_diff(dec.decode(codes37, chunk_frames=chunk), one_shot)

    codes340 = random_codes(340, seed + 2)
    ref340 = official_forward(model, codes340)
    ours340 = dec.decode(codes340, chunk_frames=340)
    result["oneshot340_vs_full_forward"] = max_diff(ours340, ref340)
    result["stream25_340_vs_full_forward"] = max_diff(dec.decode(codes340, chunk_frames=25), ref340)
    result["api340_vs_full_forward_after300"] = max_diff(official_api_decode(model, codes340), ref340)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        result = parity(args.size, args.seed, Path(tmp))
    print(json.dumps(result, indent=1))
    bounds_ok = (
        result["oneshot37_vs_forward"] <= 1e-4
        and result["oneshot340_vs_full_forward"] <= 1e-4
        and all(result[f"stream{c}_vs_oneshot37"] <= 1e-5 for c in (1, 3, 4, 12))
    )
    return 0 if bounds_ok else 1


if __name__ == "__main__":
    sys.exit(main())
