#!/usr/bin/env python3
"""Live parity check of the codec encoder, mel front end and speaker encoder against the OFFICIAL code.

Runs in the reference venv (torch + qwen-tts 0.1.1):
    OMP_NUM_THREADS=1 /work/refenv/bin/python tests/parity/check_encoders_live.py [--size tiny|0.6b]

Builds the official modules from config objects with seeded random weights, converts them with our torch-free
builders (qwen3tts_cli.convert.codec_encoder / speaker), runs both and prints the differences as JSON.
Exits non-zero when codes differ or a float difference exceeds 1e-4.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(Path(__file__).parent)]

import official  # noqa: E402  (sets the offline flags and registers the torchaudio stub)
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from qwen_tts import Qwen3TTSTokenizer  # noqa: E402
from qwen_tts.core import Qwen3TTSTokenizerV2Config, Qwen3TTSTokenizerV2Model  # noqa: E402
from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSSpeakerEncoderConfig  # noqa: E402
from qwen_tts.core.models.modeling_qwen3_tts import (  # noqa: E402
    Qwen3TTSForConditionalGeneration,
    Qwen3TTSSpeakerEncoder,
)
from transformers import EncodecFeatureExtractor  # noqa: E402

from qwen3tts_cli.convert.codec_encoder import build_encoder_graph  # noqa: E402
from qwen3tts_cli.convert.speaker import build_speaker_graph  # noqa: E402
from qwen3tts_cli.engine.mel import log_mel  # noqa: E402

TINY_ENCODER = dict(
    hidden_size=32,
    num_filters=4,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    head_dim=16,
    intermediate_size=64,
    codebook_dim=16,
    vector_quantization_hidden_dimension=16,
    upsample_groups=32,
)
TINY_DECODER = dict(
    codebook_dim=32,
    latent_dim=48,
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=2,
    num_key_value_heads=2,
    head_dim=16,
    num_hidden_layers=1,
    decoder_dim=64,
)
TINY_SPEAKER = dict(
    enc_channels=[32, 32, 32, 32, 96], enc_attention_channels=16, enc_se_channels=16, enc_dim=64
)
FLOAT_TOLERANCE = 1e-4


def tokenizer_config(size: str) -> Qwen3TTSTokenizerV2Config:
    enc = dict(
        sampling_rate=24000,
        upsampling_ratios=[8, 6, 5, 4],
        num_quantizers=32,
        codebook_size=2048,
        num_semantic_quantizers=1,
        sliding_window=250,
        use_causal_conv=True,
    )
    dec = dict(
        codebook_size=2048,
        num_quantizers=16,
        num_semantic_quantizers=1,
        upsample_rates=[8, 5, 4, 3],
        upsampling_ratios=[2, 2],
        sliding_window=72,
    )
    if size == "tiny":
        enc.update(TINY_ENCODER)
        dec.update(TINY_DECODER)
    else:
        dec.update(
            codebook_dim=512,
            latent_dim=1024,
            hidden_size=512,
            intermediate_size=1024,
            num_attention_heads=16,
            num_key_value_heads=16,
            head_dim=64,
            num_hidden_layers=8,
            decoder_dim=1536,
        )
    dec["vector_quantization_hidden_dimension"] = dec["codebook_dim"]
    cfg = Qwen3TTSTokenizerV2Config(
        encoder_config=enc,
        decoder_config=dec,
        encoder_valid_num_quantizers=16,
        input_sample_rate=24000,
        output_sample_rate=24000,
        decode_upsample_rate=1920,
        encode_downsample_rate=1920,
    )
    cfg._attn_implementation = "sdpa"  # what the official loader ends up with
    return cfg


@torch.no_grad()
def seeded_init(module: torch.nn.Module, seed: int) -> None:
    """Deterministic O(1)-activation init of every parameter and persistent buffer."""
    gen = torch.Generator().manual_seed(seed)
    state = module.state_dict()
    for name in sorted(state):
        t = state[name]
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "weight" and t.ndim >= 2:
            fan_in = int(np.prod(t.shape[1:]))
            gain = 0.25 if ".block.3." in name else 1.0
            t.copy_(torch.randn(t.shape, generator=gen) * gain / np.sqrt(fan_in))
        elif leaf == "weight":  # norms
            t.copy_(1 + 0.1 * torch.randn(t.shape, generator=gen))
        elif leaf in ("scale", "gamma"):
            t.copy_(0.05 + 0.1 * torch.rand(t.shape, generator=gen))
        elif leaf == "cluster_usage":
            t.copy_(0.5 + torch.rand(t.shape, generator=gen))
        elif leaf in ("embed_sum", "embedding_sum"):
            t.copy_(torch.randn(t.shape, generator=gen))
        elif leaf == "initialized":
            t.fill_(1)
        else:  # biases, SnakeBeta logs
            t.copy_(0.05 * torch.randn(t.shape, generator=gen))


def reference_audio(seconds: float, seed: int = 7) -> np.ndarray:
    """A voiced-ish test signal: harmonics of a wobbling pitch under a Hann envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 24000)) / 24000
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 1.5 * t)) / 24000
    x = sum((0.3 / h) * np.sin(h * phase) for h in range(1, 8))
    x *= 0.5 * (1 - np.cos(2 * np.pi * t / seconds))
    x += 0.01 * rng.standard_normal(len(t))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def session(model_bytes: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def official_codes(model: Qwen3TTSTokenizerV2Model, cfg, wav: np.ndarray) -> np.ndarray:
    tok = Qwen3TTSTokenizer()
    tok.model = model
    tok.feature_extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=24000, padding_value=0.0)
    tok.config = cfg
    tok.device = torch.device("cpu")
    return tok.encode(wav, sr=24000).audio_codes[0].numpy()


def check_codec(size: str, lengths: list[int], seed: int) -> dict:
    cfg = tokenizer_config(size)
    model = Qwen3TTSTokenizerV2Model(cfg).eval()
    seeded_init(model, seed)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    t0 = time.perf_counter()
    graph = build_encoder_graph(cfg.to_dict(), lambda name: state[name])
    build_s = time.perf_counter() - t0
    sess = session(graph.to_model().SerializeToString())
    results = {"build_s": round(build_s, 2)}
    for n in lengths:
        wav = reference_audio(n / 24000)
        t0 = time.perf_counter()
        ref = official_codes(model, cfg, wav)
        ref_s = time.perf_counter() - t0
        sess.run(None, {"waveform": wav[None]})  # warm-up
        t0 = time.perf_counter()
        ours = sess.run(None, {"waveform": wav[None]})[0]
        ours_s = time.perf_counter() - t0
        same = ours.shape == ref.shape and bool((ours == ref).all())
        mismatches = int((ours != ref).sum()) if ours.shape == ref.shape else -1
        results[f"samples_{n}"] = dict(
            frames=list(ours.shape),
            official_frames=list(ref.shape),
            equal=same,
            mismatches=mismatches,
            official_s=round(ref_s, 3),
            onnx_s=round(ours_s, 3),
        )
    return results


def check_speaker(size: str, lengths: list[int], seed: int) -> dict:
    cfg = Qwen3TTSSpeakerEncoderConfig(**(TINY_SPEAKER if size == "tiny" else {"enc_dim": 1024}))
    encoder = Qwen3TTSSpeakerEncoder(cfg).eval()
    seeded_init(encoder, seed)
    state = {f"speaker_encoder.{k}": v.detach().numpy() for k, v in encoder.state_dict().items()}
    graph = build_speaker_graph({"enc_dim": cfg.enc_dim, **vars(cfg)}, lambda name: state[name])
    sess = session(graph.to_model().SerializeToString())
    # the official method, called on a stand-in model object that only has what it uses
    holder = types.SimpleNamespace(speaker_encoder=encoder, device=torch.device("cpu"), dtype=torch.float32)
    results = {}
    for n in lengths:
        wav = reference_audio(n / 24000, seed=n)
        ref_mel = official.speaker_mel(wav)[None]  # [1, T, 128], as the encoder is fed
        ours_mel = log_mel(wav)[None]
        with torch.no_grad():
            ref_from_mel = encoder(torch.from_numpy(ref_mel))[0].numpy()
            ref_end_to_end = Qwen3TTSForConditionalGeneration.extract_speaker_embedding(
                holder, wav, 24000
            ).numpy()
        ours_from_official_mel = sess.run(None, {"mel": ref_mel})[0]
        t0 = time.perf_counter()
        ours_end_to_end = sess.run(None, {"mel": log_mel(wav)[None]})[0]
        ours_s = time.perf_counter() - t0
        results[f"samples_{n}"] = dict(
            frames=int(ref_mel.shape[1]),
            mel_max_abs=float(np.abs(ours_mel - ref_mel).max()),
            embedding_from_mel_max_abs=float(np.abs(ours_from_official_mel - ref_from_mel).max()),
            embedding_end_to_end_max_abs=float(np.abs(ours_end_to_end - ref_end_to_end).max()),
            embedding_scale=float(np.abs(ref_end_to_end).max()),
            onnx_s=round(ours_s, 3),
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="tiny", choices=["tiny", "0.6b"])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["codec", "speaker"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = {}
    if args.only in (None, "codec"):
        n = int(args.seconds * 24000)
        lengths = [n] if args.size != "tiny" else [1, 1919, 1920, 1921, 31200, n, 24000 * 12 + 5]
        report["codec"] = check_codec(args.size, lengths, args.seed)
    if args.only in (None, "speaker"):
        n = int(args.seconds * 24000)
        lengths = [n] if args.size != "tiny" else [1280, 1281, 31200, n]
        report["speaker"] = check_speaker(args.size, lengths, args.seed)
    print(json.dumps(report, indent=1))
    ok = all(v["equal"] for k, v in report.get("codec", {}).items() if k.startswith("samples_"))
    for v in report.get("speaker", {}).values():
        ok &= (
            max(v["mel_max_abs"], v["embedding_from_mel_max_abs"], v["embedding_end_to_end_max_abs"])
            <= FLOAT_TOLERANCE
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
