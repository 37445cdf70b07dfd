"""Design a voice, then keep it: a VoiceDesign sample cloned by a Base model into a voice pack.

A described voice (`say --design "..."`) is drawn anew by every request, so a book read sentence by
sentence would change voice. Kept as a pack, the voice is the same for every line the Base model speaks.

The official "Voice Design then Clone" workflow (QwenLM/Qwen3-TTS README, section of that name): the
1.7B VoiceDesign model's `generate_voice_design(text=ref_text, language="English", instruct=description)`
speaks one short reference line (their example: a single persona line of about 15 words); the 1.7B Base
model's `create_voice_clone_prompt(ref_audio=(wav, sr), ref_text=ref_text)` turns it into a reusable
prompt with the default `x_vector_only_mode=False`, i.e. ICL: the speaker embedding plus the codec codes of
the clip with the sample text as their transcript; `generate_voice_clone(voice_clone_prompt=...)` then
reuses that prompt for every line. The clip goes from one model to the other as float samples at 24 kHz,
never through a 16-bit file. We do the same: `design_sample` is the first step (one unsplit utterance),
`keep_designed_voice` the second (an ICL `VoicePack`, which holds exactly what the clone prompt holds), and
the sample text defaults to a neutral 1-2 sentence line of the chosen language (DEFAULT_SAMPLES).

Memory: each step needs only its own model. `design_voice` takes both loaded models for callers that have
them; the CLI (`qwen3tts clone --design`) loads the VoiceDesign model, designs, closes it, and only then
loads the Base model, so the two are never in memory together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qwen3tts_cli import __version__, catalog, spec
from qwen3tts_cli import audio as audio_io
from qwen3tts_cli.errors import Qwen3TTSError

if TYPE_CHECKING:
    from qwen3tts_cli.tts import TTS, SamplingOptions
    from qwen3tts_cli.voices import VoicePack

# One neutral line per language, 8-10 s when spoken: long enough to carry a voice (3-20 s is best for
# cloning), short enough to be read in one breath. Varied sounds, no names, numbers or abbreviations.
DEFAULT_SAMPLES: dict[str, str] = {
    "english": (
        "The morning light came through the kitchen window, and for a moment everything was quiet. "
        "Then the kettle began to sing, and the day started again."
    ),
    "chinese": "清晨的阳光洒进厨房的窗户，一切都安静了片刻。接着水壶响了起来，新的一天又开始了。",
    "japanese": (
        "朝の光が台所の窓から差し込み、しばらくの間すべてが静かでした。"
        "やがてやかんが鳴り始め、また新しい一日が始まりました。"
    ),
    "korean": (
        "아침 햇살이 부엌 창문으로 들어오자 잠시 모든 것이 조용해졌습니다. "
        "곧 주전자가 울리기 시작했고, 하루가 다시 시작되었습니다."
    ),
    "german": (
        "Das Morgenlicht fiel durch das Küchenfenster, und für einen Moment war alles still. "
        "Dann begann der Wasserkessel zu pfeifen, und der Tag fing von vorne an."
    ),
    "french": (
        "La lumière du matin entrait par la fenêtre de la cuisine, et pendant un instant tout était calme. "
        "Puis la bouilloire s'est mise à siffler, et la journée a recommencé."
    ),
    "spanish": (
        "La luz de la mañana entraba por la ventana de la cocina y, por un momento, todo quedó en silencio. "
        "Luego la tetera empezó a silbar y el día comenzó de nuevo."
    ),
    "italian": (
        "La luce del mattino entrava dalla finestra della cucina e per un attimo tutto fu silenzioso. "
        "Poi il bollitore cominciò a fischiare e la giornata ricominciò."
    ),
    "portuguese": (
        "A luz da manhã entrava pela janela da cozinha e, por um momento, tudo ficou em silêncio. "
        "Depois a chaleira começou a apitar e o dia recomeçou."
    ),
    "russian": (
        "Утренний свет проникал в кухонное окно, и на мгновение всё стихло. "
        "Потом засвистел чайник, и день начался снова."
    ),
}
DEFAULT_SAMPLE_LANGUAGE = "english"
# A sample is one utterance; a model that does not stop is cut here (30 s, above the 20 s a reference needs).
SAMPLE_MAX_FRAMES = round(30 * spec.SAMPLE_RATE / spec.SAMPLES_PER_FRAME)


def default_sample_text(language: str = "auto") -> str:
    """The default sample line for `language` ("auto": English)."""
    key = language.lower()
    if key == "auto":
        key = DEFAULT_SAMPLE_LANGUAGE
    if key not in DEFAULT_SAMPLES:
        raise Qwen3TTSError(
            f"no default sample text for language {language!r}",
            f"pass the sample text yourself, or use one of: {', '.join(DEFAULT_SAMPLES)}",
        )
    return DEFAULT_SAMPLES[key]


def model_facts(tts: TTS) -> dict[str, str]:
    """What identifies a loaded model in a pack's provenance: its id and LM weight type.

    The id is the Hugging Face repo a catalog model came from, else the folder name of the checkpoint or
    converted model (never a full path: packs are shared)."""
    manifest = tts.model.manifest
    source = manifest.source_repo
    if source and catalog.find(source) is not None:
        ident = catalog.get(source).repo
    else:
        ident = Path(source).name if source else tts.model.folder.name
    return {"id": ident, "quant": manifest.quant}


@dataclass(frozen=True)
class DesignedSample:
    """The VoiceDesign model's reading of the sample text: the audio a designed voice is kept from."""

    samples: np.ndarray  # float32 mono at 24 kHz, as the model produced it
    text: str  # what is said (the transcript the clone uses)
    language: str
    description: str
    seed: int
    model: dict[str, str]  # model_facts of the VoiceDesign model
    capped: bool  # the model did not stop by itself: cut at max_frames

    @property
    def seconds(self) -> float:
        return len(self.samples) / spec.SAMPLE_RATE

    def reference(self) -> audio_io.ReferenceAudio:
        """The samples as clone input, unchanged (no file, so no file checksum)."""
        return audio_io.ReferenceAudio(self.samples, spec.SAMPLE_RATE, 1, None)


def design_sample(
    design: TTS,
    description: str,
    *,
    text: str | None = None,
    language: str = "auto",
    seed: int | None = None,
    max_frames: int = SAMPLE_MAX_FRAMES,
    sampling: SamplingOptions | None = None,
) -> DesignedSample:
    """Step 1: the VoiceDesign model speaks the sample text in the described voice, as one utterance.

    Without `text`, the default line of `language` (English for "auto", and then the language is set to
    English, as the official example does). Without `seed`, a random one, recorded so the sample can be
    made again. A sample that is silent or under a second is an error; short, long or clipped ones warn.
    """
    if design.kind != spec.KIND_VOICE_DESIGN:
        raise Qwen3TTSError(
            f"designing a voice needs a VoiceDesign model; this one is {design.kind}",
            "use --design-model 1.7b-design (or leave it out to get it)",
        )
    if not description or not description.strip():
        raise Qwen3TTSError("a designed voice needs a description", 'e.g. --design "A calm, low male voice"')
    if text is None:
        text = default_sample_text(language)
        if language.lower() == "auto":
            language = DEFAULT_SAMPLE_LANGUAGE
    if not text.strip():
        raise Qwen3TTSError("the sample text is empty", "pass words to speak with --text, or leave it out")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") >> 1
    result = design.synthesize(
        text,
        instruct=description.strip(),
        language=language,
        seed=seed,
        split=False,  # one utterance, as the official generate_voice_design speaks it
        max_frames=max_frames,
        sampling=sampling,
    )
    samples = np.asarray(result.samples, dtype=np.float32)
    frames = sum(len(codes) for codes in result.codes)
    _check_sample(samples)
    capped = frames >= max_frames
    if capped:
        audio_io.warn(
            f"the designed sample did not end by itself and was cut at {max_frames} frames "
            f"({max_frames * spec.SAMPLES_PER_FRAME / spec.SAMPLE_RATE:.0f} s); try another seed or a "
            "shorter sample text"
        )
    return DesignedSample(
        samples=samples,
        text=result.pieces[0],  # the text as spoken (leading [style] tags, if any, are not words)
        language=language.lower(),
        description=description.strip(),
        seed=seed,
        model=model_facts(design),
        capped=capped,
    )


def _check_sample(samples: np.ndarray) -> None:
    retry = "try another seed, description or sample text"
    if (
        not np.all(np.isfinite(samples))
        or float(np.max(np.abs(samples), initial=0.0)) < audio_io.SILENCE_PEAK
    ):
        raise Qwen3TTSError("the designed sample is silent or invalid", retry)
    seconds = len(samples) / spec.SAMPLE_RATE
    if seconds < audio_io.MIN_SEGMENT_SECONDS:
        raise Qwen3TTSError(
            f"the designed sample is only {seconds:.2f} s long (the model stopped early)", retry
        )
    audio_io.reference_warnings("designed sample", samples, spec.SAMPLE_RATE)


def keep_designed_voice(
    base: TTS, sample: DesignedSample, *, name: str = "voice", description: str | None = None
) -> VoicePack:
    """Step 2: the Base model clones the sample (ICL, the sample text as transcript) into a voice pack.

    The pack's description defaults to the design description; its provenance records the recipe."""
    pack = base.clone(
        sample.reference(),
        sample.text,
        name=name,
        language=sample.language,
        description=sample.description if description is None else description,
    )
    provenance: dict[str, Any] = {
        "method": "design",
        "description": sample.description,
        "sample_text": sample.text,
        "language": sample.language,
        "seed": sample.seed,
        "design_model": sample.model,
        "base_model": model_facts(base),
        "tool_version": __version__,
    }
    return replace(pack, provenance=provenance)


def design_voice(
    design: TTS,
    base: TTS,
    description: str,
    *,
    name: str = "voice",
    text: str | None = None,
    language: str = "auto",
    seed: int | None = None,
    pack_description: str | None = None,
    max_frames: int = SAMPLE_MAX_FRAMES,
) -> VoicePack:
    """Both steps with two loaded models (a VoiceDesign and a Base one); see the module docstring.

    Holding both models costs the memory of both: load, design, close, then load the Base model
    (`design_sample`, then `keep_designed_voice`) when memory is short."""
    sample = design_sample(
        design, description, text=text, language=language, seed=seed, max_frames=max_frames
    )
    return keep_designed_voice(base, sample, name=name, description=pack_description)


__all__ = [
    "DEFAULT_SAMPLES",
    "DesignedSample",
    "default_sample_text",
    "design_sample",
    "design_voice",
    "keep_designed_voice",
    "model_facts",
]
