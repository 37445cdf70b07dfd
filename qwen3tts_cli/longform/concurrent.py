"""Many independent requests on one loaded model at once: the scheduler batches them frame by frame.

Each request runs as `TTS.stream` in a worker thread (up to `width` at a time, the model's batch); results
come back as they finish. Leaving early (an error, Ctrl-C) cancels every stream still running, so no
generation goes on unheard in the background.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from qwen3tts_cli.tts import TTS


_POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Job:
    key: Hashable
    text: str
    options: Mapping[str, Any]


@dataclass(frozen=True)
class Done:
    key: Hashable
    samples: np.ndarray | None  # None when it failed
    frames: int
    pieces: list[str]
    error: BaseException | None = None
    replacements: list[Any] = field(default_factory=list)  # lexicon.Replacement: what the lexicon changed


class _Streams:
    """The streams in flight, so the caller's thread can cancel them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self.stopped = False

    def run(self, tts: TTS, job: Job) -> Done:
        frames = 0

        def count(_piece: int, codes: np.ndarray) -> None:
            nonlocal frames
            frames += len(codes)

        with self._lock:
            if self.stopped:
                raise RuntimeError("stopped")
            stream = tts.stream(job.text, on_codes=count, **job.options)
            self._open.add(stream)
        try:
            parts = [chunk.samples for chunk in stream]
            if stream.cancelled:
                raise RuntimeError("cancelled")
        finally:
            with self._lock:
                self._open.discard(stream)
        samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        return Done(job.key, samples, frames, list(stream.pieces), None, list(stream.replacements))

    def cancel_all(self) -> None:
        with self._lock:
            self.stopped = True
            streams = list(self._open)
        for stream in streams:
            stream.cancel()


def synthesize_all(tts: TTS, jobs: Sequence[Job], width: int) -> Iterator[Done]:
    """Run every job, `width` at a time; yield each as it finishes (a failure is a Done with `error`)."""
    streams = _Streams()
    pending = list(jobs)[::-1]
    running: dict[Future[Done], Job] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, width), thread_name_prefix="qwen3tts-job")
    try:
        while pending or running:
            while pending and len(running) < max(1, width):
                job = pending.pop()
                running[pool.submit(streams.run, tts, job)] = job
            # bounded: on Windows (Python < 3.14) a blocking wait does not see Ctrl-C until a line ends
            finished, _ = wait(running, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                error = future.exception()
                if error is not None:
                    if not isinstance(error, Exception):
                        raise error
                    yield Done(job.key, None, 0, [], error)
                else:
                    yield future.result()
    finally:
        streams.cancel_all()
        pool.shutdown(wait=True, cancel_futures=True)
