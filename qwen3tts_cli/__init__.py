"""qwen3tts: Qwen3-TTS offline on a CPU with llama.cpp and ONNX Runtime."""

from __future__ import annotations

__version__ = "0.1.0"

from qwen3tts_cli.errors import Qwen3TTSError

__all__ = ["Qwen3TTSError", "__version__"]
