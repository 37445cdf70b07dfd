#!/usr/bin/env python3
"""A 40-line list with 4 voices: `qwen3tts batch` against the same lines spoken one `say` at a time.

    python benchmarks/longform_list.py --lines 40 --frames 50 --out benchmarks/results

Builds (or reuses, same cache as `qwen3tts bench`) the seeded random checkpoint at the real 0.6B shape and
converts it at --quant. Random weights never stop by themselves, so every line is exactly --frames frames
(50 = 4.0 s) and both runs produce the same amount of audio. The list is JSONL, one single sentence per line,
voices vivian/ryan/serena/aiden in turn, seed = line number. Runs, side by side in one sitting:

- `batch`: one `qwen3tts batch LIST --out-dir DIR` process (model loaded once, lines share the llama.cpp
  batch through the scheduler, --batch lines in flight);
- `say loop`: one `qwen3tts say` process per line, as a shell loop would do (a model load each time);
- `say in-process`: the same lines through `TTS.synthesize` one after another in one process (no reloads:
  the pure generation cost of one line at a time).

Aggregate RTF = wall seconds / audio seconds. Also checks that `batch` wrote exactly the audio `say` did for
each line (same seed, same voice). JSON + markdown under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qwen3tts_cli import bench  # noqa: E402

VOICES = ("vivian", "ryan", "serena", "aiden")
SENTENCES = (
    "The library opens at nine on weekdays and at ten on Saturdays.",
    "Please keep your ticket until the end of the journey.",
    "Our next stop is the old harbour, where the ferries leave for the islands.",
    "She planted tomatoes, beans and a row of sunflowers along the fence.",
    "The meeting has been moved to Thursday afternoon in the small room.",
)


def write_list(path: Path, lines: int) -> list[dict[str, Any]]:
    rows = [
        {
            "name": f"line{i:03d}",
            "text": SENTENCES[i % len(SENTENCES)],
            "speaker": VOICES[i % len(VOICES)],
            "seed": i,
        }
        for i in range(lines)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return rows


def run(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr}")
    return time.perf_counter() - started


def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "qwen3tts_cli.cli", *map(str, args)]


def audio_seconds(files: list[Path]) -> float:
    return sum(sf.info(str(f)).frames for f in files) / bench.SAMPLE_RATE


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=40)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quant", default="q8_0")
    parser.add_argument(
        "--workdir", type=Path, default=Path(os.environ.get("QWEN3TTS_BENCH_DIR", "/work/benchwork"))
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--tag", default="session10")
    options = parser.parse_args()

    vocabulary = bench.resolve_vocabulary("auto")
    checkpoint, _ = bench.prepare_checkpoint(options.workdir, "custom_voice", "0.6b", 0, print, vocabulary)
    model, _ = bench.prepare_converted(options.workdir, checkpoint, options.quant, options.threads, print)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    common = [
        "--model-dir",
        str(model),
        "--threads",
        str(options.threads),
        "--max-frames",
        str(options.frames),
    ]
    report: dict[str, Any] = {
        "lines": options.lines,
        "frames": options.frames,
        "voices": list(VOICES),
        "threads": options.threads,
        "quant": options.quant,
        "batch": options.batch,
        "machine": bench.machine_info(),
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="longform-bench-") as scratch:
        work = Path(scratch)
        rows = write_list(work / "list.jsonl", options.lines)
        record: dict[str, Any] = {}
        with bench.cpu_load(record):
            wall = run(
                cli(
                    "batch",
                    work / "list.jsonl",
                    "--out-dir",
                    work / "batch",
                    "--batch",
                    options.batch,
                    "--quiet",
                    *common,
                ),
                env,
            )
        batch_files = [work / "batch" / f"{row['name']}.wav" for row in rows]
        seconds = audio_seconds(batch_files)
        report["runs"]["batch"] = {
            "wall": round(wall, 2),
            "audio": round(seconds, 2),
            "rtf": round(wall / seconds, 3),
            **record,
        }

        record = {}
        (work / "say").mkdir()
        with bench.cpu_load(record):
            started = time.perf_counter()
            for row in rows:
                run(
                    cli(
                        "say",
                        row["text"],
                        "--speaker",
                        row["speaker"],
                        "--seed",
                        row["seed"],
                        "--quiet",
                        "-o",
                        work / "say" / f"{row['name']}.wav",
                        *common,
                    ),
                    env,
                )
            wall = time.perf_counter() - started
        say_files = [work / "say" / f"{row['name']}.wav" for row in rows]
        seconds = audio_seconds(say_files)
        report["runs"]["say loop"] = {
            "wall": round(wall, 2),
            "audio": round(seconds, 2),
            "rtf": round(wall / seconds, 3),
            **record,
        }
        same = [
            np.array_equal(sf.read(str(a), dtype="int16")[0], sf.read(str(b), dtype="int16")[0])
            for a, b in zip(batch_files, say_files, strict=True)
        ]
        report["batch_equals_say"] = f"{sum(same)}/{len(same)}"

        from qwen3tts_cli.tts import TTS

        record = {}
        with TTS.load(model, threads=options.threads) as tts, bench.cpu_load(record):
            started = time.perf_counter()
            total = 0.0
            for row in rows:
                total += tts.synthesize(
                    row["text"], speaker=row["speaker"], seed=row["seed"], max_frames=options.frames
                ).seconds
            wall = time.perf_counter() - started
        report["runs"]["say in-process"] = {
            "wall": round(wall, 2),
            "audio": round(total, 2),
            "rtf": round(wall / total, 3),
            **record,
        }

    options.out.mkdir(parents=True, exist_ok=True)
    stem = f"longform-list-0.6b-{options.quant}-{options.tag}"  # has dots: no with_suffix
    (options.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (options.out / f"{stem}.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# {report['lines']}-line list, {len(report['voices'])} voices, 0.6B {report['quant']}, "
        f"{report['threads']} threads, {report['frames']} frames per line "
        f"({report['frames'] / bench.FRAME_RATE:.1f} s)",
        "",
        "| run | wall s | audio s | aggregate RTF | other cores |",
        "|---|---|---|---|---|",
    ]
    for name, run_ in report["runs"].items():
        other = run_.get("load", {}).get("other_cores")
        lines.append(f"| {name} | {run_['wall']} | {run_['audio']} | {run_['rtf']} | {other} |")
    lines += ["", f"batch outputs identical to `say` with the same seed: {report['batch_equals_say']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
