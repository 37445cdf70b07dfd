#!/usr/bin/env bash
# Run the golden cases on a llama.cpp device against the CPU, in a separate venv with that backend's wheel.
#
#   runtime/check_device.sh vulkan [VENV_DIR]
#
# Builds (or reuses, see build_llama.sh) the backend's llama-cpp-python wheel, installs it and this project
# into VENV_DIR (default ~/.cache/qwen3tts/venv-BACKEND; the main venv keeps its CPU wheel), then runs
# benchmarks/device_check.py --device BACKEND, which writes benchmarks/results/device-check-BACKEND-*.{json,md}.
# Without a GPU, Mesa's lavapipe (package mesa-vulkan-drivers) is a Vulkan device that runs on the CPU;
# llama.cpp skips CPU-type Vulkan devices unless GGML_VK_VISIBLE_DEVICES names them, so it is set to 0 here
# when not given. Extra build flags: LLAMA_EXTRA_CMAKE_ARGS (e.g. newer Vulkan headers, runtime/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND="${1:?usage: runtime/check_device.sh vulkan|cuda|metal [VENV_DIR]}"
VENV="${2:-$HOME/.cache/qwen3tts/venv-$BACKEND}"
WHEEL="$(runtime/build_llama.sh "$BACKEND")"
if [[ ! -x "$VENV/bin/python" ]]; then python3 -m venv "$VENV"; fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps "$WHEEL"
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
if [[ "$BACKEND" == vulkan ]]; then export GGML_VK_VISIBLE_DEVICES="${GGML_VK_VISIBLE_DEVICES:-0}"; fi
exec "$VENV/bin/python" benchmarks/device_check.py --device "$BACKEND" "${@:3}"
