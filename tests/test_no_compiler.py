"""A first run never needs a compiler once a llama-cpp-python wheel is installed (a prebuilt one or ours).

Every compiler and build tool a llama.cpp build could reach for is shadowed on PATH (and in CC/CXX/CMAKE)
by a trap that records its name and fails. The whole first run - download from the (loopback) hub,
conversion with llama.cpp's quantizer, synthesis - and `doctor` must succeed without touching one.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hubserver import LoopbackHub
from test_cli import cli_env, read_pcm16, run_cli
from test_cli import hub_server as hub_server  # noqa: F401  (the loopback hub with 0.6b-custom, shared)

from qwen3tts_cli import spec

BUILD_TOOLS = ("cc", "gcc", "g++", "c++", "clang", "clang++", "cmake", "ninja", "make", "cl", "nvcc", "glslc")


def _trap_build_tools(folder: Path, log: Path) -> dict[str, str]:
    """Executables named like build tools that log their use and fail; env vars that point at them."""
    folder.mkdir()
    for name in BUILD_TOOLS:
        tool = folder / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 1\n')
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return {
        "PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}",
        "CC": str(folder / "cc"),
        "CXX": str(folder / "c++"),
        "CMAKE": str(folder / "cmake"),
        "CMAKE_ARGS": "-DTHIS_RUN_MUST_NOT_BUILD=ON",
    }


def test_first_run_and_doctor_use_no_build_tool(hub_server: LoopbackHub, tmp_path: Path) -> None:
    log = tmp_path / "build-tools.log"
    env = cli_env(tmp_path, HF_ENDPOINT=hub_server.url, **_trap_build_tools(tmp_path / "traps", log))
    del env["HF_HUB_OFFLINE"]
    # the trap works: a tool found on this PATH is ours and it records the call
    assert os.system(f'PATH="{env["PATH"]}" cc --version >/dev/null 2>&1') != 0 and log.is_file()
    log.unlink()

    say = ["say", "Hello", "-o", tmp_path / "hello.wav", "--model", "0.6b-custom", "--max-frames", "3"]
    first = run_cli([*say, "--quant", "q4_k_m", "-t", "1"], env)  # k-quant: llama.cpp's own quantizer runs
    assert first.code == 0, first.stderr
    assert "downloading" in first.stderr and "converting" in first.stderr
    assert len(read_pcm16(tmp_path / "hello.wav")) == 3 * spec.SAMPLES_PER_FRAME
    doctor = run_cli(["doctor"], env)
    assert doctor.code == 0, doctor.stderr
    assert not log.exists(), log.read_text()
