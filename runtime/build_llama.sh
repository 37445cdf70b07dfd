#!/usr/bin/env bash
# Build (or reuse) a llama-cpp-python wheel for one backend, then print its path.
#
#   runtime/build_llama.sh [cpu|cpu-native|cuda|vulkan|metal|openblas] [WHEEL_CACHE_DIR]
#
# llama-cpp-python is source-only on PyPI and compiles llama.cpp (~8-12 min on 2 cores). pip's own wheel
# cache ignores CMAKE_ARGS, so we keep our own cache keyed by version + backend flags: a second CI run or a
# second venv on the same machine reuses the wheel it built, a different backend never gets the wrong one.
set -euo pipefail

BACKEND="${1:-cpu}"
CACHE="${2:-${QWEN3TTS_WHEEL_CACHE:-$HOME/.cache/qwen3tts/wheels}}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
PY="${PYTHON:-python3}"

case "$BACKEND" in
  # Native ISA, except on CPUs with AMX: there the native build's AMX path segfaults on quantized
  # batched input (ggml-org/llama.cpp#20824), so we list the AVX-512 extensions explicitly instead, which
  # keeps weight repacking and leaves AMX out.
  cpu)
    if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then
      FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON"
      for ext in avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16 avx_vnni:AVX_VNNI; do
        grep -qw "${ext%%:*}" /proc/cpuinfo && FLAGS="$FLAGS -DGGML_${ext##*:}=ON"
      done
    else
      FLAGS="-DGGML_NATIVE=ON"
    fi ;;
  cpu-native) FLAGS="-DGGML_NATIVE=ON" ;;
  openblas)   FLAGS="-DGGML_BLAS=ON -DGGML_BLAS_VENDOR=OpenBLAS" ;;
  cuda)       FLAGS="-DGGML_CUDA=on" ;;
  vulkan)     FLAGS="-DGGML_VULKAN=on" ;;
  metal)      FLAGS="-DGGML_METAL=on" ;;
  *) echo "unknown backend '$BACKEND' (use cpu, cpu-native, openblas, cuda, vulkan or metal)" >&2; exit 2 ;;
esac
# Extra CMake flags (part of the cache key), e.g. newer Vulkan headers than the system's:
#   LLAMA_EXTRA_CMAKE_ARGS="-DVulkan_INCLUDE_DIR=/opt/vulkan-headers/usr/include" runtime/build_llama.sh vulkan
if [[ -n "${LLAMA_EXTRA_CMAKE_ARGS:-}" ]]; then FLAGS="$FLAGS $LLAMA_EXTRA_CMAKE_ARGS"; fi

KEY="$(printf '%s|%s|%s|%s' "$VERSION" "$FLAGS" "$(uname -sm)" "$("$PY" -c 'import sys;print(sys.version_info[:2])')" | sha256sum | cut -c1-16)"
DEST="$CACHE/$BACKEND-$KEY"
WHEEL="$(ls "$DEST"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$WHEEL" ]]; then
  mkdir -p "$DEST.tmp"
  echo "building llama-cpp-python $VERSION for '$BACKEND' ($FLAGS); this compiles llama.cpp and takes minutes" >&2
  CMAKE_ARGS="$FLAGS" "$PY" -m pip wheel --no-cache-dir --no-deps -w "$DEST.tmp" "llama-cpp-python==$VERSION" >&2
  rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"     # publish only a finished build
  WHEEL="$(ls "$DEST"/llama_cpp_python-"$VERSION"-*.whl | head -n1)"
fi
echo "$WHEEL"
