#!/usr/bin/env bash
# Prepare the qwentts.cpp column of the benchmark (a peer only; never a dependency of qwen3tts).
#   bash benchmarks/setup_qwentts.sh SOURCE_DIR [VENV_DIR]
# SOURCE_DIR: a qwentts.cpp source tree (github.com/ServeurpersoCom/qwentts.cpp, e.g.
#   `git clone https://github.com/ServeurpersoCom/qwentts.cpp SOURCE_DIR`, or a `git archive` of it). Its
#   convert.py makes the F32 GGUFs and its tools/quantize.cpp the q8_0 / q4_k_m ones. The ggml submodule may
#   be missing (an archive has none): then the ggml of llama-cpp-python's PyPI sdist is put in its place,
#   which is only used to build that quantizer (ggml_quantize_chunk and the gguf writer are the same code).
# VENV_DIR (default /work/qwenttsenv) receives the CPU-only wheel realtimetts-qwen-native-cpu (module
#   qwentts_cpp_cpu: qwentts.cpp + ggml built for AVX2/FMA/F16C/BMI2) and what convert.py imports: torch
#   (2.13.0, the CPU build; it reads the safetensors with framework="pt"), safetensors, gguf, numpy.
# Prints the source commit, the wheel's native version and the quantizer path.
set -euo pipefail
source_dir="${1:?usage: setup_qwentts.sh SOURCE_DIR [VENV_DIR]}"
venv="${2:-/work/qwenttsenv}"
ggml_from="${GGML_LLAMA_CPP_PYTHON:-0.3.36}"  # llama-cpp-python sdist whose vendored ggml fills the submodule

if [[ ! -f "$source_dir/convert.py" || ! -f "$source_dir/tools/quantize.cpp" ]]; then
  echo "error: $source_dir is not a qwentts.cpp source tree (no convert.py / tools/quantize.cpp)" >&2
  exit 2
fi
if ! grep -qw avx2 /proc/cpuinfo || ! grep -qw f16c /proc/cpuinfo || ! grep -qw fma /proc/cpuinfo; then
  echo "error: realtimetts-qwen-native-cpu needs a CPU with AVX2, FMA and F16C" >&2
  exit 2
fi

if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet "realtimetts-qwen-native-cpu==0.4.2" "torch==2.13.0" safetensors gguf numpy
"$venv/bin/python" - <<'EOF'
import torch
assert torch.version.cuda is None, f"torch {torch.__version__} is a CUDA build; install the CPU one"
import qwentts_cpp_cpu as q
lib = q.QwenLibrary()
print(f"qwentts_cpp_cpu {q.__version__} (ABI {lib.native_abi}, native {lib.version()}, cpu_only {lib.cpu_only()});"
      f" torch {torch.__version__}")
EOF

quantizer="$source_dir/build/quantize"
if [[ ! -x "$quantizer" ]]; then
  if [[ ! -f "$source_dir/ggml/CMakeLists.txt" ]]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    "$venv/bin/pip" download --quiet --no-deps --no-binary :all: "llama-cpp-python==$ggml_from" -d "$work"
    tar -xzf "$work/llama_cpp_python-$ggml_from.tar.gz" -C "$work"
    rm -rf "$source_dir/ggml"
    mv "$work/llama_cpp_python-$ggml_from/vendor/llama.cpp/ggml" "$source_dir/ggml"
    echo "ggml of llama-cpp-python $ggml_from (vendor/llama.cpp/ggml)" > "$source_dir/ggml/.origin"
  fi
  cmake -S "$source_dir" -B "$source_dir/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    -DGGML_BLAS=OFF -DGGML_OPENMP=OFF > "$source_dir/build.log"
  cmake --build "$source_dir/build" --config Release --target quantize -j "${JOBS:-2}" >> "$source_dir/build.log"
fi
commit="$(cat "$source_dir/.qwentts-commit" 2>/dev/null || git -C "$source_dir" rev-parse HEAD 2>/dev/null || echo unknown)"
echo "qwentts.cpp source $source_dir (commit $commit); quantizer $quantizer; venv $venv"
