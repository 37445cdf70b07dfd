#!/usr/bin/env python3
"""Run the published benchmark set and refresh benchmarks/results/ (JSON + markdown).

    python benchmarks/run.py                       # 0.6B q8_0 + q4_k_m + f16, 1.7B q8_0, with the peers found
    python benchmarks/run.py --only 0.6b --quant q8_0 --frames 24 --repeats 2

Each configuration goes through `qwen3tts_cli.bench.run_benchmark` (the same code as `qwen3tts bench`).
Peers are used when their interpreters exist: the official code from --official-python (default
/work/refenv/bin/python), vox-tts from --vox-python (default /work/voxenv/bin/python; create it with
benchmarks/setup_vox.sh), upstream llama.cpp's own Qwen3-TTS pipeline from --llama-cpp-source (default
~/.cache/qwen3tts/llama.cpp-source; create it with benchmarks/setup_upstream.sh), qwentts.cpp from
--qwentts-python (default /work/qwenttsenv/bin/python) with --qwentts-source (default
~/.cache/qwen3tts/qwentts.cpp-source; both from benchmarks/setup_qwentts.sh). The conversion of the
0.6B checkpoint by scripts/convert_gguf.py is timed with `/usr/bin/time -v` when that tool exists. Before
each configuration the script waits (up to --wait-quiet seconds) for the 1-minute load average to fall
below --quiet-load, so numbers are taken on a quiet machine when one can be had; the load actually seen
is recorded either way.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qwen3tts_cli import bench  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def wait_for_quiet(limit: float, max_wait: float) -> float:
    """Wait until the 1-minute load average is below `limit` (or `max_wait` passed); return the load."""
    deadline = time.monotonic() + max_wait
    load = os.getloadavg()[0]
    while load >= limit and time.monotonic() < deadline:
        time.sleep(10)
        load = os.getloadavg()[0]
    return load


def time_convert_script(checkpoint: Path, quant: str, threads: int) -> dict:
    """Wall time and peak RSS of `scripts/convert_gguf.py` as a user runs it (`/usr/bin/time -v`)."""
    timer = Path("/usr/bin/time")
    if not timer.exists():
        return {"status": "skipped: /usr/bin/time not found"}
    with tempfile.TemporaryDirectory(prefix="qwen3tts-convert-", dir=checkpoint.parent) as tmp:
        command = [str(timer), "-v", sys.executable, str(ROOT / "scripts" / "convert_gguf.py")]
        command += [str(checkpoint), str(Path(tmp) / "out"), "--quant", quant, "--threads", str(threads)]
        command += ["--quiet"]
        done = subprocess.run(command, capture_output=True, text=True)
    report = done.stderr
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", report)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report)
    seconds = None
    if wall:
        hours, minutes, secs = wall.groups()
        seconds = int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)
    return {
        "status": "ok" if done.returncode == 0 else f"failed ({done.returncode})",
        "command": "/usr/bin/time -v python scripts/convert_gguf.py CKPT OUT --quant " + quant,
        "wall_seconds": seconds,
        "peak_rss_mb": round(int(peak.group(1)) / 1024, 1) if peak else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["0.6b", "1.7b"], help="run one size only")
    parser.add_argument("--quant", action="append", help="0.6B precisions (default q8_0, q4_k_m, f16)")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "qwen3tts" / "bench")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--official-python", type=Path, default=Path("/work/refenv/bin/python"))
    parser.add_argument("--vox-python", type=Path, default=Path("/work/voxenv/bin/python"))
    parser.add_argument(
        "--llama-cpp-source",
        type=Path,
        default=Path.home() / ".cache" / "qwen3tts" / "llama.cpp-source",
        help="llama.cpp source tree for the upstream column (benchmarks/setup_upstream.sh makes it)",
    )
    parser.add_argument(
        "--qwentts-source",
        type=Path,
        default=Path.home() / ".cache" / "qwen3tts" / "qwentts.cpp-source",
        help="qwentts.cpp source tree for its column (benchmarks/setup_qwentts.sh builds its quantizer)",
    )
    parser.add_argument("--qwentts-python", type=Path, default=Path("/work/qwenttsenv/bin/python"))
    parser.add_argument("--quiet-load", type=float, default=0.5, help="wait for a load average below this")
    parser.add_argument("--wait-quiet", type=float, default=600, help="seconds to wait for a quiet machine")
    parser.add_argument(
        "--blas-threads", type=int, default=None, help="numpy BLAS threads of ours (default: inherit)"
    )
    parser.add_argument("--no-peers", action="store_true", help="measure ours only")
    parser.add_argument(
        "--vocabulary", default="auto", help="auto (real Qwen vocabulary via dashscope), fixture or a path"
    )
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    def peer(path: Path) -> Path | None:
        return path if path.exists() else None

    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    runs: list[tuple[str, list[str], bool]] = []
    if args.only in (None, "0.6b"):
        runs.append(("0.6b", args.quant or ["q8_0", "q4_k_m", "f16"], True))
    if args.only in (None, "1.7b"):
        runs.append(("1.7b", ["q8_0"], False))  # single stream: RTF + first audio
    for size, quants, long_text in runs:
        load = wait_for_quiet(args.quiet_load, args.wait_quiet)
        say(f"== {size} {', '.join(quants)} (load average {load:.2f})")
        config = bench.BenchConfig(
            size=size,
            quants=quants,
            frames=args.frames,
            repeats=args.repeats,
            threads=args.threads,
            long_text=long_text,
            workdir=args.workdir,
            out=args.out,
            official_python=peer(args.official_python),
            vox_python=peer(args.vox_python),
            llama_cpp_source=peer(args.llama_cpp_source),
            qwentts_source=peer(args.qwentts_source),
            qwentts_python=peer(args.qwentts_python),
            peers=not args.no_peers,
            tag=args.tag,
            blas_threads=args.blas_threads,
            vocabulary=args.vocabulary,
        )
        report = bench.run_benchmark(config, say=say)
        if size == "0.6b" and "q8_0" in quants:
            checkpoint = Path(report.data["checkpoint"]["folder"])
            report.data["convert_script"] = time_convert_script(checkpoint, "q8_0", args.threads)
            report = bench.write_report(report.data, args.out, args.tag)
        print(report.markdown)
        say(f"wrote {report.json_path} and {report.markdown_path}")
    summary = sorted(p.name for p in args.out.glob("bench-*.json"))
    say("results: " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
