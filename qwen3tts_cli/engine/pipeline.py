"""The codec decoder on its own thread, sharing the cores with llama.cpp.

Per 80 ms frame the language models and the codec decoder each take a large share of the time, and
neither uses two cores fully: the decoder's Sin and small operators run on one thread, and llama.cpp at
one thread does more work per core-second than at two (measured at 0.6B q8_0, 2 cores: one LM frame 111 ms
on 2 threads, ~140 ms on 1; the decoder 39 ms/frame on 2 threads, 62-67 on 1, at the same speed while the
LMs run next to it). So while a decoder chunk is in flight, the decoder gets `decoder_threads` cores and
llama.cpp the rest; when it is idle, llama.cpp gets them all again (`CoreShare.lm_threads`, read before
every llama.cpp decode). Never more busy threads than cores: an OpenMP barrier that waits for a preempted
thread stalls the whole step.

Results do not depend on timing: the caller decides the chunk boundaries, and each chunk's audio comes
back through a Future in submission order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from qwen3tts_cli.engine.decoder import DecoderStream


class CoreShare:
    """How many threads llama.cpp may use right now, given the decoder work in flight."""

    def __init__(self, total: int, decoder_threads: int) -> None:
        self.total = max(1, total)
        self.decoder_threads = max(1, min(decoder_threads, self.total - 1)) if self.total > 1 else 1
        self._pending = 0
        self._lock = threading.Lock()

    @classmethod
    def split(cls, total: int) -> CoreShare:
        """A third of the cores (at least one) for the decoder: llama.cpp gains little from the last ones."""
        return cls(total, max(1, total // 3))

    @property
    def overlaps(self) -> bool:
        """Whether the decoder can run beside llama.cpp at all (one core: no)."""
        return self.total > 1

    def lm_threads(self) -> int:
        with self._lock:
            busy = self._pending > 0
        return self.total - self.decoder_threads if busy else self.total

    def _begin(self) -> None:
        with self._lock:
            self._pending += 1

    def _end(self) -> None:
        with self._lock:
            self._pending -= 1


class BackgroundDecoder:
    """Runs decoder chunks on one worker thread, in submission order; the caller keeps generating."""

    def __init__(self, cores: CoreShare) -> None:
        self.cores = cores
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, stream: DecoderStream, codes: np.ndarray) -> Future[np.ndarray]:
        """Decode `codes` [n, 16] on `stream`; the Future holds their audio."""
        if not self.cores.overlaps:
            return _done(lambda: stream.push(codes))
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="qwen3tts-decoder")
        # counted as busy from now on, so llama.cpp's next decode already leaves the decoder its cores
        self.cores._begin()
        try:
            return self._executor.submit(self._run, stream, codes)
        except BaseException:
            self.cores._end()
            raise

    def _run(self, stream: DecoderStream, codes: np.ndarray) -> np.ndarray:
        try:
            return stream.push(codes)
        finally:
            self.cores._end()

    def cancel(self, futures: list[Future[np.ndarray]]) -> None:
        """Drop chunks nobody will read (an abandoned stream); a chunk already running finishes."""
        for future in futures:
            if future.cancel():
                self.cores._end()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def _done(work: Callable[[], np.ndarray]) -> Future[np.ndarray]:
    """Run `work` now; a Future that already holds its result (or exception)."""
    future: Future[np.ndarray] = Future()
    try:
        future.set_result(work())
    except BaseException as exc:  # delivered by future.result(), like a worker-thread failure
        future.set_exception(exc)
    return future
