"""`qwen3tts serve` in a subprocess on a free loopback port, for the server tests (bounded, stops itself)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

START_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    def __init__(self, model_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "qwen3tts_cli.cli", "serve", "--model-dir", str(model_dir)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), *args]
        # the log goes to a file: a pipe nobody reads would block the server once it is full
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1", **(env or {})},
        )
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.stderr()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"the server did not answer /health within {START_TIMEOUT} s")

    def stderr(self, limit: int | None = 4000) -> str:
        """The server's log so far (its last `limit` characters)."""
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        return text if limit is None else text[-limit:]

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def cli_pcm(model: Path, text: str, speaker: str, seed: int, frames: int) -> bytes:
    """What `qwen3tts say` writes as raw pcm for the same request: the reference a server must match."""
    command = [sys.executable, "-m", "qwen3tts_cli.cli", "say", text, "--model-dir", str(model)]
    command += ["--speaker", speaker, "--seed", str(seed), "--max-frames", str(frames)]
    command += ["-o", "-", "--format", "pcm", "--quiet"]
    return subprocess.run(command, capture_output=True, timeout=300, check=True).stdout
