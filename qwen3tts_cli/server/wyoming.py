"""The Wyoming protocol server (Home Assistant's local voice protocol) over one shared `TTS`.

`run_wyoming(tts, "tcp://0.0.0.0:10200")` serves until `stop` is set (or the task is cancelled):

* `describe` -> `info` with one TTS program "qwen3tts". Its voices are the model's preset speakers
  (CustomVoice), the voice library's voices (Base), or a single voice "design" (VoiceDesign) that speaks
  with `design_description` as the voice description. Every voice lists the model's languages.
* `synthesize{text, voice}` -> `audio-start`, `audio-chunk`s (16-bit mono PCM at 24 kHz, sent as the audio
  is generated), `audio-stop`. A bad request (unknown voice, unspeakable text, ...) answers with
  `error{text, code}` and the connection keeps working; a full waiting queue answers code "busy".
* Streaming text: `synthesize-start`, `synthesize-chunk{text}`..., `synthesize-stop`. Complete sentences
  are spoken as they arrive (the unfinished rest waits for more text); the whole session is one
  `audio-start` ... `audio-stop`, then `synthesize-stopped`. The plain `synthesize` that Home Assistant
  also sends during a streaming session (for older servers) is ignored.

Each connection handles its requests in order on one asyncio task; the blocking audio stream is pulled in a
dedicated bounded thread pool, so the event loop never blocks. When a client disconnects, its running
request is cancelled and leaves the shared batch within one frame step.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
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
from qwen3tts_cli.text import is_speakable

log = logging.getLogger(__name__)

PROGRAM_NAME = "qwen3tts"
DESIGN_VOICE = "design"
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

# error codes of the `error` event
CODE_BUSY = "busy"
CODE_UNKNOWN_VOICE = "unknown-voice"
CODE_BAD_REQUEST = "bad-request"
CODE_INTERNAL = "internal-error"

# a sentence ends at CJK end punctuation, or at . ! ? ; … followed by white space (closing quotes and
# brackets stay with their sentence); a trailing "." with nothing after it may still be "3." of "3.5"
_CLOSERS = "\"'”’)\\]}»」』）》】"
_SENTENCE_END = re.compile(rf"[。！？；]+[{_CLOSERS}]*\s*|[.!?;…]+[{_CLOSERS}]*\s+")


def split_complete(buffer: str) -> tuple[list[str], str]:
    """Split streamed text into its complete sentences and the unfinished rest."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(buffer):
        sentence = buffer[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    return sentences, buffer[start:]


class UnknownVoice(Qwen3TTSError):
    """A voice name that the info event does not offer."""


@dataclass
class WyomingService:
    """What every connection shares: the model, the pull threads and the server's settings."""

    tts: Any  # qwen3tts_cli.TTS (duck-typed for the tests' sake)
    executor: ThreadPoolExecutor
    max_frames: int | None = None
    seed: int | None = None
    design_description: str = DEFAULT_DESIGN_DESCRIPTION

    def languages(self) -> list[str]:
        """ISO 639-1 codes: Home Assistant offers a voice to a pipeline by its language code ("en")."""
        return [LANGUAGE_CODES.get(lang, lang) for lang in self.tts.languages if lang != "auto"]

    def voice_names(self) -> list[str]:
        kind = self.tts.kind
        if kind == spec.KIND_CUSTOM_VOICE:
            return list(self.tts.speakers)
        if kind == spec.KIND_BASE:
            return list(self.tts.voices.names())
        return [DESIGN_VOICE]

    def info(self) -> Info:
        languages = self.languages()
        kind = self.tts.kind
        voices = []
        for name in self.voice_names():
            if kind == spec.KIND_CUSTOM_VOICE:
                description = f"Qwen3-TTS preset speaker {name}"
            elif kind == spec.KIND_BASE:
                description = f"Cloned voice {name} from the voice library"
            else:
                description = f"Designed voice: {self.design_description}"
            voices.append(
                TtsVoice(
                    name=name,
                    description=description,
                    attribution=ATTRIBUTION,
                    installed=True,
                    version=__version__,
                    languages=list(languages),
                )
            )
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

    def options(self, voice: SynthesizeVoice | None) -> dict[str, Any]:
        """tts.stream keyword arguments for a Wyoming voice; UnknownVoice for a name not offered."""
        name = voice.name if voice is not None else None
        if name is None and voice is not None:
            name = voice.speaker
        language = "auto"
        if voice is not None and voice.language:
            wanted = voice.language.lower()  # "en", "en-US", "en_US" or "english"
            wanted = LANGUAGE_NAMES.get(wanted.replace("_", "-").split("-")[0], wanted)
            if wanted in self.tts.languages:
                language = wanted
        offered = self.voice_names()
        if name is None:
            if not offered:
                raise UnknownVoice(
                    "this server offers no voice", "save a cloned voice in the voice library first"
                )
            name = offered[0]
        matches = [n for n in offered if n.lower() == name.lower()]
        if not matches:
            raise UnknownVoice(f"unknown voice {name!r}", f"choose one of: {', '.join(offered) or '(none)'}")
        options: dict[str, Any] = {
            "language": language,
            "seed": self.seed,
            "max_frames": self.max_frames,
        }
        kind = self.tts.kind
        if kind == spec.KIND_CUSTOM_VOICE:
            options["speaker"] = matches[0]
        elif kind == spec.KIND_BASE:
            options["voice"] = matches[0]
        else:
            options["instruct"] = self.design_description
        return options


_DONE = object()


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

    # ---- events -------------------------------------------------------------------------------------------
    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.service.info().event())
        elif SynthesizeStart.is_type(event.type):
            start = SynthesizeStart.from_event(event)
            self._session = _Session(start.voice)
        elif SynthesizeChunk.is_type(event.type):
            session = self._session
            if session is None:
                log.debug("synthesize-chunk outside a streaming session: ignored")
                return True
            session.buffer += SynthesizeChunk.from_event(event).text
            sentences, session.buffer = split_complete(session.buffer)
            for sentence in sentences:
                self._enqueue(lambda s=session, t=sentence: self._speak_in_session(s, t))
        elif SynthesizeStop.is_type(event.type):
            session = self._session
            if session is None:
                await self.write_event(SynthesizeStopped().event())
                return True
            self._session = None
            rest = session.buffer.strip()
            session.buffer = ""
            self._enqueue(lambda s=session, t=rest: self._finish_session(s, t))
        elif Synthesize.is_type(event.type):
            if self._session is not None:
                return True  # the compatibility copy of the streaming session's text
            synthesize = Synthesize.from_event(event)
            self._enqueue(lambda: self._speak_once(synthesize))
        return True

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
            except Exception as exc:  # a bug must not end the connection's job loop silently
                log.exception("Wyoming request failed")
                try:
                    await self.write_event(Error(text=f"internal error: {exc}", code=CODE_INTERNAL).event())
                except ConnectionError:
                    await self.stop()
                    return

    async def disconnect(self) -> None:
        if self._worker is not None:
            self._worker.cancel()  # the running job's stream is cancelled in _pull's finally
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    # ---- jobs ---------------------------------------------------------------------------------------------
    async def _speak_once(self, synthesize: Synthesize) -> None:
        text = synthesize.text.strip()
        started = False

        async def start() -> None:
            nonlocal started
            if not started:
                started = True
                await self._audio_start()

        try:
            await self._speak(text, synthesize.voice, start)
        except Qwen3TTSError as exc:
            await self._error(exc)
            if started:
                await self.write_event(AudioStop().event())
            return
        await start()  # nothing speakable still gets an (empty) audio reply
        await self.write_event(AudioStop().event())

    async def _speak_in_session(self, session: _Session, text: str) -> None:
        if session.failed:
            return

        async def start() -> None:
            if not session.started:
                session.started = True
                await self._audio_start()

        try:
            await self._speak(text, session.voice, start)
        except Qwen3TTSError as exc:
            session.failed = True
            await self._error(exc)

    async def _finish_session(self, session: _Session, rest: str) -> None:
        if rest:
            await self._speak_in_session(session, rest)
        if session.started:
            await self.write_event(AudioStop().event())
        elif not session.failed:
            await self._audio_start()
            await self.write_event(AudioStop().event())
        await self.write_event(SynthesizeStopped().event())

    async def _audio_start(self) -> None:
        start = AudioStart(rate=spec.SAMPLE_RATE, width=SAMPLE_WIDTH, channels=CHANNELS)
        await self.write_event(start.event())

    async def _error(self, exc: Qwen3TTSError) -> None:
        if isinstance(exc, Busy):
            code = CODE_BUSY
        elif isinstance(exc, UnknownVoice):
            code = CODE_UNKNOWN_VOICE
        else:
            code = CODE_BAD_REQUEST
        text = exc.message + (f" ({exc.hint})" if exc.hint else "")
        await self.write_event(Error(text=text, code=code).event())

    async def _speak(
        self, text: str, voice: SynthesizeVoice | None, on_first_audio: Callable[[], Awaitable[None]]
    ) -> None:
        """Stream `text`'s audio to the client as 16-bit PCM; calls on_first_audio before the first chunk."""
        if not is_speakable(text):
            return
        options = self.service.options(voice)
        loop = asyncio.get_running_loop()
        executor = self.service.executor
        tts = self.service.tts
        stream = await loop.run_in_executor(executor, lambda: tts.stream(text, **options))
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


async def run_wyoming(
    tts: Any,
    uri: str,
    *,
    stop: asyncio.Event | None = None,
    max_frames: int | None = None,
    seed: int | None = None,
    design_description: str = DEFAULT_DESIGN_DESCRIPTION,
) -> None:
    """Serve the Wyoming protocol on `uri` (tcp://host:port, unix:///path or stdio://) until `stop` is set.

    `max_frames` caps the frames of every text piece (None: the model's limit); `seed` fixes the sampling
    seed of every request (None: a fresh seed each time); `design_description` is the voice description a
    VoiceDesign model speaks with (its only voice, "design").
    """
    server = AsyncServer.from_uri(uri)
    stats = tts.stats()
    workers = max(1, stats.max_batch + stats.max_waiting)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wyoming-pull")
    service = WyomingService(
        tts, executor, max_frames=max_frames, seed=seed, design_description=design_description
    )

    def factory(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> WyomingHandler:
        return WyomingHandler(reader, writer, service)

    stop = stop if stop is not None else asyncio.Event()
    runner: asyncio.Task[None] | None = None
    try:
        if isinstance(server, AsyncStdioServer):
            runner = asyncio.create_task(server.run(factory))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
        else:
            await server.start(factory)
            log.info("Wyoming server listening on %s", uri)
            await stop.wait()
    finally:
        handlers = list(server._handlers)  # noqa: SLF001 - wyoming keeps no public list of connections
        await server.stop()
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        if handlers:
            await asyncio.wait(handlers, timeout=5)
        executor.shutdown(wait=False, cancel_futures=True)


__all__ = ["WyomingHandler", "WyomingService", "run_wyoming", "split_complete"]
