#!/usr/bin/env python3
"""Record the OFFICIAL text-tokenizer ids of the fixture tokenizer into tests/golden/tokenizer/ids.json.

Runs in the reference venv (torch + qwen-tts 0.1.1 + transformers 4.57.3):

    /work/refenv/bin/python tests/parity/make_tokenizer_goldens.py

The fixture tokenizer files are loaded exactly as `Qwen3TTSModel.from_pretrained` does:
`AutoProcessor.from_pretrained(folder, fix_mistral_regex=True)` with the qwen3_tts classes registered and a
config.json saying transformers_version 4.57.3 (what the released checkpoints carry). The same files loaded
with transformers_version 4.57.2 keep the stock Qwen2 regex: those "native" ids are recorded too, so the
test can prove it tells the two pre-tokenizers apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]
OUT = REPO / "tests" / "golden" / "tokenizer" / "ids.json"

import transformers  # noqa: E402  (must come before the torchaudio stub)
from transformers import AutoConfig, AutoProcessor  # noqa: E402

from qwen3tts_cli.fixtures.tokenizer import write_tokenizer_files  # noqa: E402

OFFICIAL_TF_VERSION = "4.57.3"  # released config.json -> Mistral regex patch applies
UNPATCHED_TF_VERSION = "4.57.2"  # -> transformers keeps the stock Qwen2 regex

CASES: dict[str, str] = {
    "english_plain": "The quick brown fox jumps over the lazy dog.",
    "contractions": "Don't worry, it's fine. I'll go, we're here, they've left, I'm sure, she'd know.",
    "contraction_prefix": "'tis it'sy we'llness 'Twas",
    "contractions_upper": "DON'T SHOUT, IT'S LATE, I'LL WAIT.",
    "camel_case": "getUserById iPhone McDonald",
    "camel_case_more": "parseHTTPResponse XMLHttpRequest eBay macOS camelCaseWordsHere",
    "chinese": "今天天气很好，我们一起去公园散步吧。",
    "chinese_mixed": "语音合成系统 TTS 正在说话，getUser 你好！",
    "japanese": "こんにちは、世界。今日はとても良い天気ですね。",
    "korean": "안녕하세요, 세계. 오늘 날씨가 정말 좋네요.",
    "russian": "Привет, мир! Сегодня хорошая погода. МосКва",
    "arabic": "مرحبا بالعالم. الطقس جميل اليوم.",
    "thai": "สวัสดีครับ วันนี้อากาศดีมาก ขอบคุณครับ",
    "hindi": "नमस्ते दुनिया, आज मौसम अच्छा है।",
    "emoji": "I love it 😀👍🏽 🚀!",
    "emoji_zwj": "family 👨‍👩‍👧‍👦 coder 👩🏽‍💻 flag 🏳️‍🌈",
    "digits": "12345 3.14 1,000,000 and 2026-01-02",
    "whitespace": "line one\nline two\n\n\tindented\t\ttabs   three spaces    \n  trailing  ",
    "windows_newlines": "first\r\nsecond\r\n\r\nthird",
    "url": "see https://example.com/path/to/page?q=1&lang=en or ./a/b//c",
    "punctuation_slash": "and/or ?/ -// ...\n/n",
    "nfc_input": "caf\u00e9 na\u00efve \u00c5ngstr\u00f6m",
    "nfd_input": "cafe\u0301 nai\u0308ve A\u030angstro\u0308m",
    "combining_marks": "e\u0301\u0301 x\u0308y \u0301lead",
    "special_inside_text": "before <|im_end|> after <tts_pad> <think>x</think>",
    "empty": "",
}
# The three prompt templates of the official wrapper (qwen3_tts_model.py _build_*_text), with inner texts.
TEMPLATES: dict[str, str] = {
    "assistant": "<|im_start|>assistant\n{}<|im_end|>\n<|im_start|>assistant\n",
    "ref": "<|im_start|>assistant\n{}<|im_end|>\n",
    "instruct": "<|im_start|>user\n{}<|im_end|>\n",
}
TEMPLATE_CASES: list[tuple[str, str, str]] = [
    ("template_assistant", "assistant", "Hello, getUserById said it's 3.14!"),
    ("template_assistant_empty", "assistant", ""),
    ("template_assistant_multiline", "assistant", "第一行\nSecond line with iPhone.\n"),
    ("template_ref", "ref", "今天天气很好, I'll read the iPhone manual."),
    ("template_instruct", "instruct", "Speak in a calm, warm voice; McDonald's style."),
]


def register_qwen3_tts() -> None:
    """The registrations Qwen3TTSModel.from_pretrained performs before loading the processor."""
    import official  # noqa: F401  (registers the torchaudio stub the official package needs, then imports it)
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSProcessor

    AutoConfig.register("qwen3_tts", Qwen3TTSConfig)
    AutoProcessor.register(Qwen3TTSConfig, Qwen3TTSProcessor)


def make_checkpoint_folder(folder: Path, transformers_version: str) -> None:
    write_tokenizer_files(folder)
    config = {"model_type": "qwen3_tts", "transformers_version": transformers_version}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")


def official_ids(processor, text: str) -> list[int]:
    # Same call as Qwen3TTSModel._tokenize_texts.
    return processor(text=text, return_tensors="pt", padding=True)["input_ids"][0].tolist()


def pre_tokenizer_regex(processor) -> str:
    state = json.loads(processor.tokenizer.backend_tokenizer.pre_tokenizer.__getstate__())
    return state["pretokenizers"][0]["pattern"]["Regex"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    import tokenizers
    import torch

    torch.set_num_threads(1)
    register_qwen3_tts()
    import qwen_tts

    with tempfile.TemporaryDirectory() as tmp:
        official_dir, native_dir = Path(tmp) / "official", Path(tmp) / "native"
        make_checkpoint_folder(official_dir, OFFICIAL_TF_VERSION)
        make_checkpoint_folder(native_dir, UNPATCHED_TF_VERSION)
        official = AutoProcessor.from_pretrained(str(official_dir), fix_mistral_regex=True)
        native = AutoProcessor.from_pretrained(str(native_dir), fix_mistral_regex=True)
        fixture_sha256 = {name: sha256(official_dir / name) for name in ("vocab.json", "merges.txt")}
        fixture_sha256["tokenizer_config.json"] = sha256(official_dir / "tokenizer_config.json")
        cases = []
        plain = [(name, text, {}) for name, text in CASES.items()]
        templated = [
            (name, TEMPLATES[template].format(inner), {"template": template, "template_text": inner})
            for name, template, inner in TEMPLATE_CASES
        ]
        for name, text, extra in plain + templated:
            ids, native_ids = official_ids(official, text), official_ids(native, text)
            cases.append(
                {
                    "name": name,
                    "text": text,
                    **extra,
                    "ids": ids,
                    "tokens": official.tokenizer.convert_ids_to_tokens(ids),
                    "native_ids": native_ids,
                    "differs_from_native": ids != native_ids,
                }
            )
        golden = {
            "about": "official Qwen3-TTS processor ids of the fixture tokenizer (make_tokenizer_goldens.py)",
            "versions": {
                "qwen_tts": getattr(qwen_tts, "__version__", "0.1.1"),
                "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__,
                "torch": torch.__version__,
            },
            "processor_class": type(official).__name__,
            "tokenizer_class": type(official.tokenizer).__name__,
            "official_regex": pre_tokenizer_regex(official),
            "native_regex": pre_tokenizer_regex(native),
            "fixture_sha256": fixture_sha256,
            "cases": cases,
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    differing = [case["name"] for case in cases if case["differs_from_native"]]
    print(f"wrote {OUT}: {len(cases)} cases, {len(differing)} differ from the native regex: {differing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
