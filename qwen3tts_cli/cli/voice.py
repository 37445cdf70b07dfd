"""Who speaks and with which model: the `say` options resolved before and after the model is loaded.

Which model when none is named (`catalog.default_model`): `--voice`/`--ref-audio` clone (Base 0.6B),
`--design "description"` designs a voice (VoiceDesign 1.7B), otherwise a preset speaker (CustomVoice 0.6B,
or 1.7B when a style is asked for: `--instruct`, a voice attribute or a leading [tag], which 0.6B ignores).
Everything checkable without the model is checked first, so a typo never costs a download.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwen3tts_cli import catalog, spec
from qwen3tts_cli.cli.common import DeviceChoice, download_messages, usage_error
from qwen3tts_cli.errors import Qwen3TTSError

if TYPE_CHECKING:
    from qwen3tts_cli.tts import TTS, Request, SamplingOptions


@dataclass(frozen=True)
class VoiceChoice:
    """Who speaks: a preset, a described voice, or a cloned one (pack or inline reference)."""

    speaker: str | None = None
    language: str = "auto"
    instruct: str | None = None
    design: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    voice: str | None = None
    ref_audio: Path | None = None
    ref_text: str | None = None
    x_vector_only: bool = False

    @property
    def cloning(self) -> bool:
        return self.voice is not None or self.ref_audio is not None

    def mode(self) -> str:
        """The catalog mode these options ask for; conflicting options are a usage error."""
        if self.voice is not None and self.ref_audio is not None:
            raise usage_error("--voice and --ref-audio both given", "use a saved voice OR clone inline")
        if self.design is not None:
            if self.cloning or self.speaker is not None:
                raise usage_error(
                    "--design describes a new voice; it cannot be combined with --speaker, --voice or "
                    "--ref-audio",
                    "drop one of them",
                )
            if self.instruct is not None:
                raise usage_error("--design and --instruct both given", "put the description in --design")
            if not self.design.strip():
                raise usage_error("--design needs a description", 'e.g. --design "A calm, low male voice"')
            return catalog.MODE_DESIGN
        if self.cloning:
            if self.speaker is not None:
                raise usage_error(
                    "--speaker is a preset voice; it cannot be combined with a cloned voice", ""
                )
            return catalog.MODE_CLONE
        return catalog.MODE_PRESETS

    @property
    def styled(self) -> bool:
        return self.instruct is not None or bool(self.attributes)


@dataclass(frozen=True)
class GenerationChoice:
    """How to generate: sampling, seed, frame limit, splitting, prompt layout."""

    sampling: SamplingOptions
    seed: int | None = None
    max_frames: int | None = None
    split: bool = True
    streaming_text: bool | None = None  # None: the official default of the mode
    batch: int = 1  # text pieces generated together


def check_speakable(spoken: str) -> bool:
    """Refuse text with nothing to say (before any model is loaded); returns whether it has [style] tags."""
    from qwen3tts_cli.text import require_speakable, split_leading_tags

    tags, words = split_leading_tags(spoken)
    require_speakable(words)
    return bool(tags)


def model_for(model: str | Path | None, mode: str, styled: bool) -> str | Path:
    if model is not None:
        return model
    return catalog.default_model(mode, instruct=styled).name


def check_catalog_names(model: str | Path, choice: VoiceChoice) -> None:
    """Every released model knows the same languages and speakers: catch typos before a download."""
    if isinstance(model, Path) or catalog.find(model) is None:
        return  # a folder: the library checks against its own config after loading
    languages = ["auto", *spec.LANGUAGE_IDS]
    if choice.language.lower() not in languages:
        raise Qwen3TTSError(f"unknown language {choice.language!r}", f"use one of: {', '.join(languages)}")
    if choice.speaker is not None and choice.speaker.lower() not in spec.SPEAKER_IDS:
        raise Qwen3TTSError(
            f"unknown speaker {choice.speaker!r}", f"use one of: {', '.join(spec.SPEAKER_IDS)}"
        )


def load_tts(
    model: str | Path,
    mode: str,
    quant: str | None,
    threads: int | None,
    exact: bool,
    voices_dir: Path | None,
    quiet: bool,
    max_batch: int = 1,
    max_waiting: int = 32,
    reserved_slots: int = 0,
    devices: DeviceChoice | None = None,
) -> TTS:
    from qwen3tts_cli.tts import TTS

    return TTS.load(
        model,
        mode=mode,
        quant=quant,
        threads=threads,
        exact=exact,
        voices_dir=voices_dir,
        max_batch=max_batch,
        max_waiting=max_waiting,
        reserved_slots=reserved_slots,
        progress=download_messages(quiet),
        **(devices or DeviceChoice()).load_options(),
    )


def build_request(tts: TTS, spoken: str, choice: VoiceChoice, generation: GenerationChoice) -> Request:
    """The library request; cloning inline (--ref-audio) happens here, with the loaded model."""
    from qwen3tts_cli.tts import Request

    if choice.design is not None and tts.kind != spec.KIND_VOICE_DESIGN:
        raise Qwen3TTSError(
            f"--design needs a VoiceDesign model; this one is {tts.kind}",
            "use --model 1.7b-design (or drop --model to get it)",
        )
    streaming = generation.streaming_text
    return Request(
        text=spoken,
        speaker=choice.speaker,
        language=choice.language,
        instruct=choice.design if choice.design is not None else choice.instruct,
        attributes=choice.attributes or None,
        voice=_voice(tts, choice),
        non_streaming_text=None if streaming is None else not streaming,
        sampling=generation.sampling,
        seed=generation.seed,
        max_frames=generation.max_frames,
        split=generation.split,
        batch=generation.batch,
    )


def _voice(tts: TTS, choice: VoiceChoice) -> Any:
    """The VoicePack to speak with: cloned now from --ref-audio, or read from the library / a file."""
    if choice.ref_audio is not None:
        if choice.x_vector_only and choice.ref_text:
            from qwen3tts_cli.audio import warn

            warn("--ref-text is not used with --x-vector-only")
        return tts.clone(
            choice.ref_audio,
            choice.ref_text,
            name="inline",
            language=choice.language,
            x_vector_only=choice.x_vector_only,
        )
    if choice.voice is not None:
        return tts.voices.resolve(choice.voice, talker_hidden_size=tts.model.talker_hidden)
    return None


DEFAULT_BATCH = 8  # measured (0.6B q8_0, 2 cores): long text RTF 1.93 solo -> 1.21 with 8 pieces per batch


def batch_size(requested: int | None, spoken: str, split: bool, play: bool) -> int:
    """Pieces generated together: 1 when playing (each piece must keep up on its own) or for one piece."""
    from qwen3tts_cli.text import split_leading_tags, split_text

    if not split:
        return 1
    wanted = requested if requested is not None else (1 if play else DEFAULT_BATCH)
    pieces = 0
    for pieces, _ in enumerate(split_text(split_leading_tags(spoken)[1]), start=1):  # as TTS.plan splits
        if pieces >= wanted:
            break
    return max(1, min(wanted, pieces))
