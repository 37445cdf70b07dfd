#!/usr/bin/env python3
"""Golden cases on a device against the CPU: do the codes agree, and how close is the audio?

    python benchmarks/device_check.py --device vulkan --out benchmarks/results

Runs every golden case of tests/golden (tiny and tiny-wide fixtures, rebuilt from their seeds) through
`qwen3tts say` twice per quantization (f32 and q8_0): `--device cpu` and `--device DEVICE`, greedy, with the
frame count of the case. Reports per case: codes equal to the CPU run (and, at f32, to the official goldens)
or the first differing frame, and the largest waveform difference where the codes are equal. Run it in an
environment whose llama-cpp-python wheel has the device (runtime/check_device.sh sets one up). GPU kernels
may round differently from the CPU: a differing frame is a finding to explain, never a reason to loosen
the CPU goldens.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import GoldenStore  # noqa: E402
from test_cli import _with_eos_row, read_pcm16, write_float_wav  # noqa: E402
from test_cli_parity import CASES, SIZES, expected_audio, say_arguments  # noqa: E402

from qwen3tts_cli.convert.converter import convert_checkpoint  # noqa: E402
from qwen3tts_cli.fixtures.checkpoint import build_checkpoint  # noqa: E402

QUANTS = ("f32", "q8_0")


def say(
    args: list[str | Path], env: dict[str, str], work: Path, tag: str
) -> tuple[np.ndarray, np.ndarray, str]:
    out, codes = work / f"{tag}.wav", work / f"{tag}.npy"
    command = [sys.executable, "-m", "qwen3tts_cli.cli", "say", *map(str, args), "-o", str(out)]
    command += ["--codes-out", str(codes)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"say failed ({tag}):\n{done.stderr}")
    return np.load(codes), read_pcm16(out) / 32767.0, done.stderr


def first_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    """The first frame where two code arrays differ (None when equal)."""
    for frame in range(min(len(a), len(b))):
        if not np.array_equal(a[frame], b[frame]):
            return frame
    return None if len(a) == len(b) else min(len(a), len(b))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="vulkan")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--tag", default="session10")
    options = parser.parse_args()
    golden = GoldenStore()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    rows: list[dict[str, Any]] = []
    checkpoints: dict[tuple[str, str], Path] = {}
    device_log = ""
    with tempfile.TemporaryDirectory(prefix="device-check-") as scratch:
        work = Path(scratch)
        env["QWEN3TTS_CACHE"] = str(work / "cache")
        for size in SIZES:
            fixture = golden.fixture(size)
            ref_wav = write_float_wav(work / f"ref-{size}.wav", golden.ref_audio(size))
            for quant in QUANTS:
                models: dict[tuple[str, bool], Path] = {}
                for case_name in CASES:
                    case = fixture["cases"][case_name]
                    eos = case_name.endswith("_eos")
                    key = (case["kind"], eos)
                    if key not in models:
                        source = checkpoints.get((size, case["kind"]))
                        if source is None:
                            seed = golden.seed(size, case["kind"])
                            source = build_checkpoint(
                                work / f"ck-{size}-{case['kind']}", case["kind"], size, seed
                            )
                            checkpoints[(size, case["kind"])] = source
                        if eos:
                            row = golden.case(size, "cv_english_eos")["codec_head_eos_row"]
                            source = _with_eos_row(source, work / f"eos-{size}-{quant}", row)
                        target = work / f"m-{size}-{case['kind']}-{eos}-{quant}"
                        models[key] = convert_checkpoint(source, target, quant)
                    args = [
                        *say_arguments(case, ref_wav),
                        "--model-dir",
                        models[key],
                        "--threads",
                        "1",
                        "--greedy",
                    ]
                    args += ["--exact", "--max-frames", "7"]  # parity mode: f32 KV, no flash attn
                    tag = f"{size}-{case_name}-{quant}"
                    cpu_codes, cpu_audio, _ = say([*args, "--device", "cpu"], env, work, tag + "-cpu")
                    started = time.perf_counter()
                    dev_codes, dev_audio, log = say(
                        [*args, "--device", options.device], env, work, tag + "-dev"
                    )
                    seconds = time.perf_counter() - started
                    device_log = device_log or log
                    frame = first_difference(cpu_codes, dev_codes)
                    expected = golden.case(size, case_name)
                    golden_equal = (
                        bool(np.array_equal(dev_codes, expected["codes"])) if quant == "f32" else None
                    )
                    wave = None
                    if frame is None and len(cpu_audio) == len(dev_audio):
                        wave = float(np.max(np.abs(cpu_audio - dev_audio))) if len(cpu_audio) else 0.0
                    official = None
                    if golden_equal:
                        reference = expected_audio(expected, len(dev_codes))
                        official = float(np.max(np.abs(dev_audio - reference)))
                    rows.append(
                        {
                            "size": size,
                            "case": case_name,
                            "quant": quant,
                            "frames": len(dev_codes),
                            "codes_equal_cpu": frame is None,
                            "first_differing_frame": frame,
                            "codes_equal_official": golden_equal,
                            "max_wave_diff_cpu": wave,
                            "max_wave_diff_official": official,
                            "seconds": round(seconds, 2),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    report = {"device": options.device, "log_excerpt": _device_lines(device_log), "rows": rows}
    options.out.mkdir(parents=True, exist_ok=True)
    stem = f"device-check-{options.device}-{options.tag}"
    (options.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (options.out / f"{stem}.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


def _device_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "vulkan" in line.lower() or "device" in line.lower()][:10]


def _cell(value: Any) -> str:
    return "-" if value is None else (f"{value:.2e}" if isinstance(value, float) else str(value))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Golden cases on `--device {report['device']}` against `--device cpu` (greedy, --exact, 7 frames)",
        "",
        "| size | case | quant | codes = CPU | first differing frame | codes = official | max |wave - CPU| "
        "| max |wave - official| |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = ("size", "case", "quant", "codes_equal_cpu", "first_differing_frame", "codes_equal_official")
    for r in report["rows"]:
        cells = [_cell(r[key]) for key in (*keys, "max_wave_diff_cpu", "max_wave_diff_official")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
