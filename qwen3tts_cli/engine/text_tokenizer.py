"""The text tokenizer at run time: a converted `tokenizer.json` plus the official prompt templates."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from qwen3tts_cli.errors import Qwen3TTSError


# Prompt strings exactly as the official wrapper builds them (qwen_tts/inference/qwen3_tts_model.py).
def assistant_text(text: str) -> str:
    return f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n"


def ref_text(text: str) -> str:
    return f"<|im_start|>assistant\n{text}<|im_end|>\n"


def instruct_text(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n"


class TextTokenizer:
    """Encodes text to the ids the official Qwen3-TTS processor gives (no BOS/EOS or padding added)."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise Qwen3TTSError(
                f"text tokenizer {path} is missing",
                "convert the checkpoint again (it writes tokenizer.json into the model folder)",
            )
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception on malformed files
            raise Qwen3TTSError(
                f"text tokenizer {path} cannot be read ({error})", "convert the checkpoint again"
            ) from error

    def encode(self, text: str) -> list[int]:
        # Special-token strings inside `text` are still recognised, as in the official processor.
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise Qwen3TTSError(
                f"token {token!r} is not in the text tokenizer", "the tokenizer.json is not a Qwen3-TTS one"
            )
        return token_id

    def assistant_ids(self, text: str) -> list[int]:
        """Target text prompt: role (3 ids), the text, then `<|im_end|>` `\\n` and the next role (5 ids)."""
        return self.encode(assistant_text(text))

    def ref_ids(self, text: str) -> list[int]:
        """Reference transcript for voice cloning: role (3 ids), the text, `<|im_end|>\\n` (2 ids)."""
        return self.encode(ref_text(text))

    def instruct_ids(self, text: str) -> list[int]:
        """Voice/style instruction: every token of the user turn is used."""
        return self.encode(instruct_text(text))
