#!/usr/bin/env python3
"""Server load: N concurrent clients against `qwen3tts serve`, shared batch vs one request at a time.

    python benchmarks/server_load.py --clients 1 2 4 8 --duration 60 --out benchmarks/results

Builds (or reuses, same cache as `qwen3tts bench`) the seeded random checkpoint at the real 0.6B shape,
converts it at --quant, then for each server configuration (`--max-batch 8`, the shared batch, and
`--max-batch 1`, requests one after another as peer servers serve them) starts `qwen3tts serve` on
127.0.0.1 and, for each N, runs N client threads that each ask for one ~4 s sentence (`--frames` frames,
random weights never stop by themselves) again and again for `--duration` seconds, streaming raw pcm from
`/v1/audio/speech`. Clients stop starting requests at the deadline and finish the ones in flight.

Reported per (server, N): aggregate audio seconds per wall second, p50/p95 time to first audio (first
audio byte of the body), p50/p95 request time, requests done/refused, the server's peak RSS (VmHWM, the
highest seen up to that level) and the CPU used by other processes meanwhile. JSON with every request plus
a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qwen3tts_cli import bench  # noqa: E402

BYTES_PER_SECOND = bench.SAMPLE_RATE * 2  # pcm: 16-bit mono


@dataclass
class Sample:
    """One request as a client saw it."""

    client: int
    status: int
    start: float
    first_audio: float | None
    seconds: float
    audio_seconds: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`qwen3tts serve` in a subprocess on a free loopback port."""

    def __init__(self, folder: Path, max_batch: int, frames: int, threads: int, max_queue: int) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "qwen3tts_cli.cli", "serve", "--model-dir", str(folder)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--max-batch", str(max_batch)]
        command += ["--max-frames", str(frames), "--threads", str(threads), "--max-queue", str(max_queue)]
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("the server did not become healthy within 300 s")

    def peak_rss_mb(self) -> float | None:
        return bench.peak_rss_mb(str(self.process.pid))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def one_request(client: httpx.Client, url: str, text: str, seed: int, index: int) -> Sample:
    body = {"model": "tts-1", "input": text, "voice": bench.SPEAKER, "response_format": "pcm", "seed": seed}
    start = time.perf_counter()
    first: float | None = None
    received = 0
    with client.stream("POST", f"{url}/v1/audio/speech", json=body) as response:
        for data in response.iter_bytes():
            if data and first is None and response.status_code == 200:
                first = time.perf_counter() - start
            received += len(data)
        status = response.status_code
    seconds = time.perf_counter() - start
    audio = received / BYTES_PER_SECOND if status == 200 else 0.0
    return Sample(index, status, start, first, seconds, audio)


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_level(url: str, clients: int, duration: float, text: str, server_pid: int) -> dict[str, Any]:
    """`clients` threads asking again and again until `duration` passed; returns the level's summary."""
    samples: list[Sample] = []
    lock = threading.Lock()
    begin = time.perf_counter()
    deadline = begin + duration

    def client_loop(index: int) -> None:
        seed = 1000 * index
        with httpx.Client(timeout=600) as client:
            while time.perf_counter() < deadline:
                sample = one_request(client, url, text, seed, index)
                seed += 1
                with lock:
                    samples.append(sample)
                if sample.status != 200:
                    time.sleep(0.5)  # refused: back off like a client honouring Retry-After would

    record: dict[str, Any] = {}
    server_cpu = process_cpu_seconds(server_pid)
    with bench.cpu_load(record):
        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    wall = time.perf_counter() - begin
    # the server is another process: what it used is not "other" load
    load = record.get("load", {})
    server_cores = (process_cpu_seconds(server_pid) - server_cpu) / wall
    load["server_cores"] = round(server_cores, 3)
    if "other_cores" in load:
        load["other_cores"] = round(max(0.0, load["other_cores"] - server_cores), 3)
    done = [s for s in samples if s.status == 200]
    firsts = [s.first_audio for s in done if s.first_audio is not None]
    audio = sum(s.audio_seconds for s in done)
    record.update(
        clients=clients,
        wall_seconds=round(wall, 2),
        requests=len(done),
        refused=len(samples) - len(done),
        audio_seconds=round(audio, 2),
        audio_per_wall_second=round(audio / wall, 3) if wall else None,
        first_audio_p50=_percentile(firsts, 50),
        first_audio_p95=_percentile(firsts, 95),
        request_p50=_percentile([s.seconds for s in done], 50),
        request_p95=_percentile([s.seconds for s in done], 95),
        samples=[asdict(s) for s in samples],
    )
    return record


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 3)


def prepare_model(workdir: Path, quant: str, threads: int) -> Path:
    vocabulary = bench.resolve_vocabulary("auto")
    checkpoint, _ = bench.prepare_checkpoint(workdir, "custom_voice", "0.6b", 0, print, vocabulary)
    folder, _ = bench.prepare_converted(workdir, checkpoint, quant, threads, print)
    return folder


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Server load, 0.6B {report['quant']}, {report['threads']} threads, {report['frames']} frames "
        f"per request ({report['frames'] / bench.FRAME_RATE:.2f} s of audio), "
        f"{report['duration']:.0f} s per level",
        "",
        "| server | clients | audio s / wall s | first audio p50 / p95 | request p50 / p95 | done | refused "
        "| peak RSS | other cores |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for server in report["servers"]:
        for level in server["levels"]:
            other = (level.get("load") or {}).get("other_cores")
            cells = [
                f"--max-batch {server['max_batch']}",
                level["clients"],
                level["audio_per_wall_second"],
                f"{level['first_audio_p50']} / {level['first_audio_p95']} s",
                f"{level['request_p50']} / {level['request_p95']} s",
                level["requests"],
                level["refused"],
                f"{level['peak_rss_mb']:.0f} MiB",
                other,
            ]
            lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--max-batch", type=int, nargs="+", default=[8, 1])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quant", default="q8_0")
    parser.add_argument("--workdir", type=Path, default=Path("/work/benchwork"))
    parser.add_argument("--model-dir", type=Path, help="a converted folder instead of the bench checkpoint")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    folder = args.model_dir or prepare_model(args.workdir, args.quant, args.threads)
    report: dict[str, Any] = {
        "schema": "qwen3tts-server-load/1",
        "machine": bench.machine_info(),
        "model": str(folder),
        "quant": args.quant,
        "threads": args.threads,
        "frames": args.frames,
        "duration": args.duration,
        "text": bench.SHORT_TEXT,
        "servers": [],
    }
    for max_batch in args.max_batch:
        server = Server(folder, max_batch, args.frames, args.threads, max_queue=max(args.clients) * 2)
        entry: dict[str, Any] = {"max_batch": max_batch, "levels": []}
        try:
            pid = server.process.pid
            load_level(server.url, 1, min(args.duration, 10), bench.SHORT_TEXT, pid)  # warm-up
            for clients in args.clients:
                level = load_level(server.url, clients, args.duration, bench.SHORT_TEXT, pid)
                level["peak_rss_mb"] = server.peak_rss_mb()
                entry["levels"].append(level)
                print(
                    f"max-batch {max_batch} clients {clients}: {level['audio_per_wall_second']} audio s/s, "
                    f"first audio p50 {level['first_audio_p50']} p95 {level['first_audio_p95']} s, "
                    f"request p95 {level['request_p95']} s, {level['requests']} done, {level['refused']} "
                    f"refused, peak RSS {level['peak_rss_mb']} MiB",
                    flush=True,
                )
        finally:
            server.stop()
        report["servers"].append(entry)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"server-load-0.6b-{args.quant}{('-' + args.tag) if args.tag else ''}"
    Path(f"{stem}.json").write_text(json.dumps(report, indent=1))  # not with_suffix: "0.6b" has a dot
    Path(f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
