"""The Wyoming server in-process on 127.0.0.1, driven by wyoming's AsyncClient, over tiny converted models."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient
from wyoming.error import Error
from wyoming.event import Event, read_event, write_event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from qwen3tts_cli import __version__
from qwen3tts_cli.audio import float_to_pcm16
from qwen3tts_cli.convert.converter import convert_checkpoint
from qwen3tts_cli.fixtures.checkpoint import build_checkpoint
from qwen3tts_cli.model import LoadedModel
from qwen3tts_cli.server.wyoming import LANGUAGE_CODES, run_wyoming, split_complete
from qwen3tts_cli.tts import TTS
from qwen3tts_cli.voices import VoiceLibrary

SEED = 7
FRAMES = 5
TIMEOUT = 120.0


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wyoming")
    checkpoint = build_checkpoint(root / "ckpt", "custom_voice", "tiny", seed=0)
    return convert_checkpoint(checkpoint, root / "model", "f32")


@pytest.fixture(scope="module")
def tts(model_folder: Path) -> TTS:
    model = TTS(LoadedModel(model_folder, threads=1, max_batch=2))
    yield model
    model.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(tts: TTS, **options: object) -> AsyncIterator[str]:
    """run_wyoming on a free port until the block ends; yields its tcp:// URI once it accepts connections."""
    uri = f"tcp://127.0.0.1:{_free_port()}"
    stop = asyncio.Event()
    task = asyncio.create_task(run_wyoming(tts, uri, stop=stop, **options))  # type: ignore[arg-type]
    try:
        for _ in range(200):
            if task.done():
                task.result()
            try:
                async with AsyncClient.from_uri(uri):
                    break
            except OSError:
                await asyncio.sleep(0.05)
        yield uri
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


async def _read(client: AsyncClient) -> Event:
    event = await asyncio.wait_for(client.read_event(), TIMEOUT)
    assert event is not None, "server closed the connection"
    return event


async def _read_audio(client: AsyncClient) -> np.ndarray:
    """audio-start, audio-chunk..., audio-stop -> the int16 samples; fails on anything else."""
    event = await _read(client)
    assert AudioStart.is_type(event.type), event
    start = AudioStart.from_event(event)
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)
    payload = b""
    chunks = 0
    while True:
        event = await _read(client)
        if AudioStop.is_type(event.type):
            break
        assert AudioChunk.is_type(event.type), event
        chunk = AudioChunk.from_event(event)
        assert (chunk.rate, chunk.width, chunk.channels) == (24000, 2, 1)
        payload += chunk.audio
        chunks += 1
    assert chunks >= 1
    return np.frombuffer(payload, dtype="<i2")


def _expected(tts: TTS, text: str, speaker: str) -> np.ndarray:
    result = tts.synthesize(text, speaker=speaker, seed=SEED, max_frames=FRAMES)
    return float_to_pcm16(result.samples)


def _wait_idle(tts: TTS, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while tts.stats().sequences_in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tts.stats().sequences_in_flight == 0


def test_split_complete_keeps_the_unfinished_rest() -> None:
    assert split_complete("Hello there. How are") == (["Hello there."], "How are")
    assert split_complete("It costs 3.") == ([], "It costs 3.")  # may still become 3.5
    assert split_complete("It costs 3.5 now. ") == (["It costs 3.5 now."], "")
    assert split_complete('He said "go!" Then') == (['He said "go!"'], "Then")
    assert split_complete("你好。世界") == (["你好。"], "世界")
    assert split_complete("你好。") == ([], "你好。")  # its closing quote may still come
    assert split_complete("「你好。」再见") == (["「你好。」"], "再见")
    assert split_complete("- first item\n- second") == (["- first item"], "- second")
    assert split_complete("") == ([], "")
    # no sentence end for too long: cut at the last clause end, else at the last space
    words = " ".join(["word"] * 80)
    sentences, rest = split_complete(f"{words}, and then {words} more", max_length=300)
    assert sentences == [f"{words},"] and rest == f"and then {words} more"
    sentences, rest = split_complete(words, max_length=100)
    assert sentences == [" ".join(["word"] * 79)] and rest == "word"
    assert split_complete("x" * 400, max_length=100) == ([], "x" * 400)  # nowhere to cut: wait


def test_describe_lists_the_speakers_with_their_languages(tts: TTS) -> None:
    async def scenario() -> Info:
        async with serving(tts, max_frames=FRAMES, seed=SEED) as uri, AsyncClient.from_uri(uri) as client:
            await client.write_event(Describe().event())
            event = await _read(client)
            assert Info.is_type(event.type), event
            return Info.from_event(event)

    info = asyncio.run(scenario())
    assert len(info.tts) == 1
    program = info.tts[0]
    assert program.name == "qwen3tts"
    assert program.installed and program.supports_synthesize_streaming
    assert program.version == __version__
    assert program.attribution.name and program.attribution.url
    assert [voice.name for voice in program.voices] == list(tts.speakers)
    languages = [LANGUAGE_CODES[lang] for lang in tts.languages if lang != "auto"]
    assert "en" in languages  # ISO 639-1 codes, as Home Assistant matches them
    assert all(voice.languages == languages for voice in program.voices)


def test_synthesize_streams_the_same_pcm_as_the_library(tts: TTS) -> None:
    speaker = tts.speakers[0]
    text = "Hello from the Wyoming server."

    async def scenario() -> np.ndarray:
        async with serving(tts, max_frames=FRAMES, seed=SEED) as uri, AsyncClient.from_uri(uri) as client:
            await client.write_event(Synthesize(text, voice=SynthesizeVoice(name=speaker)).event())
            return await _read_audio(client)

    got = asyncio.run(scenario())
    assert got.size > 0
    np.testing.assert_array_equal(got, _expected(tts, text, speaker))


def test_streaming_text_speaks_sentences_then_stops(tts: TTS) -> None:
    speaker = tts.speakers[-1]

    async def scenario() -> np.ndarray:
        async with serving(tts, max_frames=FRAMES, seed=SEED) as uri, AsyncClient.from_uri(uri) as client:
            voice = SynthesizeVoice(name=speaker)
            await client.write_event(SynthesizeStart(voice=voice).event())
            for part in ["The first sent", "ence is here. The sec"]:
                await client.write_event(SynthesizeChunk(part).event())
            # the complete first sentence is spoken before the text ends
            event = await _read(client)
            assert AudioStart.is_type(event.type), event
            first = await _read(client)
            assert AudioChunk.is_type(first.type), first
            for part in ["ond one", " ends here."]:
                await client.write_event(SynthesizeChunk(part).event())
            # Home Assistant also sends the whole text as a plain synthesize: ignored during the session
            await client.write_event(Synthesize("Ignored copy.", voice=voice).event())
            await client.write_event(SynthesizeStop().event())
            payload = AudioChunk.from_event(first).audio
            while not AudioStop.is_type((event := await _read(client)).type):
                assert AudioChunk.is_type(event.type), event  # one audio-start for the whole session
                payload += AudioChunk.from_event(event).audio
            event = await _read(client)
            assert SynthesizeStopped.is_type(event.type), event
            return np.frombuffer(payload, dtype="<i2")

    got = asyncio.run(scenario())
    expected = np.concatenate(
        [
            _expected(tts, "The first sentence is here.", speaker),
            _expected(tts, "The second one ends here.", speaker),
        ]
    )
    np.testing.assert_array_equal(got, expected)


async def _read_error(client: AsyncClient) -> Error:
    """A failed synthesize: error, then audio-stop (a reader that waits for audio-stop is not stuck)."""
    event = await _read(client)
    assert Error.is_type(event.type), event
    stop = await _read(client)
    assert AudioStop.is_type(stop.type), stop
    return Error.from_event(event)


def test_unknown_voice_is_an_error_and_the_connection_keeps_working(tts: TTS) -> None:
    speaker = tts.speakers[0]

    async def scenario() -> tuple[Error, Error, np.ndarray]:
        async with serving(tts, max_frames=FRAMES, seed=SEED) as uri, AsyncClient.from_uri(uri) as client:
            await client.write_event(Synthesize("Hi there.", voice=SynthesizeVoice(name="nobody")).event())
            unknown = await _read_error(client)
            await client.write_event(Synthesize(" ?! ", voice=SynthesizeVoice(name=speaker)).event())
            unspeakable = await _read_error(client)
            await client.write_event(Event("synthesize", {"voice": "not an object"}))  # malformed
            assert (await _read_error(client)).code == "bad-request"
            await client.write_event(Synthesize("Hi there.", voice=SynthesizeVoice(name=speaker)).event())
            return unknown, unspeakable, await _read_audio(client)

    unknown, unspeakable, audio = asyncio.run(scenario())
    assert unknown.code == "unknown-voice"
    assert "nobody" in unknown.text and speaker in unknown.text  # names the voices on offer
    assert unspeakable.code == "bad-request"
    assert "nothing to speak" in unspeakable.text
    np.testing.assert_array_equal(audio, _expected(tts, "Hi there.", speaker))


def test_a_failed_streaming_session_still_ends_with_synthesize_stopped(tts: TTS) -> None:
    async def scenario() -> list[Event]:
        async with serving(tts, max_frames=FRAMES, seed=SEED) as uri, AsyncClient.from_uri(uri) as client:
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="nobody")).event())
            await client.write_event(SynthesizeChunk("One sentence. Another one. ").event())
            await client.write_event(SynthesizeStop().event())
            events = [await _read(client)]
            while not SynthesizeStopped.is_type(events[-1].type):
                events.append(await _read(client))
            # an empty session is an empty audio reply
            await client.write_event(SynthesizeStart().event())
            await client.write_event(SynthesizeStop().event())
            events += [await _read(client) for _ in range(3)]
            return events

    events = asyncio.run(scenario())
    # one error for the session (its later sentences are not tried), then the stop Home Assistant waits for
    assert [e.type for e in events] == [
        "error",
        "synthesize-stopped",
        "audio-start",
        "audio-stop",
        "synthesize-stopped",
    ]
    assert Error.from_event(events[0]).code == "unknown-voice"


def test_voice_language_and_languages_override(tts: TTS) -> None:
    speaker = tts.speakers[1]

    async def scenario() -> tuple[Info, np.ndarray, Event]:
        options = {"max_frames": FRAMES, "seed": SEED, "languages_override": ["en-US", "de"]}
        async with serving(tts, **options) as uri, AsyncClient.from_uri(uri) as client:
            await client.write_event(Describe().event())
            info = Info.from_event(await _read(client))
            # name and language together (wyoming's SynthesizeVoice.to_dict would drop the language)
            voice = {"name": speaker.upper(), "language": "en-US"}
            await client.write_event(Event("synthesize", {"text": "Good morning.", "voice": voice}))
            audio = await _read_audio(client)
            await client.write_event(Ping("hello").event())
            return info, audio, await _read(client)

    info, audio, pong = asyncio.run(scenario())
    assert all(voice.languages == ["en-US", "de"] for voice in info.tts[0].voices)
    expected = tts.synthesize(
        "Good morning.", speaker=speaker, language="english", seed=SEED, max_frames=FRAMES
    )
    np.testing.assert_array_equal(audio, float_to_pcm16(expected.samples))
    assert Pong.is_type(pong.type) and Pong.from_event(pong).text == "hello"


def test_a_client_leaving_mid_stream_frees_its_slot(tts: TTS) -> None:
    speaker = tts.speakers[0]

    async def scenario() -> tuple[int, float, np.ndarray]:
        async with (
            serving(tts, max_frames=100_000, seed=SEED) as long_uri,
            serving(tts, max_frames=FRAMES, seed=SEED) as short_uri,
        ):
            # ~8 pieces of ~80 s of audio each: minutes of work unless the disconnect cancels it
            long_text = " ".join(
                f"Sentence number {i} goes on and on with many words in it." for i in range(40)
            )
            client = AsyncClient.from_uri(long_uri)
            await client.connect()
            await client.write_event(Synthesize(long_text, voice=SynthesizeVoice(speaker)).event())
            assert AudioStart.is_type((await _read(client)).type)
            assert AudioChunk.is_type((await _read(client)).type)
            in_flight = tts.stats().sequences_in_flight
            await client.disconnect()
            left = time.monotonic()
            while tts.stats().sequences_in_flight and time.monotonic() - left < TIMEOUT:
                await asyncio.sleep(0.02)
            freed_after = time.monotonic() - left
            async with AsyncClient.from_uri(short_uri) as other:
                await other.write_event(Synthesize("Next please.", voice=SynthesizeVoice(speaker)).event())
                audio = await _read_audio(other)
            return in_flight, freed_after, audio

    in_flight, freed_after, audio = asyncio.run(scenario())
    assert in_flight == 1
    assert freed_after < 5.0  # cancelled, not finished (finishing takes far longer)
    _wait_idle(tts)
    np.testing.assert_array_equal(audio, _expected(tts, "Next please.", speaker))


def test_a_full_queue_answers_busy(model_folder: Path) -> None:
    long_text = " ".join(f"Sentence number {i} goes on and on with many words in it." for i in range(40))

    async def scenario(tts: TTS) -> Error:
        async with (
            serving(tts, max_frames=100_000, seed=SEED) as uri,
            AsyncClient.from_uri(uri) as first,
            AsyncClient.from_uri(uri) as second,
        ):
            await first.write_event(Synthesize(long_text).event())  # no voice: the first speaker
            assert AudioStart.is_type((await _read(first)).type)
            await second.write_event(Synthesize("Me too.").event())
            return await _read_error(second)

    with TTS(LoadedModel(model_folder, threads=1, max_batch=1), max_waiting=0) as small:
        error = asyncio.run(scenario(small))
        _wait_idle(small)
    assert error.code == "busy"


def test_base_model_offers_library_voices(tmp_path: Path) -> None:
    import soundfile as sf

    checkpoint = build_checkpoint(tmp_path / "ckpt", "base", "tiny", seed=0)
    folder = convert_checkpoint(checkpoint, tmp_path / "model", "f32")
    reference = tmp_path / "ref.wav"
    rng = np.random.default_rng(0)
    sf.write(reference, (0.1 * rng.standard_normal(24000 * 4)).astype(np.float32), 24000)
    with TTS(LoadedModel(folder, threads=1, max_batch=2), VoiceLibrary(tmp_path / "voices")) as base:
        pack = base.clone(reference, "The words of the reference.", name="alice")
        base.voices.save(replace(pack, description="Alice, calm"))
        (tmp_path / "voices" / "broken.json").write_text("{not a voice pack")  # listed by name only

        async def scenario() -> tuple[Info, Error, np.ndarray]:
            async with (
                serving(base, max_frames=FRAMES, seed=SEED) as uri,
                AsyncClient.from_uri(uri) as client,
            ):
                await client.write_event(Describe().event())
                info = Info.from_event(await _read(client))
                await client.write_event(Synthesize("Hello.", voice=SynthesizeVoice("broken")).event())
                broken = await _read_error(client)
                await client.write_event(Synthesize("Cloned hello.", voice=SynthesizeVoice("alice")).event())
                return info, broken, await _read_audio(client)

        info, broken, audio = asyncio.run(scenario())
        voices = info.tts[0].voices
        assert [voice.name for voice in voices] == ["alice"]  # the damaged pack is not offered
        assert voices[0].description == "Alice, calm"
        assert broken.code == "bad-request"
        expected = base.synthesize("Cloned hello.", voice="alice", seed=SEED, max_frames=FRAMES).samples
        np.testing.assert_array_equal(audio, float_to_pcm16(expected))


def test_voice_design_model_offers_one_described_voice(tmp_path: Path) -> None:
    checkpoint = build_checkpoint(tmp_path / "ckpt", "voice_design", "tiny", seed=0)
    folder = convert_checkpoint(checkpoint, tmp_path / "model", "f32")
    description = "A bright young voice, speaking fast."
    with TTS(LoadedModel(folder, threads=1, max_batch=2)) as design:

        async def scenario() -> tuple[Info, np.ndarray]:
            options = {"max_frames": FRAMES, "seed": SEED, "design_description": description}
            async with serving(design, **options) as uri, AsyncClient.from_uri(uri) as client:
                await client.write_event(Describe().event())
                info = Info.from_event(await _read(client))
                await client.write_event(Synthesize("Designed hello.").event())
                return info, await _read_audio(client)

        info, audio = asyncio.run(scenario())
        voices = info.tts[0].voices
        assert [voice.name for voice in voices] == ["design"]
        assert description in (voices[0].description or "")
        expected = design.synthesize("Designed hello.", instruct=description, seed=SEED, max_frames=FRAMES)
        np.testing.assert_array_equal(audio, float_to_pcm16(expected.samples))


LONG_TEXT = " ".join(f"Sentence number {i} goes on and on with many words in it." for i in range(40))


def test_the_server_answers_during_a_synthesis_and_stopping_cancels_it(tts: TTS) -> None:
    speaker = tts.speakers[0]

    async def scenario() -> tuple[float, float, float]:
        async with serving(tts, max_frames=100_000, seed=SEED) as uri:
            busy = AsyncClient.from_uri(uri)
            await busy.connect()
            await busy.write_event(Synthesize(LONG_TEXT, voice=SynthesizeVoice(speaker)).event())
            assert AudioStart.is_type((await _read(busy)).type)
            # the same connection answers a describe between its audio chunks
            asked = time.monotonic()
            await busy.write_event(Describe().event())
            while not Info.is_type((event := await _read(busy)).type):
                assert AudioChunk.is_type(event.type), event
            same = time.monotonic() - asked
            # and another connection is served at once (the event loop is not blocked by generation)
            asked = time.monotonic()
            async with AsyncClient.from_uri(uri) as other:
                await other.write_event(Describe().event())
                assert Info.is_type((await _read(other)).type)
            other_took = time.monotonic() - asked
            assert tts.stats().sequences_in_flight == 1
        # leaving `serving` sets stop: the running request is cancelled, not finished
        left = time.monotonic()
        while tts.stats().sequences_in_flight and time.monotonic() - left < TIMEOUT:
            await asyncio.sleep(0.02)
        with contextlib.suppress(Exception):
            await busy.disconnect()
        return same, other_took, time.monotonic() - left

    same, other_took, freed_after = asyncio.run(scenario())
    assert same < 5.0 and other_took < 2.0
    assert freed_after < 5.0
    _wait_idle(tts)


class _SlowOpeningTTS:
    """A stand-in TTS whose stream() takes a while to open (prompt building); records what it opened."""

    kind = "custom_voice"
    speakers = ["ann"]
    languages = ["auto", "english"]

    def __init__(self) -> None:
        self.opened: list[_FakeStream] = []
        self.entered = threading.Event()

    def stats(self) -> SimpleNamespace:
        return SimpleNamespace(max_batch=1, max_waiting=1)

    def stream(self, text: str, **options: object) -> _FakeStream:
        self.entered.set()
        time.sleep(0.5)
        stream = _FakeStream()
        self.opened.append(stream)
        return stream


class _FakeStream:
    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def __iter__(self) -> _FakeStream:
        return self

    def __next__(self) -> object:
        if self.cancelled.wait(10):
            raise StopIteration
        raise AssertionError("never cancelled")

    def cancel(self) -> None:
        self.cancelled.set()


def test_a_request_given_up_while_its_stream_opens_is_cancelled_once_open() -> None:
    fake = _SlowOpeningTTS()

    async def scenario() -> None:
        async with serving(fake) as uri:  # type: ignore[arg-type]
            client = AsyncClient.from_uri(uri)
            await client.connect()
            await client.write_event(Synthesize("Hello.").event())
            await asyncio.to_thread(fake.entered.wait, 10)
            await client.disconnect()  # while stream() still runs in its thread
            await asyncio.sleep(0.05)

    asyncio.run(scenario())
    deadline = time.monotonic() + 10
    while not fake.opened and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(fake.opened) == 1
    assert fake.opened[0].cancelled.wait(5)  # it would otherwise generate to the end, unheard


_STDIO_SERVER = """
import asyncio, sys
from qwen3tts_cli.model import LoadedModel
from qwen3tts_cli.server.wyoming import run_wyoming
from qwen3tts_cli.tts import TTS

with TTS(LoadedModel(sys.argv[1], threads=1, max_batch=2)) as tts:
    asyncio.run(run_wyoming(tts, "stdio://", max_frames=int(sys.argv[2]), seed=int(sys.argv[3])))
"""


def test_stdio_answers_what_was_read_then_exits(tts: TTS, model_folder: Path) -> None:
    speaker = tts.speakers[2]
    requests = io.BytesIO()
    for event in (
        Describe().event(),
        Synthesize("Over a pipe.", voice=SynthesizeVoice(speaker)).event(),
        SynthesizeStart(voice=SynthesizeVoice(speaker)).event(),
        SynthesizeChunk("Piped sentence.").event(),
        SynthesizeStop().event(),
    ):
        write_event(event, requests)
    command = [sys.executable, "-c", _STDIO_SERVER, str(model_folder), str(FRAMES), str(SEED)]
    # stdin ends right after the requests: they are still answered, then the server exits by itself
    done = subprocess.run(command, input=requests.getvalue(), capture_output=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    replies = io.BytesIO(done.stdout)
    events = []
    while (event := read_event(replies)) is not None:
        events.append(event)
    assert Info.is_type(events[0].type)
    kinds = [event.type for event in events[1:]]
    first_stop = kinds.index("audio-stop")
    assert kinds[0] == "audio-start" and set(kinds[1:first_stop]) == {"audio-chunk"}
    assert kinds[first_stop + 1] == "audio-start" and kinds[-2:] == ["audio-stop", "synthesize-stopped"]

    def pcm(chunk_events: list[Event]) -> np.ndarray:
        payload = b"".join(e.payload or b"" for e in chunk_events if AudioChunk.is_type(e.type))
        return np.frombuffer(payload, dtype="<i2")

    np.testing.assert_array_equal(pcm(events[1 : first_stop + 2]), _expected(tts, "Over a pipe.", speaker))
    np.testing.assert_array_equal(pcm(events[first_stop + 2 :]), _expected(tts, "Piped sentence.", speaker))
