"""One synthesis request on the server: start it, pull its audio off the event loop, encode, account.

`TTS.stream` blocks while audio is generated, so every pull runs in a worker thread drawn from a limiter of
its own (sized for every request the scheduler can hold), never from Starlette's default pool that the
other routes need. When the client goes away Starlette cancels the response task; the `finally` here
then cancels the request in the scheduler, which takes it out of the batch before the next frame step
(the worker thread does not stop by itself).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np

from qwen3tts_cli import spec
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.server.errors import APIError
from qwen3tts_cli.server.metrics import Metrics
from qwen3tts_cli.tts import TTS, AudioStream, PieceFilter

log = logging.getLogger("qwen3tts.server")


@dataclass(frozen=True)
class ServerSettings:
    """What `qwen3tts serve` was told; read by every route."""

    model_id: str
    other_names: tuple[str, ...] = ()  # e.g. the catalog name of a --model-dir folder converted from it
    max_input_chars: int = 4096
    max_body_bytes: int = 1 << 20  # JSON bodies
    max_upload_bytes: int = 10 << 20  # voice samples
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    request_timeout: float | None = None
    max_frames: int | None = None  # a cap per piece, on top of the request's own
    seed: int | None = None  # a fixed seed for requests that give none (tests, reproducible demos)
    default_voice: str | None = None  # what OpenAI's built-in voice names (alloy, ...) mean here
    aliases: tuple[str, ...] = field(default=("tts-1", "tts-1-hd", "gpt-4o-mini-tts"))


class Synthesizer:
    """Starts requests on the shared TTS and turns them into async streams of samples."""

    def __init__(self, tts: TTS, settings: ServerSettings, metrics: Metrics) -> None:
        self.tts = tts
        self.settings = settings
        self.metrics = metrics
        stats = tts.stats()
        # one thread per request that may be pulling audio at once, plus a few for starts and uploads
        self.limiter = anyio.CapacityLimiter(stats.max_batch + stats.max_waiting + 4)

    async def start(self, text: str, options: dict[str, Any]) -> AudioStream:
        """Check and queue a request (prompt building runs off the loop); library errors become 4xx."""
        # a long text may use the batch's spare slots (the scheduler keeps one free for newcomers); the
        # output is the same as `say`, which also generates the pieces of a text together
        options = {"batch": self.tts.model.max_batch, **options}
        if options.get("seed") is None and self.settings.seed is not None:
            options["seed"] = self.settings.seed
        cap = self.settings.max_frames
        if cap is not None:
            asked = options.get("max_frames")
            options["max_frames"] = cap if asked is None else min(int(asked), cap)
        try:
            return await anyio.to_thread.run_sync(
                lambda: self.tts.stream(text, **options), limiter=self.limiter
            )
        except Qwen3TTSError as exc:
            raise APIError.from_library(exc) from None

    async def samples(self, stream: AudioStream) -> AsyncIterator[np.ndarray]:
        """The request's audio chunks; cancels it when the consumer stops early (client gone, timeout)."""
        started = time.perf_counter()
        deadline = None if self.settings.request_timeout is None else started + self.settings.request_timeout
        first: float | None = None
        produced = 0
        finished = False
        stopped = "client"  # why it ends early unless told otherwise: the consumer went away
        try:
            while True:
                remaining = None if deadline is None else deadline - time.perf_counter()
                with anyio.fail_after(remaining):
                    chunk = await anyio.to_thread.run_sync(
                        _next_chunk, stream, limiter=self.limiter, abandon_on_cancel=True
                    )
                if chunk is None:
                    finished = True
                    break
                if first is None and len(chunk):
                    first = time.perf_counter() - started
                produced += len(chunk)
                yield chunk
        except TimeoutError:
            stopped = "timeout"
            log.warning("request stopped after the %.0f s request timeout", self.settings.request_timeout)
        except Exception:  # mid-stream the status is sent already: end the audio, log why, never send it
            stopped = "error"
            log.exception("synthesis failed mid-stream")
        finally:
            stream.cancel()
            audio = produced / spec.SAMPLE_RATE
            if finished:
                self.metrics.record_synthesis(first, time.perf_counter() - started, audio)
            else:
                self.metrics.cancelled.labels(stopped).inc()
                self.metrics.audio_seconds.inc(audio)


def tempo_filter(speed: float) -> PieceFilter:
    """A `TTS.stream` piece filter playing each piece at `speed` (pitch kept); fails now without the extra."""
    from qwen3tts_cli import shaping

    try:
        shaping.require_libraries(shaping.Shaping(speed=speed))
    except Qwen3TTSError as exc:
        raise APIError(
            501, f"'speed' other than 1.0 needs pedalboard on the server ({exc.hint})", param="speed"
        ) from None

    def stretch(samples: np.ndarray) -> np.ndarray:
        return shaping.change_speed(samples, spec.SAMPLE_RATE, speed)

    return stretch


def _next_chunk(stream: AudioStream) -> np.ndarray | None:
    chunk = next(stream, None)
    return None if chunk is None else chunk.samples
