"""ZipVoice dialogue prompts turned into one reference per speaker, to clone each speaker from its part.

- Split prompts: one recording and transcript per speaker (`S1`, `S2`, ... in order).
- A merged prompt: one recording of the whole exchange whose transcript carries `[S1]`/`[S2]` markers.
  There is no diarization here: each turn's boundary is first placed in proportion to its share of the
  transcript's characters, then moved to the quietest 20 ms within a window around that estimate (speakers
  take turns at pauses). Each speaker's reference is their segments joined, with their turns' text as the
  transcript.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.longform.cast import REFERENCE, Cast, CastVoice
from qwen3tts_cli.longform.script import parse_script
from qwen3tts_cli.spec import SAMPLE_RATE

MIN_SPEAKER_SECONDS = 1.0
_FRAME = SAMPLE_RATE // 50  # 20 ms
SNAP_WINDOW = 0.25  # of the shorter neighbouring turn, at most 1 s each way


def split_prompt_cast(wavs: Sequence[str | Path], texts: Sequence[str]) -> Cast:
    """S1..Sn from one recording + transcript each (ZipVoice's split prompts)."""
    if len(wavs) != len(texts):
        raise Qwen3TTSError(
            f"{len(wavs)} prompt recording(s) but {len(texts)} transcript(s)",
            "give one --prompt-text per --prompt-wav, in speaker order",
        )
    cast = Cast()
    for index, (wav, text) in enumerate(zip(wavs, texts, strict=True), start=1):
        if not text.strip():
            raise Qwen3TTSError(f"the transcript of prompt S{index} is empty", "give what is said in it")
        cast.set(f"S{index}", CastVoice(REFERENCE, str(wav), ref_text=text.strip()))
    return cast


def merged_prompt_cast(wav: str | Path, transcript: str) -> Cast:
    """Each speaker of a merged prompt, cut from the one recording (see the module docstring)."""
    from qwen3tts_cli.audio import load_reference_audio

    reference = load_reference_audio(wav)
    parts = split_merged_prompt(reference.samples, transcript)
    cast = Cast()
    for speaker, (samples, text) in parts.items():
        digest = hashlib.sha256(f"{reference.sha256}:{speaker}".encode()).hexdigest()
        audio = type(reference)(samples, reference.source_sample_rate, reference.source_channels, digest)
        cast.set(speaker, CastVoice(REFERENCE, f"{wav}#{speaker}", ref_text=text, audio=audio))
    return cast


def split_merged_prompt(samples: np.ndarray, transcript: str) -> dict[str, tuple[np.ndarray, str]]:
    """speaker -> (their joined segments, their joined text), from a 24 kHz mono recording."""
    script = parse_script(transcript, source="prompt transcript")
    if len(script.speakers) < 2:
        raise Qwen3TTSError(
            "a merged prompt's transcript needs turns of two or more speakers",
            "mark them: '[S1] Hello. [S2] Hi there.'",
        )
    bounds = turn_boundaries(samples, [len(turn.text) for turn in script.turns])
    segments: dict[str, list[np.ndarray]] = {}
    texts: dict[str, list[str]] = {}
    for turn, (start, end) in zip(script.turns, bounds, strict=True):
        segments.setdefault(turn.speaker, []).append(samples[start:end])
        texts.setdefault(turn.speaker, []).append(turn.text)
    parts = {}
    for speaker in script.speakers:
        joined = np.concatenate(segments[speaker]).astype(np.float32)
        if len(joined) < MIN_SPEAKER_SECONDS * SAMPLE_RATE:
            raise Qwen3TTSError(
                f"speaker {speaker} has only {len(joined) / SAMPLE_RATE:.1f} s of the merged prompt",
                "use a longer prompt, or one recording per speaker (split prompts)",
            )
        parts[speaker] = (joined, " ".join(texts[speaker]))
    return parts


def turn_boundaries(samples: np.ndarray, weights: Sequence[int]) -> list[tuple[int, int]]:
    """(start, end) sample ranges of consecutive turns, proportional to `weights`, snapped to quiet frames."""
    total = len(samples)
    share = np.cumsum([max(1, w) for w in weights], dtype=np.float64)
    estimates = [round(total * value / share[-1]) for value in share[:-1]]
    energy = _frame_energy(samples)
    cuts = [0]
    for index, estimate in enumerate(estimates):
        before = estimate - cuts[-1]
        after = (estimates[index + 1] if index + 1 < len(estimates) else total) - estimate
        reach = min(SAMPLE_RATE, int(SNAP_WINDOW * min(before, after)))
        cuts.append(_quietest(energy, estimate, reach, low=cuts[-1] + 1, high=total - 1))
    cuts.append(total)
    return [(cuts[i], cuts[i + 1]) for i in range(len(weights))]


def _frame_energy(samples: np.ndarray) -> np.ndarray:
    frames = len(samples) // _FRAME
    if frames == 0:
        return np.zeros(1, dtype=np.float64)
    blocks = np.asarray(samples[: frames * _FRAME], dtype=np.float64).reshape(frames, _FRAME)
    return np.mean(blocks * blocks, axis=1)


def _quietest(energy: np.ndarray, estimate: int, reach: int, low: int, high: int) -> int:
    """The centre of the quietest frame within `reach` samples of `estimate` (the estimate when none)."""
    first = max(0, (estimate - reach) // _FRAME)
    last = min(len(energy) - 1, (estimate + reach) // _FRAME)
    if last < first:
        return min(max(estimate, low), high)
    window = energy[first : last + 1]
    # ties (digital silence) resolve to the frame nearest the estimate
    quiet = np.flatnonzero(window <= window.min() + 1e-12) + first
    best = int(quiet[np.argmin(np.abs(quiet * _FRAME + _FRAME // 2 - estimate))])
    return min(max(best * _FRAME + _FRAME // 2, low), high)
