"""The converter as a user runs it: scripts/convert_gguf.py on a checkpoint folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qwen3tts_cli.convert import converter
from qwen3tts_cli.convert.manifest import Manifest, verify
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.fixtures.checkpoint import build_checkpoint

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "convert_gguf.py"

EXPECTED_FILES = {
    "manifest.json",
    "config.json",
    "generation_config.json",
    "codec_config.json",
    "tokenizer.json",
    "tables.safetensors",
    "talker.gguf",
    "predictor.gguf",
    "codec_decoder.onnx",
    "codec_encoder.onnx",
}


def run_script(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("ckpt") / "base", "base", size="tiny", seed=0)


def test_script_converts_a_fixture_with_a_verified_manifest(base_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    result = run_script(base_checkpoint, out, "--quant", "q8_0", "--source-repo", "local/test")
    assert result.returncode == 0, result.stderr
    assert "converted" in result.stdout
    names = {p.name for p in out.iterdir()}
    assert EXPECTED_FILES | {"speaker_encoder.onnx"} <= names
    manifest = verify(out, checksums=True)
    assert manifest.kind == "base" and manifest.quant == "q8_0" and manifest.source_repo == "local/test"
    assert set(manifest.files) == names - {"manifest.json"}
    assert not list(tmp_path.glob(".model.tmp-*")), "temporary folder left behind"


def test_manifest_detects_a_damaged_file(base_checkpoint: Path, tmp_path: Path) -> None:
    out = converter.convert_checkpoint(base_checkpoint, tmp_path / "m", "f32")
    with open(out / "tokenizer.json", "r+b") as f:  # same size, different bytes
        first = f.read(1)
        f.seek(0)
        f.write(b"[" if first != b"[" else b"{")
    verify(out, checksums=False)  # sizes still match
    with pytest.raises(Qwen3TTSError, match="sha256"):
        verify(out, checksums=True)
    (out / "talker.gguf").unlink()
    with pytest.raises(Qwen3TTSError, match="talker.gguf is missing"):
        verify(out, checksums=False)


def test_missing_files_give_one_line_error(base_checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(base_checkpoint, broken)
    (broken / "model.safetensors").unlink()
    (broken / "speech_tokenizer" / "config.json").unlink()
    result = run_script(broken, tmp_path / "out")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "model.safetensors" in lines[0] and "speech_tokenizer/config.json" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_not_a_folder_and_wrong_model_type(tmp_path: Path, base_checkpoint: Path) -> None:
    result = run_script(tmp_path / "nope", tmp_path / "out")
    assert result.returncode == 2 and "does not exist" in result.stderr
    other = tmp_path / "other"
    shutil.copytree(base_checkpoint, other)
    config = json.loads((other / "config.json").read_text())
    config["model_type"] = "llama"
    (other / "config.json").write_text(json.dumps(config))
    result = run_script(other, tmp_path / "out")
    assert result.returncode == 2 and "model_type" in result.stderr


def test_truncated_weights_are_reported(base_checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "truncated"
    shutil.copytree(base_checkpoint, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = run_script(broken, tmp_path / "out")
    assert result.returncode == 2 and "truncated" in result.stderr


def test_existing_output_is_kept_unless_forced(base_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_script(base_checkpoint, out, "--quant", "f32")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert (out / "keep.txt").read_text() == "mine"
    result = run_script(base_checkpoint, out, "--quant", "f32", "--force")
    assert result.returncode == 0, result.stderr
    assert not (out / "keep.txt").exists() and (out / "manifest.json").is_file()


def test_unknown_quant_is_refused(base_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(Qwen3TTSError, match="unknown quantization"):
        converter.convert_checkpoint(base_checkpoint, tmp_path / "m", "q3_xs")


def test_interrupted_conversion_leaves_nothing_and_next_run_cleans_up(
    base_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(converter, "write_decoder_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        converter.convert_checkpoint(base_checkpoint, tmp_path / "m", "f32")
    assert list(tmp_path.iterdir()) == []
    # a folder left by a killed process (pid that no longer exists) is removed by the next run
    stale = tmp_path / ".m.tmp-999999999"
    stale.mkdir()
    monkeypatch.undo()
    converter.convert_checkpoint(base_checkpoint, tmp_path / "m", "f32")
    assert not stale.exists()
    assert Manifest.read(tmp_path / "m").quant == "f32"
