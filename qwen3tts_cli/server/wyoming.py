"""The Wyoming protocol server (Home Assistant's local voice protocol) over one shared `TTS`.

`run_wyoming(tts, "tcp://0.0.0.0:10200")` serves until `stop` is set (or the task is cancelled):

* `describe` -> `info` with one TTS program "qwen3tts". Its voices are the model's preset speakers
  (CustomVoice), the voice library's usable voices (Base: valid packs made for this model size), or a
  single voice "design" (VoiceDesign) that speaks with `design_description` as its voice description (the
  Wyoming protocol has no field for a description per request, so the server is told one).
  Every voice lists the model's languages as ISO 639-1 codes ("en", "zh", ...; Home Assistant offers a
  voice to a pipeline by its language code), or `languages_override` when given.
* `synthesize{text, voice{name, language, speaker}}` -> `audio-start`, `audio-chunk`s (16-bit mono PCM at
  24 kHz, sent as the audio is generated), `audio-stop`. No voice: `default_voice`, else the first one
  offered. `language` ("en", "en-US", "english") picks the model's language; missing or unknown: "auto".
  A failed request (unknown voice, text with nothing to speak, ...) answers `error{text, code}` followed by
  `audio-stop` (so a client that reads until `audio-stop`, like Home Assistant, is not left waiting), and
  the connection keeps working. Codes: "unknown-voice", "busy" (the waiting queue is full), "bad-request",
  "internal-error".
* Streaming text: `synthesize-start`, `synthesize-chunk{text}`..., `synthesize-stop`. Complete sentences
  are spoken as they arrive (the unfinished rest waits for more text); the whole session is one
  `audio-start` ... `audio-stop`, then `synthesize-stopped` (always, also after an error event: Home
  Assistant reads until it). The plain `synthesize` that Home Assistant also sends during a streaming
  session (for older servers) is ignored, as the protocol says.
* `ping` -> `pong`. Other events (e.g. `select-program`) are dropped.

Each connection handles its requests in order on one asyncio task, while its reader goes on reading (so a
`describe` is answered during a synthesis and a disconnect is seen at once). The blocking audio stream is
pulled in a bounded thread pool of the server's own, so the event loop never blocks. When a client
disconnects (or the server stops), its running request is cancelled and leaves the shared batch within one
frame step. Over TCP and Unix sockets the end of the client's input is a disconnect; over stdio the
requests already read are finished first.

`seed` fixes the sampling seed of every request (tests, reproducible demos); by default every request
draws a fresh one. `max_frames` caps the frames of every text piece (default: the model's limit).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_get_stdin
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler, AsyncServer, AsyncStdioServer
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from qwen3tts_cli import __version__, spec
from qwen3tts_cli.audio import float_to_pcm16
from qwen3tts_cli.errors import Busy, Qwen3TTSError
from qwen3tts_cli.text import DEFAULT_MAX_LENGTH, is_speakable, spoken_length

log = logging.getLogger(__name__)

PROGRAM_NAME = "qwen3tts"
DESIGN_VOICE = "design"
AUTO_LANGUAGE = "auto"
# the model's language names -> ISO 639-1 codes, as Home Assistant names languages
LANGUAGE_CODES = {
    "chinese": "zh",
    "english": "en",
    "german": "de",
    "italian": "it",
    "portuguese": "pt",
    "spanish": "es",
    "japanese": "ja",
    "korean": "ko",
    "french": "fr",
    "russian": "ru",
}
LANGUAGE_NAMES = {code: name for name, code in LANGUAGE_CODES.items()}
DEFAULT_DESIGN_DESCRIPTION = "A calm, clear adult voice with a neutral accent, speaking at a natural pace."
SAMPLE_WIDTH = 2  # bytes: 16-bit PCM
CHANNELS = 1
ATTRIBUTION = Attribution(name="Qwen3-TTS (Alibaba Qwen team)", url="https://github.com/QwenLM/Qwen3-TTS")
STOP_GRACE_SECONDS = 5.0  # how long a stopping server waits for its connections to wind down

# error codes of the `error` event
CODE_BUSY = "busy"
CODE_UNKNOWN_VOICE = "unknown-voice"
CODE_BAD_REQUEST = "bad-request"
CODE_INTERNAL = "internal-error"

# ---- streamed text -> complete sentences ----------------------------------------------------------------
_CLOSERS = "\"'”’)\\]}»」』）》】"
# A sentence is complete once something follows its end: CJK end punctuation (and closing quotes) followed
# by any other character, or . ! ? ; … (and closing quotes) followed by white space; a line break ends one
# too. "It costs 3." may still become "3.5", "你好。" may still get its closing quote.
_SENTENCE_END = re.compile(
    rf"[。！？；]+[{_CLOSERS}]*(?=[^{_CLOSERS}。！？；])\s*|[.!?;…]+[{_CLOSERS}]*\s+|\n\s*"
)
# where an overlong unfinished sentence may be cut: after a clause end, else at white space
_CLAUSE_BREAK = re.compile(r"[,:]\s+|[，、：]")
_SPACE_BREAK = re.compile(r"\s+")


def split_complete(buffer: str, max_length: int = DEFAULT_MAX_LENGTH) -> tuple[list[str], str]:
    """Split streamed text into its complete sentences and the unfinished rest.

    An unfinished rest longer than `max_length` (spoken length, see qwen3tts_cli.text) is cut at its last
    clause end or space, so text without sentence punctuation is not held back until the stream ends."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(buffer):
        sentence = buffer[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    rest = buffer[start:]
    if spoken_length(rest) > max_length:
        breaks = list(_CLAUSE_BREAK.finditer(rest)) or list(_SPACE_BREAK.finditer(rest.rstrip()))
        if breaks:
            cut = breaks[-1].end()
            head = rest[:cut].strip()
            if head:
                sentences.append(head)
            rest = rest[cut:]
    return sentences, rest


# ---- the service every connection shares -----------------------------------------------------------------
class UnknownVoice(Qwen3TTSError):
    """A voice name that the info event does not offer."""


def requested_voice(event: Event) -> SynthesizeVoice | None:
    """The `voice` of a synthesize / synthesize-start event with all three fields.

    (wyoming's SynthesizeVoice.from_dict drops `language` when a `name` is given.)"""
    voice = event.data.get("voice")
    if not isinstance(voice, dict):
        return None

    def get(key: str) -> str | None:
        value = voice.get(key)
        return str(value) if value not in (None, "") else None

    name, language, speaker = get("name"), get("language"), get("speaker")
    if name is None and language is None and speaker is None:
        return None
    return SynthesizeVoice(name=name, language=language, speaker=speaker)


def _display_name(name: str) -> str:
    return name.replace("_", " ").title()


class WyomingService:
    """What every connection shares: the model, the pull threads and the server's settings.

    Calling it with (reader, writer) makes a connection's handler: it is the handler factory that
    wyoming's AsyncServer.start / run take. `close()` when done (it owns a thread pool)."""

    def __init__(
        self,
        tts: Any,  # qwen3tts_cli.TTS (duck-typed for the tests' sake)
        *,
        languages_override: Sequence[str] | None = None,
        max_frames: int | None = None,
        seed: int | None = None,
        design_description: str = DEFAULT_DESIGN_DESCRIPTION,
        default_voice: str | None = None,
        finish_on_eof: bool = False,
    ) -> None:
        self.tts = tts
        self.languages_override = list(languages_override) if languages_override is not None else None
        self.max_frames = max_frames
        self.seed = seed
        self.design_description = design_description
        self.default_voice = default_voice
        self.finish_on_eof = finish_on_eof
        stats = tts.stats()
        # one thread per request the scheduler can hold (each pulls its audio in one), a few for starts
        # and voice listings; never the loop's default pool
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, stats.max_batch + stats.max_waiting) + 2, thread_name_prefix="wyoming-pull"
        )

    def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> WyomingHandler:
        return WyomingHandler(reader, writer, self)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ---- voices (blocking: they read the voice library; call them in the executor) ----------------------
    def languages(self) -> list[str]:
        if self.languages_override is not None:
            return list(self.languages_override)
        return [LANGUAGE_CODES.get(lang, lang) for lang in self.tts.languages if lang != AUTO_LANGUAGE]

    def voice_names(self) -> list[str]:
        """The names a request may use (cheap: no voice pack is read)."""
        kind = self.tts.kind
        if kind == spec.KIND_CUSTOM_VOICE:
            return list(self.tts.speakers)
        if kind == spec.KIND_BASE:
            return list(self.tts.voices.names())
        return [DESIGN_VOICE]

    def _voices(self) -> list[tuple[str, str]]:
        """(name, description) of every voice the info event offers."""
        kind = self.tts.kind
        if kind == spec.KIND_CUSTOM_VOICE:
            return [(name, _display_name(name)) for name in self.tts.speakers]
        if kind == spec.KIND_BASE:
            hidden = getattr(getattr(self.tts, "model", None), "talker_hidden", None)
            voices = []
            for entry in self.tts.voices.entries():
                pack = entry.pack
                if pack is None:
                    log.warning("voice %s is not offered: %s", entry.name, entry.error)
                elif hidden is not None and pack.talker_hidden_size != hidden:
                    log.info("voice %s is not offered: made for another model size", entry.name)
                else:
                    voices.append((entry.name, pack.description or _display_name(entry.name)))
            return voices
        return [(DESIGN_VOICE, f"Designed voice: {self.design_description}")]

    def info(self) -> Info:
        languages = self.languages()
        voices = [
            TtsVoice(
                name=name,
                description=description,
                attribution=ATTRIBUTION,
                installed=True,
                version=__version__,
                languages=list(languages),
            )
            for name, description in self._voices()
        ]
        program = TtsProgram(
            name=PROGRAM_NAME,
            description="Qwen3-TTS text to speech, offline (llama.cpp + ONNX)",
            attribution=ATTRIBUTION,
            installed=True,
            version=__version__,
            voices=voices,
            supports_synthesize_streaming=True,
        )
        return Info(tts=[program])

    def model_language(self, wanted: str | None) -> str:
        """The model's language for a requested one ("en", "en-US", "en_US", "English"); else "auto"."""
        if not wanted:
            return AUTO_LANGUAGE
        name = wanted.strip().lower()
        if name not in self.tts.languages:
            name = LANGUAGE_NAMES.get(name.replace("_", "-").split("-")[0], name)
        return name if name in self.tts.languages else AUTO_LANGUAGE

    def options(self, voice: SynthesizeVoice | None) -> dict[str, Any]:
        """tts.stream keyword arguments for a Wyoming voice; UnknownVoice for a name not offered."""
        offered = self.voice_names()
        by_lower = {name.lower(): name for name in offered}
        wanted = [n for n in (voice.name, voice.speaker) if n] if voice is not None else []
        if not wanted:
            default = self.default_voice if self.default_voice is not None else (offered or [None])[0]
            if default is None:
                raise UnknownVoice(
                    "this server offers no voice", "save a cloned voice in the server's voice library first"
                )
            wanted = [default]
        name = next((by_lower[n.lower()] for n in wanted if n.lower() in by_lower), None)
        if name is None:
            raise UnknownVoice(
                f"unknown voice {wanted[0]!r}", f"choose one of: {', '.join(offered) or '(none)'}"
            )
        options: dict[str, Any] = {
            "language": self.model_language(voice.language if voice is not None else None),
            "seed": self.seed,
            "max_frames": self.max_frames,
        }
        kind = self.tts.kind
        if kind == spec.KIND_CUSTOM_VOICE:
            options["speaker"] = name
        elif kind == spec.KIND_BASE:
            options["voice"] = name
        else:
            options["instruct"] = self.design_description
        return options

    def open_stream(self, text: str, voice: SynthesizeVoice | None) -> Any:
        """Check the request and join the shared batch (blocking: prompt building, voice pack reading)."""
        return self.tts.stream(text, **self.options(voice))


# ---- one connection ------------------------------------------------------------------------------------
_DONE = object()


def _cancel_when_opened(future: Future[Any]) -> None:
    """A stream opened for a request that was given up meanwhile: take it out of the batch."""
    if not future.cancelled() and future.exception() is None:
        future.result().cancel()


@dataclass
class _Session:
    """One streaming-text session (synthesize-start ... synthesize-stop)."""

    voice: SynthesizeVoice | None
    buffer: str = ""
    started: bool = False  # audio-start sent
    failed: bool = False  # an error event was sent: speak nothing more


class WyomingHandler(AsyncEventHandler):
    """One client connection. Requests run in order on the connection's job task."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, service: WyomingService
    ) -> None:
        super().__init__(reader, writer)
        self.service = service
        self._jobs: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._session: _Session | None = None
        self._stopping = asyncio.Event()

    # ---- events -------------------------------------------------------------------------------------------
    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            loop = asyncio.get_running_loop()
            try:
                info = await loop.run_in_executor(self.service.executor, self.service.info)
            except Exception as exc:
                await self._error(exc)
            else:
                await self.write_event(info.event())
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        elif SynthesizeStart.is_type(event.type):
            if self._session is not None:  # a new session without a stop: the old one ends here
                self._end_session()
            self._session = _Session(requested_voice(event))
        elif SynthesizeChunk.is_type(event.type):
            session = self._session
            if session is None:
                log.debug("synthesize-chunk outside a streaming session: ignored")
                return True
            session.buffer += str(event.data.get("text") or "")
            sentences, session.buffer = split_complete(session.buffer)
            for sentence in sentences:
                self._enqueue(lambda s=session, t=sentence: self._speak_in_session(s, t))
        elif SynthesizeStop.is_type(event.type):
            if self._session is None:
                self._enqueue(lambda: self.write_event(SynthesizeStopped().event()))
            else:
                self._end_session()
        elif Synthesize.is_type(event.type):
            if self._session is not None:
                return True  # the compatibility copy of the streaming session's text
            text = str(event.data.get("text") or "")  # none: the library's "empty text" error
            voice = requested_voice(event)
            self._enqueue(lambda: self._speak_once(text, voice))
        return True

    def _end_session(self) -> None:
        session = self._session
        assert session is not None
        self._session = None
        rest, session.buffer = session.buffer.strip(), ""
        self._enqueue(lambda: self._finish_session(session, rest))

    def _enqueue(self, job: Callable[[], Awaitable[None]]) -> None:
        self._jobs.put_nowait(job)
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name="wyoming qwen3tts jobs")

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await job()
            except ConnectionError:
                log.debug("client went away during synthesis")
                await self.stop()
                return
            except Exception:  # a bug: the connection's later requests are still answered
                log.exception("Wyoming job failed")
            finally:
                self._jobs.task_done()

    async def stop(self) -> None:
        self._stopping.set()
        await super().stop()

    async def disconnect(self) -> None:
        if self.service.finish_on_eof and self._worker is not None and not self._stopping.is_set():
            # stdio: the input ended; the requests read so far are still answered (unless stopped)
            finished = asyncio.create_task(self._jobs.join())
            stopping = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({finished, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finished.cancel()
            stopping.cancel()
        if self._worker is not None:
            self._worker.cancel()  # the running job's stream is cancelled in _speak's finally
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    # ---- jobs ---------------------------------------------------------------------------------------------
    async def _speak_once(self, text: str, voice: SynthesizeVoice | None) -> None:
        started = False

        async def start() -> None:
            nonlocal started
            if not started:
                started = True
                await self._audio_start()

        try:
            await self._speak(text, voice, start)
        except Exception as exc:
            await self._error(exc)
            await self.write_event(AudioStop().event())  # the reply ends here, with or without audio
            return
        await start()  # no audio at all (e.g. max_frames 0) is still an audio reply
        await self.write_event(AudioStop().event())

    async def _speak_in_session(self, session: _Session, text: str) -> None:
        if session.failed or not is_speakable(text):  # e.g. a lone "*" or "..." between sentences
            return

        async def start() -> None:
            if not session.started:
                session.started = True
                await self._audio_start()

        try:
            await self._speak(text, session.voice, start)
        except Exception as exc:
            session.failed = True
            await self._error(exc)

    async def _finish_session(self, session: _Session, rest: str) -> None:
        if rest:
            await self._speak_in_session(session, rest)
        if not session.started and not session.failed:
            await self._audio_start()  # nothing to speak: an empty audio reply
            session.started = True
        if session.started:
            await self.write_event(AudioStop().event())
        await self.write_event(SynthesizeStopped().event())

    async def _audio_start(self) -> None:
        start = AudioStart(rate=spec.SAMPLE_RATE, width=SAMPLE_WIDTH, channels=CHANNELS)
        await self.write_event(start.event())

    async def _error(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionError):
            raise exc
        if isinstance(exc, Busy):
            code = CODE_BUSY
        elif isinstance(exc, UnknownVoice):
            code = CODE_UNKNOWN_VOICE
        elif isinstance(exc, Qwen3TTSError):
            code = CODE_BAD_REQUEST
        else:
            log.error("Wyoming request failed", exc_info=exc)
            code = CODE_INTERNAL
        if isinstance(exc, Qwen3TTSError):
            text = exc.message + (f" ({exc.hint})" if exc.hint else "")
        else:
            text = f"internal error: {type(exc).__name__}: {exc}"
        await self.write_event(Error(text=text, code=code).event())

    async def _speak(
        self, text: str, voice: SynthesizeVoice | None, on_first_audio: Callable[[], Awaitable[None]]
    ) -> None:
        """Stream `text`'s audio to the client as 16-bit PCM; calls on_first_audio before the first chunk."""
        loop = asyncio.get_running_loop()
        executor = self.service.executor
        opening = executor.submit(self.service.open_stream, text, voice)
        try:
            stream = await asyncio.wrap_future(opening)
        except asyncio.CancelledError:
            # a thread already opening it goes on (also after the loop is gone): cancel the stream then
            opening.add_done_callback(_cancel_when_opened)
            raise
        try:
            while True:
                chunk = await loop.run_in_executor(executor, next, stream, _DONE)
                if chunk is _DONE:
                    break
                pcm = float_to_pcm16(chunk.samples).tobytes()
                if not pcm:
                    continue
                await on_first_audio()
                audio = AudioChunk(rate=spec.SAMPLE_RATE, width=SAMPLE_WIDTH, channels=CHANNELS, audio=pcm)
                await self.write_event(audio.event())
        finally:
            stream.cancel()  # no-op after the end; frees the slot at once on disconnect or error


# ---- entry points ----------------------------------------------------------------------------------------
async def run_wyoming(
    tts: Any,
    uri: str,
    *,
    stop: asyncio.Event | None = None,
    languages_override: Sequence[str] | None = None,
    max_frames: int | None = None,
    seed: int | None = None,
    design_description: str = DEFAULT_DESIGN_DESCRIPTION,
    default_voice: str | None = None,
) -> None:
    """Serve the Wyoming protocol on `uri` (tcp://host:port, unix:///path or stdio://) until `stop` is set.

    Cancelling the task stops the server too. On stop, running requests are cancelled and connections
    closed (within STOP_GRACE_SECONDS). `languages_override`: the language codes every voice lists instead
    of the model's (e.g. ["en"] to offer the voices to English pipelines only). `max_frames` caps the frames
    of every text piece (None: the model's limit). `seed` fixes the sampling seed of every request (None: a
    fresh seed each time). `design_description`: the voice description a VoiceDesign model speaks with (its
    only voice, "design"). `default_voice`: the voice for requests that name none (None: the first offered).
    """
    server = AsyncServer.from_uri(uri)  # ValueError for a scheme other than tcp, unix, stdio
    service = WyomingService(
        tts,
        languages_override=languages_override,
        max_frames=max_frames,
        seed=seed,
        design_description=design_description,
        default_voice=default_voice,
    )
    stop = stop if stop is not None else asyncio.Event()
    try:
        if isinstance(server, AsyncStdioServer):
            service.finish_on_eof = True
            await _serve_stdio(service, stop)
        else:
            await server.start(service)
            log.info("Wyoming server listening on %s", uri)
            try:
                await stop.wait()
            finally:
                await server.stop()  # closes every connection: each cancels its running request
    finally:
        tasks = list(server._handlers)  # noqa: SLF001 - wyoming keeps no public list of connections
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)
        service.close()


async def _serve_stdio(service: WyomingService, stop: asyncio.Event) -> None:
    """One connection over stdin/stdout (wyoming's AsyncStdioServer.run takes over SIGTERM; this does not).

    The end of stdin is not a disconnect here: the requests read so far are answered, then it returns."""
    loop = asyncio.get_running_loop()
    reader = await async_get_stdin()
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    handler = service(reader, writer)
    running = asyncio.create_task(handler.run(), name="wyoming stdio handler")
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not running.done():
            await handler.stop()  # cancels what runs instead of finishing it
            await asyncio.wait({running}, timeout=STOP_GRACE_SECONDS)
        if running.done() and not running.cancelled() and running.exception() is not None:
            raise running.exception()  # type: ignore[misc]


__all__ = [
    "WyomingHandler",
    "WyomingService",
    "requested_voice",
    "run_wyoming",
    "split_complete",
]
