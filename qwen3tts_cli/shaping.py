"""Audio shaping after synthesis: tempo, silence trimming, long-pause limiting, normalization.

    shaping = Shaping(speed=1.25, trim_silence=True, max_pause=0.5, normalize="loudness")
    shaped = shape(samples, 24000, shaping)

Order of operations (`shape`): silence first (trim the edges, shorten long internal pauses), then the tempo
change, then normalization last, so the gain is measured on the audio that is actually written.

- Speed (0.5..2.0) changes the tempo and keeps the pitch: Rubber Band through Spotify's `pedalboard`
  (`time_stretch`, whose `stretch_factor` is the speed: 2.0 plays twice as fast, half as long). The output
  has exactly round(len / speed) samples.
- Silence is found from the energy of 10 ms frames: a frame is sound when its RMS is within `SILENCE_DB`
  (45 dB) of the loudest frame or, over a noise floor (the 5th percentile frame), 6 dB above that floor;
  a floor-based threshold never comes closer than `FLOOR_CAP_DB` (35 dB) to the loudest frame, so noisy
  audio is trimmed too while audio with no quiet part is left whole. Only runs below the threshold are
  touched, and every cut keeps at least `HANGOVER` (50 ms) of the quiet next to the sound, so fading
  speech edges and quiet consonants stay. A trimmed edge keeps that margin; a pause longer than
  `max_pause` keeps `max_pause` seconds (its two ends, crossfaded over 5 ms; the middle is removed).
  Silent audio is returned unchanged. Sound is only sliced out of the input, never scaled.
- Normalization: "peak" scales the sample peak to -1 dBFS; "loudness" scales the ITU-R BS.1770 integrated
  loudness (pyloudnorm) to -16 LUFS, but never lifts the sample peak above -1 dBFS (the gain is capped, so
  very dynamic audio may end up below -16 LUFS). Audio shorter than one 0.4 s gating block is measured from
  its RMS; silent audio (below the -70 LUFS absolute gate) gets gain 1.0.

Speed and loudness need the `shaping` extra (pedalboard, pyloudnorm), imported only when used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from qwen3tts_cli.errors import Qwen3TTSError

SPEED_RANGE = (0.5, 2.0)
MAX_PAUSE_RANGE = (0.1, 10.0)  # seconds; the lower end keeps HANGOVER on both sides of a shortened pause
NORMALIZE_CHOICES = ("peak", "loudness")
PEAK_TARGET_DBFS = -1.0
LOUDNESS_TARGET_LUFS = -16.0
ABSOLUTE_GATE_LUFS = -70.0  # BS.1770: quieter blocks count as silence

FRAME_SECONDS = 0.010
SILENCE_DB = 45.0  # below the loudest frame by this much = silence
FLOOR_CAP_DB = 35.0  # a noise-floor based threshold stays at least this far below the loudest frame
HANGOVER = 0.050  # seconds of quiet always kept next to sound
_CROSSFADE = 0.005  # seconds; the two kept ends of a shortened pause overlap this much (no click)
_INSTALL_HINT = 'pip install "qwen3tts-cli[shaping]"'


@dataclass(frozen=True)
class Shaping:
    """What to do to an utterance after synthesis; the default changes nothing."""

    speed: float = 1.0  # 0.5..2.0: tempo change, pitch kept
    trim_silence: bool = False  # trim leading/trailing silence (keeping HANGOVER)
    max_pause: float | None = None  # seconds: shorten internal pauses longer than this (0.1..10)
    normalize: str | None = None  # None, "peak" (-1 dBFS sample peak) or "loudness" (-16 LUFS integrated)

    def check(self) -> None:
        """Raise Qwen3TTSError naming the bad value and the valid range."""
        low, high = SPEED_RANGE
        if not _number(self.speed) or not low <= float(self.speed) <= high:
            raise Qwen3TTSError(f"speed must be between {low} and {high} (got {self.speed!r})", "e.g. 1.25")
        if self.max_pause is not None:
            low, high = MAX_PAUSE_RANGE
            if not _number(self.max_pause) or not low <= float(self.max_pause) <= high:
                raise Qwen3TTSError(
                    f"max pause must be between {low} and {high} seconds (got {self.max_pause!r})", "e.g. 0.5"
                )
        if self.normalize is not None and self.normalize not in NORMALIZE_CHOICES:
            raise Qwen3TTSError(
                f"unknown normalization {self.normalize!r}", f"use one of: {', '.join(NORMALIZE_CHOICES)}"
            )

    @property
    def is_identity(self) -> bool:
        return (
            float(self.speed) == 1.0
            and not self.trim_silence
            and self.max_pause is None
            and self.normalize is None
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def shape(samples: np.ndarray, sample_rate: int, shaping: Shaping) -> np.ndarray:
    """Apply `shaping` to float32 mono audio: silence, then speed, then normalization. Float32 out."""
    shaping.check()
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    if shaping.is_identity:
        return audio
    if shaping.trim_silence or shaping.max_pause is not None:
        audio = limit_silence(audio, sample_rate, trim=shaping.trim_silence, max_pause=shaping.max_pause)
    if float(shaping.speed) != 1.0:
        audio = change_speed(audio, sample_rate, float(shaping.speed))
    gain = normalization_gain(audio, sample_rate, shaping)
    if gain != 1.0:
        audio = audio * np.float32(gain)
    return audio.astype(np.float32, copy=False)


# ---- speed ----------------------------------------------------------------------------------------------
def change_speed(samples: np.ndarray, sample_rate: int, speed: float) -> np.ndarray:
    """Tempo times `speed`, pitch kept (Rubber Band); exactly round(len / speed) samples out."""
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    if speed == 1.0:
        return audio
    wanted = round(len(audio) / speed)
    if len(audio) == 0:
        return audio
    time_stretch = _import("pedalboard").time_stretch
    out = time_stretch(audio[np.newaxis, :], float(sample_rate), stretch_factor=float(speed))[0]
    # Rubber Band is off by a sample now and then, and returns nothing for a few ms of input
    if len(out) >= wanted:
        out = out[:wanted]
    else:
        out = np.concatenate([out, np.zeros(wanted - len(out), np.float32)])
    return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)


# ---- silence --------------------------------------------------------------------------------------------
def sound_mask(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """Per 10 ms frame: True where the frame's RMS is above the silence threshold (see the module doc).

    Returns (mask, hop in samples). All False for silent audio."""
    hop = max(1, round(sample_rate * FRAME_SECONDS))
    count = -(-len(samples) // hop)
    if count == 0:
        return np.zeros(0, bool), hop
    padded = np.zeros(count * hop, np.float64)
    padded[: len(samples)] = samples
    rms = np.sqrt(np.mean(padded.reshape(count, hop) ** 2, axis=1))
    loudest = float(rms.max())
    if not loudest > 0.0 or not math.isfinite(loudest):
        return np.zeros(count, bool), hop
    floor = float(np.percentile(rms, 5))
    threshold = max(
        loudest * 10.0 ** (-SILENCE_DB / 20.0), min(2.0 * floor, loudest * 10.0 ** (-FLOOR_CAP_DB / 20.0))
    )
    return rms > threshold, hop


def silent_runs(samples: np.ndarray, sample_rate: int) -> list[tuple[int, int]]:
    """(start, end) sample ranges of silence (see `sound_mask`); empty when the audio is all silence."""
    mask, hop = sound_mask(samples, sample_rate)
    if not mask.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate([[True], mask, [True]]).astype(np.int8)))
    runs = []
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        runs.append((int(start) * hop, min(int(end) * hop, len(samples))))
    return [(s, e) for s, e in runs if e > s]


def trim_silence(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Drop leading and trailing silence, keeping HANGOVER seconds of it next to the sound."""
    return limit_silence(samples, sample_rate, trim=True, max_pause=None)


def limit_pauses(samples: np.ndarray, sample_rate: int, max_pause: float) -> np.ndarray:
    """Shorten every internal pause longer than `max_pause` seconds to `max_pause` (its two ends kept)."""
    return limit_silence(samples, sample_rate, trim=False, max_pause=max_pause)


def limit_silence(
    samples: np.ndarray, sample_rate: int, *, trim: bool, max_pause: float | None
) -> np.ndarray:
    """Trim the edges and/or shorten internal pauses in one pass over the silent runs."""
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    runs = silent_runs(audio, sample_rate)
    if not runs:
        return audio
    margin = round(HANGOVER * sample_rate)
    start, end = 0, len(audio)
    if trim:
        first, last = runs[0], runs[-1]
        if first[0] == 0:
            start = max(0, first[1] - margin)
        if last[1] == len(audio):
            end = min(len(audio), last[0] + margin)
    parts: list[np.ndarray] = []
    position = start
    if max_pause is not None:
        keep = round(max_pause * sample_rate)
        fade = round(_CROSSFADE * sample_rate)
        for run_start, run_end in runs:
            if run_start == 0 or run_end == len(audio):
                continue  # an edge, not a pause between sounds
            if run_end - run_start <= keep + fade:
                continue  # within a crossfade of the limit: nothing worth removing
            # keep both ends (each >= HANGOVER since max_pause >= 2 * HANGOVER); overlap them by `fade`
            head_end = run_start + keep // 2 + fade
            tail_start = run_end - (keep - keep // 2)
            head = audio[position:head_end].copy()
            ramp = np.linspace(1.0, 0.0, fade, dtype=np.float32)
            head[len(head) - fade :] *= ramp
            parts.append(head)
            tail = audio[tail_start : tail_start + fade] * ramp[::-1]
            parts[-1][len(head) - fade :] += tail
            position = tail_start + fade
    parts.append(audio[position:end])
    return np.concatenate(parts).astype(np.float32, copy=False)


# ---- normalization --------------------------------------------------------------------------------------
def normalization_gain(samples: np.ndarray, sample_rate: int, shaping: Shaping) -> float:
    """The linear gain `shaping.normalize` applies (1.0 when None; `shape` uses this function).

    "loudness" is capped so that the sample peak stays at or below -1 dBFS."""
    if shaping.normalize is None:
        return 1.0
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if not peak > 0.0 or not math.isfinite(peak):
        return 1.0
    ceiling = 10.0 ** (PEAK_TARGET_DBFS / 20.0) / peak
    if shaping.normalize == "peak":
        return ceiling
    if shaping.normalize == "loudness":
        return min(loudness_gain(audio, sample_rate, LOUDNESS_TARGET_LUFS), ceiling)
    raise Qwen3TTSError(
        f"unknown normalization {shaping.normalize!r}", f"use one of: {', '.join(NORMALIZE_CHOICES)}"
    )


def loudness_gain(samples: np.ndarray, sample_rate: int, target_lufs: float) -> float:
    """Linear gain bringing the BS.1770 integrated loudness (pyloudnorm) of `samples` to `target_lufs`.

    Shorter than one 0.4 s gating block: estimated from the RMS (10·log10 of the mean square, exact for
    a 1 kHz sine). Silent or below the -70 LUFS absolute gate: 1.0. Never raises for any audio, never NaN.
    """
    audio = np.asarray(samples, dtype=np.float64).reshape(-1)
    if len(audio) == 0 or not np.all(np.isfinite(audio)):
        return 1.0
    loudness = float("-inf")
    if len(audio) > round(0.4 * sample_rate):
        meter = _import("pyloudnorm").Meter(sample_rate)
        try:
            loudness = float(meter.integrated_loudness(audio))
        except ValueError:  # pyloudnorm's length check; the RMS estimate below covers it
            loudness = float("-inf")
    if not math.isfinite(loudness):
        mean_square = float(np.mean(audio**2))
        loudness = 10.0 * math.log10(mean_square) if mean_square > 0.0 else float("-inf")
    if not math.isfinite(loudness) or loudness < ABSOLUTE_GATE_LUFS:
        return 1.0
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    return gain if math.isfinite(gain) else 1.0


def require_libraries(shaping: Shaping) -> None:
    """Import what `shape` will need for `shaping` now: a missing extra is a Qwen3TTSError naming it."""
    if float(shaping.speed) != 1.0:
        _import("pedalboard")
    if shaping.normalize == "loudness":
        _import("pyloudnorm")


# ---- helpers --------------------------------------------------------------------------------------------
def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _import(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise Qwen3TTSError(f"audio shaping needs the {name} package", _INSTALL_HINT) from None


__all__ = [
    "LOUDNESS_TARGET_LUFS",
    "PEAK_TARGET_DBFS",
    "Shaping",
    "change_speed",
    "limit_pauses",
    "loudness_gain",
    "normalization_gain",
    "require_libraries",
    "shape",
    "trim_silence",
]
