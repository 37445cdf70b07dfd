"""The Wyoming server in-process on 127.0.0.1, driven by wyoming's AsyncClient, over tiny converted models."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
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
    assert split_complete("It costs 3.") == ([], "It costs 3.")
    assert split_complete('He said "go!" Then') == (['He said "go!"'], "Then")
    assert split_complete("你好。世界") == (["你好。"], "世界")
    assert split_complete("") == ([], "")


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
            for part in ["The first sent", "ence is here. The sec", "ond one", " ends here."]:
                await client.write_event(SynthesizeChunk(part).event())
            # Home Assistant also sends the whole text as a plain synthesize: ignored during the session
            await client.write_event(Synthesize("Ignored copy.", voice=voice).event())
            await client.write_event(SynthesizeStop().event())
            audio = await _read_audio(client)
            event = await _read(client)
            assert SynthesizeStopped.is_type(event.type), event
            return audio

    got = asyncio.run(scenario())
    expected = np.concatenate(
        [
            _expected(tts, "The first sentence is here.", speaker),
            _expected(tts, "The second one ends here.", speaker),
        ]
    )
    np.testing.assert_array_equal(got, expected)


def test_unknown_voice_is_an_error_and_the_connection_keeps_working(tts: TTS) -> None:
    speaker = tts.speakers[0]

    async def scenario() -> tuple[Error, np.ndarray]:
        async with serving(tts, max_frames=FRAMES, seed=SEED) as uri, AsyncClient.from_uri(uri) as client:
            await client.write_event(Synthesize("Hi there.", voice=SynthesizeVoice(name="nobody")).event())
            event = await _read(client)
            assert Error.is_type(event.type), event
            error = Error.from_event(event)
            await client.write_event(Synthesize("Hi there.", voice=SynthesizeVoice(name=speaker)).event())
            return error, await _read_audio(client)

    error, audio = asyncio.run(scenario())
    assert error.code == "unknown-voice"
    assert "nobody" in error.text
    np.testing.assert_array_equal(audio, _expected(tts, "Hi there.", speaker))


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
            event = await _read(second)
            assert Error.is_type(event.type), event
            return Error.from_event(event)

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
        base.voices.save(base.clone(reference, "The words of the reference.", name="alice"))

        async def scenario() -> tuple[Info, np.ndarray]:
            async with (
                serving(base, max_frames=FRAMES, seed=SEED) as uri,
                AsyncClient.from_uri(uri) as client,
            ):
                await client.write_event(Describe().event())
                info = Info.from_event(await _read(client))
                await client.write_event(Synthesize("Cloned hello.", voice=SynthesizeVoice("alice")).event())
                return info, await _read_audio(client)

        info, audio = asyncio.run(scenario())
        assert [voice.name for voice in info.tts[0].voices] == ["alice"]
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
