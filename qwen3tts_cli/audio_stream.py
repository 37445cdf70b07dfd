"""Audio encoders that emit bytes while the audio is still being generated (HTTP streaming).

    enc = open_stream_encoder("mp3")        # pcm, wav, mp3, opus, ogg, aac, flac
    body = enc.encode(chunk) ... + enc.finish()

pcm is raw 16-bit little-endian mono; wav is the same behind a header whose sizes are 0xFFFFFFFF (a
stream of unknown length, which players accept). The compressed formats go through PyAV (FFmpeg): a
container writes into an in-memory buffer that is drained after every call, so a client gets each packet
as soon as the codec produced it. libsndfile is no use here: its mp3 and flac writers rewrite their headers
when the file closes, so a streamed copy decodes short. opus and ogg are Ogg Opus at 24 kHz (the bundled
FFmpeg's Vorbis encoder is experimental); aac is ADTS, which needs no index at the end.
"""

from __future__ import annotations

import io
from typing import Protocol

import numpy as np

from qwen3tts_cli import spec
from qwen3tts_cli.audio import float_to_pcm16, wav_header
from qwen3tts_cli.errors import Qwen3TTSError

STREAM_FORMATS = ("pcm", "wav", "mp3", "opus", "ogg", "aac", "flac")
MEDIA_TYPES = {
    "pcm": "audio/pcm",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
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
        out, self._header = self._header + float_to_pcm16(samples).astype("<i2").tobytes(), b""
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
    """One codec in one container, fed in the codec's frame size."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        try:
            import av
        except ImportError:
            raise Qwen3TTSError(
                f"the {fmt} format needs PyAV, which is not installed", 'pip install "qwen3tts-cli[server]"'
            ) from None
        container_format, codec, self._sample_format, bit_rate = _PYAV[fmt]
        self._av = av
        self._sink = _Drain()
        # bitexact: the same audio gives the same bytes (Ogg would draw a random stream serial number);
        # no Xing header in mp3, which would need patching at the end
        options = {"fflags": "+bitexact", **({"write_xing": "0"} if fmt == "mp3" else {})}
        self._container = av.open(self._sink, mode="w", format=container_format, options=options)
        self._stream = self._container.add_stream(codec, rate=sample_rate)
        self._stream.layout = "mono"
        self._stream.format = self._sample_format
        if bit_rate:
            self._stream.bit_rate = bit_rate
        self._rate = sample_rate
        self._pending = np.zeros(0, np.int16)
        self._pts = 0

    def _frame_size(self) -> int:
        size = self._stream.codec_context.frame_size
        return size if size else 1152

    def _frame(self, pcm: np.ndarray) -> object:
        if self._sample_format == "fltp":
            data = (pcm.astype(np.float32) / 32767.0)[None, :]
            frame = self._av.AudioFrame.from_ndarray(data, format="fltp", layout="mono")
        else:
            frame = self._av.AudioFrame.from_ndarray(pcm[None, :], format=self._sample_format, layout="mono")
        frame.sample_rate = self._rate
        frame.pts = self._pts
        self._pts += len(pcm)
        return frame

    def _mux(self, frame: object | None) -> None:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def encode(self, samples: np.ndarray) -> bytes:
        # 16-bit first, so every format carries exactly the samples the pcm and wav formats carry
        pcm = np.concatenate([self._pending, float_to_pcm16(samples)])
        size = self._frame_size()
        whole = len(pcm) - len(pcm) % size
        for start in range(0, whole, size):
            self._mux(self._frame(pcm[start : start + size]))
        self._pending = pcm[whole:]
        return self._sink.take()

    def finish(self) -> bytes:
        if len(self._pending):
            self._mux(self._frame(self._pending))
            self._pending = np.zeros(0, np.int16)
        self._mux(None)  # flush the codec
        self._container.close()
        return self._sink.take()


def open_stream_encoder(fmt: str, sample_rate: int = spec.SAMPLE_RATE) -> StreamEncoder:
    if fmt == "pcm":
        return PcmEncoder()
    if fmt == "wav":
        return PcmEncoder(wav_header(sample_rate))
    if fmt in _PYAV:
        return PyAVEncoder(fmt, sample_rate)
    raise Qwen3TTSError(f"unknown audio format {fmt!r}", f"use one of: {', '.join(STREAM_FORMATS)}")
