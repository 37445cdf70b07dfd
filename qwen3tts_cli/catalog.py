"""The released Qwen3-TTS 12 Hz models by short name: their Hugging Face repos and what each can do."""

from __future__ import annotations

import os
from dataclasses import dataclass

from qwen3tts_cli import spec
from qwen3tts_cli.errors import Qwen3TTSError

# LM quantizations the converter writes (convert/quantize.py QUANT_TYPES, kept equal by a test). q8_0 keeps
# parity-level quality at half the size of f16 and is the fastest CPU type measured in runtime-probe.md.
QUANTS = ("f32", "f16", "q8_0", "q5_k_m", "q4_k_m", "q4_0")
DEFAULT_QUANT = "q8_0"

# What a user asks for; each mode needs one model kind.
MODE_PRESETS = "presets"  # one of the 9 built-in speakers (CustomVoice)
MODE_DESIGN = "design"  # a voice described in words (VoiceDesign)
MODE_CLONE = "clone"  # a voice copied from reference audio (Base)
MODES = (MODE_PRESETS, MODE_DESIGN, MODE_CLONE)

KIND_FOR_MODE = {  # the model kind each mode needs
    MODE_PRESETS: spec.KIND_CUSTOM_VOICE,
    MODE_DESIGN: spec.KIND_VOICE_DESIGN,
    MODE_CLONE: spec.KIND_BASE,
}

# Official `tts_model_size` tags. The official wrapper drops CustomVoice instructions when
# `tts_model_size in "0b6"` (a substring test, mirrored in `instruct_honoured`).
SIZE_0_6B = "0b6"
SIZE_1_7B = "1b7"


def instruct_honoured(kind: str, size_tag: str | None) -> bool:
    """Whether an instruction (style/emotion text) changes the output of a model of this kind and size."""
    if kind == spec.KIND_VOICE_DESIGN:
        return True  # the instruction IS the voice description
    if kind == spec.KIND_CUSTOM_VOICE:
        return size_tag is None or size_tag not in SIZE_0_6B
    return False  # Base models have no instruct slot in their prompt


@dataclass(frozen=True)
class Capabilities:
    """What a model can be used for."""

    presets: bool  # built-in speakers
    instruct: bool  # an instruction text is honoured (not silently ignored)
    design: bool  # voice from a description
    clone: bool  # voice from reference audio

    @classmethod
    def of(cls, kind: str, size_tag: str | None) -> Capabilities:
        return cls(
            presets=kind == spec.KIND_CUSTOM_VOICE,
            instruct=instruct_honoured(kind, size_tag),
            design=kind == spec.KIND_VOICE_DESIGN,
            clone=kind == spec.KIND_BASE,
        )

    def supports(self, mode: str) -> bool:
        return {MODE_PRESETS: self.presets, MODE_DESIGN: self.design, MODE_CLONE: self.clone}[
            _check_mode(mode)
        ]


@dataclass(frozen=True)
class ModelEntry:
    """One released model."""

    name: str
    repo: str
    kind: str
    size_tag: str
    talker_hidden: int
    description: str
    # A repo of ready converted folders (`qwen3tts models publish`), preferred over converting `repo` here.
    converted_repo: str | None = None

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities.of(self.kind, self.size_tag)

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(mode for mode in MODES if self.capabilities.supports(mode))


_REPO_PREFIX = "Qwen/Qwen3-TTS-12Hz-"

CATALOG: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry(
            "0.6b-custom",
            _REPO_PREFIX + "0.6B-CustomVoice",
            spec.KIND_CUSTOM_VOICE,
            SIZE_0_6B,
            1024,
            "9 preset speakers; instructions are ignored",
        ),
        ModelEntry(
            "0.6b-base",
            _REPO_PREFIX + "0.6B-Base",
            spec.KIND_BASE,
            SIZE_0_6B,
            1024,
            "voice cloning from reference audio",
        ),
        ModelEntry(
            "1.7b-custom",
            _REPO_PREFIX + "1.7B-CustomVoice",
            spec.KIND_CUSTOM_VOICE,
            SIZE_1_7B,
            2048,
            "9 preset speakers with style/emotion instructions",
        ),
        ModelEntry(
            "1.7b-base",
            _REPO_PREFIX + "1.7B-Base",
            spec.KIND_BASE,
            SIZE_1_7B,
            2048,
            "voice cloning, larger model",
        ),
        ModelEntry(
            "1.7b-design",
            _REPO_PREFIX + "1.7B-VoiceDesign",
            spec.KIND_VOICE_DESIGN,
            SIZE_1_7B,
            2048,
            "a new voice from a text description",
        ),
    )
}

# Defaults favour the smallest model that does the job. The 0.6B talker holds ~0.44B weights against ~1.4B
# for 1.7B (hidden 1024 vs 2048, 28 layers each); with the shared 15-step code predictor a frame reads ~1.6x
# fewer weights, the download is 2.5 GB instead of ~4.5 GB, and the 9 preset speakers are the same.
# Presets WITH an instruction need 1.7B (0.6B would silently ignore it); design exists only as 1.7B.
_DEFAULT_FOR_MODE = {MODE_PRESETS: "0.6b-custom", MODE_DESIGN: "1.7b-design", MODE_CLONE: "0.6b-base"}
_DEFAULT_PRESETS_WITH_INSTRUCT = "1.7b-custom"


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise Qwen3TTSError(f"unknown mode {mode!r}", f"use one of {', '.join(MODES)}")
    return mode


def names() -> list[str]:
    return list(CATALOG)


def find(name: str) -> ModelEntry | None:
    """The entry for a short name or an official repo id (case-insensitive), or None."""
    key = name.strip().lower()
    for entry in CATALOG.values():
        if key in (entry.name, entry.repo.lower()):
            return entry
    return None


def get(name: str) -> ModelEntry:
    """The entry for `name`; an unknown name is an error that lists the valid ones."""
    entry = find(name)
    if entry is None:
        raise Qwen3TTSError(
            f"unknown model {name!r}",
            f"use one of {', '.join(CATALOG)} (or the path of a checkpoint or converted model folder)",
        )
    return entry


def default_model(mode: str, *, instruct: bool = False) -> ModelEntry:
    """The model used for `mode` when the user names none."""
    _check_mode(mode)
    if mode == MODE_PRESETS and instruct:
        return CATALOG[_DEFAULT_PRESETS_WITH_INSTRUCT]
    return CATALOG[_DEFAULT_FOR_MODE[mode]]


def models_for(mode: str) -> list[ModelEntry]:
    """Every catalog model that can do `mode`."""
    _check_mode(mode)
    return [entry for entry in CATALOG.values() if entry.capabilities.supports(mode)]


def model_of_kind(kind: str, size_tag: str) -> ModelEntry | None:
    """The catalog model of `kind` and size `size_tag` (e.g. the Base model matching a VoiceDesign one)."""
    for entry in CATALOG.values():
        if entry.kind == kind and entry.size_tag == size_tag:
            return entry
    return None


# "NAME=OWNER/REPO,..." names (or overrides) converted repos without a code change; "NAME=" removes one.
CONVERTED_REPOS_ENV = "QWEN3TTS_CONVERTED_REPOS"
# Set (to 1/yes/true) to always download the official checkpoint and convert it here.
CONVERT_LOCALLY_ENV = "QWEN3TTS_CONVERT_LOCALLY"


def converted_repo(entry: ModelEntry) -> str | None:
    """The converted repo to try first for `entry`, or None (then: download the official one, convert)."""
    if os.environ.get(CONVERT_LOCALLY_ENV, "").strip().lower() in ("1", "yes", "true", "on"):
        return None
    for item in os.environ.get(CONVERTED_REPOS_ENV, "").split(","):
        name, sep, repo = item.partition("=")
        if sep and name.strip().lower() == entry.name:
            return repo.strip() or None
    return entry.converted_repo


def check_quant(quant: str) -> str:
    if quant not in QUANTS:
        raise Qwen3TTSError(f"unknown quantization {quant!r}", f"use one of {', '.join(QUANTS)}")
    return quant
