"""A dialogue rendered from a script and a cast: every turn generated, then joined on one timeline.

Turns are independent requests: those of one model kind run together through the shared-batch scheduler
(`concurrent.synthesize_all`). A cast that mixes kinds (a preset and a clone, say) needs two models; they are
loaded one after the other, never both at once, so memory is that of the larger one. Turn `k` uses seed
`seed + 1000 * k` (its pieces add their index, as in `say`), so a rerun with the same seed repeats the
dialogue and one turn can be reproduced alone with `say --seed`.
Each turn is shaped on its own (trim, pauses, speed), brought to the same loudness, then placed with `pause`
seconds between turns; a requested normalization applies to the finished mix.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.longform.cast import DESIGN, PACK, PRESET, Cast, CastVoice
from qwen3tts_cli.longform.concurrent import Job, synthesize_all
from qwen3tts_cli.longform.mixdown import TimelineEntry, mix_turns
from qwen3tts_cli.longform.script import Script
from qwen3tts_cli.spec import SAMPLE_RATE

if TYPE_CHECKING:
    from qwen3tts_cli.lexicon import Lexicon
    from qwen3tts_cli.shaping import Shaping
    from qwen3tts_cli.tts import TTS, SamplingOptions

DEFAULT_PAUSE = 0.4  # seconds between turns: a natural conversational gap
TURN_SEED_STRIDE = 1000
TURN_LOUDNESS_LUFS = -20.0

# (catalog mode, batch width) -> a loaded model, closed by the caller's `with`
ModelLoader = Callable[[str, int], AbstractContextManager["TTS"]]


@dataclass(frozen=True)
class DialogueSettings:
    language: str = "auto"
    seed: int | None = None
    sampling: SamplingOptions | None = None
    max_frames: int | None = None
    pause: float = DEFAULT_PAUSE
    stereo: bool = False
    equal_loudness: bool = True
    batch: int = 8
    shaping: Shaping | None = None
    lexicon: Lexicon | None = None  # every turn's (merged over a saved voice's own)


@dataclass
class Dialogue:
    samples: np.ndarray  # (n,) mono or (n, 2) stereo
    turns: list[np.ndarray]  # each turn as placed in the mix (mono, before panning)
    timeline: list[TimelineEntry]
    seed: int
    sample_rate: int = SAMPLE_RATE
    frames: int = 0
    kinds: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def turn_seed(seed: int, index: int) -> int:
    return seed + TURN_SEED_STRIDE * index


def render_dialogue(
    script: Script,
    cast: Cast,
    load: ModelLoader,
    settings: DialogueSettings,
    on_turn: Callable[[int, float], None] | None = None,
) -> Dialogue:
    """Generate and mix. `on_turn(index, seconds)` is called as each turn finishes (for progress)."""
    _check_settings(settings)
    cast.check_covers(script.speakers)
    seed = settings.seed if settings.seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
    audio: list[np.ndarray | None] = [None] * len(script.turns)
    frames = 0
    modes = cast.modes(script.speakers)
    for mode in modes:
        indices = [i for i, turn in enumerate(script.turns) if _voice(cast, turn.speaker).mode == mode]
        width = max(1, min(settings.batch, len(indices)))
        with load(mode, width) as tts:
            voices = _prepared_voices(
                tts, cast, {script.turns[i].speaker for i in indices}, settings.language
            )
            jobs = [
                Job(i, script.turns[i].text, _options(voices[script.turns[i].speaker], settings, seed, i))
                for i in indices
            ]
            for done in synthesize_all(tts, jobs, width):
                turn = script.turns[int(done.key)]
                if done.error is not None:
                    message = getattr(done.error, "message", str(done.error))
                    hint = getattr(done.error, "hint", "") or "fix the turn and run again"
                    raise Qwen3TTSError(f"turn at line {turn.line} ({turn.speaker}): {message}", hint)
                assert done.samples is not None
                audio[int(done.key)] = _shaped_turn(done.samples, settings.shaping)
                frames += done.frames
                if on_turn is not None:
                    on_turn(int(done.key), len(done.samples) / SAMPLE_RATE)
    turns = [samples for samples in audio if samples is not None]
    if settings.equal_loudness:
        turns = equal_loudness(turns)
    speakers = [turn.speaker for turn in script.turns]
    texts = [turn.text for turn in script.turns]
    mix, timeline = mix_turns(turns, speakers, texts, SAMPLE_RATE, settings.pause, settings.stereo)
    mix = _normalized_mix(mix, settings.shaping)
    return Dialogue(mix, turns, timeline, seed, frames=frames, kinds=modes)


def _check_settings(settings: DialogueSettings) -> None:
    if not 0.0 <= settings.pause <= 10.0:
        raise Qwen3TTSError(f"pause must be 0-10 seconds (got {settings.pause})", "e.g. --pause 0.4")
    if settings.batch < 1:
        raise Qwen3TTSError(f"batch must be >= 1 (got {settings.batch})", "e.g. --batch 8")
    if settings.shaping is not None:
        settings.shaping.check()


def _voice(cast: Cast, speaker: str) -> CastVoice:
    voice = cast.get(speaker)
    assert voice is not None  # check_covers
    return voice


def _prepared_voices(tts: TTS, cast: Cast, speakers: set[str], language: str) -> dict[str, dict[str, Any]]:
    """Request options per speaker; a reference recording is cloned once however many turns it speaks."""
    prepared: dict[str, dict[str, Any]] = {}
    for speaker in sorted(speakers):
        voice = _voice(cast, speaker)
        if voice.source == PRESET:
            prepared[speaker] = {"speaker": voice.value, "instruct": voice.instruct}
        elif voice.source == DESIGN:
            prepared[speaker] = {"instruct": voice.value}
        elif voice.source == PACK:
            prepared[speaker] = {"voice": tts.voices.resolve(voice.value, tts.model.talker_hidden)}
        else:
            reference = voice.audio if voice.audio is not None else voice.value
            pack = tts.clone(
                reference, voice.ref_text, name=speaker, language=language, x_vector_only=voice.x_vector_only
            )
            prepared[speaker] = {"voice": pack}
    return prepared


def _options(voice: dict[str, Any], settings: DialogueSettings, seed: int, index: int) -> dict[str, Any]:
    options = dict(voice)
    options.update(
        language=settings.language,
        seed=turn_seed(seed, index),
        max_frames=settings.max_frames,
        sampling=settings.sampling,
        lexicon=settings.lexicon,
    )
    return options


def _shaped_turn(samples: np.ndarray, shaping: Shaping | None) -> np.ndarray:
    """Per-turn shaping: trim, pauses, speed. Normalization is for the whole mix, not here."""
    if shaping is None:
        return samples
    from dataclasses import replace

    from qwen3tts_cli.shaping import shape

    per_turn = replace(shaping, normalize=None)
    return samples if per_turn.is_identity else shape(samples, SAMPLE_RATE, per_turn)


def equal_loudness(turns: list[np.ndarray]) -> list[np.ndarray]:
    """Every turn at the same loudness, so no speaker is louder than another (the mix handles peaks)."""
    from qwen3tts_cli.shaping import loudness_gain

    return [turn * np.float32(loudness_gain(turn, SAMPLE_RATE, TURN_LOUDNESS_LUFS)) for turn in turns]


def _normalized_mix(mix: np.ndarray, shaping: Shaping | None) -> np.ndarray:
    if shaping is None or shaping.normalize is None:
        return mix
    from qwen3tts_cli.shaping import normalization_gain

    mono = mix if mix.ndim == 1 else mix.sum(axis=1)
    gain = normalization_gain(mono, SAMPLE_RATE, shaping)
    return (mix * np.float32(gain)).astype(np.float32)
