"""Turns placed on one timeline: pauses, mono or panned stereo, stems, `turns.json` and SRT subtitles.

Stereo follows ZipVoice-Dialog-Stereo for two speakers (the first speaker fully left, the second fully
right); with more speakers each gets a constant-power pan position spread evenly from left to right, in order
of first appearance. Mixes never overlap turns, so the only way to clip is a loud turn: the whole mix is then
scaled down to a 0.99 peak (never per turn, which would undo equal loudness).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.platform_compat import replace_file

MAX_PEAK = 0.99


@dataclass(frozen=True)
class TimelineEntry:
    index: int
    speaker: str
    text: str
    start: float  # seconds from the start of the mix
    end: float
    file: str | None = None  # the stem, when written


def pan_gains(position: int, count: int) -> tuple[float, float]:
    """(left, right) gains of speaker `position` of `count`: constant power, first left, last right."""
    if count <= 1:
        return (math.sqrt(0.5), math.sqrt(0.5))
    angle = (position / (count - 1)) * math.pi / 2
    left, right = math.cos(angle), math.sin(angle)
    return (0.0 if left < 1e-9 else left, 0.0 if right < 1e-9 else right)


def mix_turns(
    turns: Sequence[np.ndarray],
    speakers: Sequence[str],
    texts: Sequence[str],
    sample_rate: int,
    pause: float,
    stereo: bool = False,
) -> tuple[np.ndarray, list[TimelineEntry]]:
    """The turns in order with `pause` seconds between them: (mix, timeline). Mono (n,) or stereo (n, 2)."""
    if not (len(turns) == len(speakers) == len(texts)):
        raise ValueError("turns, speakers and texts must have the same length")
    gap = max(0, round(pause * sample_rate))
    total = sum(len(turn) for turn in turns) + gap * max(0, len(turns) - 1)
    order = list(dict.fromkeys(speakers))
    mix = np.zeros((total, 2) if stereo else total, dtype=np.float32)
    timeline = []
    position = 0
    for index, (samples, speaker, text) in enumerate(zip(turns, speakers, texts, strict=True)):
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        end = position + len(samples)
        if stereo:
            left, right = pan_gains(order.index(speaker), len(order))
            mix[position:end, 0] = samples * left
            mix[position:end, 1] = samples * right
        else:
            mix[position:end] = samples
        timeline.append(TimelineEntry(index, speaker, text, position / sample_rate, end / sample_rate))
        position = end + gap
    peak = float(np.max(np.abs(mix))) if mix.size else 0.0
    if peak > MAX_PEAK:
        mix *= MAX_PEAK / peak
    return mix, timeline


def stem_name(index: int, speaker: str, suffix: str = ".wav") -> str:
    """`003_S2.wav`: sortable, and a speaker name made safe for any file system."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in speaker)[:40] or "speaker"
    return f"{index + 1:03d}_{safe}{suffix}"


def srt_time(seconds: float) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def srt_text(timeline: Sequence[TimelineEntry], with_speakers: bool = True) -> str:
    """SubRip cues, one per turn (`S1: text` unless with_speakers is False)."""
    from qwen3tts_cli.text import split_leading_tags

    cues = []
    for number, entry in enumerate(timeline, start=1):
        _, words = split_leading_tags(entry.text)  # style tags are not shown
        line = f"{entry.speaker}: {words}" if with_speakers else words
        cues.append(f"{number}\n{srt_time(entry.start)} --> {srt_time(entry.end)}\n{line}\n")
    return "\n".join(cues)


def timeline_document(timeline: Sequence[TimelineEntry], sample_rate: int, mix: str | None) -> dict:
    return {
        "mix": mix,
        "sample_rate": sample_rate,
        "turns": [
            {**asdict(entry), "start": round(entry.start, 4), "end": round(entry.end, 4)}
            for entry in timeline
        ],
    }


def atomic_write_text(target: Path, text: str) -> None:
    """Write next to the target, fsync, then rename: a reader never sees half a file."""
    if not target.parent.is_dir():
        raise Qwen3TTSError(f"folder does not exist: {target.parent}", "create it first")
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        replace_file(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def write_stems(
    folder: Path,
    turns: Sequence[np.ndarray],
    timeline: Sequence[TimelineEntry],
    sample_rate: int,
    mix: str | None,
) -> list[TimelineEntry]:
    """Each turn as `NNN_SPEAKER.wav` plus `turns.json` (written last: it lists only files that exist)."""
    from qwen3tts_cli.audio import write_audio

    folder.mkdir(parents=True, exist_ok=True)
    placed = []
    for entry, samples in zip(timeline, turns, strict=True):
        name = stem_name(entry.index, entry.speaker)
        write_audio(str(folder / name), [np.asarray(samples, dtype=np.float32)])
        placed.append(TimelineEntry(entry.index, entry.speaker, entry.text, entry.start, entry.end, name))
    document = timeline_document(placed, sample_rate, mix)
    atomic_write_text(folder / "turns.json", json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return placed
