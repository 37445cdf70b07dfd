"""Audio input/output promises: reference loading, atomic streaming writers, pipes, playback, joining."""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import os
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qwen3tts_cli import audio
from qwen3tts_cli.audio import (
    AtomicAudioFileWriter,
    PipeAudioWriter,
    Qwen3TTSWarning,
    float_to_pcm16,
    join_chunks,
    join_pieces,
    load_reference_audio,
    open_output,
    output_format_for,
    write_audio,
)
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.spec import SAMPLE_RATE


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def speech_like(seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A signal that is neither silent nor a pure tone; content does not matter for these tests."""
    rng = np.random.default_rng(1)
    return (0.1 * rng.standard_normal(round(seconds * rate))).astype(np.float32)


# ---- reference audio --------------------------------------------------------------------------------


def test_stereo_8khz_flac_becomes_mono_24k_with_same_tone(tmp_path: Path) -> None:
    rate, seconds = 8000, 4.0
    left, right = sine(440, seconds, rate, 0.4), sine(440, seconds, rate, 0.2)
    path = tmp_path / "ref.flac"
    sf.write(path, np.stack([left, right], axis=1), rate)

    with pytest.warns(Qwen3TTSWarning) as caught:
        ref = load_reference_audio(path)

    messages = " | ".join(str(w.message) for w in caught)
    assert "2 channels" in messages and "8000 Hz" in messages
    assert ref.samples.dtype == np.float32 and ref.samples.ndim == 1
    assert len(ref.samples) == math.ceil(len(left) * SAMPLE_RATE / rate)  # nothing lost or padded
    assert (ref.source_sample_rate, ref.source_channels) == (rate, 2)
    middle = ref.samples[SAMPLE_RATE : 3 * SAMPLE_RATE]
    assert abs(dominant_frequency(middle, SAMPLE_RATE) - 440) < 1.0
    # channel mean of 0.4 and 0.2 amplitude: a 0.3 sine, FLAC-quantized and resampled
    assert abs(np.sqrt(np.mean(middle**2)) - 0.3 / np.sqrt(2)) < 0.003
    residual = middle - 0.3 * np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE, 3 * SAMPLE_RATE) / SAMPLE_RATE)
    assert np.max(np.abs(residual)) < 2e-3  # a sine stays the same sine, in phase


@pytest.mark.parity
@pytest.mark.skipif(
    os.environ.get("QWEN3TTS_PARITY") != "1",
    reason="compares with librosa (the official resampler): set QWEN3TTS_PARITY=1 in the reference venv",
)
def test_resampling_equals_the_official_librosa_path(tmp_path: Path) -> None:
    import librosa

    rate = 44_100
    rng = np.random.default_rng(3)
    stereo = (0.3 * rng.standard_normal((rate * 3 + 17, 2))).astype(np.float32)
    path = tmp_path / "ref.wav"
    sf.write(path, stereo, rate, subtype="FLOAT")
    official, official_rate = librosa.load(str(path), sr=None, mono=True)
    official = librosa.resample(official, orig_sr=official_rate, target_sr=SAMPLE_RATE)
    with pytest.warns(Qwen3TTSWarning):
        ours = load_reference_audio(path).samples
    np.testing.assert_array_equal(ours, official)


def test_reference_sha256_is_of_the_file_bytes(tmp_path: Path) -> None:
    path = tmp_path / "ref.wav"
    sf.write(path, speech_like(5.0), SAMPLE_RATE)
    assert load_reference_audio(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + bytes(100)), "cannot decode"),
        (lambda p: p.write_bytes(b"this is not audio at all" * 50), "cannot decode"),
        (lambda p: sf.write(p, np.zeros(0, np.float32), SAMPLE_RATE), "no samples"),
        (lambda p: sf.write(p, np.zeros(SAMPLE_RATE * 5, np.float32), SAMPLE_RATE), "silent"),
        (
            lambda p: sf.write(p, np.full(SAMPLE_RATE * 5, np.nan, np.float32), SAMPLE_RATE, subtype="FLOAT"),
            "NaN",
        ),
        (lambda p: p.mkdir(), "folder"),
        (lambda p: None, "not found"),
    ],
    ids=["empty", "corrupt-header", "garbage", "no-frames", "silent", "nan", "folder", "missing"],
)
def test_unusable_reference_audio_is_a_clear_error(tmp_path: Path, make, expected: str) -> None:
    path = tmp_path / "ref.wav"
    make(path)
    with pytest.raises(Qwen3TTSError, match=expected) as info:
        load_reference_audio(path)
    assert info.value.hint


def test_short_reference_warns_and_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, speech_like(1.0), SAMPLE_RATE, subtype="FLOAT")
    with pytest.warns(Qwen3TTSWarning, match="only 1.0 s"):
        ref = load_reference_audio(path)
    assert len(ref.samples) == SAMPLE_RATE


def test_two_minute_reference_warns_and_loses_nothing(tmp_path: Path) -> None:
    rate = 16_000
    data = speech_like(120.0, rate)
    path = tmp_path / "long.wav"
    sf.write(path, data, rate, subtype="FLOAT")
    with pytest.warns(Qwen3TTSWarning, match="120 s of audio"):
        ref = load_reference_audio(path)
    assert len(ref.samples) == 120 * SAMPLE_RATE
    assert ref.seconds == pytest.approx(120.0)


def test_reference_over_the_hard_limit_is_refused(tmp_path: Path) -> None:
    rate = 8000
    path = tmp_path / "huge.wav"
    sf.write(path, speech_like(audio.HARD_MAX_REFERENCE_SECONDS + 1, rate), rate)
    with pytest.raises(Qwen3TTSError, match="limit"):
        load_reference_audio(path)


def test_24k_mono_reference_passes_through_unchanged_and_silently(tmp_path: Path, recwarn) -> None:
    data = speech_like(5.0)
    path = tmp_path / "ref.wav"
    sf.write(path, data, SAMPLE_RATE, subtype="FLOAT")
    ref = load_reference_audio(path)
    np.testing.assert_array_equal(ref.samples, data)
    assert not [w for w in recwarn if issubclass(w.category, Qwen3TTSWarning)]


# ---- formats ----------------------------------------------------------------------------------------


def test_format_comes_from_flag_or_extension() -> None:
    assert output_format_for("a/b/out.FLAC") == "flac"
    assert output_format_for("out.bin", "mp3") == "mp3"
    assert output_format_for("-") == "wav"
    assert output_format_for("-", "pcm") == "pcm"
    with pytest.raises(Qwen3TTSError, match="no extension"):
        output_format_for("out")
    with pytest.raises(Qwen3TTSError, match="unsupported audio format 'aac'"):
        output_format_for("out.aac")
    with pytest.raises(Qwen3TTSError, match="standard output"):
        output_format_for("-", "flac")


def test_pcm16_conversion_is_clipped_and_rounded() -> None:
    values = np.array([-2.0, -1.0, -0.5, 0.0, 1e-6, 0.5 / 32767, 0.5, 1.0, 3.0], dtype=np.float32)
    assert float_to_pcm16(values).tolist() == [-32767, -32767, -16384, 0, 0, 0, 16384, 32767, 32767]


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_every_file_format_streams_chunks_and_reads_back(tmp_path: Path, fmt: str) -> None:
    signal = sine(440, 2.0, SAMPLE_RATE, 0.5)
    chunks = np.array_split(signal, 37)
    target = tmp_path / f"out.{fmt}"
    assert write_audio(str(target), iter(chunks)) == len(signal)

    info = sf.info(target)
    assert info.samplerate == SAMPLE_RATE and info.channels == 1
    decoded, _ = sf.read(target, dtype="float32")
    if fmt in ("wav", "flac"):  # lossless: exactly our 16-bit values
        np.testing.assert_array_equal(sf.read(target, dtype="int16")[0], float_to_pcm16(signal))
    else:  # lossy codecs add priming delay and padding; the tone must survive
        assert abs(len(decoded) - len(signal)) < 0.1 * SAMPLE_RATE
        assert abs(dominant_frequency(decoded, SAMPLE_RATE) - 440) < 2.0
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temp file left


def test_format_flag_overrides_extension(tmp_path: Path) -> None:
    target = tmp_path / "out.audio"
    write_audio(str(target), [sine(300, 0.5, SAMPLE_RATE)], fmt="flac")
    assert sf.info(target).format == "FLAC"


# ---- atomic writes ----------------------------------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize("interrupt", [Boom, KeyboardInterrupt])
def test_interrupted_writer_leaves_existing_file_intact(
    tmp_path: Path, interrupt: type[BaseException]
) -> None:
    target = tmp_path / "out.wav"
    target.write_bytes(b"previous take")

    def chunks():
        yield sine(440, 0.5, SAMPLE_RATE)
        yield sine(440, 0.5, SAMPLE_RATE)
        raise interrupt()

    with pytest.raises(interrupt):
        write_audio(str(target), chunks())
    assert target.read_bytes() == b"previous take"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_output_appears_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "out.wav"
    with AtomicAudioFileWriter(target) as writer:
        writer.write(sine(440, 0.5, SAMPLE_RATE))
        assert not target.exists()  # still a hidden temp file
        assert len(list(tmp_path.iterdir())) == 1
    assert sf.info(target).frames == SAMPLE_RATE // 2


def test_new_output_gets_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "out.wav"
    write_audio(str(target), [sine(440, 0.1, SAMPLE_RATE)])
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_output_in_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Qwen3TTSError, match="output folder does not exist"):
        write_audio(str(tmp_path / "nope" / "out.wav"), [sine(440, 0.1, SAMPLE_RATE)])
    with pytest.raises(Qwen3TTSError, match="is a folder"):
        AtomicAudioFileWriter(tmp_path, "wav")


def test_non_mono_chunk_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1-D"), AtomicAudioFileWriter(tmp_path / "out.wav") as writer:
        writer.write(np.zeros((10, 2), np.float32))
    assert list(tmp_path.iterdir()) == []


# ---- pipes ------------------------------------------------------------------------------------------


class PipeStream(io.RawIOBase):
    """A write-only, non-seekable byte sink like a pipe."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b) -> int:
        self.data += bytes(b)
        return len(b)


def test_wav_to_a_pipe_uses_the_unknown_size_header_and_stays_readable() -> None:
    signal = sine(440, 1.0, SAMPLE_RATE)
    pipe = PipeStream()
    with PipeAudioWriter(pipe, "wav") as writer:
        for chunk in np.array_split(signal, 7):
            writer.write(chunk)
    data = bytes(pipe.data)
    assert data[:4] == b"RIFF" and struct.unpack("<I", data[4:8])[0] == 0xFFFFFFFF
    assert struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF
    assert len(data) == 44 + 2 * len(signal)
    decoded, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == SAMPLE_RATE
    np.testing.assert_array_equal(decoded, float_to_pcm16(signal))


def test_wav_to_a_seekable_stream_gets_real_sizes_and_matches_the_file_writer(tmp_path: Path) -> None:
    signal = sine(440, 1.0, SAMPLE_RATE)
    buffer = io.BytesIO()
    buffer.write(b"")  # header starts at offset 0
    with PipeAudioWriter(buffer, "wav") as writer:
        writer.write(signal)
    data = buffer.getvalue()
    assert struct.unpack("<I", data[4:8])[0] == 36 + 2 * len(signal)
    assert struct.unpack("<I", data[40:44])[0] == 2 * len(signal)
    write_audio(str(tmp_path / "out.wav"), [signal])
    file_samples = sf.read(tmp_path / "out.wav", dtype="int16")[0]
    np.testing.assert_array_equal(np.frombuffer(data[44:], "<i2"), file_samples)


def test_raw_pcm_to_stdout_is_bare_little_endian_int16() -> None:
    signal = sine(440, 0.25, SAMPLE_RATE)
    pipe = PipeStream()
    with open_output("-", "pcm", stdout=pipe) as writer:
        writer.write(signal)
    assert bytes(pipe.data) == float_to_pcm16(signal).astype("<i2").tobytes()


def test_binary_audio_is_not_written_to_a_terminal() -> None:
    class Terminal(PipeStream):
        def isatty(self) -> bool:
            return True

    with pytest.raises(Qwen3TTSError, match="terminal"):
        open_output("-", stdout=Terminal())


# ---- playback ---------------------------------------------------------------------------------------


def test_play_without_sounddevice_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # makes `import sounddevice` fail
    with pytest.raises(Qwen3TTSError, match="sounddevice"):
        audio.AudioPlayer()


def test_play_streams_chunks_to_the_device(monkeypatch) -> None:
    played: list[np.ndarray] = []

    class FakeStream:
        def __init__(self, samplerate: int, channels: int, dtype: str) -> None:
            assert (samplerate, channels, dtype) == (SAMPLE_RATE, 1, "float32")

        def start(self) -> None: ...
        def write(self, block: np.ndarray) -> None:
            played.append(block.copy())

        def stop(self) -> None: ...
        def abort(self) -> None: ...
        def close(self) -> None: ...

    monkeypatch.setitem(sys.modules, "sounddevice", types.SimpleNamespace(OutputStream=FakeStream))
    signal = sine(440, 0.5, SAMPLE_RATE)
    with audio.AudioPlayer() as player:
        for chunk in np.array_split(signal, 3):
            player.write(chunk)
    np.testing.assert_array_equal(np.concatenate(played)[:, 0], signal)


def test_play_without_an_output_device_is_a_clear_error(monkeypatch) -> None:
    def no_device(**_kwargs):
        raise RuntimeError("Error querying device -1")

    monkeypatch.setitem(sys.modules, "sounddevice", types.SimpleNamespace(OutputStream=no_device))
    with pytest.raises(Qwen3TTSError, match="no audio output device"), audio.AudioPlayer():
        pass


# ---- joining ----------------------------------------------------------------------------------------


def test_a_single_piece_passes_through_bit_exactly() -> None:
    piece = sine(220, 0.7, SAMPLE_RATE, 0.9)
    np.testing.assert_array_equal(join_chunks([piece]), piece)


def test_piece_boundaries_have_no_clicks() -> None:
    loud = np.full(SAMPLE_RATE // 2, 0.8, dtype=np.float32)  # worst case: a DC step at every edge
    joined = join_chunks([loud, -loud, loud], fade_ms=10, gap_ms=100)
    gap = round(0.1 * SAMPLE_RATE)
    assert len(joined) == 3 * len(loud) + 2 * gap
    assert np.max(np.abs(np.diff(joined))) < 0.01  # plain concatenation jumps by 0.8 / 1.6
    assert np.max(np.abs(np.diff(np.concatenate([loud, -loud])))) > 1.5
    np.testing.assert_array_equal(joined[: len(loud) - 240], loud[: len(loud) - 240])  # only the fade changed
    np.testing.assert_array_equal(joined[len(loud) : len(loud) + gap], 0.0)


def test_streaming_join_equals_whole_array_join_for_any_chunking() -> None:
    rng = np.random.default_rng(5)
    pieces = [rng.uniform(-1, 1, n).astype(np.float32) for n in (5000, 100, 7000, 3)]
    expected = join_chunks(pieces)

    def chunked(piece: np.ndarray):
        cuts = np.sort(rng.integers(0, len(piece), 4))
        yield from np.split(piece, cuts)  # includes empty chunks

    streamed = np.concatenate(list(join_pieces(chunked(p) for p in pieces)))
    np.testing.assert_array_equal(streamed, expected)


def test_join_is_lazy_over_an_endless_stream_of_pieces() -> None:
    consumed = 0

    def endless_pieces():
        nonlocal consumed
        while True:
            consumed += 1
            yield iter([np.ones(1000, np.float32)])

    first = list(itertools.islice(join_pieces(endless_pieces(), gap_ms=0), 4))
    assert sum(len(c) for c in first) >= 1000
    assert consumed <= 3  # it looked ahead at most one piece


def test_redirected_stdout_in_append_mode_is_never_patched(tmp_path: Path) -> None:
    target = tmp_path / "log.wav"
    target.write_bytes(b"earlier output")
    signal = sine(440, 0.1, SAMPLE_RATE)
    with open(target, "ab") as stream, PipeAudioWriter(stream, "wav") as writer:
        writer.write(signal)
    data = target.read_bytes()
    assert data.startswith(b"earlier outputRIFF")  # nothing overwritten, nothing appended after the audio
    assert len(data) == len(b"earlier output") + 44 + 2 * len(signal)
    assert struct.unpack("<I", data[14 + 40 : 14 + 44])[0] == 0xFFFFFFFF


def test_redirected_stdout_to_a_new_file_gets_real_sizes(tmp_path: Path) -> None:
    target = tmp_path / "out.wav"
    signal = sine(440, 0.1, SAMPLE_RATE)
    with open(target, "wb") as stream, PipeAudioWriter(stream, "wav") as writer:
        writer.write(signal)
    assert sf.info(target).frames == len(signal)
    assert struct.unpack("<I", target.read_bytes()[40:44])[0] == 2 * len(signal)
