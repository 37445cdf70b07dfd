"""Prompt layouts of every mode, checked symbolically with a tagged fake embedder, then against goldens.

The fake embedder puts a text id in dimension 0 and the id (+1) of code group g in dimension 1+g, so a
summed prompt row can be read back as (text id, codec ids): the order and pairing of every segment is
asserted exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qwen3tts_cli import spec
from qwen3tts_cli.engine.prompt import (
    Prompt,
    PromptConfig,
    VoiceClone,
    build_prompt,
    custom_voice_prompt,
    language_id_for,
    voice_clone_prompt,
    voice_design_prompt,
)
from qwen3tts_cli.errors import Qwen3TTSError

GROUPS = spec.NUM_CODE_GROUPS
HIDDEN = 2 + GROUPS  # text, 16 codec groups, speaker-vector marker
SPEAKER_MARK = 777.0

ROLE = [spec.IM_START_ID, spec.ASSISTANT_ID, spec.NEWLINE_ID]
TEXT = [11, 12, 13]
TARGET_IDS = (
    ROLE + TEXT + [spec.IM_END_ID, spec.NEWLINE_ID, spec.IM_START_ID, spec.ASSISTANT_ID, spec.NEWLINE_ID]
)
INSTRUCT_IDS = [spec.IM_START_ID, spec.USER_ID, spec.NEWLINE_ID, 31, 32, spec.IM_END_ID, spec.NEWLINE_ID]
REF_TEXT = [21, 22]
REF_IDS = ROLE + REF_TEXT + [spec.IM_END_ID, spec.NEWLINE_ID]

PAD, BOS, EOS = spec.TTS_PAD_ID, spec.TTS_BOS_ID, spec.TTS_EOS_ID
C_PAD, C_BOS = spec.CODEC_PAD_ID, spec.CODEC_BOS_ID
THINK, NOTHINK, T_BOS, T_EOS = (
    spec.CODEC_THINK_ID,
    spec.CODEC_NOTHINK_ID,
    spec.CODEC_THINK_BOS_ID,
    spec.CODEC_THINK_EOS_ID,
)
SPK = "speaker-vector"


class TaggedEmbedder:
    def text_embed(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids).reshape(-1)
        out = np.zeros((len(ids), HIDDEN), dtype=np.float32)
        out[:, 0] = ids
        return out

    def codec_embed(self, group: int, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids).reshape(-1)
        out = np.zeros((len(ids), HIDDEN), dtype=np.float32)
        out[:, 1 + group] = ids + 1
        return out


def speaker_vector() -> np.ndarray:
    vector = np.zeros(HIDDEN, dtype=np.float32)
    vector[-1] = SPEAKER_MARK
    return vector


def read_row(row: np.ndarray) -> tuple[Any, ...]:
    """(text id or None, codec part): the codec part is a group-0 id, a full frame tuple, SPK or None."""
    text = int(row[0]) or None
    codes = [int(v) - 1 for v in row[1 : 1 + GROUPS]]
    if row[-1] == SPEAKER_MARK:
        codec: Any = SPK
    elif all(c >= 0 for c in codes):
        codec = tuple(codes)
    elif codes[0] >= 0:
        codec = codes[0]
    else:
        codec = None
    return text, codec


def layout(rows: np.ndarray) -> list[tuple[Any, ...]]:
    return [read_row(r) for r in rows]


def config(size: str = "tiny", **talker_overrides: Any) -> PromptConfig:
    talker = {
        "codec_language_id": {**spec.LANGUAGE_IDS, **spec.DIALECT_IDS},
        "spk_id": {"Vivian": 3065, "Dylan": 2878, "Eric": 2875},
        "spk_is_dialect": {"vivian": False, "dylan": "beijing_dialect", "eric": "sichuan_dialect"},
        **talker_overrides,
    }
    return PromptConfig.from_config({"tts_model_size": size, "talker_config": talker})


def role_rows() -> list[tuple[Any, ...]]:
    return [(t, None) for t in ROLE]


def ref_frames(count: int) -> np.ndarray:
    return np.arange(count * GROUPS, dtype=np.int64).reshape(count, GROUPS) % 2048


# ---- CustomVoice -----------------------------------------------------------------------------------
def test_custom_voice_non_streaming_layout() -> None:
    prompt = custom_voice_prompt(config(), TaggedEmbedder(), TARGET_IDS, "Vivian", "English")
    assert layout(prompt.prefill) == role_rows() + [
        (PAD, THINK),
        (PAD, T_BOS),
        (PAD, spec.LANGUAGE_IDS["english"]),
        (PAD, T_EOS),
        (PAD, 3065),
        (BOS, C_PAD),
        (11, C_PAD),
        (12, C_PAD),
        (13, C_PAD),
        (EOS, C_PAD),
        (PAD, C_BOS),
    ]
    assert layout(prompt.trailing) == [(PAD, None)]
    assert read_row(prompt.tts_pad) == (PAD, None)
    assert prompt.prefill.dtype == np.float32 and prompt.prefill.shape == (14, HIDDEN)


def test_custom_voice_streaming_with_instruct_and_dialect() -> None:
    prompt = custom_voice_prompt(
        config(), TaggedEmbedder(), TARGET_IDS, "Dylan", "Auto", INSTRUCT_IDS, non_streaming_mode=False
    )
    assert layout(prompt.prefill) == [(t, None) for t in INSTRUCT_IDS] + role_rows() + [
        (PAD, THINK),  # "auto" + a dialect speaker switches nothink to think + the dialect id
        (PAD, T_BOS),
        (PAD, spec.DIALECT_IDS["beijing_dialect"]),
        (PAD, T_EOS),
        (PAD, 2878),
        (BOS, C_PAD),
        (11, C_BOS),
    ]
    assert layout(prompt.trailing) == [(12, None), (13, None), (EOS, None)]


def test_auto_language_without_dialect_uses_nothink_and_no_language_slot() -> None:
    prompt = custom_voice_prompt(config(), TaggedEmbedder(), TARGET_IDS, "vivian", "AUTO")
    assert layout(prompt.prefill)[3:8] == [
        (PAD, NOTHINK),
        (PAD, T_BOS),
        (PAD, T_EOS),
        (PAD, 3065),
        (BOS, C_PAD),
    ]


@pytest.mark.parametrize(
    ("speaker", "language", "expected"),
    [
        ("Eric", "Chinese", spec.DIALECT_IDS["sichuan_dialect"]),
        ("Eric", "auto", spec.DIALECT_IDS["sichuan_dialect"]),
        ("Dylan", "English", spec.LANGUAGE_IDS["english"]),  # the dialect rule is for chinese / auto only
        ("Vivian", "Chinese", spec.LANGUAGE_IDS["chinese"]),
        ("Vivian", "auto", None),
        (None, "auto", None),
    ],
)
def test_dialect_rule(speaker: str | None, language: str, expected: int | None) -> None:
    assert language_id_for(config(), language, speaker) == expected


def test_0b6_custom_voice_ignores_instruct_but_other_sizes_keep_it() -> None:
    embedder = TaggedEmbedder()
    small = custom_voice_prompt(config("0b6"), embedder, TARGET_IDS, "Vivian", "English", INSTRUCT_IDS)
    plain = custom_voice_prompt(config("0b6"), embedder, TARGET_IDS, "Vivian", "English")
    large = custom_voice_prompt(config("1b7"), embedder, TARGET_IDS, "Vivian", "English", INSTRUCT_IDS)
    np.testing.assert_array_equal(small.prefill, plain.prefill)
    assert len(large.prefill) == len(plain.prefill) + len(INSTRUCT_IDS)


def test_size_tag_drop_follows_the_official_substring_test() -> None:
    assert config("0b6").drops_custom_voice_instruct
    assert config("").drops_custom_voice_instruct  # `"" in "0b6"` is True in the official wrapper
    assert not config("1b7").drops_custom_voice_instruct
    assert not config("tiny").drops_custom_voice_instruct


# ---- VoiceDesign -----------------------------------------------------------------------------------
def test_voice_design_has_instruct_and_no_speaker_slot() -> None:
    prompt = voice_design_prompt(config(), TaggedEmbedder(), TARGET_IDS, INSTRUCT_IDS, "english")
    assert layout(prompt.prefill) == [(t, None) for t in INSTRUCT_IDS] + role_rows() + [
        (PAD, THINK),
        (PAD, T_BOS),
        (PAD, spec.LANGUAGE_IDS["english"]),
        (PAD, T_EOS),
        (BOS, C_PAD),
        (11, C_PAD),
        (12, C_PAD),
        (13, C_PAD),
        (EOS, C_PAD),
        (PAD, C_BOS),
    ]


def test_empty_instruct_means_no_instruct() -> None:
    with_empty = voice_design_prompt(config(), TaggedEmbedder(), TARGET_IDS, [], "english")
    without = voice_design_prompt(config(), TaggedEmbedder(), TARGET_IDS, None, "english")
    np.testing.assert_array_equal(with_empty.prefill, without.prefill)


# ---- Base: x-vector and ICL --------------------------------------------------------------------------
def test_xvector_clone_streaming_puts_the_speaker_vector_in_the_speaker_slot() -> None:
    voice = VoiceClone(speaker_embedding=speaker_vector())
    prompt = voice_clone_prompt(config(), TaggedEmbedder(), TARGET_IDS, voice, "auto")
    assert layout(prompt.prefill) == role_rows() + [
        (PAD, NOTHINK),
        (PAD, T_BOS),
        (PAD, T_EOS),
        (PAD, SPK),
        (BOS, C_PAD),
        (11, C_BOS),
    ]
    assert layout(prompt.trailing) == [(12, None), (13, None), (EOS, None)]


def _icl_prompt(frames: int, non_streaming: bool = False) -> Prompt:
    voice = VoiceClone(speaker_embedding=speaker_vector(), ref_codes=ref_frames(frames), ref_ids=REF_IDS)
    return voice_clone_prompt(config(), TaggedEmbedder(), TARGET_IDS, voice, "english", non_streaming)


def _icl_head() -> list[tuple[Any, ...]]:
    return role_rows() + [
        (PAD, THINK),
        (PAD, T_BOS),
        (PAD, spec.LANGUAGE_IDS["english"]),
        (PAD, T_EOS),
        (PAD, SPK),
        (BOS, C_PAD),
    ]


def _frame_rows(count: int) -> list[tuple[int, ...]]:
    return [tuple(int(c) for c in frame) for frame in ref_frames(count)]


def test_icl_streaming_text_longer_than_codec_trails_the_rest() -> None:
    prompt = _icl_prompt(frames=2)  # codec: bos + 2 frames = 3; text: 21 22 11 12 13 eos = 6
    frames = _frame_rows(2)
    assert layout(prompt.prefill) == _icl_head() + [(21, C_BOS), (22, frames[0]), (11, frames[1])]
    assert layout(prompt.trailing) == [(12, None), (13, None), (EOS, None)]


def test_icl_streaming_text_shorter_than_codec_is_padded() -> None:
    prompt = _icl_prompt(frames=8)  # codec 9 rows, text 6 rows -> 3 tts_pad
    frames = _frame_rows(8)
    texts = [21, 22, 11, 12, 13, EOS, PAD, PAD, PAD]
    codecs = [C_BOS, *frames]
    assert layout(prompt.prefill) == _icl_head() + list(zip(texts, codecs, strict=True))
    assert layout(prompt.trailing) == [(PAD, None)]


def test_icl_streaming_equal_lengths_trails_only_tts_pad() -> None:
    prompt = _icl_prompt(frames=5)
    assert len(prompt.prefill) == len(_icl_head()) + 6
    assert layout(prompt.trailing) == [(PAD, None)]


def test_icl_non_streaming_layout() -> None:
    prompt = _icl_prompt(frames=2, non_streaming=True)
    frames = _frame_rows(2)
    text_rows = [(t, C_PAD) for t in (21, 22, 11, 12, 13, EOS)]
    codec_rows = [(PAD, C_BOS), (PAD, frames[0]), (PAD, frames[1])]
    assert layout(prompt.prefill) == _icl_head() + text_rows + codec_rows
    assert layout(prompt.trailing) == [(PAD, None)]


def test_text_for_step_switches_to_tts_pad_after_the_trailing_text() -> None:
    prompt = custom_voice_prompt(config(), TaggedEmbedder(), TARGET_IDS, "Vivian", non_streaming_mode=False)
    assert [read_row(prompt.text_for_step(s))[0] for s in range(5)] == [12, 13, EOS, PAD, PAD]


# ---- config and errors -------------------------------------------------------------------------------
def test_config_is_read_from_config_json_fields() -> None:
    cfg = PromptConfig.from_config(
        {
            "tts_pad_token_id": 5,
            "tts_model_size": "1b7",
            "talker_config": {"codec_bos_id": 9, "codec_language_id": {"English": 1, "x_dialect": 2}},
        }
    )
    assert cfg.tts_pad_id == 5 and cfg.codec_bos_id == 9 and cfg.tts_bos_id == spec.TTS_BOS_ID
    assert cfg.supported_languages == ["auto", "english"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"language": "klingon"}, "language"),
        ({"language": "beijing_dialect"}, "language"),  # dialects are reached through speakers only
        ({"speaker": "nobody"}, "speaker"),
        ({"speaker": "Vivian", "voice": VoiceClone(speaker_vector())}, "both"),
        ({"voice": VoiceClone(speaker_vector(), ref_codes=ref_frames(2))}, "transcript"),
        ({"voice": VoiceClone(speaker_vector(), ref_codes=np.zeros((2, 8)), ref_ids=REF_IDS)}, "shape"),
    ],
)
def test_user_errors_are_explained(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(Qwen3TTSError, match=message):
        build_prompt(config(), TaggedEmbedder(), TARGET_IDS, non_streaming_mode=False, **kwargs)


def test_empty_text_is_rejected() -> None:
    with pytest.raises(Qwen3TTSError, match="empty"):
        build_prompt(config(), TaggedEmbedder(), ROLE + TARGET_IDS[-5:], non_streaming_mode=True)


# ---- goldens: the official prompts, rebuilt with the real tables of the converted fixture ----------------
GOLDEN = Path(os.environ.get("QWEN3TTS_GOLDEN_DIR", Path(__file__).parent / "golden"))
GOLDEN_CASES = sorted(
    (size_dir.name, case.stem)
    for size_dir in GOLDEN.glob("*")
    if (size_dir / "fixture.json").is_file()
    for case in size_dir.glob("*.npz")
    if case.stem != "ref_audio"
)
assert GOLDEN_CASES, "tests/golden/<size>/ missing: run tests/parity/make_goldens.py"


def case_prompt(kind: str, kwargs: dict[str, Any], data: Any, cfg: PromptConfig, embedder: Any) -> Prompt:
    """The prompt of one golden case, built with the official call's arguments and the golden ids."""
    language = kwargs.get("language", "auto")
    instruct_ids = data["instruct_ids"] if "instruct_ids" in data else None
    if kind == spec.KIND_CUSTOM_VOICE:
        return custom_voice_prompt(
            cfg,
            embedder,
            data["input_ids"],
            kwargs["speaker"],
            language,
            instruct_ids,
            kwargs.get("non_streaming_mode", True),
        )
    if kind == spec.KIND_VOICE_DESIGN:
        return voice_design_prompt(
            cfg, embedder, data["input_ids"], instruct_ids, language, kwargs.get("non_streaming_mode", True)
        )
    voice = VoiceClone(
        speaker_embedding=data["ref_spk_embedding"],
        ref_codes=data["ref_code"] if "ref_code" in data else None,
        ref_ids=data["ref_ids"] if "ref_ids" in data else None,
    )
    return voice_clone_prompt(
        cfg, embedder, data["input_ids"], voice, language, kwargs.get("non_streaming_mode", False)
    )


@pytest.fixture(scope="module")
def converted_tables(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(size, kind) -> (PromptConfig, Tables) of the fixture checkpoint the goldens were made from."""
    from qwen3tts_cli.convert.checkpoint import Checkpoint
    from qwen3tts_cli.convert.lm import write_tables
    from qwen3tts_cli.engine.tables import Tables
    from qwen3tts_cli.fixtures.checkpoint import build_checkpoint

    cache: dict[tuple[str, str], tuple[PromptConfig, Tables]] = {}

    def get(size: str, kind: str) -> tuple[PromptConfig, Tables]:
        if (size, kind) not in cache:
            seed = json.loads((GOLDEN / size / "fixture.json").read_text())["checkpoints"][kind]["seed"]
            folder = build_checkpoint(tmp_path_factory.mktemp(f"{size}-{kind}"), kind, size, seed=seed)
            ckpt = Checkpoint(folder)
            write_tables(ckpt, folder / "tables.safetensors")
            cache[(size, kind)] = (
                PromptConfig.from_config(ckpt.config),
                Tables(folder / "tables.safetensors"),
            )
        return cache[(size, kind)]

    return get


@pytest.mark.parametrize(("size", "case"), GOLDEN_CASES)
def test_prompt_equals_official(size: str, case: str, converted_tables: Any) -> None:
    info = json.loads((GOLDEN / size / "fixture.json").read_text())["cases"][case]
    data = np.load(GOLDEN / size / f"{case}.npz")
    cfg, tables = converted_tables(size, info["kind"])
    prompt = case_prompt(info["kind"], info["kwargs"], data, cfg, tables)
    assert (
        prompt.prefill.shape
        == data["prefill_inputs_embeds"].shape
        == (info["prompt_len"], tables.talker_hidden)
    )
    assert prompt.trailing.shape == data["trailing_text_hidden"].shape
    np.testing.assert_allclose(prompt.prefill, data["prefill_inputs_embeds"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(prompt.trailing, data["trailing_text_hidden"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(prompt.tts_pad, data["tts_pad_embed"], rtol=0, atol=1e-5)
