"""Text tokenizer parity: our tokenizer.json gives the official processor's ids (tests/golden/tokenizer)."""

from __future__ import annotations

import hashlib
import json
import shutil
import unicodedata
from pathlib import Path

import pytest

from qwen3tts_cli import spec
from qwen3tts_cli.convert.tokenizer import (
    MISTRAL_PRETOKENIZE_REGEX,
    QWEN2_PRETOKENIZE_REGEX,
    build_tokenizer,
    write_tokenizer_json,
)
from qwen3tts_cli.engine.text_tokenizer import TextTokenizer
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.fixtures.tokenizer import ADDED_TOKENS, BASE_VOCAB_SIZE, write_tokenizer_files

GOLDEN = json.loads((Path(__file__).parent / "golden" / "tokenizer" / "ids.json").read_text(encoding="utf-8"))
CASES = {case["name"]: case for case in GOLDEN["cases"]}
TEMPLATE_CASES = [case for case in GOLDEN["cases"] if "template" in case]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoint")
    write_tokenizer_files(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    out = tmp_path_factory.mktemp("model") / "tokenizer.json"
    write_tokenizer_json(checkpoint, out)
    return TextTokenizer(out)


@pytest.fixture(scope="module")
def native(checkpoint: Path):
    return build_tokenizer(checkpoint, regex=QWEN2_PRETOKENIZE_REGEX)


def test_fixture_files_are_the_ones_the_goldens_were_made_from(checkpoint: Path) -> None:
    for name, digest in GOLDEN["fixture_sha256"].items():
        actual = hashlib.sha256((checkpoint / name).read_bytes()).hexdigest()
        assert actual == digest, (
            f"{name} changed: rerun tests/parity/make_tokenizer_goldens.py in /work/refenv"
        )


def test_golden_was_made_by_the_official_loader_with_the_mistral_regex() -> None:
    assert GOLDEN["processor_class"] == "Qwen3TTSProcessor"
    assert GOLDEN["versions"]["transformers"] == "4.57.3"
    assert GOLDEN["official_regex"] == MISTRAL_PRETOKENIZE_REGEX
    assert GOLDEN["native_regex"] == QWEN2_PRETOKENIZE_REGEX


def test_fixture_vocabulary_keeps_the_real_ids(checkpoint: Path) -> None:
    vocab = json.loads((checkpoint / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == BASE_VOCAB_SIZE
    assert sorted(vocab.values()) == list(range(BASE_VOCAB_SIZE))
    assert vocab["\u010a"] == spec.NEWLINE_ID and vocab["\u0120"] == 220 and vocab["!"] == 0
    assert (vocab["assistant"], vocab["user"], vocab["system"]) == (
        spec.ASSISTANT_ID,
        spec.USER_ID,
        spec.SYSTEM_ID,
    )


@pytest.mark.parametrize("name", list(CASES))
def test_ids_equal_the_official_processor(tokenizer: TextTokenizer, name: str) -> None:
    case = CASES[name]
    assert tokenizer.encode(case["text"]) == case["ids"]


@pytest.mark.parametrize("name", list(CASES))
def test_native_regex_reproduces_transformers_without_the_patch(native, name: str) -> None:
    # Guards the test itself: our "native" variant is what transformers gives without the regex patch.
    case = CASES[name]
    assert native.encode(case["text"], add_special_tokens=False).ids == case["native_ids"]


def test_goldens_tell_the_two_regexes_apart(tokenizer: TextTokenizer, native) -> None:
    differing = [name for name, case in CASES.items() if case["differs_from_native"]]
    assert len(differing) >= 5
    assert {"camel_case", "contraction_prefix", "thai", "hindi", "template_assistant"} <= set(differing)
    for name in differing:
        text = CASES[name]["text"]
        assert tokenizer.encode(text) != native.encode(text, add_special_tokens=False).ids, name


def test_nfd_input_is_normalised_to_nfc(tokenizer: TextTokenizer) -> None:
    assert CASES["nfd_input"]["ids"] == CASES["nfc_input"]["ids"]
    assert tokenizer.encode(CASES["nfd_input"]["text"]) == tokenizer.encode(CASES["nfc_input"]["text"])


@pytest.mark.parametrize("case", TEMPLATE_CASES, ids=[case["name"] for case in TEMPLATE_CASES])
def test_prompt_templates(tokenizer: TextTokenizer, case: dict) -> None:
    build = {
        "assistant": tokenizer.assistant_ids,
        "ref": tokenizer.ref_ids,
        "instruct": tokenizer.instruct_ids,
    }
    ids = build[case["template"]](case["template_text"])
    assert ids == case["ids"]
    role = spec.USER_ID if case["template"] == "instruct" else spec.ASSISTANT_ID
    assert ids[:3] == [spec.IM_START_ID, role, spec.NEWLINE_ID]
    if case["template"] == "assistant":
        assert ids[-5:] == [
            spec.IM_END_ID,
            spec.NEWLINE_ID,
            spec.IM_START_ID,
            spec.ASSISTANT_ID,
            spec.NEWLINE_ID,
        ]
        assert ids[3:-5] == tokenizer.encode(case["template_text"])
    else:
        assert ids[-2:] == [spec.IM_END_ID, spec.NEWLINE_ID]


def test_added_tokens_have_their_real_ids(tokenizer: TextTokenizer) -> None:
    for offset, token in enumerate(ADDED_TOKENS):
        assert tokenizer.token_id(token) == BASE_VOCAB_SIZE + offset
    assert tokenizer.token_id("<tts_pad>") == spec.TTS_PAD_ID
    assert tokenizer.token_id("<tts_text_bos>") == spec.TTS_BOS_ID
    assert tokenizer.token_id("<tts_text_eod>") == spec.TTS_EOS_ID


@pytest.mark.parametrize("name", ["english_plain", "chinese", "emoji_zwj", "whitespace", "nfd_input", "url"])
def test_decode_round_trips(tokenizer: TextTokenizer, name: str) -> None:
    text = CASES[name]["text"]
    assert tokenizer.decode(tokenizer.encode(text)) == unicodedata.normalize("NFC", text)


@pytest.mark.parametrize("missing", ["vocab.json", "merges.txt", "tokenizer_config.json"])
def test_missing_checkpoint_file_is_named(checkpoint: Path, tmp_path: Path, missing: str) -> None:
    folder = tmp_path / "incomplete"
    shutil.copytree(checkpoint, folder)
    (folder / missing).unlink()
    with pytest.raises(Qwen3TTSError, match=missing.replace(".", r"\.")):
        write_tokenizer_json(folder, tmp_path / "tokenizer.json")
    assert not (tmp_path / "tokenizer.json").exists()


def test_missing_tokenizer_json_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Qwen3TTSError, match="tokenizer.json is missing"):
        TextTokenizer(tmp_path / "tokenizer.json")


def test_corrupt_merges_line_is_reported(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "corrupt"
    shutil.copytree(checkpoint, folder)
    with (folder / "merges.txt").open("a", encoding="utf-8") as merges:
        merges.write("a b c\n")
    with pytest.raises(Qwen3TTSError, match="merges.txt line"):
        write_tokenizer_json(folder, tmp_path / "tokenizer.json")
