"""`qwen3tts batch LIST --out-dir DIR`: speak every line of a list into its own file, resumably.

Checked in order of cost: the list (every line parsed, files checked; bad lines reported with their line
number, the others go on), the output folder, then every model the lines need is resolved (offline and
missing is one error before any audio), then the models are loaded one at a time and the lines run
(library: `longform.batch.run_batch`). Exit status 1 when any line failed, 130/143 when interrupted
(finished lines are kept; run the same command again to finish).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qwen3tts_cli.cli.common import (
    CodecDeviceOption,
    DeviceOption,
    GpuLayersOption,
    JsonOption,
    QuantOption,
    QuietOption,
    StatusLine,
    ThreadsOption,
    VoicesDirOption,
    device_choice,
    print_json,
    status,
    usage_error,
)
from qwen3tts_cli.cli.kind_models import kind_loader, resolve_kind_models
from qwen3tts_cli.cli.shaping_options import (
    MaxPauseOption,
    NormalizeOption,
    PauseOption,
    SpeedOption,
    TrimSilenceOption,
    check_pause,
    shaping_from_options,
)

if TYPE_CHECKING:
    from qwen3tts_cli.longform.batch import BatchReport, LineResult
    from qwen3tts_cli.longform.lists import ListLine

VOICE_PANEL = "Voice (short TSV lines and lines without one)"
EXIT_FAILED_LINES = 1
EXIT_INTERRUPTED = 130  # as cli/app.py: 128 + SIGINT


def batch(
    list_file: Annotated[
        Path, typer.Argument(metavar="LIST", help="A .jsonl list, a ZipVoice TSV or NAME<TAB>TEXT lines.")
    ],
    out_dir: Annotated[
        Path, typer.Option("--out-dir", "-d", help="Folder for NAME.EXT files and manifest.jsonl.")
    ],
    audio_format: Annotated[
        str | None, typer.Option("--format", help="wav (default), flac, ogg, mp3; a line's format wins.")
    ] = None,
    speaker: Annotated[
        str | None, typer.Option("--speaker", "-s", help="Preset speaker.", rich_help_panel=VOICE_PANEL)
    ] = None,
    voice: Annotated[
        str | None,
        typer.Option("--voice", "-v", help="A saved voice or pack file.", rich_help_panel=VOICE_PANEL),
    ] = None,
    design: Annotated[
        str | None,
        typer.Option("--design", help="Describe a voice (VoiceDesign).", rich_help_panel=VOICE_PANEL),
    ] = None,
    instruct: Annotated[
        str | None,
        typer.Option("--instruct", "-i", help="Style of a preset speaker.", rich_help_panel=VOICE_PANEL),
    ] = None,
    language: Annotated[
        str | None, typer.Option("--language", "-l", help="Language (default auto); a line's wins.")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", min=0, help="Seed of lines without their own (else random).")
    ] = None,
    batch_width: Annotated[
        int, typer.Option("--batch", min=1, help="Lines generated together on the shared batch.")
    ] = 8,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", min=1, help="Frames per piece at most.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo every line, even finished ones.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the list and show what would run or be skipped.")
    ] = False,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="A catalog name or model folder, repeatable: one per kind the lines need (presets: "
            "CustomVoice, clones and ZipVoice lines: Base, design: VoiceDesign). Other kinds: catalog "
            "default.",
        ),
    ] = None,
    model_dirs: Annotated[
        list[Path] | None, typer.Option("--model-dir", help="A model folder, repeatable (as --model).")
    ] = None,
    quant: QuantOption = None,
    threads: ThreadsOption = None,
    device: DeviceOption = "auto",
    gpu_layers: GpuLayersOption = None,
    codec_device: CodecDeviceOption = "auto",
    exact: Annotated[bool, typer.Option("--exact", help="f32 KV cache, no flash attention.")] = False,
    greedy: Annotated[bool, typer.Option("--greedy", help="No sampling.")] = False,
    lexicon_file: Annotated[
        Path | None,
        typer.Option("--lexicon", help="Respellings for every line (TSV; a line's own lexicon wins)."),
    ] = None,
    speed: SpeedOption = 1.0,
    trim_silence: TrimSilenceOption = False,
    max_pause: MaxPauseOption = None,
    pause: PauseOption = None,
    normalize: NormalizeOption = None,
    voices_dir: VoicesDirOption = None,
    quiet: QuietOption = False,
    json_out: JsonOption = False,
) -> None:
    """Speak a list of lines, each into its own file; reruns skip finished lines (DIR/manifest.jsonl)."""
    from qwen3tts_cli.longform.batch import BatchSettings, modes_needed, run_batch
    from qwen3tts_cli.longform.lists import ListDefaults, check_files, read_list
    from qwen3tts_cli.tts import SamplingOptions

    _check_voice_options(speaker, voice, design, instruct)
    devices = device_choice(device, gpu_layers, codec_device)
    defaults = ListDefaults(
        speaker=speaker, voice=voice, design=design, instruct=instruct, language=language, format=audio_format
    )
    if audio_format is not None:
        _check_format(audio_format)
    shaping, pause = shaping_from_options(speed, trim_silence, max_pause, normalize), check_pause(pause)
    lexicon = None
    if lexicon_file is not None:
        from qwen3tts_cli.lexicon import Lexicon

        lexicon = Lexicon.load(lexicon_file)
    parsed = read_list(list_file, defaults)
    lines, missing = check_files(parsed.lines)
    bad = sorted([*parsed.errors, *missing], key=lambda e: e.line)
    for error in bad:
        print(f"error: {error}", file=sys.stderr)
    if out_dir.exists() and not out_dir.is_dir():
        raise usage_error(f"--out-dir is not a folder: {out_dir}", "choose a folder")
    if not out_dir.exists() and not out_dir.parent.is_dir():
        raise usage_error(f"the parent of --out-dir does not exist: {out_dir.parent}", "create it first")
    settings = BatchSettings(
        out_dir=out_dir,
        batch=batch_width,
        seed=seed,
        max_frames=max_frames,
        force=force,
        sampling=SamplingOptions(greedy=greedy),
        shaping=None if shaping.is_identity else shaping,
        pause=pause,
        lexicon=lexicon,
    )
    given = [*(models or []), *(str(d) for d in (model_dirs or []))]
    needed = modes_needed(lines)
    if dry_run:
        _dry_run(lines, bad, settings, _local_model_ids(given, needed, lines, quant), json_out)
        return
    devices.check_installed()
    folders, ids = _resolve_models(given, needed, lines, quant, quiet)
    progress = _Progress(len(lines) + len(bad), len(bad), enabled=not quiet and sys.stderr.isatty())

    load = kind_loader(folders, threads, exact, voices_dir, devices)
    try:
        report = run_batch(lines, load, ids, settings, progress.line)
    except (KeyboardInterrupt, SystemExit) as stop:  # Ctrl-C, or SIGTERM (cli/app.py raises SystemExit)
        code = EXIT_INTERRUPTED if isinstance(stop, KeyboardInterrupt) else stop.code
        progress.close()
        print(
            f"error: {'interrupted' if code == EXIT_INTERRUPTED else 'stopped'}; the finished lines are kept "
            f"in {out_dir} (run the same command again to finish the rest)",
            file=sys.stderr,
        )
        raise SystemExit(code) from None
    finally:
        progress.close()
    failed = report.count("failed") + len(bad)
    _summary(report, bad, out_dir, quiet, json_out)
    if failed:
        raise typer.Exit(EXIT_FAILED_LINES)


def _check_voice_options(
    speaker: str | None, voice: str | None, design: str | None, instruct: str | None
) -> None:
    options = (("--speaker", speaker), ("--voice", voice), ("--design", design))
    given = [name for name, value in options if value]
    if len(given) > 1:
        raise usage_error(f"{' and '.join(given)} both given", "give one voice for the list's lines")
    if instruct is not None and (voice or design):
        raise usage_error("--instruct styles a preset speaker", "drop --instruct, or use --speaker")
    if design is not None and not design.strip():
        raise usage_error("--design needs a description", 'e.g. --design "A calm, low male voice"')


def _check_format(audio_format: str) -> None:
    from qwen3tts_cli.longform.lists import AUDIO_FORMATS

    if audio_format.lower().lstrip(".") not in AUDIO_FORMATS:
        raise usage_error(f"unknown --format {audio_format!r}", f"use one of: {', '.join(AUDIO_FORMATS)}")


def _resolve_models(
    given: list[str], modes: list[str], lines: list[ListLine], quant: str | None, quiet: bool
) -> tuple[dict[str, Path], dict[str, str]]:
    """A converted folder and identity for every mode the lines need; nothing is loaded yet."""
    from qwen3tts_cli.longform.batch import model_id

    needs = {}
    for mode in modes:
        who = [item for item in lines if item.mode == mode]
        numbers = ", ".join(str(item.line) for item in who[:5]) + (", ..." if len(who) > 5 else "")
        needs[mode] = (f"line(s) {numbers} need", any(item.instruct for item in who))
    resolved = resolve_kind_models(given, needs, quant, quiet)
    return (
        {mode: model.path for mode, model in resolved.items()},
        {mode: model_id(model.manifest) for mode, model in resolved.items()},
    )


def _local_model_ids(
    given: list[str], modes: list[str], lines: list[ListLine], quant: str | None
) -> dict[str, str]:
    """For --dry-run: identities of the models already converted on disk (nothing downloaded or loaded)."""
    from qwen3tts_cli import catalog, hub
    from qwen3tts_cli.convert.manifest import verify
    from qwen3tts_cli.longform.batch import model_id

    def on_disk(name: str) -> Path | None:
        folder = Path(name).expanduser()
        if not folder.is_dir() and catalog.find(name) is not None:
            folder = hub.model_dir(name, quant or catalog.DEFAULT_QUANT)
        return folder if folder.is_dir() and hub.is_converted(folder) else None

    ids: dict[str, str] = {}
    for name in given:
        folder = on_disk(name)
        if folder is not None:
            manifest = verify(folder, checksums=False)
            for mode, kind in catalog.KIND_FOR_MODE.items():
                if kind == manifest.kind:
                    ids[mode] = model_id(manifest)
    if any(on_disk(name) is None for name in given):
        return ids  # a given model of unknown kind: a default could be the wrong one
    for mode in modes:
        if mode not in ids:
            styled = any(item.instruct for item in lines if item.mode == mode)
            folder = on_disk(catalog.default_model(mode, instruct=styled).name)
            if folder is not None:
                ids[mode] = model_id(verify(folder, checksums=False))
    return ids


def _dry_run(
    lines: list[ListLine], bad: list[Any], settings: Any, ids: dict[str, str], json_out: bool
) -> None:
    from qwen3tts_cli.longform.batch import plan_batch

    to_run, settled = plan_batch(lines, settings, ids)
    rows = [
        {"line": item.line, "name": item.name, "output": item.output, "status": "run", "kind": item.mode}
        for item, _ in to_run
    ]
    rows += [r.as_json() | {"status": "skip" if r.status == "skipped" else r.status} for r in settled]
    rows += [{"line": e.line, "name": e.name, "status": "failed", "reason": e.reason} for e in bad]
    rows.sort(key=lambda row: row["line"])
    if json_out:
        print_json({"dry_run": True, "lines": rows}, indent=None)
    else:
        for row in rows:
            what = row.get("output") or row.get("name") or ""
            reason = f"  {row['reason']}" if row.get("reason") else ""
            print(f"{row['status']:<6} line {row['line']:<5} {what}{reason}")
    if any(row["status"] == "failed" for row in rows):
        raise typer.Exit(EXIT_FAILED_LINES)


class _Progress:
    """lines done/failed/total, audio seconds and ETA on one terminal line; nothing elsewhere."""

    def __init__(self, total: int, failed: int, enabled: bool) -> None:
        self.total, self.failed, self.enabled = total, failed, enabled
        self.done = self.skipped = 0
        self.seconds = 0.0
        self.started = time.perf_counter()
        self._status = StatusLine(enabled)

    def line(self, result: LineResult) -> None:
        if result.status == "failed":
            self._status.clear()
            print(f"error: line {result.line} ({result.name}): {result.reason}", file=sys.stderr)
            self.failed += 1
        elif result.status == "skipped":
            self.skipped += 1
        else:
            self.done += 1
            self.seconds += result.seconds
        if not self.enabled:
            return
        worked = self.done + self.failed
        left = self.total - worked - self.skipped
        elapsed = time.perf_counter() - self.started
        eta = f", ETA {elapsed / worked * left:.0f} s" if worked and left else ""
        self._status.show(
            f"lines {self.done + self.skipped}/{self.total} done, {self.failed} failed, "
            f"{self.seconds:.1f} s audio{eta}"
        )

    def close(self) -> None:
        self._status.clear()


def _summary(report: BatchReport, bad: list[Any], out_dir: Path, quiet: bool, json_out: bool) -> None:
    results = [r.as_json() for r in report.results]
    results += [
        {"line": e.line, "name": e.name, "status": "failed", "output": None, "reason": e.reason} for e in bad
    ]
    results.sort(key=lambda row: row["line"])
    done, skipped = report.count("ok"), report.count("skipped")
    failed = report.count("failed") + len(bad)
    rtf = report.rtf
    facts = {
        "out_dir": str(out_dir),
        "done": done,
        "skipped": skipped,
        "failed": failed,
        "total": len(results),
        "audio_seconds": round(report.audio_seconds, 3),
        "wall_seconds": round(report.wall_seconds, 3),
        "real_time_factor": round(rtf, 3) if rtf is not None else None,
        "lines": results,
    }
    if json_out:
        print_json(facts, indent=None)
    if not quiet:
        rtf_text = f", RTF {rtf:.2f}" if rtf is not None else ""
        status(
            f"batch: {done} done, {skipped} skipped, {failed} failed of {len(results)} lines; "
            f"{report.audio_seconds:.1f} s of audio in {report.wall_seconds:.1f} s{rtf_text} -> {out_dir}"
        )
