"""How the two language models scale from one thread to two, each alone, with no decoder beside them.

Our frame loop lowers llama.cpp to one thread while the codec decoder runs on the other core
(engine/pipeline.CoreShare). This measures what that costs each model: a predictor frame (2 positions, then
14 single steps, as the engine feeds it) and a talker step (one position after a 16-position prompt), at 1
and 2 threads, in interleaved blocks so drift hits both alike. Random embeddings; weights from a converted
folder (`qwen3tts bench` makes one at the real shapes).

    python benchmarks/lm_threads.py FOLDER [--rounds 6] [--out results/lm-threads-....json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from qwen3tts_cli.engine.llama import LlamaModel, LlamaOptions

PREDICTOR_FRAMES = 10  # frames per timed block
TALKER_STEPS = 40  # steps per timed block


def _options(threads: int, n_ctx: int) -> LlamaOptions:
    # the engine's fast path for quantized models: q8_0 KV cache with flash attention, hidden states only
    return LlamaOptions(
        n_ctx=n_ctx, n_batch=16, n_threads=threads, want_logits=False, kv_type="q8_0", flash_attn="on"
    )


def _predictor_frame(model: LlamaModel, rng: np.random.Generator) -> None:
    model.clear()
    model.decode(rng.standard_normal((2, model.n_embd), dtype=np.float32) * 0.05)
    for _ in range(14):
        model.decode(rng.standard_normal((1, model.n_embd), dtype=np.float32) * 0.05)


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "min": round(ordered[0], 1),
        "median": round(ordered[len(ordered) // 2], 1),
        "max": round(ordered[-1], 1),
    }


def measure(folder: Path, rounds: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(0)
    predictors = {t: LlamaModel(folder / "predictor.gguf", _options(t, 32)) for t in (1, 2)}
    talkers = {t: LlamaModel(folder / "talker.gguf", _options(t, 512)) for t in (1, 2)}
    for t in (1, 2):  # warm-up: first calls allocate and repack
        _predictor_frame(predictors[t], rng)
        talkers[t].decode(np.zeros((8, talkers[t].n_embd), np.float32))
    times: dict[str, list[float]] = {
        f"{k}_{t}_thread": [] for k in ("predictor_frame", "talker_step") for t in (1, 2)
    }
    for _ in range(rounds):
        for t in (1, 2, 2, 1):
            start = time.perf_counter()
            for _ in range(PREDICTOR_FRAMES):
                _predictor_frame(predictors[t], rng)
            times[f"predictor_frame_{t}_thread"].append(
                (time.perf_counter() - start) / PREDICTOR_FRAMES * 1e3
            )
            talker = talkers[t]
            talker.clear()
            talker.decode(np.zeros((16, talker.n_embd), np.float32))
            start = time.perf_counter()
            for _ in range(TALKER_STEPS):
                talker.decode(rng.standard_normal((1, talker.n_embd), dtype=np.float32) * 0.05)
            times[f"talker_step_{t}_thread"].append((time.perf_counter() - start) / TALKER_STEPS * 1e3)
    for model in [*predictors.values(), *talkers.values()]:
        model.close()
    return {name: _summary(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a converted model folder (talker.gguf, predictor.gguf)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args()
    result = {
        "folder": str(args.folder),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ms": measure(args.folder, args.rounds),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
