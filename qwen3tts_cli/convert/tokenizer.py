"""Convert an official checkpoint's text tokenizer (vocab.json + merges.txt) into one `tokenizer.json`.

The released Qwen3-TTS repos ship no tokenizer.json: transformers builds a Qwen2 fast tokenizer from
vocab + merges at load time. Because their config.json says transformers 4.57.3 and the official wrapper
passes `fix_mistral_regex=True`, transformers then swaps the Qwen2 pre-tokenizer regex for the "Mistral"
one (splits at lower->upper case boundaries, no contraction alternative, keeps combining marks in words).
We write that exact pipeline with the `tokenizers` library alone, so the product needs no transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from qwen3tts_cli.errors import Qwen3TTSError

# What the official loader applies (transformers 4.57.3, fix_mistral_regex=True).
MISTRAL_PRETOKENIZE_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# The stock Qwen2 regex, which the official loader does NOT use; kept to prove tests can tell them apart.
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


def _require_files(folder: Path) -> None:
    for name in TOKENIZER_FILES:
        if not (folder / name).is_file():
            raise Qwen3TTSError(
                f"text tokenizer file {name} is missing from {folder}",
                "point to a complete Qwen3-TTS checkpoint folder (it ships vocab.json, merges.txt and "
                "tokenizer_config.json), or download it again",
            )


def read_merges(path: Path) -> list[tuple[str, str]]:
    """Merge rules in priority order; skips the `#version` header and blank lines like transformers."""
    merges: list[tuple[str, str]] = []
    for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        line = line.strip()
        if not line or (index == 0 and line.startswith("#version:")):
            continue
        left, _, right = line.partition(" ")
        if not right or " " in right:
            raise Qwen3TTSError(
                f"{path} line {index + 1} is not a merge rule: {line!r}", "the file is corrupt"
            )
        merges.append((left, right))
    return merges


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise Qwen3TTSError(
            f"{path} is not valid JSON ({error})", "the file is corrupt; download it again"
        ) from error


def _added_tokens(config: dict, base_size: int) -> list[AddedToken]:
    """The added tokens of tokenizer_config.json, checked to sit right after the base vocabulary."""
    entries = sorted((int(key), value) for key, value in config.get("added_tokens_decoder", {}).items())
    tokens: list[AddedToken] = []
    for offset, (token_id, entry) in enumerate(entries):
        if token_id != base_size + offset:
            raise Qwen3TTSError(
                f"added token {entry.get('content')!r} has id {token_id}, expected {base_size + offset}",
                "tokenizer_config.json does not match vocab.json",
            )
        tokens.append(
            AddedToken(
                entry["content"],
                single_word=entry.get("single_word", False),
                lstrip=entry.get("lstrip", False),
                rstrip=entry.get("rstrip", False),
                normalized=entry.get("normalized", False),
                special=entry.get("special", True),
            )
        )
    return tokens


def build_tokenizer(checkpoint_folder: Path, regex: str = MISTRAL_PRETOKENIZE_REGEX) -> Tokenizer:
    """The official text tokenizer of `checkpoint_folder` as a `tokenizers.Tokenizer`."""
    folder = Path(checkpoint_folder)
    _require_files(folder)
    vocab = _read_json(folder / "vocab.json")
    bpe = BPE(
        vocab=vocab,
        merges=read_merges(folder / "merges.txt"),
        dropout=None,
        unk_token=None,
        continuing_subword_prefix="",
        end_of_word_suffix="",
        fuse_unk=False,
        byte_fallback=False,
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    config = _read_json(folder / "tokenizer_config.json")
    _add_tokens_in_id_order(tokenizer, _added_tokens(config, len(vocab)), len(vocab))
    return tokenizer


def _add_tokens_in_id_order(tokenizer: Tokenizer, tokens: list[AddedToken], first_id: int) -> None:
    # tokenizers numbers new added tokens in insertion order after the base vocabulary.
    for offset, token in enumerate(tokens):
        if token.special:
            tokenizer.add_special_tokens([token])
        else:
            tokenizer.add_tokens([token])
        if tokenizer.token_to_id(token.content) != first_id + offset:
            raise Qwen3TTSError(
                f"added token {token.content!r} did not get id {first_id + offset}",
                "vocab.json and tokenizer_config.json do not fit together; download the checkpoint again",
            )


def write_tokenizer_json(checkpoint_folder: Path, out: Path) -> None:
    """Write the official text tokenizer of `checkpoint_folder` as a single tokenizer.json at `out`."""
    tokenizer = build_tokenizer(checkpoint_folder)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out))
