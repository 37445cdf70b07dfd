"""OpenAI-compatible routes: /v1/audio/speech, /v1/models, /v1/audio/models, /v1/audio/voices.

The body of /v1/audio/speech is what the official `openai` client sends (fields it does not set are left
out, not null), plus our extensions `language`, `seed`, `temperature`, `top_k`, `top_p`,
`repetition_penalty`, `greedy`, `max_frames`. Every body is always streamed as it is generated (the client's
plain `.create()` reads it whole; `with_streaming_response` gets bytes as they come), so a streamed and a
non-streamed answer are the same bytes. `speed` (0.5..2.0) changes the tempo of each text piece once that
piece is generated (pitch kept, `shaping.change_speed`), so audio still starts after the first piece.
"""

from __future__ import annotations

import base64
import json
import math
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from qwen3tts_cli import audio as audio_io
from qwen3tts_cli import spec
from qwen3tts_cli.audio_stream import MEDIA_TYPES, open_stream_encoder
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.server.errors import APIError
from qwen3tts_cli.server.requests import read_json, read_limited, replay
from qwen3tts_cli.server.synthesis import Synthesizer, tempo_filter
from qwen3tts_cli.shaping import SPEED_RANGE
from qwen3tts_cli.tts import SamplingOptions
from qwen3tts_cli.voices import validate_name

SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
STREAM_FORMATS = ("audio", "sse")
# OpenAI's own voice names; they mean the server's --default-voice (Open WebUI starts with "alloy")
OPENAI_VOICES = frozenset(
    "alloy ash ballad cedar coral echo fable marin nova onyx sage shimmer verse".split()
)
UPLOAD_MIN_SECONDS = 1.0  # less carries too little voice to clone from
UPLOAD_MAX_SECONDS = 60.0  # more only slows cloning (3-20 s is the useful range)
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# ---- body checks ---------------------------------------------------------------------------------------
def _field(body: dict[str, Any], name: str, kinds: type | tuple[type, ...], default: Any = None) -> Any:
    """A typed optional field; bool never passes for a number (JSON true is not 1)."""
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise APIError(400, f"'{name}' must be a {_kind_name(kinds)}, not a boolean", param=name)
    if not isinstance(value, kinds):
        raise APIError(400, f"'{name}' must be a {_kind_name(kinds)}", param=name, code="invalid_type")
    return value


def _kind_name(kinds: type | tuple[type, ...]) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if float in kinds:
        return "number"
    return {str: "string", int: "integer", bool: "boolean"}.get(kinds[0], kinds[0].__name__)


def _ranged(body: dict[str, Any], name: str, low: float, high: float | None, integer: bool = False) -> Any:
    value = _field(body, name, int if integer else (int, float))
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        raise APIError(400, f"'{name}' must be a finite number", param=name, code="invalid_value")
    if value < low or (high is not None and value > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise APIError(400, f"'{name}' must be in {span} (got {value})", param=name, code="invalid_value")
    return value


def sampling_options(body: dict[str, Any], max_temperature: float, **fields: Any) -> SamplingOptions:
    """`temperature` 0 means greedy decoding (as in most APIs); otherwise it overrides the model's."""
    temperature = _ranged(body, "temperature", 0.0, max_temperature)
    if temperature is not None and temperature < 0.01:
        if temperature > 0:
            raise APIError(
                400,
                "'temperature' must be 0 (greedy) or at least 0.01",
                param="temperature",
                code="invalid_value",
            )
        fields["greedy"] = True
        temperature = None
    return SamplingOptions(temperature=temperature, **fields)


def spoken_text(body: dict[str, Any], name: str, limit: int) -> str:
    """The text field of a synthesis body: a non-empty string of at most `limit` characters."""
    text = _field(body, name, str)
    if text is None or not text.strip():
        raise APIError(400, f"'{name}' must be a non-empty string", param=name, code="empty_input")
    if len(text) > limit:
        raise APIError(
            400,
            f"'{name}' is {len(text)} characters; this server takes at most {limit}",
            param=name,
            code="input_too_long",
        )
    return text


class SpeechRoutes:
    """The OpenAI routes over one Synthesizer."""

    def __init__(self, synthesizer: Synthesizer) -> None:
        self.synth = synthesizer
        self.tts = synthesizer.tts
        self.settings = synthesizer.settings

    def routes(self) -> list[Route]:
        return [
            Route("/v1/audio/speech", self.speech, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self.model, methods=["GET"]),
            Route("/v1/audio/models", self.audio_models, methods=["GET"]),
            Route("/v1/audio/voices", self.voices, methods=["GET"]),
            Route("/v1/audio/voices", self.create_voice, methods=["POST"]),
            Route("/v1/audio/voices/{voice_id:path}", self.delete_voice, methods=["DELETE"]),
        ]

    # ---- models ------------------------------------------------------------------------------------------
    def model_ids(self) -> list[str]:
        names = [self.settings.model_id, *self.settings.other_names, *self.settings.aliases]
        return list(dict.fromkeys(names))

    async def models(self, _request: Request) -> Response:
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "qwen3tts"}
            for name in self.model_ids()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def model(self, request: Request) -> Response:
        name = request.path_params["model_id"]
        if name not in self.model_ids():
            raise APIError(404, f"model '{name}' is not served here", param="model", code="model_not_found")
        return JSONResponse(
            {"id": name, "object": "model", "created": int(time.time()), "owned_by": "qwen3tts"}
        )

    async def audio_models(self, _request: Request) -> Response:
        return JSONResponse({"models": [{"id": name} for name in self.model_ids()]})

    # ---- speech ------------------------------------------------------------------------------------------
    async def speech(self, request: Request) -> Response:
        body = await read_json(request, self.settings.max_body_bytes)
        model = _field(body, "model", str)
        if model is None:
            raise APIError(400, "'model' is required", param="model", code="missing_required_parameter")
        if model not in self.model_ids():
            served = ", ".join(self.model_ids())
            raise APIError(
                404,
                f"model '{model}' is not served here (use one of: {served})",
                param="model",
                code="model_not_found",
            )
        text = spoken_text(body, "input", self.settings.max_input_chars)
        fmt = _field(body, "response_format", str, "mp3")
        if fmt not in SPEECH_FORMATS:
            raise APIError(
                400,
                f"unknown response_format '{fmt}' (use one of: {', '.join(SPEECH_FORMATS)})",
                param="response_format",
                code="invalid_value",
            )
        stream_format = _field(body, "stream_format", str, "audio")
        if stream_format not in STREAM_FORMATS:
            raise APIError(400, "'stream_format' must be 'audio' or 'sse'", param="stream_format")
        speed = _ranged(body, "speed", *SPEED_RANGE)
        options = self._voice_options(body)
        options.update(self._generation_options(body))
        if speed is not None and float(speed) != 1.0:
            options["piece_filter"] = tempo_filter(float(speed))
        stream = await self.synth.start(text, options)
        if stream_format == "sse":
            return StreamingResponse(
                self._sse(stream, fmt, len(text)), media_type="text/event-stream", headers=STREAM_HEADERS
            )
        return StreamingResponse(
            self._encoded(stream, fmt), media_type=MEDIA_TYPES[fmt], headers=STREAM_HEADERS
        )

    def _voice_options(self, body: dict[str, Any]) -> dict[str, Any]:
        """`voice` (a string or {"id": ...}) and `instructions` for the loaded model's kind."""
        voice = body.get("voice")
        if isinstance(voice, dict):
            voice = voice.get("id")
        if voice is not None and not isinstance(voice, str):
            raise APIError(400, "'voice' must be a string or an object with an 'id'", param="voice")
        instructions = _field(body, "instructions", str)
        kind = self.tts.kind
        if kind == spec.KIND_VOICE_DESIGN:
            if not instructions or not instructions.strip():
                raise APIError(
                    400,
                    "this VoiceDesign model makes a voice from 'instructions' (a description of the "
                    "voice); none was given",
                    param="instructions",
                    code="missing_required_parameter",
                )
            return {"instruct": instructions}
        name = self._voice_name(voice)
        if kind == spec.KIND_BASE:
            try:
                return {"voice": self.tts.voices.show(name)}
            except Qwen3TTSError as exc:
                raise APIError.from_library(exc, "voice") from None
        return {"speaker": name, "instruct": instructions}

    def _voice_name(self, voice: str | None) -> str:
        known = self.known_voices()
        default = self.settings.default_voice
        if voice is None or (voice.lower() in OPENAI_VOICES and voice not in known):
            if default is None:
                given = "no voice given" if voice is None else f"'{voice}' is one of OpenAI's voice names"
                raise APIError(
                    400,
                    f"{given}, and this server has no --default-voice (its voices: "
                    f"{', '.join(known) or 'none yet; add one with POST /v1/audio/voices'})",
                    param="voice",
                    code="voice_not_found",
                )
            return default
        if self.tts.kind == spec.KIND_CUSTOM_VOICE and voice.lower() in known:
            return voice.lower()
        try:
            validate_name(voice)
        except Qwen3TTSError as exc:
            raise APIError.from_library(exc, "voice") from None
        if voice not in known:
            raise APIError(
                400,
                f"unknown voice '{voice}' (use one of: {', '.join(known) or 'none yet'})",
                param="voice",
                code="voice_not_found",
            )
        return voice

    def known_voices(self) -> list[str]:
        if self.tts.kind == spec.KIND_CUSTOM_VOICE:
            return list(self.tts.speakers)
        if self.tts.kind == spec.KIND_BASE:
            return self.tts.voices.names()
        return []

    def _generation_options(self, body: dict[str, Any]) -> dict[str, Any]:
        language = _field(body, "language", str)
        if language is not None and language.lower() not in self.tts.languages:
            raise APIError(
                400,
                f"unknown language '{language}' (use one of: {', '.join(self.tts.languages)})",
                param="language",
            )
        sampling = sampling_options(
            body,
            max_temperature=10.0,
            greedy=bool(_field(body, "greedy", bool, False)),
            top_k=_ranged(body, "top_k", 0, None, integer=True),
            top_p=_ranged(body, "top_p", 0.0, 1.0),
            repetition_penalty=_ranged(body, "repetition_penalty", 0.01, 10.0),
        )
        return {
            "language": language.lower() if language else None,
            "seed": _ranged(body, "seed", 0, 2**63 - 1, integer=True),
            "max_frames": _ranged(body, "max_frames", 1, None, integer=True),
            "sampling": sampling,
        }

    async def _encoded(self, stream: Any, fmt: str) -> AsyncIterator[bytes]:
        encoder = open_stream_encoder(fmt, spec.SAMPLE_RATE)
        async for samples in self.synth.samples(stream):
            data = encoder.encode(samples)
            if data:
                yield data
        tail = encoder.finish()
        if tail:
            yield tail

    async def _sse(self, stream: Any, fmt: str, characters: int) -> AsyncIterator[bytes]:
        def event(document: dict[str, Any]) -> bytes:
            return f"data: {json.dumps(document)}\n\n".encode()

        async for data in self._encoded(stream, fmt):
            yield event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})
        usage = {"input_tokens": characters, "output_tokens": 0, "total_tokens": characters}
        yield event({"type": "speech.audio.done", "usage": usage})

    # ---- voices ------------------------------------------------------------------------------------------
    async def voices(self, _request: Request) -> Response:
        languages = [name for name in self.tts.languages if name != "auto"]
        kind = "preset" if self.tts.kind == spec.KIND_CUSTOM_VOICE else "clone"
        voices = [
            {"id": name, "name": name, "object": "audio.voice", "kind": kind, "languages": languages}
            for name in self.known_voices()
        ]
        return JSONResponse({"voices": voices})

    async def create_voice(self, request: Request) -> Response:
        if self.tts.kind != spec.KIND_BASE:
            raise APIError(
                400,
                f"this server's {self.tts.kind} model cannot clone voices; start `qwen3tts serve` with a "
                "Base model (e.g. --model 0.6b-base) to add voices",
                code="unsupported_model",
            )
        body = await read_limited(request, self.settings.max_upload_bytes + 65536)
        try:
            form = await Request(request.scope, receive=replay(body)).form(max_files=1, max_fields=8)
        except Exception as exc:  # malformed multipart
            raise APIError(400, f"expected a multipart/form-data body: {exc}", code="invalid_body") from None
        name = form.get("name")
        sample = form.get("audio_sample")
        if not isinstance(name, str) or not name.strip():
            raise APIError(
                400, "the form needs a 'name' field", param="name", code="missing_required_parameter"
            )
        try:
            validate_name(name)
        except Qwen3TTSError as exc:
            raise APIError.from_library(exc, "name") from None
        if sample is None or isinstance(sample, str):
            raise APIError(400, "the form needs an 'audio_sample' file", param="audio_sample")
        ref_text = form.get("ref_text")
        language = form.get("language") or "auto"
        if not isinstance(language, str) or language.lower() not in self.tts.languages:
            raise APIError(400, f"unknown language '{language}'", param="language")
        start, end = _seconds_field(form, "start"), _seconds_field(form, "end")  # optional segment
        data = await sample.read()
        if len(data) > self.settings.max_upload_bytes:
            raise _too_big(self.settings.max_upload_bytes)
        if name in self.tts.voices.names():
            raise APIError(409, f"a voice named '{name}' exists already; delete it first", param="name")
        pack = await anyio.to_thread.run_sync(
            lambda: self._clone(
                data, name, ref_text if isinstance(ref_text, str) else None, language, start, end
            ),
            limiter=self.synth.limiter,
        )
        return JSONResponse(
            {
                "id": pack.name,
                "name": pack.name,
                "object": "audio.voice",
                "mode": pack.mode,
                "reference_seconds": round(pack.frames / 12.5, 2)
                if pack.reference_codes is not None
                else None,
            },
            status_code=201,
        )

    def _clone(
        self,
        data: bytes,
        name: str,
        ref_text: str | None,
        language: str,
        start: float | None = None,
        end: float | None = None,
    ) -> Any:
        """Decode the upload from a private temporary file (cut to start/end), clone, save atomically."""
        with tempfile.TemporaryDirectory(prefix="qwen3tts-upload-") as folder:
            path = Path(folder) / "sample"
            path.write_bytes(data)
            try:
                reference = audio_io.load_reference_audio(path, start=start, end=end)
                if reference.seconds < UPLOAD_MIN_SECONDS:
                    raise APIError(
                        400,
                        f"audio_sample is {reference.seconds:.2f} s; at least {UPLOAD_MIN_SECONDS:.0f} s "
                        "of speech is needed (3-20 s is best)",
                        param="audio_sample",
                        code="audio_too_short",
                    )
                if reference.seconds > UPLOAD_MAX_SECONDS:
                    raise APIError(
                        400,
                        f"audio_sample is {reference.seconds:.0f} s long; at most {UPLOAD_MAX_SECONDS:.0f} s "
                        "(cut a clean 5-20 s excerpt)",
                        param="audio_sample",
                        code="audio_too_long",
                    )
                transcript = ref_text.strip() if ref_text else None
                pack = self.tts.clone(
                    reference, transcript, name=name, language=language, x_vector_only=transcript is None
                )
                self.tts.voices.save(pack)
            except Qwen3TTSError as exc:
                message = exc.message.replace(str(path), "audio_sample")
                raise APIError(
                    400, message + (f" ({exc.hint})" if exc.hint else ""), param="audio_sample"
                ) from None
        return pack

    async def delete_voice(self, request: Request) -> Response:
        voice_id = request.path_params["voice_id"]
        try:
            validate_name(voice_id)
        except Qwen3TTSError as exc:
            raise APIError.from_library(exc, "voice_id") from None
        if self.tts.kind != spec.KIND_BASE or voice_id not in self.tts.voices.names():
            raise APIError(404, f"no voice '{voice_id}' in this server's library", code="voice_not_found")
        try:
            await anyio.to_thread.run_sync(self.tts.voices.remove, voice_id, limiter=self.synth.limiter)
        except Qwen3TTSError as exc:
            raise APIError(404, exc.message, code="voice_not_found") from None
        return JSONResponse({"id": voice_id, "object": "audio.voice.deleted", "deleted": True})


def _seconds_field(form: Any, key: str) -> float | None:
    """An optional form field holding seconds (the upload's segment start/end)."""
    value = form.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        seconds = float(value) if isinstance(value, str) else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise APIError(400, f"'{key}' must be a number of seconds >= 0 (got {str(value)[:40]!r})", param=key)
    return seconds


def _too_big(limit: int) -> APIError:
    return APIError(
        413, f"the upload is larger than this server's limit of {limit // (1 << 20)} MB", code="too_large"
    )
