"""A tiktoken rank file becomes vocab.json + merges.txt that tokenize exactly as tiktoken does.

The benchmark builds its random checkpoints with the real Qwen vocabulary from `qwen.tiktoken`; these tests
prove the rank-to-merge derivation on a synthetic rank file of the same size, against tiktoken itself.
"""

from __future__ import annotations

import base64
import itertools
from pathlib import Path

import pytest
import tiktoken

from qwen3tts_cli import bench
from qwen3tts_cli.convert.tokenizer import MISTRAL_PRETOKENIZE_REGEX, write_tokenizer_json
from qwen3tts_cli.engine.text_tokenizer import TextTokenizer
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.fixtures.checkpoint import build_checkpoint
from qwen3tts_cli.fixtures.qwen_vocab import merges_from_ranks, read_tiktoken_ranks, write_vocabulary_files
from qwen3tts_cli.fixtures.tokenizer import (
    ADDED_TOKENS,
    BASE_VOCAB_SIZE,
    SAMPLE_TEXT,
    build_merges,
    byte_symbol_table,
)

TEXTS = [
    *SAMPLE_TEXT.splitlines(),
    bench.SHORT_TEXT,
    bench.LONG_TEXT,
    "<|im_start|>assistant\nHello there.<|im_end|>\n<|im_start|>assistant\n",
    "   leading spaces, trailing tabs\t\t and\r\nwindows lines 12345678 ÄÖÜ ß ñ ç 𝄞 🎉 \x00\x7f",
]


def _synthetic_ranks() -> dict[bytes, int]:
    """151643 ranks like a trained byte-level BPE: the 256 bytes, the fixture's learned merges in order, then
    2- and 3-byte runs of UTF-8 continuation bytes (so CJK and accented text hit them mid-character)."""
    byte_of = {symbol: byte for byte, symbol in byte_symbol_table().items()}
    tokens = [bytes([byte_of[symbol]]) for symbol in byte_symbol_table().values()]
    tokens += [bytes(byte_of[c] for c in left + right) for left, right in build_merges()]
    continuation = range(0x80, 0xC0)
    for length in (2, 3):
        tokens += [bytes(run) for run in itertools.product(continuation, repeat=length)]
    ranks: dict[bytes, int] = {}
    for token in tokens:
        ranks.setdefault(token, len(ranks))
        if len(ranks) == BASE_VOCAB_SIZE:
            break
    assert len(ranks) == BASE_VOCAB_SIZE
    return ranks


def _write_tiktoken(path: Path, ranks: dict[bytes, int]) -> Path:
    lines = (f"{base64.b64encode(token).decode()} {rank}\n" for token, rank in ranks.items())
    path.write_text("".join(lines), encoding="ascii")
    return path


@pytest.fixture(scope="module")
def ranks() -> dict[bytes, int]:
    return _synthetic_ranks()


@pytest.fixture(scope="module")
def rank_file(ranks: dict[bytes, int], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_tiktoken(tmp_path_factory.mktemp("vocab") / "qwen.tiktoken", ranks)


@pytest.fixture(scope="module")
def ours(rank_file: Path, tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    folder = tmp_path_factory.mktemp("checkpoint")
    write_vocabulary_files(folder, rank_file)
    write_tokenizer_json(folder, folder / "tokenizer.json")
    return TextTokenizer(folder / "tokenizer.json")


@pytest.fixture(scope="module")
def reference(ranks: dict[bytes, int]) -> tiktoken.Encoding:
    special = {token: BASE_VOCAB_SIZE + i for i, token in enumerate(ADDED_TOKENS)}
    return tiktoken.Encoding(
        "synthetic-qwen", pat_str=MISTRAL_PRETOKENIZE_REGEX, mergeable_ranks=ranks, special_tokens=special
    )


@pytest.mark.parametrize("index", range(len(TEXTS)))
def test_derived_merges_tokenize_as_tiktoken(
    index: int, ours: TextTokenizer, reference: tiktoken.Encoding
) -> None:
    text = TEXTS[index]
    expected = reference.encode(text, allowed_special="all")
    assert ours.encode(text) == expected
    assert ours.decode(expected) == text


def test_every_multi_byte_token_gets_one_merge_in_rank_order(ranks: dict[bytes, int]) -> None:
    merges = merges_from_ranks(ranks)
    multi = [token for token, _ in sorted(ranks.items(), key=lambda item: item[1]) if len(token) > 1]
    assert [left + right for left, right in merges] == multi
    for left, right in merges:
        assert max(ranks[left], ranks[right]) < ranks[left + right]


def test_a_rank_file_with_gaps_or_the_wrong_size_is_refused(ranks: dict[bytes, int], tmp_path: Path) -> None:
    short = dict(itertools.islice(ranks.items(), 1000))
    with pytest.raises(ValueError, match="1000 tokens"):
        read_tiktoken_ranks(_write_tiktoken(tmp_path / "short.tiktoken", short))
    gap = {**short, b"\xc0\xc1": 1001}
    with pytest.raises(ValueError, match="without gaps"):
        read_tiktoken_ranks(_write_tiktoken(tmp_path / "gap.tiktoken", gap), expected_size=None)
    (tmp_path / "bad.tiktoken").write_text("not-base64!! zero\n")
    with pytest.raises(ValueError, match="line 1"):
        read_tiktoken_ranks(tmp_path / "bad.tiktoken")


def test_a_checkpoint_built_with_a_rank_file_carries_that_vocabulary(rank_file: Path, tmp_path: Path) -> None:
    folder = build_checkpoint(tmp_path / "ckpt", "custom_voice", "tiny", seed=0, vocabulary=rank_file)
    write_tokenizer_json(folder, tmp_path / "tokenizer.json")
    derived = TextTokenizer(tmp_path / "tokenizer.json")
    assert derived.encode("\u00e9\u00e9\u00e9") != []
    assert derived.token_id("<tts_pad>") == BASE_VOCAB_SIZE + ADDED_TOKENS.index("<tts_pad>")
    # the continuation-byte runs exist only in the rank file, not in the synthetic tokenizer
    assert len(derived.encode("今天天气很好")) < len("今天天气很好".encode())


def test_bench_vocabulary_choice(tmp_path: Path, rank_file: Path) -> None:
    assert bench.resolve_vocabulary("fixture") is None
    assert bench.resolve_vocabulary(str(rank_file)) == rank_file
    with pytest.raises(Qwen3TTSError, match="does not exist"):
        bench.resolve_vocabulary(str(tmp_path / "missing.tiktoken"))
    real = bench.checkpoint_dir(tmp_path, "custom_voice", "0.6b", real_vocabulary=True)
    assert real != bench.checkpoint_dir(tmp_path, "custom_voice", "0.6b")
    assert bench.converted_dir(tmp_path, real, "q8_0").name == f"{real.name}-q8_0"
