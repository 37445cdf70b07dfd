#!/usr/bin/env bash
# Create a separate venv with vox-tts (a benchmark peer only; never a dependency of qwen3tts).
# usage: bash benchmarks/setup_vox.sh [VENV_DIR]   (default /work/voxenv)
set -euo pipefail
venv="${1:-/work/voxenv}"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "vox-tts==0.19.5"
"$venv/bin/python" -c "import vox; print('vox-tts ready in $venv')"
