#!/usr/bin/env python3
"""Peak RSS and wall time of `qwen3tts convert` before and after the bounded-memory converter (issue 13).

    python benchmarks/convert_memory.py --before /work/main --out benchmarks/results/convert-memory-session10

For each size (seeded random custom_voice checkpoints at the real 0.6B / 1.7B shapes, built or reused in
--workdir like `qwen3tts bench`) and every quant, runs `python -m qwen3tts_cli.cli convert CKPT OUT -q Q`
once with the --before checkout (its own .venv, its own package) and once with this one, one after the other
so both see the same machine load. Peak RSS is the child's ru_maxrss (wait4: the VmHWM of the process,
llama.cpp's quantizer included, it runs in-process); wall time is the whole command. The outputs of the two
runs are compared file by file through their manifests (sha256 of every file) and then deleted. Also
records the disk-space estimate the new converter checks against the size actually written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qwen3tts_cli import bench, catalog  # noqa: E402

THREADS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def run_convert(python: Path, package_root: Path, ckpt: Path, out: Path, quant: str, threads: int) -> dict:
    """One conversion in a child process: exit code, wall seconds, peak RSS (MiB), the manifest's files."""
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    args = [str(python), "-m", "qwen3tts_cli.cli", "convert", str(ckpt), str(out), "-q", quant]
    args += ["-t", str(threads), "--quiet"]
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        child = subprocess.Popen(args, cwd=package_root, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)  # not child.wait(): wait4 also gives the rusage
        wall = time.perf_counter() - start
        child.returncode = code = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace")
    record: dict[str, Any] = {
        "code": code,
        "seconds": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
    }
    if code != 0:
        record["stderr"] = stderr[-2000:]
        return record
    manifest = json.loads((out / "manifest.json").read_text())
    record["files"] = {name: info["sha256"] for name, info in manifest["files"].items()}
    record["bytes"] = sum(info["bytes"] for info in manifest["files"].values())
    return record


def git_commit(folder: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), "log", "-1", "--format=%h %s"], capture_output=True, text=True
    )
    return f"{folder} at {done.stdout.strip()[:80]}" if done.returncode == 0 else str(folder)


def memory_total() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 2**20:.0f} GiB RAM"
    return "RAM unknown"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def markdown(result: dict) -> str:
    lines = [
        "# Conversion memory and time, before / after the streaming converter (issue 13)",
        "",
        f"Machine: {result['machine']}. Threads: {result['threads']}. {result['note']}",
        "",
        f"Before: {result.get('before_commit', '?')}. After: {result.get('after_commit', '?')}.",
        "",
        "| size | quant | peak RSS before | peak RSS after | time before | time after | time ratio "
        "| identical files | disk check: peak estimate / final size |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in result["rows"]:
        before, after = row["before"], row["after"]
        ratio = after["seconds"] / before["seconds"] if before.get("seconds") else float("nan")
        lines.append(
            f"| {row['size']} | {row['quant']} "
            f"| {before['peak_rss_mb']:.0f} MB | {after['peak_rss_mb']:.0f} MB "
            f"| {before['seconds']:.1f} s | {after['seconds']:.1f} s | {ratio:.2f} "
            f"| {'yes' if row['identical'] else 'NO: ' + ', '.join(row['differing'])} "
            f"| {row['estimate_bytes'] / 1e9:.2f} / {after.get('bytes', 0) / 1e9:.2f} GB |"
        )
    lines += [
        "",
        f"Load average during the runs (1/5/15 min, sampled before each pair): {result['loads']}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--before", type=Path, required=True, help="checkout of the old converter (with .venv)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/work/benchwork"))
    parser.add_argument("--sizes", nargs="+", default=["0.6b", "1.7b"])
    parser.add_argument("--quants", nargs="+", default=list(catalog.QUANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocabulary", default="auto", help="as `qwen3tts bench --vocabulary`")
    parser.add_argument("--note", default="", help="what else was running on the machine")
    parser.add_argument("--out", type=Path, required=True, help="path without suffix: writes .json and .md")
    args = parser.parse_args()

    from qwen3tts_cli.convert.checkpoint import Checkpoint
    from qwen3tts_cli.convert.space import estimate_bytes

    vocabulary = bench.resolve_vocabulary(args.vocabulary)
    scratch = args.workdir / "convert-memory"
    scratch.mkdir(parents=True, exist_ok=True)
    before_python = args.before / ".venv" / "bin" / "python"
    rows, loads = [], []
    for size in args.sizes:
        ckpt, _ = bench.prepare_checkpoint(args.workdir, "custom_voice", size, 0, print, vocabulary)
        for quant in args.quants:
            loads.append(f"{size}/{quant}: {load_average()}")
            print(f"{size} {quant}: before ...", flush=True)
            before = run_convert(before_python, args.before, ckpt, scratch / "before", quant, args.threads)
            print(f"  {before['seconds']} s, {before['peak_rss_mb']} MB; after ...", flush=True)
            after = run_convert(Path(sys.executable), ROOT, ckpt, scratch / "after", quant, args.threads)
            print(f"  {after['seconds']} s, {after['peak_rss_mb']} MB", flush=True)
            files_before, files_after = before.pop("files", {}), after.pop("files", {})
            differing = sorted(
                name
                for name in set(files_before) | set(files_after)
                if name != "manifest.json" and files_before.get(name) != files_after.get(name)
            )
            rows.append(
                {
                    "size": size,
                    "quant": quant,
                    "before": before,
                    "after": after,
                    "identical": before["code"] == after["code"] == 0 and not differing,
                    "differing": differing,
                    "sha256": files_after,
                    "estimate_bytes": estimate_bytes(Checkpoint(ckpt), quant),
                }
            )
            for side in ("before", "after"):
                shutil.rmtree(scratch / side, ignore_errors=True)
    result = {
        "before_commit": git_commit(args.before),
        "after_commit": git_commit(ROOT),
        "machine": f"{os.cpu_count()} cores, {memory_total()}",
        "threads": args.threads,
        "note": args.note,
        "loads": loads,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.parent.joinpath(args.out.name + ".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.parent.joinpath(args.out.name + ".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
