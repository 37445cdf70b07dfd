"""f32 GGUF -> f16 / q8_0 / q4_k_m: what stays wide, what llama.cpp loads, and how far the outputs move.

Random weights have no logit margin, so argmax agreement under quantization is only a weak signal: the
numbers are printed (run with -s) and only loose sanity bars are asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from qwen3tts_cli import spec
from qwen3tts_cli.convert.checkpoint import Checkpoint
from qwen3tts_cli.convert.lm import write_predictor_gguf, write_tables, write_talker_gguf
from qwen3tts_cli.convert.quantize import QUANT_TYPES, gguf_component, quantize_gguf
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.fixtures.checkpoint import build_checkpoint

F32, F16 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("quant")
    ckpt = Checkpoint(build_checkpoint(folder / "ckpt", spec.KIND_CUSTOM_VOICE, "tiny", seed=0))
    files = {"talker": folder / "talker.gguf", "predictor": folder / "predictor.gguf"}
    write_talker_gguf(ckpt, files["talker"])
    write_predictor_gguf(ckpt, files["predictor"])
    write_tables(ckpt, folder / "tables.safetensors")
    files["tables"] = folder / "tables.safetensors"
    return files


def tensor_types(path: Path) -> dict[str, gguf.GGMLQuantizationType]:
    return {t.name: t.tensor_type for t in gguf.GGUFReader(str(path)).tensors}


def test_unknown_quant_names_the_valid_ones(lm_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(Qwen3TTSError) as err:
        quantize_gguf(lm_files["talker"], tmp_path / "x.gguf", "q3_banana")
    assert all(name in str(err.value) for name in QUANT_TYPES)
    assert not (tmp_path / "x.gguf").exists()


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Qwen3TTSError, match="does not exist"):
        quantize_gguf(tmp_path / "none.gguf", tmp_path / "out.gguf", "q8_0")


def test_f32_is_a_byte_copy(lm_files: dict[str, Path], tmp_path: Path) -> None:
    quantize_gguf(lm_files["talker"], tmp_path / "t.gguf", "f32")
    assert (tmp_path / "t.gguf").read_bytes() == lm_files["talker"].read_bytes()


def test_components_are_tagged(lm_files: dict[str, Path]) -> None:
    assert gguf_component(lm_files["talker"]) == "talker"
    assert gguf_component(lm_files["predictor"]) == "predictor"


def test_f16_keeps_norms_and_predictor_ffn_down_wide(lm_files: dict[str, Path], tmp_path: Path) -> None:
    quantize_gguf(lm_files["predictor"], tmp_path / "p16.gguf", "f16")
    quantize_gguf(lm_files["talker"], tmp_path / "t16.gguf", "f16")
    pred, talker = tensor_types(tmp_path / "p16.gguf"), tensor_types(tmp_path / "t16.gguf")
    for types, keep_down in ((pred, True), (talker, False)):
        for name, kind in types.items():
            if name.endswith("norm.weight"):
                assert kind == F32, name
            elif name.endswith("ffn_down.weight"):
                assert kind == (F32 if keep_down else F16), name
            else:
                assert kind == F16, name
    reader = gguf.GGUFReader(str(tmp_path / "p16.gguf"))
    assert reader.get_field("general.file_type").contents() == gguf.LlamaFileType.MOSTLY_F16
    original = gguf.GGUFReader(str(lm_files["predictor"]))
    for key in (
        "qwen3.attention.key_length",
        "qwen3.vocab_size",
        "tokenizer.ggml.model",
        "qwen3tts.component",
    ):
        assert reader.get_field(key).contents() == original.get_field(key).contents(), key


def test_f16_keep_f32_override(lm_files: dict[str, Path], tmp_path: Path) -> None:
    quantize_gguf(lm_files["talker"], tmp_path / "t16.gguf", "f16", keep_f32=[r"attn_q\.weight$"])
    types = tensor_types(tmp_path / "t16.gguf")
    assert types["blk.0.attn_q.weight"] == F32 and types["blk.0.ffn_down.weight"] == F16


# ---- quantized models through llama.cpp -----------------------------------------------------------------
def _compare(path_ref: Path, path_q: Path, embeds: np.ndarray, options: object) -> tuple[float, float, float]:
    """(max abs hidden diff, max abs logits diff, argmax agreement) of a quantized talker vs f32."""
    from qwen3tts_cli.engine.llama import LlamaModel

    results = []
    for path in (path_ref, path_q):
        with LlamaModel(path, options) as model:
            hidden, logits = model.decode(embeds[:16])
            for row in embeds[16:]:
                h, lg = model.decode(row[None])
                hidden, logits = np.concatenate([hidden, h]), np.concatenate([logits, lg])
            results.append((hidden, logits))
    (h0, l0), (h1, l1) = results
    agree = float(np.mean(l0.argmax(-1) == l1.argmax(-1)))
    return float(np.abs(h0 - h1).max()), float(np.abs(l0 - l1).max()), agree


def _compare_predictor(
    path_ref: Path, path_q: Path, tables_path: Path, projected: np.ndarray
) -> tuple[float, float]:
    """(max abs logits diff, argmax agreement) over one 16-position predictor frame, heads via tables."""
    from qwen3tts_cli.engine.llama import LlamaModel, LlamaOptions
    from qwen3tts_cli.engine.tables import Tables

    tables = Tables(tables_path)
    logits = []
    for path in (path_ref, path_q):
        with LlamaModel(path, LlamaOptions(n_ctx=32, n_batch=16, n_threads=1, exact=True)) as model:
            hidden = np.concatenate(
                [model.decode(projected[:2])[0]] + [model.decode(r[None])[0] for r in projected[2:]]
            )
        logits.append(np.stack([tables.predictor_head(g, hidden[g]) for g in range(1, 16)]))
    return float(np.abs(logits[0] - logits[1]).max()), float(
        np.mean(logits[0].argmax(-1) == logits[1].argmax(-1))
    )


@pytest.mark.parametrize("quant", ["f16", "q8_0", "q4_k_m"])
def test_quantized_models_load_and_stay_close(lm_files: dict[str, Path], tmp_path: Path, quant: str) -> None:
    from qwen3tts_cli.engine.llama import LlamaOptions

    talker_q, pred_q = tmp_path / f"talker-{quant}.gguf", tmp_path / f"predictor-{quant}.gguf"
    quantize_gguf(lm_files["talker"], talker_q, quant, threads=1)
    quantize_gguf(lm_files["predictor"], pred_q, quant, threads=1)
    assert talker_q.stat().st_size < lm_files["talker"].stat().st_size
    rng = np.random.default_rng(7)
    embeds = rng.standard_normal((32, 64)).astype(np.float32)
    options = LlamaOptions(n_ctx=64, n_batch=32, n_threads=1, exact=True)
    dh, dl, agree = _compare(lm_files["talker"], talker_q, embeds, options)
    pdl, pagree = _compare_predictor(lm_files["predictor"], pred_q, lm_files["tables"], embeds[:16])
    print(
        f"\n[tiny {quant}] talker: hidden {dh:.3e} logits {dl:.3e} argmax agree {agree:.3f}; "
        f"predictor: logits {pdl:.3e} argmax agree {pagree:.3f}"
    )
    bars = {"f16": (0.05, 0.9), "q8_0": (0.5, 0.6), "q4_k_m": (3.0, 0.2)}
    max_logit_diff, min_agree = bars[quant]
    assert dl < max_logit_diff and pdl < max_logit_diff
    assert agree >= min_agree and pagree >= min_agree


# ---- real 0.6B shape: conversion cost and per-call speed (slow, report only) ----------------------------
_MEASURE = r"""
import json, sys, time
from qwen3tts_cli.convert.checkpoint import Checkpoint
from qwen3tts_cli.convert.lm import write_predictor_gguf, write_talker_gguf, write_tables
from qwen3tts_cli.convert.quantize import quantize_gguf
ckpt, out, step = Checkpoint(sys.argv[1]), sys.argv[2], sys.argv[3]
open("/proc/self/clear_refs", "w").write("5")  # reset the peak: measure the conversion, not the opening
t0 = time.perf_counter()
if step == "f32":
    write_talker_gguf(ckpt, out + "/talker.f32.gguf"); write_predictor_gguf(ckpt, out + "/predictor.f32.gguf")
elif step == "tables":
    write_tables(ckpt, out + "/tables.safetensors")
else:
    for name in ("talker", "predictor"):
        quantize_gguf(f"{out}/{name}.f32.gguf", f"{out}/{name}.{step}.gguf", step, threads=2)
# VmHWM restarts at exec; ru_maxrss would inherit the (large) forking parent's peak
status = open("/proc/self/status").read().split("VmHWM:")[1]
peak = int(status.split()[0]) / 1024
print(json.dumps({"step": step, "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(peak)}))
"""


def _time_calls(talker: Path, predictor: Path, threads: int) -> dict[str, float]:
    from qwen3tts_cli.engine.llama import LlamaModel, LlamaOptions

    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    with LlamaModel(talker, LlamaOptions(n_ctx=512, n_batch=64, n_threads=threads)) as model:
        model.decode(rng.standard_normal((40, model.n_embd)).astype(np.float32))
        steps = []
        for _ in range(20):
            x = rng.standard_normal((1, model.n_embd)).astype(np.float32)
            t0 = time.perf_counter()
            model.decode(x)
            steps.append(time.perf_counter() - t0)
        out["talker_step_ms"] = 1000 * float(np.median(steps))
    with LlamaModel(
        predictor, LlamaOptions(n_ctx=32, n_batch=16, n_threads=threads, want_logits=False)
    ) as model:
        frames = []
        for _ in range(6):
            x = rng.standard_normal((16, model.n_embd)).astype(np.float32)
            t0 = time.perf_counter()
            model.clear()
            model.decode(x[:2])
            for row in x[2:]:
                model.decode(row[None])
            frames.append(time.perf_counter() - t0)
        out["predictor_frame_ms"] = 1000 * float(np.median(frames[1:]))
    return out


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("QWEN3TTS_SLOW"), reason="set QWEN3TTS_SLOW=1 (builds a 2.5 GB checkpoint)"
)
def test_real_size_conversion_and_speed(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = Path(os.environ.get("QWEN3TTS_SLOW_DIR") or tmp_path_factory.mktemp("real"))
    ckpt_dir = folder / "ckpt-0.6b"
    if not (ckpt_dir / "model.safetensors").is_file():
        build_checkpoint(ckpt_dir, spec.KIND_CUSTOM_VOICE, "0.6b", seed=0)
    report = []
    for step in ("f32", "q8_0", "tables"):
        run = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(ckpt_dir), str(folder), step],
            check=True,
            capture_output=True,
            text=True,
        )
        report.append(json.loads(run.stdout.strip().splitlines()[-1]))
    for threads in (1, 2):
        timing = _time_calls(folder / "talker.q8_0.gguf", folder / "predictor.q8_0.gguf", threads)
        report.append({"threads": threads, **{k: round(v, 1) for k, v in timing.items()}})
    print("\n" + "\n".join(json.dumps(r) for r in report))
    assert (folder / "talker.q8_0.gguf").stat().st_size < (folder / "talker.f32.gguf").stat().st_size / 3
