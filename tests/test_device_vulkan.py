"""`--device vulkan` on a real Vulkan device: llama.cpp offloads every layer codes stay official.

Opt-in (QWEN3TTS_DEVICE_TEST=vulkan): it needs llama-cpp-python built with Vulkan (runtime/build_llama.sh
vulkan compiles for ~11 min on 2 busy cores, too slow for every CI run) and a Vulkan device. Without a GPU,
Mesa's lavapipe is one (a CPU Vulkan driver; llama.cpp uses it only with GGML_VK_VISIBLE_DEVICES=0, which
runtime/check_device.sh sets). Run it in that venv:
    QWEN3TTS_DEVICE_TEST=vulkan GGML_VK_VISIBLE_DEVICES=0 ~/.cache/qwen3tts/venv-vulkan/bin/python -m pytest \
        tests/test_device_vulkan.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from test_cli import FAST, cli_env, run_cli
from test_cli import converted as converted  # noqa: F401  (the session fixture, shared)

from qwen3tts_cli import spec

pytestmark = pytest.mark.skipif(
    os.environ.get("QWEN3TTS_DEVICE_TEST") != "vulkan",
    reason="opt-in: QWEN3TTS_DEVICE_TEST=vulkan with the Vulkan llama.cpp wheel (see the docstring)",
)


def test_vulkan_offloads_every_layer_and_keeps_the_official_codes(converted, golden, tmp_path: Path) -> None:
    case = golden.fixture("tiny")["cases"]["cv_english"]
    env = cli_env(tmp_path, QWEN3TTS_LLAMA_LOG="1")
    env["GGML_VK_VISIBLE_DEVICES"] = os.environ.get("GGML_VK_VISIBLE_DEVICES", "0")
    kwargs = case["kwargs"]
    result = run_cli(
        [
            "say",
            kwargs["text"],
            "--speaker",
            kwargs["speaker"],
            "--language",
            kwargs["language"],
            "--model-dir",
            converted(spec.KIND_CUSTOM_VOICE),
            *FAST,
            "--max-frames",
            "7",
            "--device",
            "vulkan",
            "--codes-out",
            tmp_path / "codes.npy",
            "-o",
            tmp_path / "out.wav",
        ],
        env,
    )
    assert result.code == 0, result.stderr
    offloaded = re.findall(r"offloaded (\d+)/(\d+) layers to GPU", result.stderr)
    assert len(offloaded) >= 2, result.stderr[-3000:]  # the talker and the code predictor
    assert all(done == total for done, total in offloaded), offloaded
    assert "Vulkan" in result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "codes.npy"), golden.case("tiny", "cv_english")["codes"])
