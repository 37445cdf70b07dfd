"""Streaming encoders: bytes leave while audio is still coming, and the concatenation decodes whole."""

from __future__ import annotations

import io
import sys

import av
import numpy as np
import pytest
import soundfile as sf

from qwen3tts_cli.audio import float_to_pcm16
from qwen3tts_cli.audio_stream import MEDIA_TYPES, STREAM_FORMATS, open_stream_encoder
from qwen3tts_cli.errors import Qwen3TTSError

RATE = 24000
CHUNKS = [1920, 7000, 333, 24000, 11111, 1920 * 4, 17000]  # uneven, 3 s in all


def _signal() -> np.ndarray:
    t = np.arange(sum(CHUNKS)) / RATE
    tones = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1234 * t)
    tones[RATE : RATE + RATE // 4] = 0.0  # a silence in the middle
    return tones.astype(np.float32)


def _encode(fmt: str, signal: np.ndarray) -> tuple[bytes, int]:
    """All bytes, and how many had come out before the last two seconds were fed."""
    encoder = open_stream_encoder(fmt, RATE)
    parts, early, fed = [], 0, 0
    for size in CHUNKS:
        parts.append(encoder.encode(signal[fed : fed + size]))
        fed += size
        if fed >= 2 * RATE and not early:
            early = sum(len(p) for p in parts)
    parts.append(encoder.finish())
    return b"".join(parts), early


def _decoded(data: bytes) -> tuple[np.ndarray, int]:
    with av.open(io.BytesIO(data)) as container:
        rate = container.streams.audio[0].rate
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
    joined = np.concatenate(frames) if frames else np.zeros(0, np.float32)
    if joined.dtype.kind == "i":  # integer decoders (flac): back to [-1, 1] the way they were scaled
        return joined.astype(np.float32) / 32767, rate
    return joined.astype(np.float32), rate


@pytest.mark.parametrize("fmt", ["pcm", "wav"])
def test_pcm_and_wav_carry_exactly_the_16_bit_samples(fmt: str) -> None:
    signal = _signal()
    data, early = _encode(fmt, signal)
    header = 44 if fmt == "wav" else 0
    assert np.array_equal(np.frombuffer(data[header:], "<i2"), float_to_pcm16(signal))
    assert early >= 2 * RATE * 2  # written as it came
    if fmt == "wav":
        assert data[4:8] == data[40:44] == b"\xff\xff\xff\xff"  # open-ended sizes: a stream
        samples, rate = sf.read(
            io.BytesIO(
                data[:4]
                + (len(data) - 8).to_bytes(4, "little")
                + data[8:40]
                + (len(data) - 44).to_bytes(4, "little")
                + data[44:]
            ),
            dtype="int16",
        )
        assert rate == RATE and np.array_equal(samples, float_to_pcm16(signal))


# tolerance in seconds: what the decoder adds (measured: mp3 +1228 samples = 51 ms, the encoder delay with no
# Xing/LAME tag to trim it plus padding to whole 576-sample frames; aac +1612 = 67 ms, 1024 priming + padding;
# Ogg Opus 0, pre-skip and end granule trim exactly; flac 0)
@pytest.mark.parametrize(
    ("fmt", "slack"), [("mp3", 0.1), ("opus", 0.03), ("ogg", 0.03), ("aac", 0.1), ("flac", 0)]
)
def test_compressed_streams_decode_to_the_whole_signal(fmt: str, slack: float) -> None:
    signal = _signal()
    data, early = _encode(fmt, signal)
    assert early > 0  # packets left before the end of the input
    decoded, rate = _decoded(data)
    seconds = len(signal) / RATE
    assert seconds - 0.001 <= len(decoded) / rate <= seconds + slack + 0.001
    if fmt == "flac":  # lossless
        assert np.array_equal(np.rint(decoded * 32767).astype(np.int16), float_to_pcm16(signal))
        return
    # lossy: the same signal, up to the codec's delay (found by cross-correlation) and its error
    reference = float_to_pcm16(signal).astype(np.float32) / 32767
    if rate != RATE:
        decoded = decoded[:: rate // RATE]
    window = reference[RATE // 2 : RATE // 2 + 4800]
    scores = [
        float(np.dot(window, decoded[RATE // 2 + lag : RATE // 2 + lag + 4800])) for lag in range(0, 2000)
    ]
    lag = int(np.argmax(scores))
    a, b = reference[RATE // 2 : 2 * RATE], decoded[RATE // 2 + lag : 2 * RATE + lag]
    correlation = float(np.corrcoef(a, b)[0, 1])
    assert correlation > 0.99, (fmt, lag, correlation)  # measured 0.9999 for all three codecs


# Decision: finish() with no audio gives the shortest file the format's decoders accept, never an
# undecodable body. pcm, wav and flac have a 0-sample form; mp3, aac and Ogg Opus do not (FFmpeg refuses a
# bare ID3 tag, an empty ADTS stream and header-only Ogg pages), so they carry one sample of silence:
# Opus trims to exactly it (2 at 48 kHz), mp3/aac pad to a frame plus their delay (measured 72 / 85 ms).
@pytest.mark.parametrize(
    ("fmt", "most_seconds"),
    [("wav", 0), ("flac", 0), ("opus", 2 / 48000), ("ogg", 2 / 48000), ("mp3", 0.08), ("aac", 0.09)],
)
def test_an_empty_stream_still_decodes(fmt: str, most_seconds: float) -> None:
    data = open_stream_encoder(fmt).finish()
    decoded, rate = _decoded(data)
    assert len(decoded) / rate <= most_seconds
    assert not np.any(decoded)  # silence, nothing made up
    if fmt == "wav":  # also a plain 0-frame file for libsndfile
        assert len(data) == 44 and sf.info(io.BytesIO(data)).frames == 0


def test_an_empty_pcm_stream_is_empty() -> None:
    assert open_stream_encoder("pcm").finish() == b""


@pytest.mark.parametrize("fmt", STREAM_FORMATS)
def test_finish_once_then_nothing(fmt: str) -> None:
    encoder = open_stream_encoder(fmt)
    encoder.encode(_signal()[:4800])
    encoder.finish()
    assert encoder.finish() == b""  # a second call (say from a cleanup path) is harmless
    with pytest.raises(ValueError, match="1-D mono"):
        open_stream_encoder(fmt).encode(np.zeros((2, 100), np.float32))


@pytest.mark.parametrize("fmt", ["mp3", "opus", "ogg", "aac", "flac"])
def test_audio_leaves_while_it_is_generated(fmt: str) -> None:
    """1 s fed in 80 ms chunks (one codec frame each): what came out so far already plays ~1 s."""
    signal, encoder = _signal(), open_stream_encoder(fmt)
    sent = b"".join(encoder.encode(signal[i : i + 1920]) for i in range(0, RATE, 1920))
    decoded, rate = _decoded(sent)
    assert len(decoded) / rate >= 0.9  # measured 0.96 (mp3, flac) to 1.01 (opus, with its pre-skip)


@pytest.mark.parametrize(
    ("fmt", "container", "codec", "rate"),
    [
        ("mp3", "mp3", "mp3float", 24000),  # the decoder's name
        ("opus", "ogg", "opus", 48000),  # Opus decoders always output 48 kHz
        ("ogg", "ogg", "opus", 48000),
        ("aac", "aac", "aac", 24000),  # the ADTS demuxer calls itself "aac"
        ("flac", "flac", "flac", 24000),
    ],
)
def test_container_and_codec(fmt: str, container: str, codec: str, rate: int) -> None:
    data, _ = _encode(fmt, _signal())
    with av.open(io.BytesIO(data)) as opened:
        stream = opened.streams.audio[0]
        assert (opened.format.name, stream.codec.name, stream.rate) == (container, codec, rate)
        assert stream.codec_context.channels == 1


def test_streamed_flac_says_length_unknown() -> None:
    data, _ = _encode("flac", _signal())
    with sf.SoundFile(
        io.BytesIO(data)
    ) as opened:  # libsndfile accepts the header (reading it seeks and fails)
        assert (opened.samplerate, opened.channels, opened.subtype) == (RATE, 1, "PCM_16")
    # STREAMINFO total samples (36 bits) = 0: unknown length, the only honest value while streaming
    info = int.from_bytes(data[18:26], "big")  # after "fLaC", the block header and 10 bytes of sizes
    assert info & ((1 << 36) - 1) == 0


def test_missing_pyav_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(Qwen3TTSError) as raised:
        open_stream_encoder("mp3")
    assert 'pip install "qwen3tts-cli[server]"' in raised.value.hint
    assert open_stream_encoder("wav").finish()  # pcm and wav never need it


def test_formats_and_media_types() -> None:
    assert set(MEDIA_TYPES) == set(STREAM_FORMATS)
    assert MEDIA_TYPES["mp3"] == "audio/mpeg" and MEDIA_TYPES["pcm"] == "audio/pcm"
    assert MEDIA_TYPES["opus"] == "audio/ogg; codecs=opus"  # Ogg Opus, RFC 7845
    with pytest.raises(ValueError, match="sample_rate"):
        open_stream_encoder("wav", 0)
    with pytest.raises(Qwen3TTSError, match="unknown audio format 'm4a'") as raised:
        open_stream_encoder("m4a")
    assert raised.value.hint == "use one of: " + ", ".join(STREAM_FORMATS)


@pytest.mark.parametrize("fmt", STREAM_FORMATS)
def test_the_same_audio_gives_the_same_bytes(fmt: str) -> None:
    signal = _signal()
    assert _encode(fmt, signal)[0] == _encode(fmt, signal)[0]


@pytest.mark.parametrize("fmt", ["opus", "mp3", "aac", "flac"])
def test_other_input_rates_keep_length_and_pitch(fmt: str) -> None:
    """22.05 kHz in: Opus is resampled to 48 kHz inside PyAV, the others take the rate as is."""
    rate = 22050
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate)).astype(np.float32)
    encoder = open_stream_encoder(fmt, rate)
    data = b"".join(encoder.encode(tone[i : i + 1000]) for i in range(0, len(tone), 1000)) + encoder.finish()
    decoded, decoded_rate = _decoded(data)
    assert decoded_rate == (48000 if fmt == "opus" else rate)
    assert 2.0 - 0.001 <= len(decoded) / decoded_rate <= 2.0 + 0.1  # mp3/aac delay as above, at this rate
    spectrum = np.abs(np.fft.rfft(decoded[:decoded_rate]))  # 1 s: 1 Hz bins
    assert abs(int(np.argmax(spectrum)) - 440) <= 1  # a wrong rate anywhere would move the tone
