#!/usr/bin/env python3
"""Convert an official Qwen3-TTS checkpoint folder into a qwen3tts model folder (GGUF + ONNX + manifest).

    python scripts/convert_gguf.py CHECKPOINT OUT [--quant q8_0] [--threads 2] [--force] [--source-repo R]

A thin command over `qwen3tts_cli.convert.converter.convert_checkpoint`; usable without installing the
package (it adds the repo root to sys.path).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen3tts_cli.bench import peak_rss_mb  # noqa: E402  (stdlib only; None where it cannot be read)
from qwen3tts_cli.convert.converter import DEFAULT_QUANT, convert_checkpoint  # noqa: E402
from qwen3tts_cli.convert.quantize import QUANT_TYPES  # noqa: E402
from qwen3tts_cli.errors import Qwen3TTSError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint", type=Path, help="official checkpoint folder (config.json, model.safetensors, ...)"
    )
    parser.add_argument("out", type=Path, help="converted model folder to create")
    parser.add_argument("--quant", default=DEFAULT_QUANT, choices=list(QUANT_TYPES), help="LM weight type")
    parser.add_argument("--threads", type=int, default=2, help="threads for quantization")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--source-repo", default=None, help="recorded in manifest.json")
    parser.add_argument("--source-revision", default=None, help="recorded in manifest.json")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    started = time.perf_counter()

    def progress(step: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - started:7.1f}s] {step}", file=sys.stderr, flush=True)

    try:
        out = convert_checkpoint(
            args.checkpoint,
            args.out,
            args.quant,
            source_repo=args.source_repo,
            source_revision=args.source_revision,
            threads=args.threads,
            overwrite=args.force,
            progress=progress,
        )
    except Qwen3TTSError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written (run again to convert)", file=sys.stderr)
        return 130
    peak_mib = peak_rss_mb()  # None on Windows (no /proc, no resource module)
    if not args.quiet:
        peak = "" if peak_mib is None else f", peak RSS {peak_mib:.0f} MiB"
        print(f"converted {args.checkpoint} -> {out} in {time.perf_counter() - started:.1f} s{peak}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
