"""The talker's prompt ("dual track") for every mode, laid out exactly as the official model does it.

Every talker input position is the sum of a text-track vector (`text_projection(text_embedding(id))`)
and a codec-track vector (`codec_embedding(id)`, a speaker vector, or the sum of a frame's 16 code
embeddings); the role and instruct tokens carry the text track only. The result is a `Prompt`: the prefill
sequence, the trailing text fed one vector per generated frame, and the `tts_pad` vector used once the
trailing text runs out.

Inputs are the token ids of the official templates (see `text_tokenizer.py`): the target
`<|im_start|>assistant\\n{text}<|im_end|>\\n<|im_start|>assistant\\n`, the reference transcript
`<|im_start|>assistant\\n{ref}<|im_end|>\\n` and the instruct `<|im_start|>user\\n{instruct}<|im_end|>\\n`.
Model facts (ids, languages, speakers, dialects, size tag) come from the checkpoint's config.json.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from qwen3tts_cli import spec
from qwen3tts_cli.errors import Qwen3TTSError

AUTO_LANGUAGE = "auto"
ROLE_LENGTH = 3  # <|im_start|> assistant \n
TARGET_TAIL_LENGTH = 5  # <|im_end|> \n <|im_start|> assistant \n
REF_TAIL_LENGTH = 2  # <|im_end|> \n


class Embedder(Protocol):
    """Embedding lookups in talker width (the real one is `engine.tables.Tables`)."""

    def text_embed(self, ids: np.ndarray) -> np.ndarray:
        """Text track of `ids`: [n, H] float32."""
        ...

    def codec_embed(self, group: int, ids: np.ndarray) -> np.ndarray:
        """Codec track of `ids` in code group `group` (0 = talker codec embedding): [n, H] float32."""
        ...


@dataclass(frozen=True)
class Prompt:
    prefill: np.ndarray  # [L, H] talker inputs for the prefill
    trailing: np.ndarray  # [T, H] text track added to the input of generation step t (t < T)
    tts_pad: np.ndarray  # [H] text track added once the trailing text is used up

    def text_for_step(self, step: int) -> np.ndarray:
        return self.trailing[step] if step < len(self.trailing) else self.tts_pad


@dataclass(frozen=True)
class PromptConfig:
    """The model facts the prompt needs, read from config.json (defaults: the released values)."""

    tts_bos_id: int = spec.TTS_BOS_ID
    tts_eos_id: int = spec.TTS_EOS_ID
    tts_pad_id: int = spec.TTS_PAD_ID
    codec_pad_id: int = spec.CODEC_PAD_ID
    codec_bos_id: int = spec.CODEC_BOS_ID
    codec_think_id: int = spec.CODEC_THINK_ID
    codec_nothink_id: int = spec.CODEC_NOTHINK_ID
    codec_think_bos_id: int = spec.CODEC_THINK_BOS_ID
    codec_think_eos_id: int = spec.CODEC_THINK_EOS_ID
    num_code_groups: int = spec.NUM_CODE_GROUPS
    language_ids: Mapping[str, int] = field(default_factory=lambda: dict(spec.LANGUAGE_IDS))
    speaker_ids: Mapping[str, int] = field(default_factory=dict)
    speaker_dialects: Mapping[str, str | bool] = field(default_factory=dict)
    model_size: str = ""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PromptConfig:
        talker = config.get("talker_config", {})
        return cls(
            tts_bos_id=int(config.get("tts_bos_token_id", spec.TTS_BOS_ID)),
            tts_eos_id=int(config.get("tts_eos_token_id", spec.TTS_EOS_ID)),
            tts_pad_id=int(config.get("tts_pad_token_id", spec.TTS_PAD_ID)),
            codec_pad_id=int(talker.get("codec_pad_id", spec.CODEC_PAD_ID)),
            codec_bos_id=int(talker.get("codec_bos_id", spec.CODEC_BOS_ID)),
            codec_think_id=int(talker.get("codec_think_id", spec.CODEC_THINK_ID)),
            codec_nothink_id=int(talker.get("codec_nothink_id", spec.CODEC_NOTHINK_ID)),
            codec_think_bos_id=int(talker.get("codec_think_bos_id", spec.CODEC_THINK_BOS_ID)),
            codec_think_eos_id=int(talker.get("codec_think_eos_id", spec.CODEC_THINK_EOS_ID)),
            num_code_groups=int(talker.get("num_code_groups", spec.NUM_CODE_GROUPS)),
            language_ids={k.lower(): int(v) for k, v in talker.get("codec_language_id", {}).items()},
            speaker_ids={k.lower(): int(v) for k, v in (talker.get("spk_id") or {}).items()},
            speaker_dialects={k.lower(): v for k, v in (talker.get("spk_is_dialect") or {}).items()},
            model_size=str(config.get("tts_model_size") or ""),
        )

    @property
    def supported_languages(self) -> list[str]:
        """ "auto" plus every language except the dialects (which only speakers select), as officially."""
        return [AUTO_LANGUAGE] + [name for name in self.language_ids if "dialect" not in name]

    @property
    def drops_custom_voice_instruct(self) -> bool:
        # The official wrapper tests `tts_model_size in "0b6"` (a substring test) and then ignores instruct.
        return self.model_size in "0b6"


@dataclass(frozen=True)
class VoiceClone:
    """A Base-model voice: the speaker embedding, plus the reference codes and transcript for ICL cloning."""

    speaker_embedding: np.ndarray  # [H] speaker-encoder output (talker width)
    ref_codes: np.ndarray | None = None  # [F, 16] codes of the reference audio (None: x-vector only)
    ref_ids: Sequence[int] | None = None  # ids of the reference-text template (required with ref_codes)

    @property
    def icl(self) -> bool:
        return self.ref_codes is not None


# ---- public builders, one per mode ---------------------------------------------------------------------
def custom_voice_prompt(
    config: PromptConfig,
    embedder: Embedder,
    input_ids: Sequence[int],
    speaker: str | None,
    language: str = AUTO_LANGUAGE,
    instruct_ids: Sequence[int] | None = None,
    non_streaming_mode: bool = True,
) -> Prompt:
    """CustomVoice: a preset speaker (its codec id embedding) and, except on 0.6B models, an instruct."""
    if config.drops_custom_voice_instruct:
        instruct_ids = None
    return build_prompt(
        config,
        embedder,
        input_ids,
        language=language,
        speaker=speaker,
        instruct_ids=instruct_ids,
        non_streaming_mode=non_streaming_mode,
    )


def voice_design_prompt(
    config: PromptConfig,
    embedder: Embedder,
    input_ids: Sequence[int],
    instruct_ids: Sequence[int] | None,
    language: str = AUTO_LANGUAGE,
    non_streaming_mode: bool = True,
) -> Prompt:
    """VoiceDesign: no speaker slot; the voice comes from the instruct."""
    return build_prompt(
        config,
        embedder,
        input_ids,
        language=language,
        instruct_ids=instruct_ids,
        non_streaming_mode=non_streaming_mode,
    )


def voice_clone_prompt(
    config: PromptConfig,
    embedder: Embedder,
    input_ids: Sequence[int],
    voice: VoiceClone,
    language: str = AUTO_LANGUAGE,
    non_streaming_mode: bool = False,
) -> Prompt:
    """Base: the speaker embedding in the speaker slot; ICL adds the reference transcript and codes."""
    return build_prompt(
        config, embedder, input_ids, language=language, voice=voice, non_streaming_mode=non_streaming_mode
    )


def build_prompt(
    config: PromptConfig,
    embedder: Embedder,
    input_ids: Sequence[int],
    *,
    language: str = AUTO_LANGUAGE,
    speaker: str | None = None,
    instruct_ids: Sequence[int] | None = None,
    voice: VoiceClone | None = None,
    non_streaming_mode: bool,
) -> Prompt:
    """The official `Qwen3TTSForConditionalGeneration.generate` prompt for one request."""
    ids = _check_target_ids(input_ids)
    tts_bos, tts_eos, tts_pad = embedder.text_embed(
        np.array([config.tts_bos_id, config.tts_eos_id, config.tts_pad_id], dtype=np.int64)
    )
    codec = _codec_prefix(config, embedder, language, speaker, voice)
    parts: list[np.ndarray] = []
    if instruct_ids is not None and len(instruct_ids) > 0:  # the official wrapper maps "" to None
        parts.append(embedder.text_embed(np.asarray(instruct_ids, dtype=np.int64)))
    parts.append(embedder.text_embed(ids[:ROLE_LENGTH]))
    # tts_pad over the think/language/speaker slots, tts_bos over codec_pad; codec_bos comes with the text.
    head_text = np.concatenate([np.repeat(tts_pad[None], len(codec) - 2, axis=0), tts_bos[None]])
    parts.append(head_text + codec[:-1])
    codec_bos = codec[-1]
    text_ids = ids[ROLE_LENGTH:-TARGET_TAIL_LENGTH]
    if voice is not None and voice.icl:
        body, trailing = _icl_body(config, embedder, text_ids, voice, tts_eos, tts_pad, non_streaming_mode)
    elif non_streaming_mode:
        body, trailing = _full_text_body(config, embedder, text_ids, codec_bos, tts_eos, tts_pad)
    else:
        body, trailing = _streaming_text_body(embedder, ids, codec_bos, tts_eos)
    parts.append(body)
    return Prompt(
        prefill=_as_f32(np.concatenate(parts, axis=0)), trailing=_as_f32(trailing), tts_pad=_as_f32(tts_pad)
    )


# ---- codec-track prefix --------------------------------------------------------------------------------
def language_id_for(config: PromptConfig, language: str, speaker: str | None) -> int | None:
    """The codec language id (None for "auto"), with the official dialect rule for dialect speakers."""
    name = language.lower()
    if name not in config.supported_languages:
        raise Qwen3TTSError(
            f"language {language!r} is not supported by this model",
            f"use one of: {', '.join(config.supported_languages)}",
        )
    language_id = None if name == AUTO_LANGUAGE else config.language_ids[name]
    # Dialect speakers speak their dialect when the language is Chinese or left to the model.
    if speaker and name in ("chinese", AUTO_LANGUAGE):
        dialect = config.speaker_dialects.get(speaker.lower(), False)
        if dialect is not False and dialect is not None:
            language_id = config.language_ids[str(dialect).lower()]
    return language_id


def _codec_prefix(
    config: PromptConfig, embedder: Embedder, language: str, speaker: str | None, voice: VoiceClone | None
) -> np.ndarray:
    """[think.., language?, think_eos, speaker?, codec_pad, codec_bos] codec-track vectors."""
    if voice is not None and speaker:
        raise Qwen3TTSError("a preset speaker and a cloned voice were both given", "pick one of them")
    language_id = language_id_for(config, language, None if voice is not None else speaker)
    if language_id is None:
        think_ids = [config.codec_nothink_id, config.codec_think_bos_id, config.codec_think_eos_id]
    else:
        think_ids = [config.codec_think_id, config.codec_think_bos_id, language_id, config.codec_think_eos_id]
    rows = [embedder.codec_embed(0, np.asarray(think_ids, dtype=np.int64))]
    speaker_vector = _speaker_vector(config, embedder, speaker, voice)
    if speaker_vector is not None:
        rows.append(speaker_vector[None])
    rows.append(
        embedder.codec_embed(0, np.asarray([config.codec_pad_id, config.codec_bos_id], dtype=np.int64))
    )
    return np.concatenate(rows, axis=0)


def _speaker_vector(
    config: PromptConfig, embedder: Embedder, speaker: str | None, voice: VoiceClone | None
) -> np.ndarray | None:
    if voice is not None:
        # The Base speaker-encoder output sits in the speaker slot unchanged.
        return np.asarray(voice.speaker_embedding, dtype=np.float32).reshape(-1)
    if not speaker:
        return None
    speaker_id = config.speaker_ids.get(speaker.lower())
    if speaker_id is None:
        known = ", ".join(config.speaker_ids) or "none (this model has no preset speakers)"
        raise Qwen3TTSError(f"speaker {speaker!r} is not supported by this model", f"use one of: {known}")
    return embedder.codec_embed(0, np.asarray([speaker_id], dtype=np.int64))[0]


# ---- prompt bodies -------------------------------------------------------------------------------------
def _streaming_text_body(
    embedder: Embedder, ids: np.ndarray, codec_bos: np.ndarray, tts_eos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """First text token rides with codec_bos; the rest (then tts_eos) is fed one per generated frame."""
    body = embedder.text_embed(ids[ROLE_LENGTH : ROLE_LENGTH + 1]) + codec_bos
    rest = embedder.text_embed(ids[ROLE_LENGTH + 1 : -TARGET_TAIL_LENGTH])
    return body, np.concatenate([rest, tts_eos[None]], axis=0)


def _full_text_body(
    config: PromptConfig,
    embedder: Embedder,
    text_ids: np.ndarray,
    codec_bos: np.ndarray,
    tts_eos: np.ndarray,
    tts_pad: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """All text (then tts_eos) over codec_pad, then tts_pad over codec_bos; nothing trails."""
    text = np.concatenate([embedder.text_embed(text_ids), tts_eos[None]], axis=0)
    codec_pad = embedder.codec_embed(0, np.asarray([config.codec_pad_id], dtype=np.int64))
    body = np.concatenate([text + codec_pad, (tts_pad + codec_bos)[None]], axis=0)
    return body, tts_pad[None]


def _icl_body(
    config: PromptConfig,
    embedder: Embedder,
    text_ids: np.ndarray,
    voice: VoiceClone,
    tts_eos: np.ndarray,
    tts_pad: np.ndarray,
    non_streaming_mode: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference transcript + target text against codec_bos + reference frames (official overlap rule)."""
    ref_ids = _check_ref_ids(voice.ref_ids)
    text = np.concatenate(
        [
            embedder.text_embed(np.concatenate([ref_ids[ROLE_LENGTH:-REF_TAIL_LENGTH], text_ids])),
            tts_eos[None],
        ]
    )
    codec_bos = embedder.codec_embed(0, np.asarray([config.codec_bos_id], dtype=np.int64))
    codec = np.concatenate([codec_bos, frame_embeddings(embedder, voice.ref_codes, config.num_code_groups)])
    if non_streaming_mode:
        codec_pad = embedder.codec_embed(0, np.asarray([config.codec_pad_id], dtype=np.int64))
        return np.concatenate([text + codec_pad, codec + tts_pad]), tts_pad[None]
    if len(text) > len(codec):
        return text[: len(codec)] + codec, text[len(codec) :]
    padded = np.concatenate([text, np.repeat(tts_pad[None], len(codec) - len(text), axis=0)])
    return padded + codec, tts_pad[None]


def frame_embeddings(embedder: Embedder, codes: np.ndarray | None, num_groups: int) -> np.ndarray:
    """Per frame, the sum of its code embeddings over all groups: [F, 16] codes -> [F, H]."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[1] != num_groups or len(codes) == 0:
        raise Qwen3TTSError(
            f"reference codes must have shape [frames, {num_groups}], got {list(codes.shape)}",
            "encode the reference audio with this model's codec encoder",
        )
    total = embedder.codec_embed(0, codes[:, 0]).astype(np.float32)
    for group in range(1, num_groups):
        total = total + embedder.codec_embed(group, codes[:, group])
    return total


# ---- input checks --------------------------------------------------------------------------------------
def _check_target_ids(input_ids: Sequence[int]) -> np.ndarray:
    ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
    if len(ids) < ROLE_LENGTH + TARGET_TAIL_LENGTH + 1:
        raise Qwen3TTSError(
            "the text to speak is empty",
            "pass some text (the ids must follow the official assistant template)",
        )
    return ids


def _check_ref_ids(ref_ids: Sequence[int] | None) -> np.ndarray:
    if ref_ids is None or len(ref_ids) <= ROLE_LENGTH + REF_TAIL_LENGTH:
        raise Qwen3TTSError(
            "voice cloning with reference audio needs the reference transcript",
            "pass the text spoken in the reference audio, or use x-vector-only cloning",
        )
    return np.asarray(ref_ids, dtype=np.int64).reshape(-1)


def _as_f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)
