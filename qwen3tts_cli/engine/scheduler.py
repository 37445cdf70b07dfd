"""One generation loop for many requests: they join and leave a shared llama.cpp batch between steps.

A worker thread owns the loaded model's two language models. Each request (`JobSpec`: its text pieces,
how to build each piece's prompt and settings, its decoder chunk schedule) is submitted from any thread
and gets a `ScheduledRequest` back: its own audio, piece after piece, in order. Between two frame steps
the worker drops cancelled requests (their slots are free at once) and fills free slots with waiting
pieces; a newcomer's prompt is prefilled inside the next step's talker decode, so nobody stalls.

What a request generates does not depend on what else runs: every sequence has its own sampler and seed,
each row of a batched decode is computed on its own (batched == solo, tests/test_batch.py), and a request's
decoder chunk boundaries depend only on its own frame counts.

Fairness, in two places:
* slots: a free slot goes to the request with the fewest pieces in flight (the oldest among equals), so
  every request gets its first piece in before anyone gets a second; a request's further pieces leave
  `reserved_slots` free for requests that have not started yet, so a newcomer starts at the next step
  even while a long text runs several pieces at once;
* decoder: chunks are decoded earliest playback deadline first (`arrival + audio already queued`): a new
  request's first chunk goes ahead of a long text that is seconds ahead of its listener, a listener who
  is falling behind goes ahead of both.

Bounded: at most the model's `max_batch` sequences in flight and `max_waiting` requests not yet started;
past that `submit` raises `Busy` at once.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass

import numpy as np

from qwen3tts_cli import spec
from qwen3tts_cli.engine.batch import SequenceBatch
from qwen3tts_cli.engine.decoder import DecoderStream, StreamingDecoder
from qwen3tts_cli.engine.pipeline import BackgroundDecoder
from qwen3tts_cli.engine.prompt import Prompt
from qwen3tts_cli.engine.sampling import GenerationSettings, TalkerRules
from qwen3tts_cli.errors import Busy, Qwen3TTSError

FRAME_SECONDS = spec.SAMPLES_PER_FRAME / spec.SAMPLE_RATE
WAKE_SECONDS = 0.05  # how often a waiting consumer looks at its cancel flag


@dataclass(frozen=True)
class SchedulerStats:
    """A snapshot of the scheduler's load (for /health and /metrics)."""

    max_batch: int
    max_waiting: int
    sequences_in_flight: int
    requests_running: int
    requests_waiting: int


@dataclass(frozen=True)
class JobSpec:
    """One request as the scheduler sees it.

    `prepare(i)` builds piece i's prompt and settings; it runs on the worker thread when the piece gets a
    slot (a long text's prompts are not all built up front) and may raise Qwen3TTSError, which fails the
    request. At most `parallel` of its pieces are in flight at once; the first piece runs `lead_frames`
    frames alone before the next join (first audio waits for no other prefill)."""

    pieces: int
    prepare: Callable[[int], tuple[Prompt, GenerationSettings]]
    rules: TalkerRules
    parallel: int = 1
    first_chunk_frames: int = 1
    chunk_frames: int = 4
    priming_codes: np.ndarray | None = None  # ICL reference codes: every piece's decoder starts after them
    lead_frames: int = 1


class _PieceChunks:
    """One piece's frames, cut into decoder chunks (sizes depend only on the frame count)."""

    def __init__(self, stream: DecoderStream, first_chunk: int, chunk: int) -> None:
        self.stream = stream
        self.target = first_chunk
        self.chunk = chunk
        self.buffer: list[np.ndarray] = []

    def add(self, frame: np.ndarray) -> np.ndarray | None:
        """The codes of a full chunk, or None while the chunk is still filling."""
        self.buffer.append(frame)
        if len(self.buffer) < self.target:
            return None
        self.target = min(self.chunk, self.target * 2)
        return self.take()

    def take(self) -> np.ndarray | None:
        if not self.buffer:
            return None
        codes = np.stack(self.buffer).astype(np.int64)
        self.buffer = []
        return codes


# events on a request's queue: (kind, piece, codes, future)
_CHUNK, _END, _ERROR, _WAKE = "chunk", "end", "error", "wake"


class _Job:
    """The scheduler's state of one request (touched by the worker thread; flags under the lock)."""

    def __init__(self, spec_: JobSpec, number: int, decoder: StreamingDecoder) -> None:
        self.spec = spec_
        self.number = number
        self.arrival = time.monotonic()
        self.next_piece = 0
        self.in_flight: set[int] = set()
        self.ended = 0
        self.lead_emitted = 0
        self.started = False
        self.cancelled = False
        self.failed = False
        self.queued_seconds = 0.0  # audio handed to the decoder so far (the decoder's deadline order)
        self.events: queue.Queue[tuple[str, int, np.ndarray | None, object]] = queue.Queue()
        self.primed = decoder.stream()
        self.chunkers: dict[int, _PieceChunks] = {}
        self.futures: deque[Future[np.ndarray]] = deque()

    @property
    def done(self) -> bool:
        return self.cancelled or self.failed or self.ended >= self.spec.pieces

    def admissible(self) -> bool:
        spec_ = self.spec
        if self.done or self.next_piece >= spec_.pieces or len(self.in_flight) >= max(1, spec_.parallel):
            return False
        lead_running = 0 in self.in_flight
        return not (self.next_piece > 0 and lead_running and self.lead_emitted < spec_.lead_frames)


class ScheduledRequest:
    """A submitted request: its audio piece by piece (`piece_audio`), and `cancel` from any thread."""

    def __init__(self, scheduler: Scheduler, job: _Job) -> None:
        self._scheduler = scheduler
        self._job = job
        self._pending: dict[int, deque[tuple[str, np.ndarray | None, object]]] = {}

    @property
    def cancelled(self) -> bool:
        return self._job.cancelled

    def cancel(self) -> None:
        """Stop generating: the request leaves the batch before the next frame step, its queued decoder
        chunks are dropped, and a consumer waiting for audio stops."""
        self._scheduler.cancel(self._job)

    def piece_audio(self, piece: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(codes [n, 16], samples) of one piece, chunk by chunk; pieces must be read in order.

        Ends early (without an error) when the request was cancelled; raises what failed it otherwise.
        One consumer thread reads a request; `cancel` may come from any thread."""
        while True:
            event = self._next_event(piece)
            if event is None:
                return
            kind, codes, payload = event
            if kind == _END:
                return
            assert codes is not None and isinstance(payload, Future)
            samples = self._wait(payload)
            if samples is None:
                return
            yield codes, samples

    def _next_event(self, piece: int) -> tuple[str, np.ndarray | None, object] | None:
        pending = self._pending.setdefault(piece, deque())
        while not pending:
            if self._job.cancelled:
                return None
            kind, number, codes, payload = self._job.events.get()
            if kind == _ERROR:
                assert isinstance(payload, BaseException)
                raise payload
            if kind == _WAKE:
                continue
            self._pending.setdefault(number, deque()).append((kind, codes, payload))
        return pending.popleft()

    def _wait(self, future: Future[np.ndarray]) -> np.ndarray | None:
        while True:
            if self._job.cancelled:
                return None
            try:
                return future.result(timeout=WAKE_SECONDS)
            except TimeoutError:
                continue
            except CancelledError:
                return None
            except BaseException:
                self.cancel()  # a failed chunk leaves the decoder stream broken: nothing after it can play
                raise


class Scheduler:
    """Owns the batch of one loaded model; `submit` from any thread."""

    def __init__(
        self,
        batch: SequenceBatch,
        decoder: StreamingDecoder,
        background: BackgroundDecoder,
        *,
        max_waiting: int = 32,
        reserved_slots: int = 0,
    ) -> None:
        if max_waiting < 0:
            raise Qwen3TTSError(f"max waiting must be >= 0 (got {max_waiting})", "pass 0 or more")
        self.batch = batch
        self.decoder = decoder
        self.background = background
        self.max_waiting = max_waiting
        self.reserved_slots = max(0, min(reserved_slots, batch.slots - 1))
        self._jobs: list[_Job] = []  # unfinished, in arrival order
        self._numbers = itertools.count()
        self._free_slots = batch.slots  # the worker's count, for admission control from other threads
        self._cv = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="qwen3tts-scheduler", daemon=True)
        self._worker.start()

    # ---- callers -----------------------------------------------------------------------------------------
    def submit(self, spec_: JobSpec) -> ScheduledRequest:
        """Queue a request; raises Busy when `max_waiting` requests are already waiting for a slot."""
        with self._cv:
            if self._closed:
                raise Qwen3TTSError("the model is closed", "load it again")
            waiting = sum(1 for job in self._jobs if not job.started)
            if waiting >= self.max_waiting + self._free_slots:
                raise Busy(
                    f"the server is busy: {self.batch.slots} sequences in flight and {waiting} requests"
                    " waiting",
                    "retry in a few seconds",
                )
            job = _Job(spec_, next(self._numbers), self.decoder)
            if spec_.pieces < 1:
                return ScheduledRequest(self, job)  # nothing to say: already done
            self._jobs.append(job)
            self._cv.notify_all()
        return ScheduledRequest(self, job)

    def cancel(self, job: _Job) -> None:
        with self._cv:
            if job.done:
                return
            job.cancelled = True
            futures = list(job.futures)
            self._cv.notify_all()
        job.events.put((_WAKE, -1, None, None))
        self.background.cancel(futures)

    def stats(self) -> SchedulerStats:
        with self._cv:
            started = [job for job in self._jobs if job.started]
            return SchedulerStats(
                max_batch=self.batch.slots,
                max_waiting=self.max_waiting,
                sequences_in_flight=self.batch.slots - self._free_slots,
                requests_running=len(started),
                requests_waiting=len(self._jobs) - len(started),
            )

    def close(self) -> None:
        """Cancel everything and stop the worker (the model can be closed afterwards)."""
        with self._cv:
            self._closed = True
            jobs = list(self._jobs)
            self._cv.notify_all()
        for job in jobs:
            self.cancel(job)
        if self._worker is not threading.current_thread():
            self._worker.join()

    # ---- the worker --------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                chosen = self._wait_for_work()
                if chosen is None:
                    return
                self.background.set_lm_busy(True)
                for job, piece in chosen:
                    self._admit(job, piece)
                self._step()
            except BaseException as exc:  # a bug must not leave every caller waiting forever
                with self._cv:
                    jobs = list(self._jobs)
                for job in jobs:
                    self._fail(job, exc)
                self.batch.reset()

    def _wait_for_work(self) -> list[tuple[_Job, int]] | None:
        """Drop what was cancelled, pick the pieces that take free slots; sleep while there is nothing to
        generate. None once closed."""
        with self._cv:
            while True:
                self._drop_finished()
                chosen = self._choose()
                if chosen or len(self.batch):
                    return chosen
                self.background.set_lm_busy(False)  # nothing to generate: every core may decode
                if self._closed:
                    return None
                self._cv.wait()

    def _drop_finished(self) -> None:
        """Remove cancelled and failed requests' sequences; forget finished requests (lock held)."""
        for job in self._jobs:
            if job.cancelled or job.failed:
                for piece in list(job.in_flight):
                    self.batch.remove((job.number, piece))
                job.in_flight.clear()
        self._jobs = [job for job in self._jobs if not job.done]
        self._free_slots = self.batch.free_slots

    def _choose(self) -> list[tuple[_Job, int]]:
        """Which waiting pieces take the free slots (lock held): fewest pieces in flight first."""
        chosen: list[tuple[_Job, int]] = []
        free = self.batch.free_slots
        while free:
            candidates = [job for job in self._jobs if job.admissible()]
            # a request's further pieces leave the reserved slots to requests that have not started
            if free <= self.reserved_slots:
                candidates = [job for job in candidates if not job.in_flight]
            if not candidates:
                break
            job = min(candidates, key=lambda j: (len(j.in_flight), j.number))
            piece = job.next_piece
            job.next_piece += 1
            job.in_flight.add(piece)
            job.started = True
            chosen.append((job, piece))
            free -= 1
        self._free_slots = free
        return chosen

    def _admit(self, job: _Job, piece: int) -> None:
        """Build the piece's prompt and put it into the batch (worker thread, lock not held)."""
        try:
            if piece == 0 and job.spec.priming_codes is not None:
                # the official decode runs reference codes + generated codes and cuts the reference part:
                # the decoder is primed with the reference once, and every piece continues from that state
                priming = self.background.submit(job.primed, job.spec.priming_codes, priority=job.arrival)
                with self._cv:
                    job.futures.append(priming)
            prompt, settings = job.spec.prepare(piece)
            self.batch.add((job.number, piece), prompt, settings, job.spec.rules)
        except BaseException as exc:
            self._fail(job, exc)
            return
        first = job.spec.first_chunk_frames if piece == 0 else job.spec.chunk_frames
        job.chunkers[piece] = _PieceChunks(job.primed.fork(), first, job.spec.chunk_frames)

    def _step(self) -> None:
        if not len(self.batch):
            return
        try:
            events = self.batch.step()
        except BaseException as exc:  # the contexts are in an unknown state: everyone in them fails
            with self._cv:
                victims = [job for job in self._jobs if job.in_flight]
            for job in victims:
                self._fail(job, exc)
            self.batch.reset()
            return
        with self._cv:
            jobs = {job.number: job for job in self._jobs}
        for (number, piece), frame in events:
            job = jobs.get(number)
            if job is None or job.done:
                continue
            if frame is None:
                self._end_piece(job, piece)
            else:
                job.lead_emitted += piece == 0
                self._send(job, piece, job.chunkers[piece].add(frame))

    def _send(self, job: _Job, piece: int, codes: np.ndarray | None) -> None:
        if codes is None:
            return
        stream = job.chunkers[piece].stream
        future = self.background.submit(stream, codes, priority=job.arrival + job.queued_seconds)
        job.queued_seconds += len(codes) * FRAME_SECONDS
        with self._cv:  # cancel() reads them from another thread
            job.futures.append(future)
            while job.futures and job.futures[0].done():  # keep only those cancel may still drop
                job.futures.popleft()
        job.events.put((_CHUNK, piece, codes, future))

    def _end_piece(self, job: _Job, piece: int) -> None:
        self._send(job, piece, job.chunkers[piece].take())
        del job.chunkers[piece]
        with self._cv:
            job.in_flight.discard(piece)
            job.ended += 1
            self._cv.notify_all()
        job.events.put((_END, piece, None, None))

    def _fail(self, job: _Job, exc: BaseException) -> None:
        with self._cv:
            job.failed = True
            futures = list(job.futures)
            self._cv.notify_all()
        self.background.cancel(futures)
        job.events.put((_ERROR, -1, None, exc))
