"""The codec decoder on worker threads, sharing the cores with llama.cpp.

Per 80 ms frame the language models and the codec decoder each take a large share of the time, and
neither uses two cores fully: the decoder's Sin and small operators run on one thread, and llama.cpp at
one thread does more work per core-second than at two (measured at 0.6B q8_0, 2 cores: one LM frame 111 ms
on 2 threads, ~140 ms on 1; the decoder 39 ms/frame on 2 threads, 62-67 on 1, at the same speed while the
LMs run next to it). So while a decoder chunk is in flight, the decoder gets `decoder_threads` cores and
llama.cpp the rest; when it is idle, llama.cpp gets them all again (`CoreShare.lm_threads`, read before
every llama.cpp decode). Never more busy threads than cores: an OpenMP barrier that waits for a preempted
thread stalls the whole step. When llama.cpp has nothing left to generate, chunks of different pieces
decode in parallel on all cores (one stream per worker, `decoder_threads` each).

Results do not depend on timing: the caller decides the chunk boundaries, and each chunk's audio comes
back through a Future in submission order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager

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

    def chunk_queued(self) -> None:
        """A decoder chunk was queued: llama.cpp leaves the decoder its cores until it is done."""
        with self._lock:
            self._pending += 1

    def chunk_done(self) -> None:
        """A queued chunk finished, failed or was dropped."""
        with self._lock:
            self._pending -= 1


class BackgroundDecoder:
    """Runs decoder chunks on worker threads while the caller keeps generating.

    Chunks of one stream run one after another in submission order (a stream's state is sequential; a
    forked stream waits for its parent's queued chunks). Beside a busy caller one chunk runs at a time;
    once the caller says it is idle (`lm_idle`: its frames are all generated, or it waits for audio), every
    core decodes, one stream per worker: the last chunks of a batch of pieces all arrive at the end.
    """

    def __init__(self, cores: CoreShare) -> None:
        self.cores = cores
        self.max_workers = max(1, cores.total // cores.decoder_threads)
        self._queue: list[_Job] = []
        self._running: set[int] = set()  # ids of the streams being decoded
        self._lm_busy = False
        self._cv = threading.Condition()
        self._workers: list[threading.Thread] = []
        self._closed = False

    def submit(self, stream: DecoderStream, codes: np.ndarray, priority: float = 0.0) -> Future[np.ndarray]:
        """Decode `codes` [n, 16] on `stream`; the Future holds their audio.

        Among the chunks that may start (each stream's chunks run in submission order), the lowest
        `priority` goes first: the scheduler passes each request's playback deadline."""
        if not self.cores.overlaps:
            return _done(lambda: stream.push(codes))
        job = _Job(stream, codes, priority)
        # counted as busy from now on, so llama.cpp's next decode already leaves the decoder its cores
        self.cores.chunk_queued()
        with self._cv:
            if self._closed:
                self.cores.chunk_done()
                raise RuntimeError("the background decoder is closed")
            self._queue.append(job)
            self._start_workers()
            self._cv.notify_all()
        return job.future

    def set_lm_busy(self, busy: bool) -> None:
        """Whether llama.cpp is generating (then only one chunk decodes at a time, beside it)."""
        with self._cv:
            self._lm_busy = busy
            self._cv.notify_all()

    @contextmanager
    def lm_idle(self) -> Iterator[None]:
        """While the caller waits for audio, all cores decode."""
        with self._cv:
            was_busy = self._lm_busy
        self.set_lm_busy(False)
        try:
            yield
        finally:
            self.set_lm_busy(was_busy)

    def cancel(self, futures: list[Future[np.ndarray]]) -> None:
        """Drop chunks nobody will read (an abandoned stream); a chunk already running finishes."""
        wanted = {id(f) for f in futures}
        with self._cv:
            dropped = [job for job in self._queue if id(job.future) in wanted]
            self._queue = [job for job in self._queue if id(job.future) not in wanted]
        for job in dropped:
            job.future.cancel()
            self.cores.chunk_done()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            dropped, self._queue = self._queue, []
            self._cv.notify_all()
        for job in dropped:
            job.future.cancel()
            self.cores.chunk_done()
        for worker in self._workers:
            worker.join()
        self._workers = []

    # ---- workers ---------------------------------------------------------------------------------------
    def _start_workers(self) -> None:
        while len(self._workers) < self.max_workers:
            worker = threading.Thread(
                target=self._work, name=f"qwen3tts-decoder-{len(self._workers)}", daemon=True
            )
            self._workers.append(worker)
            worker.start()

    def _next_job(self) -> _Job | None:
        """The first queued chunk that may start now (called with the lock held)."""
        allowed = 1 if self._lm_busy else self.max_workers
        if len(self._running) >= allowed:
            return None
        blocked = set(self._running)
        best: int | None = None
        for index, job in enumerate(self._queue):
            stream_id, parent_id = id(job.stream), job.stream.parent_id
            free = stream_id not in blocked and (parent_id is None or parent_id not in blocked)
            if free and (best is None or job.priority < self._queue[best].priority):
                best = index
            blocked.add(stream_id)  # later chunks of this stream (and its forks) wait for this one
        return None if best is None else self._queue.pop(best)

    def _work(self) -> None:
        while True:
            with self._cv:
                job = self._next_job()
                while job is None:
                    if self._closed:
                        return
                    self._cv.wait()
                    job = self._next_job()
                self._running.add(id(job.stream))
            try:
                if job.future.set_running_or_notify_cancel():
                    try:
                        job.future.set_result(job.stream.push(job.codes))
                    except BaseException as exc:  # delivered by future.result()
                        job.future.set_exception(exc)
            finally:
                self.cores.chunk_done()
                with self._cv:
                    self._running.discard(id(job.stream))
                    self._cv.notify_all()


class _Job:
    def __init__(self, stream: DecoderStream, codes: np.ndarray, priority: float) -> None:
        self.stream = stream
        self.codes = codes
        self.priority = priority
        self.future: Future[np.ndarray] = Future()


def _done(work: Callable[[], np.ndarray]) -> Future[np.ndarray]:
    """Run `work` now; a Future that already holds its result (or exception)."""
    future: Future[np.ndarray] = Future()
    try:
        future.set_result(work())
    except BaseException as exc:  # delivered by future.result(), like a worker-thread failure
        future.set_exception(exc)
    return future
