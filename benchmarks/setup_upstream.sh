#!/usr/bin/env bash
# Prepare the llama.cpp column of the benchmark: upstream llama.cpp's own Qwen3-TTS pipeline (arch qwen3tts +
# the mtmd audio-generation API), which the llama.cpp inside llama-cpp-python already contains.
#   PYTHON=<the qwen3tts venv python> bash benchmarks/setup_upstream.sh [SOURCE_DIR] [TORCH_PYTHON]
# SOURCE_DIR (default ~/.cache/qwen3tts/llama.cpp-source) receives the llama.cpp source tree of the installed
# llama-cpp-python version (from its PyPI sdist): its convert_hf_to_gguf.py and gguf-py make the GGUFs.
# TORCH_PYTHON (default /work/refenv/bin/python, the official peer's venv) runs that converter; it needs
# torch and transformers (there already) and sentencepiece (installed here). Nothing of this is a
# dependency of qwen3tts.
set -euo pipefail
dest="${1:-$HOME/.cache/qwen3tts/llama.cpp-source}"
torch_python="${2:-/work/refenv/bin/python}"
python="${PYTHON:-python3}"
version="$("$python" -c 'from importlib.metadata import version; print(version("llama-cpp-python"))')"
if [[ ! -f "$dest/convert_hf_to_gguf.py" ]]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  "$python" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work"
  tar -xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
  mkdir -p "$(dirname "$dest")"
  rm -rf "$dest.partial"
  mv "$work/llama_cpp_python-$version/vendor/llama.cpp" "$dest.partial"
  mv "$dest.partial" "$dest"
fi
"$torch_python" -m pip install --quiet sentencepiece
"$torch_python" -c 'import torch, transformers, sentencepiece' 
echo "llama.cpp $version source in $dest; converter runs with $torch_python"
