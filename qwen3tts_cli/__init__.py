"""qwen3tts: Qwen3-TTS offline on a CPU with llama.cpp and ONNX Runtime."""

from __future__ import annotations

import os

# numpy's BLAS thread pool fights llama.cpp's threads for the same cores: measured 2.5x slower end to end
# with OpenBLAS at its default thread count. Our numpy work (heads, lookups) is matrix-vector sized, so one
# BLAS thread loses nothing. Only a default: an explicit setting by the user wins, and it has to be in
# place before numpy is first imported (a program that imported numpy earlier keeps its own setting).
for _variable in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

__version__ = "0.1.0"

from qwen3tts_cli.errors import Qwen3TTSError  # noqa: E402

__all__ = ["Qwen3TTSError", "__version__"]

_PUBLIC = {
    "TTS": "qwen3tts_cli.tts",
    "AudioChunk": "qwen3tts_cli.tts",
    "Synthesis": "qwen3tts_cli.tts",
    "SamplingOptions": "qwen3tts_cli.tts",
    "VoicePack": "qwen3tts_cli.voices",
    "Lexicon": "qwen3tts_cli.lexicon",
}
__all__ += list(_PUBLIC)


def __getattr__(name: str) -> object:
    """The public API, imported on first use so `import qwen3tts_cli` stays light (no llama.cpp load)."""
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'qwen3tts_cli' has no attribute {name!r}")
