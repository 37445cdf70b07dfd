"""Many clients at once against one `qwen3tts serve` (loopback, bounded counts and time).

16 concurrent clients with mixed voices, formats and seeds all complete, and each gets exactly what the
same request gives alone through the CLI; 64 at once: the excess is refused quickly with 429 (in OpenAI's
shape), nothing crashes, memory stays bounded, and the server serves normally afterwards.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from server_process import ServerProcess, cli_pcm

from qwen3tts_cli.convert.converter import convert_checkpoint

FRAMES = 5
VOICES = [("vivian", 11), ("ryan", 12), ("vivian", 13), ("ryan", 14)]
FORMATS = ["pcm", "wav", "flac", "mp3"]
TEXT = "Several clients speak at the same time here."


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, checkpoint_factory) -> Path:
    return convert_checkpoint(
        checkpoint_factory("custom_voice"), tmp_path_factory.mktemp("load") / "cv", "q8_0"
    )


@pytest.fixture(scope="module")
def server(model: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(model, "--threads", "2", "--max-batch", "8", "--max-queue", "16", "--quiet")
    yield process
    process.kill()


def _request(url: str, speaker: str, seed: int, fmt: str) -> httpx.Response:
    body = {
        "model": "tts-1",
        "input": TEXT,
        "voice": speaker,
        "seed": seed,
        "max_frames": FRAMES,
        "response_format": fmt,
    }
    return httpx.post(f"{url}/v1/audio/speech", json=body, timeout=300)


def _pcm_of(fmt: str, data: bytes) -> bytes:
    if fmt == "pcm":
        return data
    if fmt == "wav":
        return data[44:]
    with av.open(io.BytesIO(data)) as container:  # flac: lossless (a streamed STREAMINFO has no length,
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]  # which libsndfile refuses)
    return np.concatenate(frames).astype("<i2").tobytes()


def test_sixteen_concurrent_clients_each_get_their_solo_output(server: ServerProcess, model: Path) -> None:
    expected = {(speaker, seed): cli_pcm(model, TEXT, speaker, seed, FRAMES) for speaker, seed in VOICES}
    solo_mp3 = {
        (speaker, seed): _request(server.url, speaker, seed, "mp3").content for speaker, seed in VOICES
    }
    jobs = [(speaker, seed, fmt) for speaker, seed in VOICES for fmt in FORMATS]
    results: dict[tuple[str, int, str], httpx.Response] = {}

    def run(job: tuple[str, int, str]) -> None:
        results[job] = _request(server.url, *job)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(results) == 16
    for (speaker, seed, fmt), response in results.items():
        assert response.status_code == 200, response.text
        if fmt == "mp3":  # lossy: the same samples encode to the same bytes
            assert response.content == solo_mp3[(speaker, seed)]
        else:
            assert _pcm_of(fmt, response.content) == expected[(speaker, seed)], (speaker, seed, fmt)


def test_a_burst_of_64_is_bounded(server: ServerProcess) -> None:
    before = server.rss_mb()
    statuses: list[int] = []
    refusal_times: list[float] = []
    errors: list[dict[str, object]] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        started = time.perf_counter()
        response = _request(server.url, "ryan", index, "pcm")
        with lock:
            statuses.append(response.status_code)
            if response.status_code != 200:
                refusal_times.append(time.perf_counter() - started)
                errors.append(response.json()["error"])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert len(statuses) == 64
    assert set(statuses) <= {200, 429}
    refused = statuses.count(429)
    # 8 slots + 16 waiting (+ the ones that finished meanwhile): the rest is refused, at once
    assert statuses.count(200) >= 24 and refused > 0
    assert all(e["code"] == "busy" for e in errors)
    assert max(refusal_times) < 5.0
    after = server.rss_mb()
    assert after - before < 300, (before, after)  # bounded: no per-request pile-up
    assert httpx.get(f"{server.url}/health").json()["batch"]["in_flight"] == 0
    assert _request(server.url, "vivian", 1, "pcm").status_code == 200
