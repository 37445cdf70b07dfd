"""`qwen3tts batch` on tiny fixture models: outputs equal `say`, resume, kills, bad lines, dry runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_cli import cli_env, read_pcm16, run_cli
from test_cli import converted as converted  # noqa: F401  (the session fixture, shared)

from qwen3tts_cli import spec
from qwen3tts_cli.longform.batch import BatchSettings, run_batch
from qwen3tts_cli.longform.lists import read_list
from qwen3tts_cli.longform.manifest import MANIFEST_NAME
from qwen3tts_cli.tts import TTS

RATE = spec.SAMPLE_RATE
COMMON = ["--threads", "1", "--exact", "--max-frames", "6"]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _statuses(result) -> dict[str, str]:
    return {row["name"]: row["status"] for row in result.json()["lines"]}


def _ref(path: Path, golden, repeat: int = 3) -> Path:
    sf.write(str(path), np.tile(golden.ref_audio(), repeat), RATE)
    return path


ROWS = [
    {"name": "one", "text": "Hello there.", "speaker": "vivian", "seed": 3},
    {"name": "two", "text": "How are you today?", "speaker": "ryan", "seed": 4},
    {"name": "three", "text": "Fine, thanks.", "speaker": "serena", "seed": 5},
]


def test_list_outputs_equal_say_with_the_same_seed(converted, tmp_path: Path) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    env = cli_env(tmp_path)
    listing = _jsonl(tmp_path / "list.jsonl", ROWS)
    out = tmp_path / "out"
    result = run_cli(["batch", listing, "--out-dir", out, "--model-dir", model, "--batch", "3", *COMMON], env)
    assert result.code == 0, result.stderr
    assert "3 done, 0 skipped, 0 failed of 3 lines" in result.stderr
    assert "\r" not in result.stderr  # no progress line when stderr is not a terminal
    for row in ROWS[:2]:
        alone = tmp_path / f"say-{row['name']}.wav"
        said = run_cli(
            [
                "say",
                row["text"],
                "-s",
                row["speaker"],
                "--seed",
                row["seed"],
                "-o",
                alone,
                "--model-dir",
                model,
            ]
            + COMMON,
            env,
        )
        assert said.code == 0, said.stderr
        np.testing.assert_array_equal(read_pcm16(out / f"{row['name']}.wav"), read_pcm16(alone))
    records = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]
    assert sorted(r["name"] for r in records) == ["one", "three", "two"]
    first = next(r for r in records if r["name"] == "one")
    assert first["seed"] == 3 and first["voice"] == {"kind": "preset", "speaker": "vivian", "instruct": None}
    assert first["frames"] > 0 and first["status"] == "ok" and first["model"].startswith("custom_voice/")
    assert first["seconds"] == pytest.approx(len(read_pcm16(out / "one.wav")) / RATE, abs=1e-3)


def test_short_tsv_with_the_command_line_voice_and_format(converted, tmp_path: Path) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    listing = tmp_path / "list.tsv"
    listing.write_text("# name<TAB>text\nfirst.wav\tGood morning.\n\nsecond\tGood night.\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["batch", listing, "--out-dir", out, "--model-dir", model, "-s", "aiden", "--seed", "9"]
    result = run_cli([*args, "--format", "flac", "--json", *COMMON], cli_env(tmp_path))
    assert result.code == 0, result.stderr
    facts = result.json()
    assert facts["done"] == 2 and facts["failed"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["first.flac", MANIFEST_NAME, "second.flac"]
    with TTS.load(model, threads=1, exact=True) as tts:
        alone = tts.synthesize("Good night.", speaker="aiden", seed=9, max_frames=6).samples
    written, rate = sf.read(str(out / "second.flac"), dtype="int16")
    expected = np.round(np.clip(alone, -1, 1) * 32767).astype(np.int16)
    assert rate == RATE and np.abs(written.astype(int) - expected).max() <= 1


def _loader(folders: dict[str, Path], loads: list[str]):
    @contextmanager
    def load(mode: str, width: int):
        loads.append(mode)
        with TTS.load(folders[mode], threads=1, exact=True, max_batch=width) as tts:
            yield tts

    return load


def test_zipvoice_list_clones_each_reference_once_and_renders_dialogues(
    converted, tmp_path: Path, golden, monkeypatch
) -> None:
    base = converted(spec.KIND_BASE)
    _ref(tmp_path / "a.wav", golden)
    _ref(tmp_path / "b.wav", golden, repeat=4)
    (tmp_path / "prompts").mkdir()
    _ref(tmp_path / "prompts" / "merged.wav", golden, repeat=4)
    listing = tmp_path / "zipvoice.tsv"
    listing.write_text(
        "z1\tWhat I said.\ta.wav\tFirst cloned line.\n"
        "z2\tWhat I said.\ta.wav\tSecond line, same voice.\n"
        "z3\tSomething else.\tb.wav\tThird line.\n"
        "d1\tone\ttwo\ta.wav\tb.wav\t[S1] Hi there. [S2] Hello!\n"
        "d2\t[S1] Hello you. [S2] Hi, how are you?\tprompts/merged.wav\t[S1] Good. [S2] Great.\n",
        encoding="utf-8",
    )
    parsed = read_list(listing)
    assert not parsed.errors and [line.form for line in parsed.lines] == [
        "zipvoice",
        "zipvoice",
        "zipvoice",
        "zipvoice-split",
        "zipvoice-merged",
    ]
    clones: list[str] = []
    original = TTS.clone

    def counting(self, reference, *args, **kwargs):
        clones.append(str(reference))
        return original(self, reference, *args, **kwargs)

    monkeypatch.setattr(TTS, "clone", counting)
    loads: list[str] = []
    out = tmp_path / "out"
    settings = BatchSettings(out_dir=out, batch=3, seed=7, max_frames=5)
    report = run_batch(parsed.lines, _loader({"clone": base}, loads), {"clone": "base/x"}, settings)
    assert [r.status for r in report.results] == ["ok"] * 5, [r.reason for r in report.results]
    assert loads == ["clone"]
    single = [c for c in clones if c.endswith(("a.wav", "b.wav"))]
    assert sorted(single[:2]) == [str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]  # z1+z2 share one clone
    assert len(clones) == 2 + 2 + 2  # z lines, d1 (split: per speaker), d2 (merged: per speaker)
    with TTS.load(base, threads=1, exact=True) as tts:
        pack = original(tts, tmp_path / "a.wav", "What I said.", name="z2")
        alone = tts.synthesize("Second line, same voice.", voice=pack, seed=7, max_frames=5).samples
    np.testing.assert_array_equal(read_pcm16(out / "z2.wav"), np.round(np.clip(alone, -1, 1) * 32767))
    for name in ("d1", "d2"):
        assert len(read_pcm16(out / f"{name}.wav")) > 0.4 * RATE  # two turns and the pause between them


def test_resume_skips_redoes_changed_and_deleted_lines(converted, tmp_path: Path) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    env = cli_env(tmp_path)
    listing = _jsonl(tmp_path / "list.jsonl", ROWS)
    out = tmp_path / "out"
    args = ["batch", listing, "--out-dir", out, "--model-dir", model, "--json", *COMMON]
    assert run_cli(args, env).code == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")}
    again = run_cli(args, env)
    assert again.code == 0 and set(_statuses(again).values()) == {"skipped"}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")} == stamps
    changed = [dict(ROWS[0]), ROWS[1], ROWS[2]]
    changed[0]["text"] = "Hello there, again."
    _jsonl(listing, changed)
    (out / "three.wav").unlink()
    third = run_cli(args, env)
    assert third.code == 0, third.stderr
    assert _statuses(third) == {"one": "ok", "two": "skipped", "three": "ok"}
    assert (out / "two.wav").stat().st_mtime_ns == stamps["two.wav"]
    records = (out / MANIFEST_NAME).read_text().splitlines()
    assert len(records) == 3  # compacted: one record per name
    assert json.loads(next(r for r in records if '"one"' in r))["text"] == "Hello there, again."
    forced = run_cli([*args, "--force"], env)
    assert set(_statuses(forced).values()) == {"ok"}
    quiet = run_cli([*args[: -len(COMMON) - 1], *COMMON, "--quiet"], env)  # no --json
    assert quiet.code == 0 and quiet.stderr == "" and quiet.stdout == b""


def test_sigkill_mid_list_then_rerun_loses_nothing(converted, tmp_path: Path) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    env = cli_env(tmp_path)
    rows = [
        {"name": f"l{i}", "text": f"Line number {i} of the list.", "speaker": "vivian", "seed": i}
        for i in range(8)
    ]
    listing = _jsonl(tmp_path / "list.jsonl", rows)
    out = tmp_path / "out"
    args = ["batch", listing, "--out-dir", out, "--model-dir", model, "--batch", "1"]
    args += ["--threads", "1", "--exact", "--max-frames", "20", "--json"]
    process = subprocess.Popen(
        [sys.executable, "-m", "qwen3tts_cli.cli", *map(str, args)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    manifest = out / MANIFEST_NAME
    while time.monotonic() < deadline and process.poll() is None:
        if manifest.exists() and b'"status": "ok"' in manifest.read_bytes():
            break
        time.sleep(0.02)
    assert process.poll() is None, "the list finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    before = {r["name"] for r in records if r["status"] == "ok"}
    assert 1 <= len(before) < len(rows)
    stamps = {name: (out / f"{name}.wav").stat().st_mtime_ns for name in before}
    (out / ".l7.wav.k1ll3d.part").write_bytes(b"RIFF")  # what a kill in the middle of a write leaves
    rerun = run_cli(args, env)
    assert rerun.code == 0, rerun.stderr
    statuses = _statuses(rerun)
    assert {n for n, s in statuses.items() if s == "skipped"} >= before
    assert all(s in ("ok", "skipped") for s in statuses.values()) and len(statuses) == len(rows)
    assert all((out / f"{name}.wav").stat().st_mtime_ns == stamps[name] for name in before)
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f"l{i}.wav" for i in range(8)), MANIFEST_NAME])
    with TTS.load(model, threads=1, exact=True) as tts:
        alone = tts.synthesize(rows[7]["text"], speaker="vivian", seed=7, max_frames=20).samples
    np.testing.assert_array_equal(read_pcm16(out / "l7.wav"), np.round(np.clip(alone, -1, 1) * 32767))


def test_bad_lines_are_reported_with_their_numbers_and_good_lines_run(converted, tmp_path: Path) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    work = tmp_path / "work"
    work.mkdir()
    listing = work / "list.jsonl"
    lines = [
        json.dumps({"name": "good1", "text": "Fine line.", "speaker": "vivian", "seed": 1}),
        json.dumps({"name": "../escape", "text": "Out of the folder."}),
        json.dumps({"name": "a/b", "text": "Into a sub folder."}),
        json.dumps({"name": "empty", "text": "   "}),
        json.dumps({"name": "good1", "text": "Duplicate."}),
        json.dumps({"name": "nobody", "text": "Unknown speaker.", "speaker": "nobody"}),
        json.dumps({"name": "noref", "text": "Missing reference.", "ref_audio": "missing.wav"}),
        json.dumps({"name": "typo", "text": "x", "speakr": "ryan"}),
        '{"name": "broken", "text": ',
        json.dumps({"name": "good2", "text": "Another fine line.", "speaker": "ryan", "seed": 2}),
    ]
    listing.write_bytes(("\n".join(lines) + "\n").encode() + b'{"name": "bytes", "text": "\xff"}\n')
    out = work / "out"
    result = run_cli(
        ["batch", listing, "--out-dir", out, "--model-dir", model, "--json", *COMMON], cli_env(tmp_path)
    )
    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    expected = {
        2: "unsafe name",
        3: "unsafe name",
        4: "empty text",
        5: "duplicate name (line 1",
        6: "unknown speaker 'nobody'",
        7: "file not found",
        8: "unknown key(s) speakr",
        9: "not valid JSON",
        11: "not valid UTF-8",
    }
    for number, fragment in expected.items():
        assert any(e.startswith(f"error: line {number}") and fragment in e for e in errors), (number, errors)
    assert len(errors) == len(expected)
    facts = result.json()
    assert (facts["done"], facts["failed"], facts["total"]) == (2, 9, 11)
    assert {row["line"]: row["status"] for row in facts["lines"]}[6] == "failed"
    assert sorted(p.name for p in out.iterdir()) == ["good1.wav", "good2.wav", MANIFEST_NAME]
    assert sorted(p.name for p in work.iterdir()) == ["list.jsonl", "out"]
    assert "batch: 2 done, 0 skipped, 9 failed of 11 lines" in result.stderr


def test_dry_run_loads_no_model_and_lists_runs_and_skips(converted, tmp_path: Path) -> None:
    listing = _jsonl(tmp_path / "list.jsonl", [*ROWS, {"name": "x", "text": ""}])
    out = tmp_path / "out"
    env = cli_env(tmp_path)  # offline, empty cache: resolving the catalog model would fail
    dry = run_cli(["batch", listing, "--out-dir", out, "--dry-run", "--json"], env)
    assert dry.code == 1, dry.stderr
    rows = {row["name"]: row["status"] for row in dry.json()["lines"]}
    assert rows == {"one": "run", "two": "run", "three": "run", "x": "failed"}
    assert not out.exists() and not (tmp_path / "cache").exists()
    model = converted(spec.KIND_CUSTOM_VOICE)
    _jsonl(listing, ROWS)
    assert run_cli(["batch", listing, "--out-dir", out, "--model-dir", model, *COMMON], env).code == 0
    dry = run_cli(["batch", listing, "--out-dir", out, "--model-dir", model, *COMMON, "--dry-run"], env)
    assert dry.code == 0, dry.stderr
    assert [line.split()[0] for line in dry.out.splitlines()] == ["skip", "skip", "skip"]


def test_a_kind_that_cannot_be_had_offline_is_one_error_before_any_audio(converted, tmp_path: Path) -> None:
    listing = _jsonl(
        tmp_path / "list.jsonl",
        [ROWS[0], {"name": "designed", "text": "Hi.", "design": "A deep, slow voice."}],
    )
    out = tmp_path / "out"
    model = converted(spec.KIND_CUSTOM_VOICE)
    result = run_cli(["batch", listing, "--out-dir", out, "--model-dir", model, *COMMON], cli_env(tmp_path))
    assert result.code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "line(s) 2 need a voice_design model" in errors[0], result.stderr
    assert not out.exists() or not any(out.glob("*.wav"))


def test_line_speed_changes_the_tempo_of_that_line_only(converted, tmp_path: Path) -> None:
    from qwen3tts_cli.longform.lists import parse_list

    model = converted(spec.KIND_CUSTOM_VOICE)
    rows = [
        {"name": "plain", "text": "A line spoken twice.", "speaker": "ryan", "seed": 2},
        {"name": "fast", "text": "A line spoken twice.", "speaker": "ryan", "seed": 2, "speed": 2.0},
    ]
    parsed = parse_list("\n".join(json.dumps(r) for r in rows).encode())
    out = tmp_path / "out"
    loads: list[str] = []
    settings = BatchSettings(out_dir=out, batch=2, max_frames=12)
    report = run_batch(parsed.lines, _loader({"presets": model}, loads), {"presets": "cv"}, settings)
    assert [r.status for r in report.results] == ["ok", "ok"], [r.reason for r in report.results]
    plain, fast = read_pcm16(out / "plain.wav"), read_pcm16(out / "fast.wav")
    assert len(fast) == round(len(plain) / 2.0)
    from qwen3tts_cli.shaping import Shaping, shape

    with TTS.load(model, threads=1, exact=True) as tts:
        alone = tts.synthesize(rows[0]["text"], speaker="ryan", seed=2, max_frames=12).samples
    expected = shape(alone, RATE, Shaping(speed=2.0))  # what `say --speed 2` writes
    np.testing.assert_array_equal(fast, np.round(np.clip(expected, -1, 1) * 32767))
    records = {r["name"]: r for r in map(json.loads, (out / MANIFEST_NAME).read_text().splitlines())}
    assert records["fast"]["options"]["shaping"]["speed"] == 2.0
    assert records["plain"]["options"]["shaping"]["speed"] == 1.0


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_exits_cleanly_and_keeps_finished_lines(
    converted, tmp_path: Path, signum: int, code: int
) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    rows = [
        {"name": f"t{i}", "text": f"Sentence {i} of many.", "speaker": "ryan", "seed": i} for i in range(8)
    ]
    listing = _jsonl(tmp_path / "list.jsonl", rows)
    out = tmp_path / "out"
    args = ["batch", listing, "--out-dir", out, "--model-dir", model, "--batch", "1"]
    args += ["--threads", "1", "--exact", "--max-frames", "20"]
    process = subprocess.Popen(
        [sys.executable, "-m", "qwen3tts_cli.cli", *map(str, args)],
        env=cli_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    manifest = out / MANIFEST_NAME
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if manifest.exists() and b'"status": "ok"' in manifest.read_bytes():
            break
        time.sleep(0.02)
    assert process.poll() is None, "the list finished before it could be stopped"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert b"Traceback" not in stderr
    assert b"the finished lines are kept in" in stderr
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert 1 <= len([r for r in records if r["status"] == "ok"]) < len(rows)
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([MANIFEST_NAME, *(r["output"] for r in records)])  # no temp files, no partials


def test_one_run_per_output_folder_and_stale_parts_removed(tmp_path: Path) -> None:
    from qwen3tts_cli.errors import Qwen3TTSError
    from qwen3tts_cli.longform.batch import folder_lock

    (tmp_path / ".a.wav.x1.part").write_bytes(b"")
    (tmp_path / "keep.wav").write_bytes(b"")

    @contextmanager
    def never(_mode: str, _width: int):
        raise AssertionError("no line needs a model")
        yield

    report = run_batch([], never, {}, BatchSettings(out_dir=tmp_path))
    assert report.results == [] and sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]
    with folder_lock(tmp_path), pytest.raises(Qwen3TTSError, match="another batch run is writing"):
        run_batch([], never, {}, BatchSettings(out_dir=tmp_path))


def test_line_lexicon_respells_before_speaking_and_is_recorded(converted, tmp_path: Path) -> None:
    from qwen3tts_cli.longform.lists import read_list

    model = converted(spec.KIND_CUSTOM_VOICE)
    (tmp_path / "fixes.tsv").write_text("gif\tjif\n", encoding="utf-8")
    (tmp_path / "broken.tsv").write_text("only one column\n", encoding="utf-8")
    listing = _jsonl(
        tmp_path / "list.jsonl",
        [
            {"name": "fixed", "text": "GIF files.", "speaker": "ryan", "seed": 4, "lexicon": "fixes.tsv"},
            {"name": "bad", "text": "GIF files.", "speaker": "ryan", "lexicon": "broken.tsv"},
        ],
    )
    out = tmp_path / "out"
    loads: list[str] = []
    report = run_batch(
        read_list(listing).lines,
        _loader({"presets": model}, loads),
        {"presets": "cv"},
        BatchSettings(out_dir=out, max_frames=6),
    )
    fixed, bad = sorted(report.results, key=lambda r: r.line)
    assert fixed.status == "ok" and fixed.replacements == [{"written": "gif", "spoken": "jif", "count": 1}]
    assert bad.status == "failed" and bad.line == 2 and "broken.tsv" in (bad.reason or "")
    with TTS.load(model, threads=1, exact=True) as tts:
        alone = tts.synthesize("jif files.", speaker="ryan", seed=4, max_frames=6).samples
    np.testing.assert_array_equal(read_pcm16(out / "fixed.wav"), np.round(np.clip(alone, -1, 1) * 32767))
    record = json.loads((out / MANIFEST_NAME).read_text())
    assert record["replacements"] == fixed.replacements and len(record["options"]["lexicon"]) == 64


def test_progress_draws_only_when_enabled(capsys) -> None:
    from qwen3tts_cli.cli.batch import _Progress
    from qwen3tts_cli.longform.batch import LineResult

    drawn = _Progress(total=4, failed=1, enabled=True)
    drawn.line(LineResult(1, "a", "skipped", "a.wav"))
    drawn.line(LineResult(2, "b", "ok", "b.wav", seconds=2.5))
    drawn.line(LineResult(3, "c", "failed", "c.wav", reason="unknown speaker 'x'"))
    drawn.close()
    err = capsys.readouterr().err
    assert "lines 2/4 done, 1 failed, 2.5 s audio, ETA" in err
    assert "error: line 3 (c): unknown speaker 'x'" in err and err.endswith("\r\x1b[K")
    silent = _Progress(total=2, failed=0, enabled=False)
    silent.line(LineResult(1, "a", "ok", "a.wav", seconds=1.0))
    silent.close()
    assert capsys.readouterr().err == ""


def test_voice_pack_file_relative_to_the_list_and_x_vector_reference(
    converted, tmp_path: Path, golden
) -> None:
    from qwen3tts_cli.longform.lists import read_list
    from qwen3tts_cli.voices import write_pack

    base = converted(spec.KIND_BASE)
    ref = _ref(tmp_path / "me.wav", golden)
    (tmp_path / "packs").mkdir()
    with TTS.load(base, threads=1, exact=True) as tts:
        pack = tts.clone(ref, "What I said.", name="me")
        write_pack(pack, tmp_path / "packs" / "me.json")
        alone = tts.synthesize("Read by the pack.", voice=pack, seed=6, max_frames=6).samples
    listing = _jsonl(
        tmp_path / "list.jsonl",
        [
            {"name": "packed", "text": "Read by the pack.", "voice": "packs/me.json", "seed": 6},
            {"name": "xvec", "text": "Embedding only.", "ref_audio": "me.wav", "seed": 6},
        ],
    )
    out = tmp_path / "out"
    loads: list[str] = []
    report = run_batch(
        read_list(listing).lines,
        _loader({"clone": base}, loads),
        {"clone": "base"},
        BatchSettings(out_dir=out, max_frames=6),
    )
    assert [r.status for r in report.results] == ["ok", "ok"], [r.reason for r in report.results]
    np.testing.assert_array_equal(read_pcm16(out / "packed.wav"), np.round(np.clip(alone, -1, 1) * 32767))
    records = {r["name"]: r for r in map(json.loads, (out / MANIFEST_NAME).read_text().splitlines())}
    assert records["packed"]["voice"]["voice"] == str(tmp_path / "packs" / "me.json")
    assert len(records["packed"]["voice"]["sha256"]) == 64
    assert records["xvec"]["voice"]["ref_text"] is None  # no transcript: x-vector clone


def test_mixed_kinds_load_one_model_at_a_time_from_repeated_model_dirs(
    converted, tmp_path: Path, golden
) -> None:
    custom, design, base = (
        converted(k) for k in (spec.KIND_CUSTOM_VOICE, spec.KIND_VOICE_DESIGN, spec.KIND_BASE)
    )
    _ref(tmp_path / "me.wav", golden)
    listing = _jsonl(
        tmp_path / "list.jsonl",
        [
            {"name": "cloned", "text": "A cloned line.", "ref_audio": "me.wav", "ref_text": "What I said."},
            {"name": "designed", "text": "A designed line.", "design": "A deep, slow voice.", "seed": 8},
            {"name": "preset", "text": "A preset line.", "speaker": "vivian"},
        ],
    )
    out = tmp_path / "out"
    dirs = ["--model-dir", base, "--model-dir", custom, "--model-dir", design]
    result = run_cli(
        ["batch", listing, "--out-dir", out, *dirs, "--seed", "1", "--json", *COMMON], cli_env(tmp_path)
    )
    assert result.code == 0, result.stderr
    facts = result.json()
    assert facts["done"] == 3 and {row["name"]: row["seed"] for row in facts["lines"]} == {
        "cloned": 1,
        "designed": 8,
        "preset": 1,
    }
    with TTS.load(design, threads=1, exact=True) as tts:
        alone = tts.synthesize(
            "A designed line.", instruct="A deep, slow voice.", seed=8, max_frames=6
        ).samples
    np.testing.assert_array_equal(read_pcm16(out / "designed.wav"), np.round(np.clip(alone, -1, 1) * 32767))
    models = {r["name"]: r["model"] for r in map(json.loads, (out / MANIFEST_NAME).read_text().splitlines())}
    assert [models[n].split("/")[0] for n in ("cloned", "designed", "preset")] == [
        "base",
        "voice_design",
        "custom_voice",
    ]


def test_without_model_options_the_cached_catalog_default_is_used_and_dry_run_sees_it(
    converted, tmp_path: Path
) -> None:
    import shutil

    from qwen3tts_cli import catalog

    env = cli_env(tmp_path)
    default = catalog.default_model(catalog.MODE_PRESETS).name
    shutil.copytree(converted(spec.KIND_CUSTOM_VOICE), tmp_path / "cache" / "models" / default / "f32")
    listing = _jsonl(tmp_path / "list.jsonl", ROWS[:2])
    out = tmp_path / "out"
    args = ["batch", listing, "--out-dir", out, "-q", "f32", *COMMON]
    first = run_cli([*args, "--json"], env)
    assert first.code == 0, first.stderr
    assert first.json()["done"] == 2
    dry = run_cli([*args, "--dry-run"], env)
    assert dry.code == 0, dry.stderr
    assert [line.split()[0] for line in dry.out.splitlines()] == ["skip", "skip"]


def test_a_file_the_user_had_is_never_overwritten_without_force(converted, tmp_path: Path) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    out = tmp_path / "out"
    out.mkdir()
    (out / "two.wav").write_bytes(b"my own recording")
    listing = _jsonl(tmp_path / "list.jsonl", ROWS)
    args = ["batch", listing, "--out-dir", out, "--model-dir", model, "--json", *COMMON]
    result = run_cli(args, cli_env(tmp_path))
    assert result.code == 1
    assert _statuses(result) == {"one": "ok", "two": "failed", "three": "ok"}
    assert "error: line 2 (two): two.wav is already in" in result.stderr and "--force" in result.stderr
    assert (out / "two.wav").read_bytes() == b"my own recording"
    forced = run_cli([*args, "--force"], cli_env(tmp_path))
    assert forced.code == 0 and read_pcm16(out / "two.wav").size > 0


def test_run_wide_shaping_and_lexicon_apply_to_every_line_and_changes_redo_them(
    converted, tmp_path: Path
) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    env = cli_env(tmp_path)
    (tmp_path / "fixes.tsv").write_text("gif\tjif\n", encoding="utf-8")
    rows = [
        {"name": "a", "text": "GIF files.", "speaker": "ryan", "seed": 4},
        {"name": "b", "text": "GIF files.", "speaker": "ryan", "seed": 4, "speed": 1.0},
    ]
    listing = _jsonl(tmp_path / "list.jsonl", rows)
    out = tmp_path / "out"
    args = [
        "batch",
        listing,
        "--out-dir",
        out,
        "--model-dir",
        model,
        "--lexicon",
        tmp_path / "fixes.tsv",
        *COMMON,
    ]
    first = run_cli([*args, "--speed", "2.0", "--json"], env)
    assert first.code == 0, first.stderr
    with TTS.load(model, threads=1, exact=True) as tts:
        alone = tts.synthesize("jif files.", speaker="ryan", seed=4, max_frames=6).samples
    from qwen3tts_cli.shaping import Shaping, shape

    fast = np.round(np.clip(shape(alone, RATE, Shaping(speed=2.0)), -1, 1) * 32767)
    np.testing.assert_array_equal(read_pcm16(out / "a.wav"), fast)  # run-wide speed and lexicon
    np.testing.assert_array_equal(read_pcm16(out / "b.wav"), np.round(np.clip(alone, -1, 1) * 32767))
    again = run_cli([*args, "--speed", "2.0", "--json"], env)
    assert _statuses(again) == {"a": "skipped", "b": "skipped"}
    slower = run_cli([*args, "--speed", "1.5", "--json"], env)
    assert _statuses(slower) == {"a": "ok", "b": "skipped"}  # b keeps its own speed
    paused = run_cli([*args, "--speed", "1.5", "--pause", "0.3", "--json"], env)
    assert _statuses(paused) == {"a": "ok", "b": "ok"}
    bad = run_cli([*args, "--speed", "3"], env)
    assert bad.code == 2 and "--speed" in bad.stderr
