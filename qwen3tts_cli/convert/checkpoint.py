"""An official Qwen3-TTS checkpoint folder: its configs and tensors, validated with clear errors.

Layout (every released 12 Hz repo):
    config.json, generation_config.json, model.safetensors, vocab.json, merges.txt, tokenizer_config.json,
    speech_tokenizer/{config.json, model.safetensors, preprocessor_config.json}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from qwen3tts_cli import spec
from qwen3tts_cli.convert.safetensors import SafetensorsFile
from qwen3tts_cli.errors import Qwen3TTSError

REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "speech_tokenizer/config.json",
    "speech_tokenizer/model.safetensors",
)
OPTIONAL_FILES = (
    "generation_config.json",
    "preprocessor_config.json",
    "speech_tokenizer/preprocessor_config.json",
)


@dataclass(frozen=True)
class LMShape:
    """Dimensions of one Qwen3 decoder stack (talker or code predictor)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    rms_eps: float
    rope_theta: float
    max_positions: int

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> LMShape:
        return cls(
            hidden=int(cfg["hidden_size"]),
            layers=int(cfg["num_hidden_layers"]),
            heads=int(cfg["num_attention_heads"]),
            kv_heads=int(cfg["num_key_value_heads"]),
            head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]),
            intermediate=int(cfg["intermediate_size"]),
            rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(cfg.get("rope_theta", 1e6)),
            max_positions=int(cfg.get("max_position_embeddings", 32768)),
        )


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file of a model folder, or a clear error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Qwen3TTSError(
            f"cannot read {path}: {exc}", "the file is damaged: download or convert the model again"
        ) from exc


class Checkpoint:
    """An official checkpoint folder. Tensors are float32 numpy arrays, memory-mapped on demand."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise Qwen3TTSError(
                f"checkpoint folder {self.folder} does not exist",
                "pass the folder that holds config.json and model.safetensors",
            )
        missing = [name for name in REQUIRED_FILES if not (self.folder / name).is_file()]
        if missing:
            raise Qwen3TTSError(
                f"{self.folder} is not a Qwen3-TTS checkpoint: missing {', '.join(missing)}",
                "download the complete official repo (e.g. Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice)",
            )
        self.config = read_json(self.folder / "config.json")
        if self.config.get("model_type") != "qwen3_tts":
            raise Qwen3TTSError(
                f"{self.folder}/config.json has model_type {self.config.get('model_type')!r}"
                ", not 'qwen3_tts'",
                "point at a Qwen3-TTS 12Hz checkpoint",
            )
        self.codec_config = read_json(self.folder / "speech_tokenizer" / "config.json")
        gen_path = self.folder / "generation_config.json"
        self.generation_config = dict(spec.GENERATION_DEFAULTS)
        if gen_path.is_file():
            self.generation_config.update(read_json(gen_path))
        self._validate_tensors()
        # called with "model:NAME" / "codec:NAME" whenever a tensor is read (conversion progress)
        self.on_read: Callable[[str], None] | None = None

    # ---- configs --------------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        kind = self.config.get("tts_model_type", "")
        if kind not in spec.MODEL_KINDS:
            raise Qwen3TTSError(
                f"unknown tts_model_type {kind!r} in config.json", "use an official checkpoint"
            )
        return kind

    @property
    def size_tag(self) -> str:
        """Official size tag: '0b6', '1b7' (fixtures: 'tiny', ...)."""
        return str(self.config.get("tts_model_size", ""))

    @property
    def talker_config(self) -> dict[str, Any]:
        return self.config["talker_config"]

    @property
    def predictor_config(self) -> dict[str, Any]:
        return self.talker_config["code_predictor_config"]

    @property
    def talker_shape(self) -> LMShape:
        return LMShape.from_config(self.talker_config)

    @property
    def predictor_shape(self) -> LMShape:
        return LMShape.from_config(self.predictor_config)

    @property
    def decoder_config(self) -> dict[str, Any]:
        return self.codec_config["decoder_config"]

    @property
    def encoder_config(self) -> dict[str, Any]:
        return self.codec_config["encoder_config"]

    # ---- tensors --------------------------------------------------------------------------------------
    @cached_property
    def weights(self) -> SafetensorsFile:
        """model.safetensors: talker, code predictor (+ speaker encoder for Base)."""
        return SafetensorsFile(self.folder / "model.safetensors")

    @cached_property
    def codec_weights(self) -> SafetensorsFile:
        """speech_tokenizer/model.safetensors: codec encoder and decoder."""
        return SafetensorsFile(self.folder / "speech_tokenizer" / "model.safetensors")

    def tensor(self, name: str) -> np.ndarray:
        self._note(f"model:{name}")
        try:
            return self.weights.load(name)
        except KeyError:
            raise Qwen3TTSError(
                f"{self.folder}/model.safetensors has no tensor {name}",
                "the checkpoint is incomplete or not official",
            ) from None

    def tensor_blocks(self, name: str) -> Iterator[bytes]:
        """The stored bytes of model.safetensors tensor `name`, in blocks read from the file."""
        self._note(f"model:{name}")
        return self.weights.raw_blocks(name)

    def codec_tensor(self, name: str) -> np.ndarray:
        self._note(f"codec:{name}")
        try:
            return self.codec_weights.load(name)
        except KeyError:
            raise Qwen3TTSError(
                f"{self.folder}/speech_tokenizer/model.safetensors has no tensor {name}",
                "the checkpoint is incomplete or not official",
            ) from None

    def _note(self, key: str) -> None:
        if self.on_read is not None:
            self.on_read(key)

    def _validate_tensors(self) -> None:
        needed = [
            "talker.codec_head.weight",
            "talker.model.text_embedding.weight",
            "talker.model.norm.weight",
        ]
        if self.kind == spec.KIND_BASE:
            needed.append("speaker_encoder.fc.weight")
        absent = [name for name in needed if name not in self.weights]
        if absent:
            raise Qwen3TTSError(
                f"{self.folder}/model.safetensors lacks {', '.join(absent)}",
                "the checkpoint is incomplete or of another model family",
            )
        if not any(name.startswith("decoder.") for name in self.codec_weights):
            raise Qwen3TTSError(
                f"{self.folder}/speech_tokenizer/model.safetensors has no decoder tensors",
                "download the complete speech_tokenizer/ folder",
            )
