"""Audio encoders that emit bytes while the audio is still being generated (HTTP streaming).

    enc = open_stream_encoder("mp3")        # pcm, wav, mp3, opus, ogg, aac, flac
    body = enc.encode(chunk) ... + enc.finish()

pcm is raw 16-bit little-endian mono; wav is the same behind a header whose sizes are 0xFFFFFFFF (a
stream of unknown length, which players accept). The compressed formats go through PyAV (FFmpeg): a
container writes into an in-memory buffer that is drained after every call, so a client gets each packet
as soon as the codec produced it. libsndfile is no use here: its mp3 and flac writers rewrite their headers
when the file closes, so a streamed copy decodes short.

opus and ogg are both Ogg Opus at 24 kHz (libopus takes 24 kHz natively, so nothing is resampled;
decoders play it at 48 kHz). Not Vorbis: the bundled FFmpeg has no libvorbis, and its own Vorbis encoder is
experimental. aac is ADTS, which needs no index at the end. flac's STREAMINFO says "length unknown"
(0 samples, no MD5; the format allows it), the only honest value before the end: FFmpeg and PyAV play it,
python-soundfile does not (libsndfile reports 2**63-1 frames: sf.read() cannot allocate, block reads fail
on a seek).

An empty stream (finish() with no audio) still ends as a file decoders accept: pcm b"", wav a bare 44-byte
header, flac a 60-byte header-only file (all 0 samples). mp3, aac and Ogg Opus have no header-only form that
FFmpeg opens, so they encode one sample of silence: Opus decodes to exactly that sample; mp3 and aac to one
frame plus the codec delay (72 ms and 85 ms of silence).
"""

from __future__ import annotations

import io
from typing import Protocol

import numpy as np

from qwen3tts_cli import spec
from qwen3tts_cli.audio import as_mono_chunk, float_to_pcm16, wav_header
from qwen3tts_cli.errors import Qwen3TTSError

STREAM_FORMATS = ("pcm", "wav", "mp3", "opus", "ogg", "aac", "flac")
MEDIA_TYPES = {
    "pcm": "audio/pcm",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",  # RFC 7845; "ogg" is the same bytes, named by its container
    "ogg": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
}
# format -> (container, codec, codec sample format, bit rate)
_PYAV = {
    "mp3": ("mp3", "libmp3lame", "s16p", 64_000),
    "opus": ("ogg", "libopus", "s16", 48_000),
    "ogg": ("ogg", "libopus", "s16", 48_000),
    "aac": ("adts", "aac", "fltp", 64_000),
    "flac": ("flac", "flac", "s16", None),
}


# bitexact: the same audio gives the same bytes (Ogg would draw a random stream serial number).
# mp3: no Xing/LAME header, which is only correct once patched at the end. Ogg: a page per 20 ms Opus packet
# (the default 1 s page held back the first second of audio; costs ~11 kbit/s of page headers).
# flac: no 8 KiB PADDING block, which only exists so a seekable file can rewrite STREAMINFO at close.
_OPTIONS = {
    "mp3": {"fflags": "+bitexact", "write_xing": "0"},
    "opus": {"fflags": "+bitexact", "page_duration": "20000"},
    "ogg": {"fflags": "+bitexact", "page_duration": "20000"},
    "aac": {"fflags": "+bitexact"},
    "flac": {"fflags": "+bitexact", "metadata_header_padding": "0"},
}


def _codec_rate(av: object, codec: str, sample_rate: int) -> int:
    """The input rate when the codec takes it (Opus does 24 kHz natively), else its highest rate."""
    rates = av.codec.Codec(codec, "w").audio_rates  # type: ignore[attr-defined]
    return sample_rate if not rates or sample_rate in rates else max(rates)


class StreamEncoder(Protocol):
    def encode(self, samples: np.ndarray) -> bytes:
        """Bytes ready to send after these samples (may be empty)."""
        ...

    def finish(self) -> bytes:
        """The rest, once, at the end."""
        ...


class PcmEncoder:
    def __init__(self, header: bytes = b"") -> None:
        self._header = header

    def encode(self, samples: np.ndarray) -> bytes:
        out, self._header = self._header + float_to_pcm16(as_mono_chunk(samples)).astype("<i2").tobytes(), b""
        return out

    def finish(self) -> bytes:
        out, self._header = self._header, b""  # an empty stream is still a valid (empty) wav
        return out


class _Drain(io.RawIOBase):
    """A write-only file whose content is taken away after each encode call."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class PyAVEncoder:
    """One codec in one container over an in-memory sink that is drained after every call."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        try:
            import av
        except ImportError:
            raise Qwen3TTSError(
                f"the {fmt} format needs PyAV, which is not installed", 'pip install "qwen3tts-cli[server]"'
            ) from None
        container_format, codec, sample_format, bit_rate = _PYAV[fmt]
        self._av = av
        self._fmt = fmt
        self._sink = _Drain()
        self._container = av.open(self._sink, mode="w", format=container_format, options=_OPTIONS[fmt])
        stream = self._container.add_stream(codec, rate=_codec_rate(av, codec, sample_rate))
        stream.layout = "mono"
        stream.format = sample_format
        if bit_rate:
            stream.bit_rate = bit_rate
        # open now, not at the first frame: frame_size is only known once the codec is open
        stream.codec_context.open()
        self._stream = stream
        self._rate = sample_rate
        # s16 in (the exact samples pcm/wav carry), the codec's format/rate/frame size out
        self._resampler = av.AudioResampler(
            format=sample_format,
            layout="mono",
            rate=stream.codec_context.sample_rate,
            frame_size=stream.codec_context.frame_size or None,
        )
        self._pts = 0
        self._fed = 0
        self._finished = False

    def _mux(self, frame: object | None) -> None:
        frames = self._resampler.resample(frame)  # type: ignore[arg-type]
        for out in frames:
            out.pts = self._pts  # count in codec samples: continuous whatever the chunking
            self._pts += out.samples
            for packet in self._stream.encode(out):
                self._container.mux(packet)

    def encode(self, samples: np.ndarray) -> bytes:
        if self._finished:
            raise RuntimeError("encode() after finish()")
        pcm = float_to_pcm16(as_mono_chunk(samples))
        self._encode_pcm(pcm)
        return self._sink.take()

    def _encode_pcm(self, pcm: np.ndarray) -> None:
        if len(pcm):
            frame = self._av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
            frame.sample_rate = self._rate
            self._mux(frame)
            self._fed += len(pcm)

    def finish(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        if not self._fed and self._fmt != "flac":
            self._encode_pcm(np.zeros(1, np.int16))  # no header-only form: the shortest decodable file
        self._mux(None)  # the resampler's last (short) frame
        for packet in self._stream.encode(None):  # the codec's delayed packets
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()


def open_stream_encoder(fmt: str, sample_rate: int = spec.SAMPLE_RATE) -> StreamEncoder:
    """A fresh encoder for one response; not thread-safe (one request, one encoder)."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if fmt == "pcm":
        return PcmEncoder()
    if fmt == "wav":
        return PcmEncoder(wav_header(sample_rate))
    if fmt in _PYAV:
        return PyAVEncoder(fmt, sample_rate)
    raise Qwen3TTSError(f"unknown audio format {fmt!r}", f"use one of: {', '.join(STREAM_FORMATS)}")
