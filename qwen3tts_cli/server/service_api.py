"""The Qwen-TTS streaming service's API, so its users can switch: /health, /tts, /stream-tts, /metrics.

Bodies as that service takes them: `text`, `format` (wav | mp3 | ogg, /tts only), `temperature` (0-2;
0 = greedy), `max_length` (codec frames per piece, 1-4096), `voice_attributes` {gender, age, emotion}
(turned into a style instruction as `say --gender/--age/--emotion` does; only 1.7B CustomVoice models
follow it), plus `voice` and `seed` as extensions. Unlike that service, /stream-tts is one valid WAV stream
(not a string of WAV files), an error mid-stream ends the stream and is logged (never written into the
audio), and generation never runs on the event loop. A /tts client that leaves cancels its request.
Errors use the same OpenAI shape as the /v1 routes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from qwen3tts_cli import spec
from qwen3tts_cli.audio import WAV_HEADER_BYTES, wav_header
from qwen3tts_cli.audio_stream import MEDIA_TYPES, open_stream_encoder
from qwen3tts_cli.server.errors import APIError
from qwen3tts_cli.server.metrics import Metrics
from qwen3tts_cli.server.openai_api import (
    STREAM_HEADERS,
    SpeechRoutes,
    _field,
    _ranged,
    sampling_options,
    spoken_text,
)
from qwen3tts_cli.server.requests import read_json

FILE_FORMATS = ("wav", "mp3", "ogg")
GENDERS = ("male", "female", "neutral")


def age_word(age: Any) -> str | None:
    """The service takes an age in years (1-120) or a word; the style instruction wants a word."""
    if age is None or isinstance(age, str):
        return age
    if isinstance(age, bool) or not isinstance(age, int | float) or not 1 <= age <= 120:
        raise APIError(400, "'voice_attributes.age' must be 1-120 years or a word", param="voice_attributes")
    if age < 13:
        return "child"
    if age < 20:
        return "teenage"
    if age < 35:
        return "young"
    if age < 60:
        return "middle-aged"
    return "old"


async def _unless_disconnected(request: Request, work: Callable[[], Awaitable[None]]) -> bool:
    """Run `work` until done (True) or until the client goes away (False: `work` is cancelled, which
    cancels its synthesis). For a whole-file answer, where no streamed write would notice the client leave;
    the body has been read, so the next ASGI message is the disconnect."""
    gone = False
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            nonlocal gone
            while (await request.receive())["type"] != "http.disconnect":
                pass
            gone = True
            group.cancel_scope.cancel()

        group.start_soon(watch)
        await work()
        group.cancel_scope.cancel()
    return not gone


class ServiceRoutes:
    def __init__(self, speech: SpeechRoutes, metrics: Metrics) -> None:
        self.speech = speech
        self.synth = speech.synth
        self.tts = speech.tts
        self.settings = speech.settings
        self.metrics = metrics

    def routes(self) -> list[Route]:
        return [
            Route("/health", self.health, methods=["GET"]),
            Route("/tts", self.tts_file, methods=["POST"]),
            Route("/stream-tts", self.stream_tts, methods=["POST"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
        ]

    async def health(self, _request: Request) -> Response:
        stats = self.tts.stats()
        return JSONResponse(
            {
                "status": "ok",
                "model": self.settings.model_id,
                "kind": self.tts.kind,
                "device": "cpu",
                "model_loaded": True,
                "queue": {"waiting": stats.requests_waiting, "max": stats.max_waiting},
                "batch": {"in_flight": stats.sequences_in_flight, "max": stats.max_batch},
                "requests_generating": stats.requests_running,
            }
        )

    async def prometheus(self, _request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _start(self, body: dict[str, Any]) -> Any:
        text = spoken_text(body, "text", self.settings.max_input_chars)
        options = self.speech._voice_options({"voice": _field(body, "voice", str)})
        attributes = self._attributes(_field(body, "voice_attributes", dict))
        if attributes:
            options["attributes"] = attributes
        options.update(
            seed=_ranged(body, "seed", 0, 2**63 - 1, integer=True),
            max_frames=_ranged(body, "max_length", 1, 4096, integer=True),
            sampling=sampling_options(body, max_temperature=2.0),
        )
        return await self.synth.start(text, options)

    def _attributes(self, given: dict[str, Any] | None) -> dict[str, str]:
        if not given:
            return {}
        gender = given.get("gender")
        if gender is not None and gender not in GENDERS:
            raise APIError(
                400,
                f"'voice_attributes.gender' must be one of {', '.join(GENDERS)}",
                param="voice_attributes",
            )
        emotion = given.get("emotion")
        if emotion is not None and not isinstance(emotion, str):
            raise APIError(400, "'voice_attributes.emotion' must be a string", param="voice_attributes")
        values = {
            "gender": gender if gender != "neutral" else None,
            "age": age_word(given.get("age")),
            "emotion": emotion,
        }
        return {name: value for name, value in values.items() if value}

    async def tts_file(self, request: Request) -> Response:
        body = await read_json(request, self.settings.max_body_bytes)
        body_format = _field(body, "format", str, "wav")
        if body_format not in FILE_FORMATS:
            raise APIError(400, f"'format' must be one of {', '.join(FILE_FORMATS)}", param="format")
        stream = await self._start(body)
        encoder = open_stream_encoder(body_format, spec.SAMPLE_RATE)
        parts: list[bytes] = []

        async def collect() -> None:
            async for samples in self.synth.samples(stream):
                parts.append(encoder.encode(samples))

        if not await _unless_disconnected(request, collect):
            return Response(status_code=499)  # nginx's "client closed request": only the metrics see it
        parts.append(encoder.finish())
        data = b"".join(parts)
        if body_format == "wav":  # the whole file is here: exact sizes instead of the streaming header
            data = wav_header(spec.SAMPLE_RATE, len(data) - WAV_HEADER_BYTES) + data[WAV_HEADER_BYTES:]
        return Response(data, media_type=MEDIA_TYPES[body_format])

    async def stream_tts(self, request: Request) -> Response:
        stream = await self._start(await read_json(request, self.settings.max_body_bytes))
        return StreamingResponse(self._wav(stream), media_type=MEDIA_TYPES["wav"], headers=STREAM_HEADERS)

    async def _wav(self, stream: Any) -> AsyncIterator[bytes]:
        encoder = open_stream_encoder("wav", spec.SAMPLE_RATE)
        async for samples in self.synth.samples(stream):
            yield encoder.encode(np.asarray(samples))
        tail = encoder.finish()
        if tail:
            yield tail
