"""The llama.cpp column's driver (benchmarks/upstream_driver.py): GGUF building and caching, the stage split.

Upstream's converter needs torch, so here a stand-in converter script takes its place (it records the
arguments and environment it was run with); the measured pipeline itself runs by hand at real shapes
(benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]

STAND_IN_CONVERTER = """
import json, os, sys
args = sys.argv[1:]
if os.environ.get("FAIL_CONVERSION"):
    print("Traceback: the stand-in converter refuses", file=sys.stderr)
    sys.exit(3)
out = args[args.index("--outfile") + 1]
with open(out, "w") as f:
    json.dump({"args": args, "pythonpath": os.environ.get("PYTHONPATH", "")}, f)
"""


@pytest.fixture(scope="module")
def driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "upstream_driver", ROOT / "benchmarks" / "upstream_driver.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _arguments(tmp_path: Path, quant: str = "q8_0") -> argparse.Namespace:
    source = tmp_path / "llama.cpp"
    source.mkdir(exist_ok=True)
    (source / "convert_hf_to_gguf.py").write_text(STAND_IN_CONVERTER)
    checkpoint = tmp_path / "base-0.6b-seed0"
    checkpoint.mkdir(exist_ok=True)
    return argparse.Namespace(
        checkpoint=checkpoint,
        llama_cpp_source=source,
        converter_python=Path(sys.executable),
        gguf_dir=tmp_path / "gguf",
        quant=quant,
        threads=1,
    )


def test_ggufs_are_converted_once_with_upstreams_own_gguf_package(driver: ModuleType, tmp_path: Path) -> None:
    args = _arguments(tmp_path)
    talker, mmproj, record = driver.build_ggufs(args)
    assert sorted(record["built"]) == sorted([talker.name, mmproj.name])
    talker_call, mmproj_call = json.loads(talker.read_text()), json.loads(mmproj.read_text())
    assert talker_call["args"][:3] == [str(args.checkpoint), "--outtype", "q8_0"]
    assert "--mmproj" in mmproj_call["args"] and "--mmproj" not in talker_call["args"]
    assert mmproj_call["args"][mmproj_call["args"].index("--outtype") + 1] == "q8_0"
    assert talker_call["pythonpath"] == str(args.llama_cpp_source / "gguf-py")
    again = driver.build_ggufs(args)[2]
    assert again["built"] == [] and again["seconds"] == 0.0  # cached: nothing converted twice
    assert not list(args.gguf_dir.glob("*.partial.gguf"))
    # another llama.cpp version converts anew
    assert f"llama-cpp-python{driver.version('llama-cpp-python')}" in talker.name


def test_a_failed_conversion_says_why_and_leaves_no_model(
    driver: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIL_CONVERSION", "1")
    args = _arguments(tmp_path)
    with pytest.raises(RuntimeError, match="upstream conversion failed: .*stand-in converter refuses"):
        driver.build_ggufs(args)
    assert not list(args.gguf_dir.glob("*-mmproj-q8_0.gguf"))  # the next run converts again


def test_k_quants_are_made_by_llama_cpp_from_an_f16_conversion(
    driver: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str, str]] = []

    def quantize(source: Path, target: Path, quant: str, threads: int) -> None:
        calls.append((source.name, target.name, quant))
        target.write_text("quantized")

    monkeypatch.setattr(driver, "_quantize", quantize)
    args = _arguments(tmp_path, quant="q4_k_m")
    talker, _, _ = driver.build_ggufs(args)
    f16 = talker.with_name(talker.name.replace("-talker-q4_k_m", "-talker-f16"))
    assert json.loads(f16.read_text())["args"][1:3] == ["--outtype", "f16"]
    assert calls == [(f16.name, talker.name, "q4_k_m")]


def test_the_predictor_column_comes_from_its_own_timing(driver: ModuleType) -> None:
    run = {"frames": 10, "stage_seconds": {"prefill": 0.2, "talker+predictor": 1.5, "decoder": 0.9}}
    driver.split_stages(run, predictor=0.1)
    assert run["stage_seconds"] == {"prefill": 0.2, "decoder": 0.9, "predictor": 1.0, "talker": 0.5}
