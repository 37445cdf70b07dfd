"""Audio in and out: reference audio loading, atomic streaming file writers, stdout pipes, playback, joining.

Warnings (odd but usable input, e.g. an 8 kHz or 2-minute reference) are issued with
`warnings.warn(message, Qwen3TTSWarning)`; errors the user can fix raise `Qwen3TTSError`. The CLI shows
warnings by installing a `warnings.showwarning` hook; library users filter them like any other warning.

All audio inside the tool is mono float32 at 24 kHz (`spec.SAMPLE_RATE`). Reference audio is reduced to that
exactly as the official package does: soundfile decode to float32, channel mean, then soxr "HQ" resampling
(what `librosa.resample` does by default), padded or trimmed to ceil(n * ratio) samples like librosa.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import struct
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

import numpy as np
import soundfile as sf

from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.platform_compat import replace_file
from qwen3tts_cli.spec import SAMPLE_RATE


class Qwen3TTSWarning(UserWarning):
    """Input that works but probably not as hoped (short/long/low-rate reference, ignored tags...)."""


def warn(message: str) -> None:
    """The one way this package warns (see module docstring)."""
    warnings.warn(message, Qwen3TTSWarning, stacklevel=3)


# ---- reference audio --------------------------------------------------------------------------------

MIN_REFERENCE_SECONDS = 3.0  # shorter: the speaker embedding and ICL prompt carry too little voice
MAX_REFERENCE_SECONDS = 20.0  # longer: slow to encode, long ICL prompt, no better clone
# Beyond this the codec encoder's attention would need gigabytes; refuse instead of truncating silently.
HARD_MAX_REFERENCE_SECONDS = 300.0
MIN_SEGMENT_SECONDS = 1.0  # a cut (start/end) shorter than this holds too little voice to clone from
LOW_SAMPLE_RATE = 16_000  # below this the reference lacks the high band the codec reproduces
SILENCE_PEAK = 1e-4  # about -80 dBFS: nothing but dither
# Clipping rule: a recording is called clipped when at least CLIP_SHARE of its samples (every channel, before
# the downmix) sit at or near full scale, |x| >= CLIP_LEVEL. Clean speech touches full scale at most at a
# few peak samples (a peak-normalized file: a handful in millions), while a recording driven into the
# limit flattens whole waveform tops there, i.e. many samples. 0.999 is 32735/32768 in 16-bit PCM, so
# int16 and float files are judged alike. Clipping that was turned down afterwards is not detected.
CLIP_LEVEL = 0.999
CLIP_SHARE = 0.001


@dataclass(frozen=True)
class ReferenceAudio:
    """A reference recording reduced to what the encoders take: mono float32 at 24 kHz."""

    samples: np.ndarray
    source_sample_rate: int
    source_channels: int
    # of the file's bytes, so a voice pack can name the recording it came from; None for audio that never
    # was a file (a designed sample)
    sha256: str | None
    segment: tuple[float, float] | None = None  # (start, end) seconds of the file it was cut to, if any

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def load_reference_audio(
    path: str | os.PathLike[str], start: float | None = None, end: float | None = None
) -> ReferenceAudio:
    """Read any file soundfile can decode, downmix, resample to 24 kHz, and check it is usable.

    `start`/`end` (seconds) keep only that part of the recording. The cut is made on the decoded samples
    at the file's own rate, before downmixing and resampling, so it gives exactly what a file cut to that
    segment would give; the checks and warnings then judge the segment.
    """
    file = Path(path)
    data, rate = _read_audio_file(file)
    label, segment = file.name, None
    if start is not None or end is not None:
        duration = len(data) / rate
        data = cut_segment(data, rate, start, end, file)
        segment = (float(start or 0.0), float(duration if end is None else end))
        label = f"{file.name} [{segment[0]:g}-{segment[1]:g} s]"
    channels = data.shape[1]
    if channels > 1:
        warn(f"{label}: {channels} channels, mixed down to mono (channel average)")
    mono = downmix(data)
    _check_reference_content(file, mono, rate)
    reference_warnings(label, data, rate)
    if rate < LOW_SAMPLE_RATE:
        warn(
            f"{label}: sampled at {rate} Hz; it is resampled to {SAMPLE_RATE} Hz but the missing high "
            "frequencies make the clone sound muffled (use a recording of 16 kHz or more if you have one)"
        )
    return ReferenceAudio(
        samples=resample(mono, rate, SAMPLE_RATE),
        source_sample_rate=rate,
        source_channels=channels,
        sha256=hashlib.sha256(file.read_bytes()).hexdigest(),
        segment=segment,
    )


def cut_segment(
    data: np.ndarray, rate: int, start: float | None, end: float | None, file: str | os.PathLike[str]
) -> np.ndarray:
    """Samples from `start` to `end` seconds (either may be None: the file's beginning or end).

    Times are rounded to the nearest sample. Refuses a segment that is empty, reversed, outside the
    recording or shorter than MIN_SEGMENT_SECONDS, naming the recording's length.
    """
    duration = len(data) / rate
    hint = f"pick start < end within 0-{duration:.2f} s"
    for label, value in (("start", start), ("end", end)):
        if value is not None and not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise Qwen3TTSError(f"segment {label} must be a number of seconds >= 0 (got {value!r})", hint)
    first = 0 if start is None else round(start * rate)
    last = len(data) if end is None else round(end * rate)
    if start is not None and end is not None and start >= end:
        raise Qwen3TTSError(f"segment start {start:g} s is not before its end {end:g} s", hint)
    if first >= len(data):
        raise Qwen3TTSError(
            f"segment start {start:g} s is past the end of {file} ({duration:.2f} s long)", hint
        )
    if last > len(data):
        raise Qwen3TTSError(f"segment end {end:g} s is past the end of {file} ({duration:.2f} s long)", hint)
    if (last - first) / rate < MIN_SEGMENT_SECONDS:
        raise Qwen3TTSError(
            f"the segment of {file} is {(last - first) / rate:.2f} s; at least {MIN_SEGMENT_SECONDS:g} s "
            "is needed to clone from",
            "widen the segment (3-20 s of clear speech is best)",
        )
    return data[first:last]


def _read_audio_file(file: Path) -> tuple[np.ndarray, int]:
    """Decode to float32 (frames, channels); every failure becomes a Qwen3TTSError naming the file."""
    if not file.exists():
        raise Qwen3TTSError(f"reference audio not found: {file}", "check the path")
    if file.is_dir():
        raise Qwen3TTSError(f"reference audio is a folder: {file}", "pass an audio file")
    if file.stat().st_size == 0:
        raise Qwen3TTSError(f"reference audio is empty (0 bytes): {file}", "record or export it again")
    try:
        data, rate = sf.read(str(file), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise Qwen3TTSError(
            f"cannot decode reference audio {file}: {exc}",
            "use wav, flac, ogg or mp3; convert other formats first (e.g. ffmpeg -i in.m4a out.wav)",
        ) from exc
    if len(data) == 0:
        raise Qwen3TTSError(f"reference audio has no samples: {file}", "record or export it again")
    return data, int(rate)


def _check_reference_content(file: Path, mono: np.ndarray, rate: int) -> None:
    if not np.all(np.isfinite(mono)):
        raise Qwen3TTSError(f"reference audio contains NaN or infinite samples: {file}", "export it again")
    if float(np.max(np.abs(mono))) < SILENCE_PEAK:
        raise Qwen3TTSError(
            f"reference audio is silent: {file}", "check the recording level and input device"
        )
    seconds = len(mono) / rate
    if seconds > HARD_MAX_REFERENCE_SECONDS:
        raise Qwen3TTSError(
            f"reference audio is {seconds:.0f} s long (limit {HARD_MAX_REFERENCE_SECONDS:.0f} s): {file}",
            f"cut a clean 5-{MAX_REFERENCE_SECONDS:.0f} s excerpt of the speaker (e.g. --start/--end)",
        )


def reference_warnings(label: str, data: np.ndarray, rate: int) -> None:
    """Warn about a usable but poor reference: too short, needlessly long, or clipped.

    `data` is (frames,) or (frames, channels) at `rate`; `label` names it in the messages.
    """
    seconds = len(data) / rate
    if seconds < MIN_REFERENCE_SECONDS:
        warn(f"{label}: only {seconds:.1f} s of audio; 3-20 s of clear speech clones a voice much better")
    elif seconds > MAX_REFERENCE_SECONDS:
        warn(
            f"{label}: {seconds:.0f} s of audio; all of it is used, but more than "
            f"{MAX_REFERENCE_SECONDS:.0f} s only slows cloning down (a 5-20 s excerpt is enough)"
        )
    share = clipped_share(data)
    if share >= CLIP_SHARE:
        warn(
            f"{label}: clipped ({share:.1%} of the samples at full scale); the clone copies the distortion "
            "(record with a lower input level, or pick a part without it)"
        )


def clipped_share(data: np.ndarray) -> float:
    """The share of samples (all channels) at or near full scale, |x| >= CLIP_LEVEL."""
    values = np.asarray(data)
    return float(np.count_nonzero(np.abs(values) >= CLIP_LEVEL)) / max(1, values.size)


def downmix(data: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) by channel mean, in float32 like librosa.to_mono."""
    return np.ascontiguousarray(np.mean(data.T, axis=0, dtype=np.float32))


def resample(samples: np.ndarray, source_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling identical to `librosa.resample(res_type="soxr_hq")` (the official path)."""
    samples = np.asarray(samples, dtype=np.float32)
    if source_rate == target_rate:
        return samples
    import soxr  # optional at import time so writing audio does not need it

    out = np.asarray(soxr.resample(samples, source_rate, target_rate, quality="HQ"), dtype=np.float32)
    wanted = math.ceil(len(samples) * target_rate / source_rate)
    if len(out) >= wanted:
        return out[:wanted]
    return np.concatenate([out, np.zeros(wanted - len(out), dtype=np.float32)])


# ---- output formats ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputFormat:
    name: str
    container: str  # soundfile format
    subtype: str
    pcm16: bool  # we convert to int16 ourselves so every 16-bit output is bit-identical


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    "wav": OutputFormat("wav", "WAV", "PCM_16", True),
    "flac": OutputFormat("flac", "FLAC", "PCM_16", True),
    "ogg": OutputFormat("ogg", "OGG", "VORBIS", False),
    "mp3": OutputFormat("mp3", "MP3", "MPEG_LAYER_III", False),
}
PIPE_FORMATS = ("wav", "pcm")  # the only ones that can stream to a non-seekable pipe
STDOUT_TARGET = "-"


def output_format_for(target: str, requested: str | None = None) -> str:
    """Pick the format from `--format` or else the file extension; stdout defaults to wav."""
    if requested:
        fmt = requested.lower().lstrip(".")
    elif target == STDOUT_TARGET:
        fmt = "wav"
    else:
        fmt = Path(target).suffix.lower().lstrip(".")
        if not fmt:
            raise Qwen3TTSError(
                f"cannot tell the audio format of '{target}' (no extension)",
                f"add an extension ({', '.join(OUTPUT_FORMATS)}) or pass --format",
            )
    allowed = PIPE_FORMATS if target == STDOUT_TARGET else tuple(OUTPUT_FORMATS)
    if fmt not in allowed:
        where = "standard output" if target == STDOUT_TARGET else "a file"
        raise Qwen3TTSError(
            f"unsupported audio format '{fmt}' for {where}", f"use one of: {', '.join(allowed)}"
        )
    return fmt


def float_to_pcm16(chunk: np.ndarray) -> np.ndarray:
    """Clip to [-1, 1], scale by 32767 and round to nearest: symmetric and libsndfile-version independent."""
    clipped = np.clip(np.asarray(chunk, dtype=np.float32), -1.0, 1.0)
    return np.rint(clipped * np.float32(32767.0)).astype(np.int16)


def as_mono_chunk(chunk: np.ndarray) -> np.ndarray:
    array = np.asarray(chunk, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"audio chunks must be 1-D mono arrays, got shape {array.shape}")
    return array


def as_chunk(chunk: np.ndarray, channels: int) -> np.ndarray:
    """Mono: a 1-D array; more channels: (frames, channels), interleaved when written."""
    if channels == 1:
        return as_mono_chunk(chunk)
    array = np.asarray(chunk, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != channels:
        raise ValueError(f"audio chunks must be (frames, {channels}) arrays, got shape {array.shape}")
    return array


class AudioSink(Protocol):
    """Where synthesized chunks go: used as `with sink: sink.write(chunk) ...`."""

    def write(self, chunk: np.ndarray) -> None: ...

    def __enter__(self) -> AudioSink: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


# ---- atomic file writer -----------------------------------------------------------------------------


class AtomicAudioFileWriter:
    """Streams chunks into a temporary file next to the target and renames it into place on success.

    Memory stays bounded (chunks go straight to libsndfile). On any exception, KeyboardInterrupt included,
    the temporary file is removed and an existing target is left untouched.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fmt: str | None = None,
        sample_rate: int = SAMPLE_RATE,
        channels: int = 1,
    ):
        self.path = Path(path)
        self.format = OUTPUT_FORMATS[output_format_for(str(self.path), fmt)]
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames_written = 0
        self._temp_path: Path | None = None
        self._file: sf.SoundFile | None = None
        _check_output_folder(self.path)

    def __enter__(self) -> AtomicAudioFileWriter:
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".part")
        os.close(fd)
        self._temp_path = Path(name)
        try:
            self._file = sf.SoundFile(
                name,
                mode="w",
                samplerate=self.sample_rate,
                channels=self.channels,
                format=self.format.container,
                subtype=self.format.subtype,
            )
        except BaseException:
            self._discard()
            raise
        return self

    def write(self, chunk: np.ndarray) -> None:
        if self._file is None:
            raise RuntimeError("write() outside of the writer's `with` block")
        samples = as_chunk(chunk, self.channels)
        if len(samples) == 0:
            return
        self._file.write(float_to_pcm16(samples) if self.format.pcm16 else np.clip(samples, -1.0, 1.0))
        self.frames_written += len(samples)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._publish()
        except BaseException:
            self._discard()
            raise

    def _publish(self) -> None:
        assert self._file is not None and self._temp_path is not None
        self._file.close()
        self._file = None
        with open(self._temp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(self._temp_path, _mode_for_new_file(self.path))
        replace_file(self._temp_path, self.path)
        self._temp_path = None

    def _discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None
        if self._temp_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._temp_path.unlink()
            self._temp_path = None


def _check_output_folder(path: Path) -> None:
    folder = path.parent
    if not folder.exists():
        raise Qwen3TTSError(
            f"output folder does not exist: {folder}", "create it first or choose another path"
        )
    if not folder.is_dir():
        raise Qwen3TTSError(f"output folder is not a folder: {folder}", "choose another output path")
    if path.is_dir():
        raise Qwen3TTSError(f"output path is a folder: {path}", "give a file name, e.g. out.wav")
    if not os.access(folder, os.W_OK):
        raise Qwen3TTSError(
            f"cannot write to the output folder: {folder}", "choose a folder you can write to"
        )


def _mode_for_new_file(target: Path) -> int:
    """mkstemp creates 0600 files; give the output the permissions a plain open() would have."""
    if target.exists():
        return target.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# ---- stdout / pipe writer ---------------------------------------------------------------------------

WAV_HEADER_BYTES = 44
UNKNOWN_SIZE = 0xFFFFFFFF


def wav_header(sample_rate: int = SAMPLE_RATE, data_bytes: int | None = None, channels: int = 1) -> bytes:
    """A canonical 16-bit PCM WAV header; sizes are 0xFFFFFFFF ("unknown/maximum") when not given."""
    riff_size = UNKNOWN_SIZE if data_bytes is None else WAV_HEADER_BYTES - 8 + data_bytes
    data_size = UNKNOWN_SIZE if data_bytes is None else data_bytes
    block = 2 * channels
    fmt_chunk = struct.pack(
        "<4sIHHIIHH", b"fmt ", 16, 1, channels, sample_rate, sample_rate * block, block, 16
    )
    return (
        struct.pack("<4sI4s", b"RIFF", riff_size, b"WAVE")
        + fmt_chunk
        + struct.pack("<4sI", b"data", data_size)
    )


class PipeAudioWriter:
    """Streams 16-bit little-endian PCM, raw or as WAV, to a binary stream such as stdout.

    A pipe cannot seek back to fill in the WAV sizes, and buffering the whole output would break streaming
    (latency, unbounded memory), so the header carries the 0xFFFFFFFF placeholder that ffmpeg, sox and
    libsndfile read as "until end of stream". If the stream turns out to be seekable (stdout redirected to a
    file, not in append mode) the real sizes are patched in at the end.
    """

    def __init__(self, stream: BinaryIO, fmt: str = "wav", sample_rate: int = SAMPLE_RATE, channels: int = 1):
        if fmt not in PIPE_FORMATS:
            raise Qwen3TTSError(f"cannot stream '{fmt}' to a pipe", f"use one of: {', '.join(PIPE_FORMATS)}")
        _refuse_terminal(stream)
        self.stream = stream
        self.format = fmt
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames_written = 0
        self._header_offset: int | None = None

    def __enter__(self) -> PipeAudioWriter:
        if self.format == "wav":
            self._header_offset = _patchable_offset(self.stream)
            self.stream.write(wav_header(self.sample_rate, channels=self.channels))
        return self

    def write(self, chunk: np.ndarray) -> None:
        samples = as_chunk(chunk, self.channels)
        if len(samples) == 0:
            return
        self.stream.write(float_to_pcm16(samples).astype("<i2").tobytes())
        self.frames_written += len(samples)
        self.stream.flush()  # a reader (player, next pipe stage) should get audio as soon as it exists

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None and self._header_offset is not None:
            self._patch_sizes(self._header_offset)
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.stream.flush()

    def _patch_sizes(self, offset: int) -> None:
        end = self.stream.tell()
        self.stream.seek(offset)
        self.stream.write(
            wav_header(self.sample_rate, self.frames_written * 2 * self.channels, self.channels)
        )
        self.stream.seek(end)


def _refuse_terminal(stream: BinaryIO) -> None:
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        raise Qwen3TTSError(
            "refusing to write binary audio to a terminal",
            "redirect (> out.wav) or pipe (| aplay) the output",
        )


def _patchable_offset(stream: BinaryIO) -> int | None:
    """Where the header starts if we may seek back to it later, else None (pipe, socket, append mode)."""
    try:
        if not stream.seekable():
            return None
        if _is_append_mode(stream):
            return None  # O_APPEND sends every write to the end: patching would append garbage
        return stream.tell()
    except (OSError, ValueError):
        return None


def _is_append_mode(stream: BinaryIO) -> bool:
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return False  # in-memory stream
    try:
        import fcntl
    except ImportError:  # Windows: no O_APPEND query; be safe
        return True
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND)


def open_output(
    target: str, fmt: str | None = None, stdout: BinaryIO | None = None, channels: int = 1
) -> AudioSink:
    """The sink for `-o TARGET [--format FMT]`: an atomic file writer, or a pipe writer for '-'."""
    chosen = output_format_for(target, fmt)
    if target == STDOUT_TARGET:
        if stdout is None:
            import sys

            stdout = sys.stdout.buffer
        return PipeAudioWriter(stdout, chosen, channels=channels)
    return AtomicAudioFileWriter(target, chosen, channels=channels)


def write_audio(target: str, chunks: Iterable[np.ndarray], fmt: str | None = None, channels: int = 1) -> int:
    """Write every chunk to `target` (file path or '-'); returns the number of frames written."""
    sink = open_output(target, fmt, channels=channels)
    count = 0
    with sink:
        for chunk in chunks:
            sink.write(chunk)
            count += len(chunk)
    return count


# ---- playback ---------------------------------------------------------------------------------------


class AudioPlayer:
    """Plays chunks as they arrive through the optional `sounddevice` package."""

    def __init__(self, sample_rate: int = SAMPLE_RATE):
        try:
            import sounddevice
        except ImportError as exc:
            raise Qwen3TTSError(
                "--play needs the optional 'sounddevice' package",
                "pip install 'qwen3tts-cli[play]' (or sounddevice), or write a file with -o",
            ) from exc
        except OSError as exc:  # the package is there but the PortAudio library is not
            raise Qwen3TTSError(
                f"audio playback is unavailable: {exc}",
                "install PortAudio (libportaudio2) or write a file with -o",
            ) from exc
        self._sd = sounddevice
        self.sample_rate = sample_rate
        self._stream = None

    def __enter__(self) -> AudioPlayer:
        try:
            self._stream = self._sd.OutputStream(samplerate=self.sample_rate, channels=1, dtype="float32")
            self._stream.start()
        except Exception as exc:  # PortAudioError when there is no output device
            raise Qwen3TTSError(f"no audio output device: {exc}", "write a file with -o instead") from exc
        return self

    def write(self, chunk: np.ndarray) -> None:
        assert self._stream is not None
        samples = np.clip(as_mono_chunk(chunk), -1.0, 1.0)
        if len(samples):
            self._stream.write(samples.reshape(-1, 1))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._stream is None:
            return
        if exc_type is None:
            self._stream.stop()  # lets queued audio finish
        else:
            self._stream.abort()
        self._stream.close()


# ---- joining pieces ---------------------------------------------------------------------------------

DEFAULT_FADE_MS = 10.0
DEFAULT_GAP_MS = 100.0  # a sentence-sized pause between independently generated pieces


def _fade_curve(length: int) -> np.ndarray:
    """Raised-cosine ramp from 0 (exclusive) to 1 (exclusive): no step at either end."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(length) + 1) / (length + 1))).astype(np.float32)


def join_pieces(
    pieces: Iterable[Iterable[np.ndarray]],
    sample_rate: int = SAMPLE_RATE,
    fade_ms: float = DEFAULT_FADE_MS,
    gap_ms: float = DEFAULT_GAP_MS,
) -> Iterator[np.ndarray]:
    """Stream the chunks of several pieces as one signal without clicks at the piece boundaries.

    Each piece is itself a stream of chunks (the streaming decoder's output). At every boundary the end of
    the previous piece fades out, `gap_ms` of silence follows and the next piece fades in; the outer edges
    of the first and last pieces are untouched, so a single piece passes through bit-exactly. Only the last
    `fade` samples of the current piece are held back, so memory stays bounded.
    """
    fade = max(0, round(sample_rate * fade_ms / 1000))
    gap = np.zeros(max(0, round(sample_rate * gap_ms / 1000)), dtype=np.float32)
    ramp = _fade_curve(fade)
    piece_iter = iter(pieces)
    current = next(piece_iter, None)
    is_first = True
    while current is not None:
        tail = np.zeros(0, dtype=np.float32)
        for chunk in _faded_in(current, ramp if not is_first else ramp[:0]):
            buffered = np.concatenate([tail, chunk]) if len(tail) else chunk
            cut = max(0, len(buffered) - fade)
            if cut:
                yield buffered[:cut]
            tail = buffered[cut:]
        following = next(piece_iter, None)
        if following is not None and len(tail):
            tail = tail * ramp[::-1][len(ramp) - len(tail) :]
        if len(tail):
            yield tail
        if following is not None and len(gap):
            yield gap.copy()
        current = following
        is_first = False


def _faded_in(chunks: Iterable[np.ndarray], ramp: np.ndarray) -> Iterator[np.ndarray]:
    """The piece's chunks with its first len(ramp) samples multiplied by the ramp."""
    position = 0
    for chunk in chunks:
        samples = as_mono_chunk(chunk)
        if position < len(ramp) and len(samples):
            samples = samples.copy()
            span = min(len(ramp) - position, len(samples))
            samples[:span] *= ramp[position : position + span]
        position += len(samples)
        if len(samples):
            yield samples


def join_chunks(
    pieces: Iterable[np.ndarray],
    sample_rate: int = SAMPLE_RATE,
    fade_ms: float = DEFAULT_FADE_MS,
    gap_ms: float = DEFAULT_GAP_MS,
) -> np.ndarray:
    """Whole-array convenience over `join_pieces`: one array per piece in, one joined array out."""
    streamed = join_pieces(([piece] for piece in pieces), sample_rate, fade_ms, gap_ms)
    parts = list(streamed)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
