"""The qwentts.cpp column of `qwen3tts bench`: when it runs, its rows and ratio, and its driver's GGUF cache.

The peer itself (the CPU wheel realtimetts-qwen-native-cpu, torch for its converter) lives in its own venv
(benchmarks/setup_qwentts.sh), so nothing here loads it: the driver's conversion is exercised against a
stand-in convert.py / quantizer that check the layout qwentts.cpp's tools expect and write files, and its
timer parsing against log lines as the wheel prints them.
"""

from __future__ import annotations

import importlib.util
import json
import stat
import sys
from pathlib import Path
from types import ModuleType

import pytest

from qwen3tts_cli import bench

DRIVER = Path(__file__).resolve().parents[1] / "benchmarks" / "qwentts_driver.py"


@pytest.fixture(scope="module")
def driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("qwentts_driver", DRIVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- bench.py: when the column runs ----------------------------------------------------------------------
def test_without_a_source_tree_nothing_runs(tmp_path: Path) -> None:
    config = bench.BenchConfig(size="tiny", quants=["q8_0", "f16"])
    records = bench._run_qwentts(config, tmp_path, tmp_path / "ckpt", 1, lambda _line: None)
    assert set(records) == {"q8_0", "f16"}
    assert all(
        r["status"] == "not run (pass --qwentts-source; see benchmarks/setup_qwentts.sh)"
        for r in records.values()
    )
    config.qwentts_source = tmp_path
    records = bench._run_qwentts(config, tmp_path, tmp_path / "ckpt", 1, lambda _line: None)
    assert all(r["status"].startswith(f"not run (no convert.py in {tmp_path}") for r in records.values())


def test_each_precision_runs_only_where_qwentts_has_it(tmp_path: Path) -> None:
    (tmp_path / "convert.py").write_text("")
    config = bench.BenchConfig(
        size="tiny",
        quants=["q8_0", "q4_0", "f32"],
        qwentts_source=tmp_path,
        qwentts_python=tmp_path / "no-such-python",
    )
    seen: list[str] = []
    records = bench._run_qwentts(config, tmp_path, tmp_path / "ckpt", 1, seen.append)
    assert records["q8_0"]["status"].startswith(f"not run (no quantizer in {tmp_path}/build")
    assert records["q4_0"]["status"].startswith("not run (qwentts.cpp has no q4_0; it has BF16, F32, Q4_K_M")
    # F32 needs no quantizer: it gets as far as the interpreter
    assert records["f32"]["status"] == f"not installed ({tmp_path / 'no-such-python'} does not exist)"
    config.peers_every_quant = False
    assert set(bench._run_qwentts(config, tmp_path, tmp_path / "ckpt", 1, seen.append)) == {"q8_0"}


def test_a_missing_interpreter_names_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(bench.PEER_MODULES, "qwentts", ("no_such_module_for_qwen3tts_tests",))
    assert bench.peer_python("qwentts", None) is None
    record = bench.run_peer("qwentts", None, [], lambda _line: None)
    assert record["status"] == "not installed (pass --qwentts-python; see benchmarks/setup_qwentts.sh)"


def test_the_driver_gets_the_checkpoint_source_quant_and_common_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "convert.py").write_text("")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "quantize").write_text("")
    calls: list[tuple] = []
    monkeypatch.setattr(bench, "run_peer", lambda *args, **_kw: calls.append(args) or {"status": "ok"})
    config = bench.BenchConfig(
        size="tiny", quants=["q4_k_m"], frames=7, repeats=2, seed=5, qwentts_source=tmp_path, greedy=True
    )
    records = bench._run_qwentts(config, tmp_path / "work", tmp_path / "ckpt", 2, lambda _line: None)
    assert records == {"q4_k_m": {"status": "ok"}}
    name, _python, args, _say = calls[0]
    assert name == "qwentts"
    given = dict(zip(args[::2], args[1::2], strict=False))
    assert given["--checkpoint"] == str(tmp_path / "ckpt") and given["--quant"] == "q4_k_m"
    assert given["--qwentts-source"] == str(tmp_path)
    assert given["--gguf-dir"] == str(tmp_path / "work" / "qwentts")
    assert given["--frames"] == "7" and given["--threads"] == "2" and given["--seed"] == "5"
    assert args[-1] == "--greedy" and given["--text"] == bench.SHORT_TEXT


# ---- the report: its rows, its ratio column and its split --------------------------------------------------
def _record(rtf: float, stages: dict[str, float], frames: int = 10, first: float | None = 0.2) -> dict:
    audio = frames / bench.FRAME_RATE
    run = bench.run_record(
        {"load": {"other_cores": 0.0}},
        wall=rtf * audio,
        first=first,
        audio=audio,
        frames=frames,
        pieces=1,
        stage_seconds={k: v * frames for k, v in stages.items()},
    )
    return {"status": "ok", "single": bench.stream_summary([run]), "peak_rss_mb": 1000.0}


def _data(ours_rtf: float, qwentts: dict) -> dict:
    ours = _record(ours_rtf, dict.fromkeys((*bench.STAGES, "prefill"), 0.01))
    return {
        "config": {
            "kind": "custom_voice",
            "size": "0.6b",
            "threads": 2,
            "frames": 10,
            "repeats": 1,
            "greedy": False,
            "seed": 1,
        },
        "machine": {"cpu": "test", "cores": 2, "memory_gb": 1},
        "started": "now",
        "ours": {"q8_0": {**ours, "conversion": None}},
        "official": None,
        "vox": {},
        "upstream": {},
        "qwentts": qwentts,
    }


def test_a_qwentts_measurement_gets_its_rows_and_ratio() -> None:
    peer = _record(
        1.5, {"prefill": 0.02, "talker": 0.04, "predictor": 0.05, "sampling": 0.001, "decoder": 0.02}
    )
    peer["precision"] = "Q8_0 (talker, predictor, codec; norms + RVQ F32, convs F16)"
    markdown = bench.render_markdown(_data(0.5, {"q8_0": peer}))
    lines = markdown.splitlines()
    header = next(line for line in lines if line.startswith("| engine |"))
    assert header.rstrip(" |").endswith("vs llama.cpp | vs qwentts.cpp")
    ours = next(line for line in lines if line.startswith("| qwen3tts | q8_0 |"))
    assert ours.count("|") == header.count("|")
    assert ours.rstrip(" |").endswith("3.00× faster")  # the last column: vs qwentts.cpp
    row = next(line for line in lines if line.startswith("| qwentts.cpp q8_0 |"))
    assert row.count("|") == header.count("|")
    assert f"| {peer['precision']} | 1.50 (1.50) | 200 ms | 1000 MiB |" in row
    split = next(line for line in lines if line.startswith("| qwentts.cpp q8_0 | 40"))
    assert split.split(" | ")[1:6] == ["40.0", "50.0", "–", "1.0", "20.0"]  # talker, predictor, heads, ...
    assert "Prompt prefill (ms, once per piece): q8_0 100, qwentts.cpp q8_0 200" in markdown


def test_a_slower_ours_and_a_column_that_did_not_run() -> None:
    markdown = bench.render_markdown(
        _data(2.0, {"q8_0": {"status": "not run (pass --qwentts-source; see benchmarks/setup_qwentts.sh)"}})
    )
    lines = markdown.splitlines()
    header = next(line for line in lines if line.startswith("| engine |"))
    row = next(line for line in lines if line.startswith("| qwentts.cpp q8_0 |"))
    assert row.count("|") == header.count("|") and "| | not run (pass --qwentts-source" in row
    ours = next(line for line in lines if line.startswith("| qwen3tts | q8_0 |"))
    assert ours.rstrip(" |").endswith("–")
    peer = _record(1.0, {"talker": 0.01})
    ours = next(
        line
        for line in bench.render_markdown(_data(2.0, {"q8_0": peer})).splitlines()
        if line.startswith("| qwen3tts | q8_0 |")
    )
    assert ours.rstrip(" |").endswith("2.00× slower")


# ---- the driver: timers and the GGUF cache ----------------------------------------------------------------
PERF_LOG = [
    "[Prompt] Built: 18 ids, N_text=10, N_instruct=0, T_ctx=21, hidden=1024, lang=english (id=2050)",
    "[Pipeline] Generated 8 frames (slot 0)",
    "[Pipeline] Generation done : 8 frames",
    "[Perf] PromptBuild 5.3 ms",
    "[Perf] Prefill 593.9 ms (T_ctx prefill)",
    "[Perf] TTFA 796.6 ms (first frame codes)",
    "[Perf] TalkerDecode 679.5 ms (8 frames, 84.93 ms/frame)",
    "[Perf] CodePredictor 1575.9 ms (196.99 ms/frame)",
    "[Perf] HostCompose 0.3 ms (c0 sample + next emb)",
    "[Perf] CodecDecode 2208.5 ms",
    "[Perf] Total 5073.2 ms (8 frames, 281.96 ms/frame AR, audio 0.64 s, RTF 7.927)",
]


def test_the_stage_times_come_from_qwentts_own_timers(driver: ModuleType) -> None:
    stages, frames = driver.parse_perf(PERF_LOG)
    assert frames == 8
    assert stages == pytest.approx(
        {"prefill": 0.5939, "talker": 0.6795, "predictor": 1.5759, "sampling": 0.0003, "decoder": 2.2085}
    )
    assert driver.parse_perf(["[Load] Talker backend: CPU"]) == ({}, None)
    log = driver.PerfLog()
    log(0, "[Sample] step=0 c0=235")  # DEBUG: left out
    log(1, PERF_LOG[4])
    assert log.take() == [PERF_LOG[4]] and log.take() == []


def test_checkpoint_names_follow_convert_py(driver: ModuleType, tmp_path: Path) -> None:
    for tag, kind, folder, stem in [
        ("0b6", "custom_voice", "Qwen3-TTS-12Hz-0.6B-CustomVoice", "qwen-talker-0.6b-customvoice"),
        ("1b7", "voice_design", "Qwen3-TTS-12Hz-1.7B-VoiceDesign", "qwen-talker-1.7b-voicedesign"),
        ("tiny", "base", "Qwen3-TTS-12Hz-0B-Base", "qwen-talker-0b-base"),
    ]:
        (tmp_path / "config.json").write_text(json.dumps({"tts_model_size": tag, "tts_model_type": kind}))
        assert driver.checkpoint_names(tmp_path) == (folder, stem)


FAKE_CONVERT = """
import sys
from pathlib import Path
# what qwentts.cpp's convert.py reads: checkpoints/<official names>, each with config.json
ckpts = Path("checkpoints")
names = sorted(p.name for p in ckpts.iterdir())
assert names == ["Qwen3-TTS-12Hz-0.6B-CustomVoice", "Qwen3-TTS-Tokenizer-12Hz"], names
assert (ckpts / names[0] / "speech_tokenizer").is_dir() and (ckpts / names[1] / "config.json").is_file()
if (ckpts / names[0] / "fail").exists():
    Path("models").mkdir()
    (Path("models") / "qwen-talker-0.6b-customvoice-F32.gguf").write_text("half")
    sys.exit("boom")
Path("models").mkdir()
(Path("models") / "qwen-talker-0.6b-customvoice-F32.gguf").write_text("talker f32")
(Path("models") / "qwen-tokenizer-12hz-F32.gguf").write_text("codec f32")
"""

FAKE_QUANTIZE = """#!{python}
import sys
from pathlib import Path
source, target, qtype = sys.argv[1:]
Path(target).write_text(Path(source).read_text().replace("f32", qtype))
"""


@pytest.fixture
def qwentts_tree(tmp_path: Path) -> tuple[Path, Path]:
    source = tmp_path / "source"
    (source / "build").mkdir(parents=True)
    (source / "convert.py").write_text(FAKE_CONVERT)
    quantize = source / "build" / "quantize"
    quantize.write_text(FAKE_QUANTIZE.format(python=sys.executable))
    quantize.chmod(quantize.stat().st_mode | stat.S_IEXEC)
    (source / ".qwentts-commit").write_text("a8a7716b530e49fed537c57711247c12fbbb903c\n")
    checkpoint = tmp_path / "custom_voice-0.6b-seed0"
    (checkpoint / "speech_tokenizer").mkdir(parents=True)
    (checkpoint / "speech_tokenizer" / "config.json").write_text("{}")
    config = {"tts_model_size": "0b6", "tts_model_type": "custom_voice"}
    (checkpoint / "config.json").write_text(json.dumps(config))
    return source, checkpoint


def test_ggufs_are_converted_once_per_checkpoint_commit_and_type(
    driver: ModuleType, qwentts_tree: tuple[Path, Path], tmp_path: Path
) -> None:
    source, checkpoint = qwentts_tree
    gguf_dir = tmp_path / "ggufs"
    talker, codec, record = driver.build_ggufs(checkpoint, source, gguf_dir, "q8_0")
    assert talker.parent == gguf_dir / "custom_voice-0.6b-seed0-qwentts-a8a7716"
    assert talker.name == "qwen-talker-0.6b-customvoice-Q8_0.gguf" and talker.read_text() == "talker Q8_0"
    assert codec.name == "qwen-tokenizer-12hz-Q8_0.gguf" and codec.read_text() == "codec Q8_0"
    assert len(record["built"]) == 4 and record["commit"].startswith("a8a7716")
    assert record["bytes"] == {"talker": len("talker Q8_0"), "codec": len("codec Q8_0")}
    assert not list(talker.parent.glob(".convert-*")) and not list(talker.parent.glob("*.partial"))
    _, _, again = driver.build_ggufs(checkpoint, source, gguf_dir, "q8_0")
    assert again["built"] == []
    # another type reuses the F32 files; F32 itself needs no quantizer
    talker4, _, other = driver.build_ggufs(checkpoint, source, gguf_dir, "q4_k_m")
    assert other["built"] == ["qwen-talker-0.6b-customvoice-Q4_K_M.gguf", "qwen-tokenizer-12hz-Q4_K_M.gguf"]
    (source / "build" / "quantize").unlink()
    talker32, _, plain = driver.build_ggufs(checkpoint, source, gguf_dir, "f32")
    assert talker32.read_text() == "talker f32" and plain["built"] == []
    with pytest.raises(RuntimeError, match="no quantizer at .*setup_qwentts.sh"):
        driver.build_ggufs(checkpoint, source, gguf_dir, "f16")
    with pytest.raises(ValueError, match="no counterpart of q4_0"):
        driver.build_ggufs(checkpoint, source, gguf_dir, "q4_0")


def test_a_failed_conversion_leaves_nothing_to_reuse(
    driver: ModuleType, qwentts_tree: tuple[Path, Path], tmp_path: Path
) -> None:
    source, checkpoint = qwentts_tree
    (checkpoint / "fail").write_text("")
    with pytest.raises(RuntimeError, match="convert.py failed: boom"):
        driver.build_ggufs(checkpoint, source, tmp_path / "ggufs", "q8_0")
    folder = tmp_path / "ggufs" / "custom_voice-0.6b-seed0-qwentts-a8a7716"
    assert list(folder.iterdir()) == []  # the half-written talker stayed in the removed staging folder
    (checkpoint / "fail").unlink()
    talker, _, record = driver.build_ggufs(checkpoint, source, tmp_path / "ggufs", "q8_0")
    assert talker.read_text() == "talker Q8_0" and len(record["built"]) == 4
