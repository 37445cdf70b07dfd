"""Smoke test of the benchmark (`qwen3tts bench`): tiny fixture, 2 frames, no peers.

The real measurements (0.6B / 1.7B shapes, peers) are run by hand; see benchmarks/README.md. This only
checks that a run produces the JSON and markdown with sane values.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from qwen3tts_cli import bench
from qwen3tts_cli.cli.bench import bench as bench_command

FRAMES = 2


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> bench.BenchReport:
    root = tmp_path_factory.mktemp("bench")
    config = bench.BenchConfig(
        size="tiny",
        quants=["q8_0"],
        frames=FRAMES,
        repeats=2,
        threads=2,  # the decoder beside the LMs, as on a user's machine
        long_frames=FRAMES,
        long_batch=3,
        workdir=root / "work",
        out=root / "out",
        vox_python=root / "no-such-python",
        vocabulary="fixture",  # the same with or without dashscope installed
    )
    return bench.run_benchmark(config)


def test_json_has_the_measurements(report: bench.BenchReport) -> None:
    data = json.loads(report.json_path.read_text(encoding="utf-8"))
    assert data["schema"] == bench.SCHEMA
    assert data["config"]["frames"] == FRAMES and data["config"]["threads"] == 2
    ours = data["ours"]["q8_0"]
    assert ours["status"] == "ok"
    single = ours["single"]
    assert single["frames"] == FRAMES
    assert single["pieces"] == 1
    assert single["audio_seconds"] == pytest.approx(FRAMES / bench.FRAME_RATE)
    assert 2 <= len(single["runs"]) <= 4  # noisy runs are repeated, at most twice the repeats
    for run in single["runs"]:
        assert run["frames"] == FRAMES
        assert 0 < run["first_audio_seconds"] <= run["wall_seconds"]
        assert math.isfinite(run["rtf"]) and run["rtf"] > 0
        assert run["stage_seconds"]["talker"] > 0 and run["stage_seconds"]["predictor"] > 0
        assert run["stage_seconds"]["decoder"] > 0 and run["stage_seconds"]["prefill"] > 0
        assert run["load"]["other_cores"] >= 0 and run["load"]["own_cores"] > 0
    rtf = single["rtf"]
    assert 0 < rtf["min"] <= rtf["median"] <= rtf["max"] and math.isfinite(rtf["max"])
    split = single["per_frame_ms"]
    assert set(bench.STAGES) <= set(split)
    assert all(run["decoder_overlapped"] for run in single["runs"])
    # the decoder's time is spent on its own thread, so only the caller thread's stages add up to the total
    assert split["total"] >= sum(split[s] for s in bench.STAGES if s != "decoder") - 1e-6
    assert ours["peak_rss_mb"] > 0 and ours["load_seconds"] > 0
    assert ours["conversion"]["seconds"] > 0 and ours["conversion"]["peak_rss_mb"] > 0
    assert data["checkpoint"]["vocabulary"].startswith("fixture")
    assert (Path(data["checkpoint"]["folder"]) / "config.json").is_file()
    assert data["text"]["tokens"]["single"] > 0 and len(data["text"]["tokens"]["long_pieces"]) == 7


def test_long_text_splits_into_pieces(report: bench.BenchReport) -> None:
    long = report.data["ours"]["q8_0"]["long"]
    assert long["pieces"] == 7  # eight sentences in LONG_TEXT, two short ones spoken as one piece
    assert long["frames"] == 7 * FRAMES and long["batch"] == 3
    assert report.data["ours"]["q8_0"]["long_peak_rss_mb"] > 0
    assert long["rtf"]["median"] > 0
    for run in long["runs"]:  # the batched steps are timed too, and the prompts apart from them
        assert run["stage_seconds"]["talker"] > 0 and run["stage_seconds"]["predictor"] > 0
        assert run["stage_seconds"]["sampling"] > 0 and run["stage_seconds"]["prefill"] > 0
        assert run["stage_calls"]["prefill"] >= 1
        # LM time split by thread count adds up to the LM stages; decoding goes on after the last frame
        lm = sum(run["stage_seconds"][stage] for stage in ("talker", "predictor", "prefill"))
        assert sum(run["lm_seconds_by_threads"].values()) == pytest.approx(lm, rel=1e-3, abs=1e-3)
        assert set(run["lm_seconds_by_threads"]) <= {"1", "2"}
        assert 0 < run["decoding_after_last_frame_seconds"] < run["wall_seconds"]
    assert "long text (batch 3)" in report.markdown
    assert "q8_0 long text, median run" in report.markdown and "after the last frame" in report.markdown


def test_missing_peers_are_reported(report: bench.BenchReport) -> None:
    assert report.data["official"]["status"].startswith("not installed")
    assert all(v["status"].startswith("not installed") for v in report.data["vox"].values())
    markdown = report.markdown_path.read_text(encoding="utf-8")
    assert "| qwen3tts | q8_0 |" in markdown
    assert "official (PyTorch fp32) | | not installed" in markdown
    assert report.data["upstream"]["q8_0"]["status"].startswith("not run (pass --llama-cpp-source")
    assert "llama.cpp qwen3tts+mtmd q8_0 | | not run" in markdown
    assert report.data["qwentts"]["q8_0"]["status"].startswith("not run (pass --qwentts-source")
    assert "| qwentts.cpp q8_0 | | not run" in markdown
    assert "## Where the time goes" in markdown


def test_upstream_column_needs_a_torch_interpreter_for_its_converter(
    report: bench.BenchReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(bench.PEER_MODULES, "official", ("no_such_module_for_qwen3tts_tests",))
    config = bench.BenchConfig(size="tiny", quants=["q8_0", "q4_k_m"], llama_cpp_source=tmp_path)
    records = bench._run_upstream(config, tmp_path, 1, lambda _line: None)
    assert set(records) == {"q8_0", "q4_k_m"}
    assert all("no convert_hf_to_gguf.py in" in r["status"] for r in records.values())
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    records = bench._run_upstream(config, tmp_path, 1, lambda _line: None)
    assert all("needs a Python with torch" in r["status"] for r in records.values())
    assert not (tmp_path / "checkpoints").exists()  # nothing built for a column that cannot run


def _peer_record(rtf: float, frames: int = 10) -> dict:
    audio = frames / bench.FRAME_RATE
    runs = [
        bench.run_record(
            {"load": {"other_cores": 0.0}},
            wall=rtf * audio,
            first=None,
            audio=audio,
            frames=frames,
            pieces=1,
            stage_seconds={"talker": 0.1 * audio, "predictor": 0.3 * audio, "decoder": 0.5 * audio},
        )
    ]
    return {
        "status": "ok",
        "precision": "q8_0 (talker; mmproj q8_0)",
        "single": bench.stream_summary(runs),
        "peak_rss_mb": 2800.0,
        "streaming": False,
    }


def test_an_upstream_measurement_gets_its_rows_and_ratio(report: bench.BenchReport) -> None:
    data = json.loads(json.dumps(report.data))
    ours = data["ours"]["q8_0"]["single"]["rtf"]["median"]
    data["upstream"] = {"q8_0": _peer_record(rtf=ours * 3)}
    markdown = bench.render_markdown(data)
    our_row = next(line for line in markdown.splitlines() if line.startswith("| qwen3tts | q8_0 |"))
    assert our_row.split(" | ")[-2] == "3.00× faster"  # vs llama.cpp (then vs qwentts.cpp: not run)
    assert our_row.rstrip(" |").endswith("–")
    assert "| llama.cpp qwen3tts+mtmd q8_0 | q8_0 (talker; mmproj q8_0) |" in markdown
    assert "(no streaming)" in markdown
    split = next(
        line for line in markdown.splitlines() if line.startswith("| llama.cpp qwen3tts+mtmd q8_0 | 8")
    )
    assert split.split(" | ")[1:3] == ["8.0", "24.0"]  # talker, predictor in ms per frame


def test_reruns_reuse_the_prepared_folders(report: bench.BenchReport, tmp_path: Path) -> None:
    workdir = Path(report.data["config"]["workdir"])
    config = bench.BenchConfig(
        size="tiny",
        frames=1,
        repeats=1,
        threads=1,
        long_text=False,
        workdir=workdir,
        out=tmp_path,
        vocabulary="fixture",
        peers=False,
    )
    again = bench.run_benchmark(config)
    assert again.data["official"] is None and again.data["vox"] == {}  # --no-peers: ours only
    assert again.data["checkpoint"]["cached"] is True
    assert again.data["ours"]["q8_0"]["conversion"]["cached"] is True
    assert "long" not in again.data["ours"]["q8_0"]


def test_command_reports_bad_sizes_as_errors(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(bench_command)
    result = CliRunner().invoke(
        app, ["--size", "huge", "--frames", "1", "--workdir", str(tmp_path), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "error:" in result.output


def test_a_folder_from_an_older_converter_is_converted_again(tmp_path: Path, checkpoint_factory) -> None:
    from qwen3tts_cli.convert.manifest import CONVERTER_VERSION

    checkpoint = checkpoint_factory("custom_voice", "tiny")
    target = bench.converted_dir(tmp_path, checkpoint, "q8_0")
    target.mkdir(parents=True)
    (target / "manifest.json").write_text(json.dumps({"converter_version": "0"}))
    (target.parent / f"{target.name}.convert.json").write_text(json.dumps({"seconds": 1.0}))
    folder, record = bench.prepare_converted(tmp_path, checkpoint, "q8_0", 1, lambda _line: None)
    assert folder == target and not record.get("cached")
    assert json.loads((target / "manifest.json").read_text())["converter_version"] == CONVERTER_VERSION
    _, again = bench.prepare_converted(tmp_path, checkpoint, "q8_0", 1, lambda _line: None)
    assert again["cached"]


def test_a_folder_without_the_8bit_projection_is_converted_again(tmp_path: Path, checkpoint_factory) -> None:
    """Older 1.7B-like folders (talker wider than the predictor) lack the 8-bit input projection: users keep
    using them, the bench rebuilds them so it measures what a fresh conversion gives."""
    from qwen3tts_cli.convert.safetensors import SafetensorsFile, write_safetensors
    from qwen3tts_cli.engine.tables import MTP_PROJECTION_Q8

    checkpoint = checkpoint_factory("custom_voice", "tiny-wide")
    folder, _ = bench.prepare_converted(tmp_path, checkpoint, "q8_0", 1, lambda _line: None)
    assert bench._current_conversion(folder)
    tables = folder / "tables.safetensors"
    source = SafetensorsFile(tables)
    kept = {name: np.array(source.raw(name)) for name in source if name not in MTP_PROJECTION_Q8}
    dtypes = {name: source.dtype(name) for name in kept}
    del source
    write_safetensors(tables, kept, dtypes)
    assert not bench._current_conversion(folder)
    again, record = bench.prepare_converted(tmp_path, checkpoint, "q8_0", 1, lambda _line: None)
    assert again == folder and not record.get("cached") and bench._current_conversion(folder)


def test_a_peer_installed_here_runs_in_this_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "vox").mkdir()
    (tmp_path / "vox" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert bench.peer_python("vox", None) == Path(sys.executable)
    assert bench.peer_python("vox", tmp_path / "python") == tmp_path / "python"  # the one given wins
    monkeypatch.setitem(bench.PEER_MODULES, "official", ("torch", "no_such_module_for_qwen3tts"))
    assert bench.peer_python("official", None) is None
