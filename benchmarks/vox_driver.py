"""Time vox-tts (PyPI `vox-tts`, its own C++ engine) on a checkpoint folder, for `qwen3tts bench`.

Runs in an interpreter with vox-tts installed (its own venv, never the product's), with the repository
root on PYTHONPATH (for the stdlib-only probes in qwen3tts_cli.bench). The checkpoint is converted once
with `python -m vox build` (numpy only) into --tmod; the result is cached there. Writes one JSON record to
--result in the shape of `qwen3tts_cli.bench.stream_summary`; the stage split comes from vox's own
cumulative counters (`Engine.stats()`), differenced per run.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("VOX_DEBUG_NO_EOS", "1")  # random weights: run exactly max_frames frames

from qwen3tts_cli.bench import (  # noqa: E402
    add_driver_arguments,
    cpu_load,
    repeat_quietly,
    run_record,
    write_driver_result,
)

VOX_STAGES = {"prefill": "prefill", "talker": "talker", "predictor": "predictor", "codec": "decoder"}


def build_tmod(checkpoint: Path, tmod: Path, dtype: str, quant: str) -> dict[str, Any]:
    """Convert the checkpoint with vox's numpy converter (cached)."""
    if tmod.is_file():
        return {"cached": True, "bytes": tmod.stat().st_size}
    tmod.parent.mkdir(parents=True, exist_ok=True)
    partial = tmod.with_suffix(".partial.tmod")
    command = [sys.executable, "-m", "vox", "build", "--model", str(checkpoint), "--dtype", dtype]
    command += ["--quant", quant] if quant else []
    command += ["--no-hash", "-o", str(partial)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"vox build failed: {(done.stderr or done.stdout).strip()[-800:]}")
    partial.rename(tmod)
    return {
        "cached": False,
        "seconds": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "bytes": tmod.stat().st_size,
    }


def _stage_seconds(stats: dict[str, Any]) -> dict[str, float]:
    seconds = stats.get("backend", {}).get("seconds", {})
    return {ours: float(seconds.get(theirs, 0.0)) for theirs, ours in VOX_STAGES.items()}


def _one_run(engine: Any, voice: Any, text: str, params: dict[str, Any]) -> dict[str, Any]:
    before = _stage_seconds(engine.stats())
    record: dict[str, Any] = {}
    samples, first = 0, None
    with cpu_load(record):
        start = time.perf_counter()
        for chunk in engine.stream(text, voice, **params):
            if first is None and len(chunk):
                first = time.perf_counter() - start
            samples += len(chunk)
        wall = time.perf_counter() - start
    after = _stage_seconds(engine.stats())
    audio = samples / engine.sample_rate
    stages = {k: after[k] - before[k] for k in after}
    return run_record(
        record,
        wall=wall,
        first=first,
        audio=audio,
        frames=round(audio * 12.5),
        pieces=1,
        stage_seconds=stages,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_driver_arguments(parser)
    parser.add_argument("--tmod", type=Path, required=True)
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--quant", default="q8")
    args = parser.parse_args()

    build = build_tmod(args.checkpoint, args.tmod, args.dtype, args.quant)
    from importlib.metadata import version

    import vox

    start = time.perf_counter()
    engine = vox.Engine(str(args.tmod), device="cpu", threads=args.threads)
    voice = engine.speaker_voice(args.speaker)
    load_seconds = time.perf_counter() - start
    params: dict[str, Any] = {"seed": args.seed, "language": args.language}
    if args.greedy:
        params.update(top_k=1, sub_top_k=1)
    _one_run(engine, voice, args.text, {**params, "max_frames": min(args.frames, 4)})  # warm-up
    runs = repeat_quietly(
        lambda: _one_run(engine, voice, args.text, {**params, "max_frames": args.frames}), args.repeats
    )
    plan = engine.plan
    write_driver_result(
        args.result,
        runs,
        precision=f"{args.quant or args.dtype} ({args.dtype} + {args.quant or 'no quant'})",
        threads=args.threads,
        load_seconds=load_seconds,
        streaming=True,
        versions={"vox-tts": version("vox-tts")},
        build=build,
        plan={k: plan.get(k) for k in ("backend", "threads", "overlap", "spin", "mode")},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
