"""Bounded-memory conversion: spooled ONNX initializers, streamed reads, disk-space check, tensor progress."""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qwen3tts_cli import catalog, spec
from qwen3tts_cli.convert.checkpoint import Checkpoint
from qwen3tts_cli.convert.converter import convert_checkpoint
from qwen3tts_cli.convert.onnx_graph import GraphBuilder, _field, silu
from qwen3tts_cli.convert.space import check_free_space, estimate_bytes
from qwen3tts_cli.disk_space import gigabytes
from qwen3tts_cli.errors import Qwen3TTSError
from tests.test_cli import cli_env

ARRAYS = [
    np.zeros((0, 3), np.float32),
    np.asarray(2.0, np.float32),
    np.arange(7, dtype=np.int64),
    np.ones((2, 3, 4), np.float16),
    np.array([True, False]),
    np.arange(300, dtype=np.uint8).reshape(3, 100).T,  # not contiguous
]


def test_spooled_initializers_are_framed_as_protobuf_would(tmp_path: Path) -> None:
    g = GraphBuilder(spool_dir=tmp_path)
    names = [g.weight(a, "w") for a in ARRAYS]
    g._spool.seek(0)
    spooled = g._spool.read()
    expected = b"".join(
        _field(5, numpy_helper.from_array(np.ascontiguousarray(a), n).SerializeToString())
        for a, n in zip(ARRAYS, names, strict=True)
    )
    assert spooled == expected
    assert g.weight_bytes() == sum(a.nbytes for a in ARRAYS)
    g.close()


def test_saved_model_bytes_equal_onnx_save_model(tmp_path: Path) -> None:
    g = GraphBuilder("tiny", doc="a doc", spool_dir=tmp_path)
    x = g.add_input("x", np.float32, [1, "T", 8])
    rng = np.random.default_rng(0)
    y = g.op("MatMul", x, g.weight(rng.standard_normal((8, 4)).astype(np.float32)))
    g.add_output(silu(g, y), "y", np.float32, [1, "T", 4])
    g.metadata["key"] = "value"
    g.save(tmp_path / "streamed.onnx")
    onnx.save_model(g.to_model(), str(tmp_path / "reference.onnx"))
    assert (tmp_path / "streamed.onnx").read_bytes() == (tmp_path / "reference.onnx").read_bytes()
    onnx.checker.check_model(str(tmp_path / "streamed.onnx"))
    assert list(tmp_path.iterdir()) != [] and all(p.suffix == ".onnx" for p in tmp_path.iterdir())
    g.close()


# ---- free disk space ------------------------------------------------------------------------------------
def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("quant", catalog.QUANTS)
def test_space_estimate_covers_the_written_files(
    quant: str, tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    ckpt = tiny_checkpoints[spec.KIND_BASE]
    out = convert_checkpoint(ckpt, tmp_path / "out", quant, threads=1)
    needed = estimate_bytes(Checkpoint(ckpt), quant)
    assert _folder_bytes(out) <= needed <= _folder_bytes(out) * 3 + (64 << 20)


def test_too_little_free_space_is_refused_before_writing(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shutil.disk_usage
    free = 12_345_678

    def fake(path: str | Path) -> object:
        usage = real(path)
        return type(usage)(usage.total, usage.total - free, free)

    monkeypatch.setattr(shutil, "disk_usage", fake)
    ckpt = tiny_checkpoints[spec.KIND_CUSTOM_VOICE]
    needed = estimate_bytes(Checkpoint(ckpt), "q8_0")
    with pytest.raises(Qwen3TTSError) as refused:
        convert_checkpoint(ckpt, tmp_path / "out", "q8_0", threads=1)
    assert refused.value.message == f"converting needs {gigabytes(needed)}, 12.3 MB free at {tmp_path}"
    assert "disk" in refused.value.hint
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary folder left


def test_free_space_of_folders_on_one_disk_adds_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    free = shutil.disk_usage(tmp_path).free
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    check_free_space([(tmp_path / "a", free // 2), (tmp_path / "b", free // 4)])
    with pytest.raises(Qwen3TTSError, match=r"converting needs .* GB free at .*a"):
        check_free_space([(tmp_path / "a", free // 2), (tmp_path / "b", free // 2 + (1 << 30))])


# ---- tensor progress on a terminal ---------------------------------------------------------------------
def _convert_cli(ckpt: Path, out: Path, home: Path, terminal: bool) -> tuple[int, str]:
    args = [sys.executable, "-m", "qwen3tts_cli.cli", "convert", str(ckpt), str(out), "-q", "f16", "-t", "1"]
    env = cli_env(home)
    if not terminal:
        done = subprocess.run(args, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
        return done.returncode, done.stderr.decode()
    leader, follower = pty.openpty()
    child = subprocess.Popen(
        args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return child.wait(timeout=300), b"".join(chunks).decode()


def test_tensor_count_is_drawn_on_a_terminal_only(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ckpt = tiny_checkpoints[spec.KIND_BASE]
    ours = Checkpoint(ckpt)
    total = len(ours.weights) + len(ours.codec_weights)
    code, shown = _convert_cli(ckpt, tmp_path / "tty", tmp_path, terminal=True)
    assert code == 0, shown
    counts = [tuple(map(int, m)) for m in re.findall(r"\rqwen3tts: converting: tensor (\d+) of (\d+)", shown)]
    assert counts[0] == (1, total) and counts[-1] == (total, total)
    assert [n for n, _ in counts] == sorted(n for n, _ in counts)
    assert "qwen3tts: code predictor (f16)" in shown  # the step lines still come
    code, piped = _convert_cli(ckpt, tmp_path / "piped", tmp_path, terminal=False)
    assert code == 0, piped
    assert "tensor" not in piped and "\r" not in piped
    assert "qwen3tts: code predictor (f16)" in piped


def test_library_reports_every_read_tensor(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    convert_checkpoint(
        tiny_checkpoints[spec.KIND_CUSTOM_VOICE],
        tmp_path / "out",
        "f32",
        tensor_progress=lambda n, m: seen.append((n, m)),
    )
    ours = Checkpoint(tiny_checkpoints[spec.KIND_CUSTOM_VOICE])
    speaker = sum(name.startswith("speaker_encoder.") for name in ours.weights)
    total = len(ours.weights) - speaker + len(ours.codec_weights)
    assert seen[-1] == (total, total)
    assert [n for n, _ in seen[:-1]] == list(range(1, len(seen)))  # one call per new tensor, in order
    assert len(seen) > total * 0.8  # nearly every tensor is read: the count moves in small steps
