"""Running a batch list: every line spoken into `DIR/NAME.EXT`, resumable through `DIR/manifest.jsonl`.

Lines are grouped by the model kind they need (presets: CustomVoice, design: VoiceDesign, clones and
two-speaker ZipVoice lines: Base); one model is loaded at a time (`load(mode, width)`), and its lines run
as independent requests through the shared-batch scheduler (`concurrent.synthesize_all`), `batch` at a
time. A reference recording used by many lines is cloned once (keyed by its sha256, transcript and x-vector
flag). Two-speaker lines are rendered with `dialogue.render_dialogue` on the same loaded model.

Each output is written atomically as soon as its line finishes, then its record is appended to the
manifest; a line whose output and record match (`manifest.Manifest.is_done`) is skipped unless `force`.
A line that fails (unknown speaker, unreadable reference, ...) is reported and the others run on. Ctrl-C
or SIGTERM stops the streams in flight and keeps every finished line.
Seeds: the line's `seed`, else the run's, else random (recorded). A dialogue line's turn k uses seed + 1000k.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qwen3tts_cli import catalog
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.longform.concurrent import Job, synthesize_all
from qwen3tts_cli.longform.lists import MERGED, ListLine
from qwen3tts_cli.longform.manifest import Manifest, sha256_file
from qwen3tts_cli.platform_compat import LockedError, exclusive_folder_lock
from qwen3tts_cli.spec import SAMPLE_RATE

if TYPE_CHECKING:
    from qwen3tts_cli.convert.manifest import Manifest as ModelManifest
    from qwen3tts_cli.lexicon import Lexicon
    from qwen3tts_cli.shaping import Shaping
    from qwen3tts_cli.tts import TTS, SamplingOptions
    from qwen3tts_cli.voices import VoicePack

# (catalog mode, batch width) -> a loaded model, closed by the caller's `with` (as for dialogues)
ModelLoader = Callable[[str, int], AbstractContextManager["TTS"]]
MODE_ORDER = (catalog.MODE_PRESETS, catalog.MODE_DESIGN, catalog.MODE_CLONE)
OK, SKIPPED, FAILED = "ok", "skipped", "failed"


@dataclass(frozen=True)
class BatchSettings:
    out_dir: Path
    batch: int = 8  # lines in flight on the shared batch
    seed: int | None = None  # for lines without their own
    max_frames: int | None = None
    force: bool = False
    sampling: SamplingOptions | None = None
    shaping: Shaping | None = None  # every line's (a line's own `speed` replaces the speed)
    pause: float | None = None  # between a line's text pieces (say --pause)
    lexicon: Lexicon | None = None  # every line's; a line's own lexicon file is merged over it


@dataclass
class LineResult:
    line: int
    name: str
    status: str  # OK, SKIPPED or FAILED
    output: str | None = None  # file name inside the output folder
    reason: str | None = None
    seconds: float = 0.0
    frames: int = 0
    seed: int | None = None
    model: str | None = None
    replacements: list[dict[str, Any]] = field(default_factory=list)  # what the line's lexicon changed

    def as_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "name": self.name,
            "status": self.status,
            "output": self.output,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "frames": self.frames,
            "seed": self.seed,
            "replacements": self.replacements,
        }


@dataclass
class BatchReport:
    results: list[LineResult] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def audio_seconds(self) -> float:
        return sum(r.seconds for r in self.results if r.status == OK)

    @property
    def wall_seconds(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def rtf(self) -> float | None:
        audio = self.audio_seconds
        return self.wall_seconds / audio if audio > 0 else None


def model_id(manifest: ModelManifest) -> str:
    """A converted model's identity for resume records: kind/size/quant plus a digest of its files."""
    files = json.dumps({k: v.get("sha256") for k, v in sorted(manifest.files.items())}, sort_keys=True)
    digest = hashlib.sha256(files.encode()).hexdigest()[:16]
    return f"{manifest.kind}/{manifest.size_tag}/{manifest.quant}/{digest}"


def modes_needed(lines: Sequence[ListLine]) -> list[str]:
    present = {item.mode for item in lines}
    return [mode for mode in MODE_ORDER if mode in present]


@functools.lru_cache(maxsize=4096)
def _digest_of(path: str, _mtime_ns: int, _size: int) -> str:
    return sha256_file(Path(path))


def _digest(path: Path) -> str:
    """sha256 of a file, hashed once however many lines use it (until it changes)."""
    stat = path.stat()
    return _digest_of(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def line_identity(item: ListLine, settings: BatchSettings, model: str | None) -> dict[str, Any]:
    """What a finished line must match to be skipped: text, voice, options and model (files by sha256)."""
    if item.prompt_wavs:
        voice: dict[str, Any] = {
            "kind": item.form,
            "prompts": [_digest(p) for p in item.prompt_wavs],
            "prompt_texts": list(item.prompt_texts),
        }
    elif item.ref_audio is not None:
        voice = {"kind": "ref", "sha256": _digest(item.ref_audio), "ref_text": item.ref_text}
    elif item.voice is not None:
        voice = {"kind": "voice", "voice": item.voice}
        if Path(item.voice).is_file():
            voice["sha256"] = _digest(Path(item.voice))
    elif item.design is not None:
        voice = {"kind": "design", "design": item.design}
    else:
        voice = {"kind": "preset", "speaker": item.speaker, "instruct": item.instruct}
    sampling = settings.sampling.overrides() if settings.sampling is not None else {}
    options = {
        "language": item.language or "auto",
        "format": item.format,
        "seed": item.seed if item.seed is not None else settings.seed,
        "max_frames": settings.max_frames,
        "shaping": line_shaping(item, settings).as_dict(),
        "pause": settings.pause,
        "lexicon": _digest(item.lexicon) if item.lexicon is not None else None,
        "run_lexicon": _lexicon_digest(settings.lexicon),
        "sampling": {k: v for k, v in sampling.items() if v is not None},
    }
    return {"text": item.text, "voice": voice, "options": options, "model": model}


def plan_batch(
    lines: Sequence[ListLine], settings: BatchSettings, model_ids: Mapping[str, str | None]
) -> tuple[list[tuple[ListLine, dict[str, Any]]], list[LineResult]]:
    """(lines to run with their identity, results of lines skipped or failed already). No model needed."""
    manifest = Manifest(settings.out_dir) if settings.out_dir.is_dir() else None
    to_run: list[tuple[ListLine, dict[str, Any]]] = []
    settled: list[LineResult] = []
    for item in lines:
        try:
            identity = line_identity(item, settings, model_ids.get(item.mode))
        except OSError as exc:
            reason = f"cannot read {exc.filename}: {exc.strerror}"
            settled.append(LineResult(item.line, item.name, FAILED, item.output, reason))
            continue
        if not settings.force and manifest is not None and manifest.is_done(item.name, identity, item.output):
            record = manifest.records[item.name]
            settled.append(
                LineResult(
                    item.line,
                    item.name,
                    SKIPPED,
                    item.output,
                    seconds=_number(record.get("seconds")),
                    frames=int(_number(record.get("frames"))),
                    seed=record.get("seed"),
                    model=record.get("model"),
                )
            )
            continue
        if not settings.force and _foreign(settings.out_dir, manifest, item):
            reason = f"{item.output} is already in {settings.out_dir} and not from a batch run"
            hint = "move it away, rename the line, or pass --force to overwrite it"
            settled.append(LineResult(item.line, item.name, FAILED, item.output, f"{reason} ({hint})"))
            continue
        to_run.append((item, identity))
    return to_run, settled


def _foreign(folder: Path, manifest: Manifest | None, item: ListLine) -> bool:
    """An existing file at the line's output that no manifest record names: the user's, not ours."""
    exists = (folder / item.output).exists() or (folder / item.output).is_symlink()
    return exists and (manifest is None or not manifest.owns(item.name, item.output))


def run_batch(
    lines: Sequence[ListLine],
    load: ModelLoader,
    model_ids: Mapping[str, str],
    settings: BatchSettings,
    on_line: Callable[[LineResult], None] | None = None,
) -> BatchReport:
    """Speak every line not done yet; `on_line` sees each result (skips first) as it happens."""
    if settings.batch < 1:
        raise Qwen3TTSError(f"batch must be >= 1 (got {settings.batch})", "e.g. --batch 8")
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(settings.out_dir):
        remove_stale_parts(settings.out_dir)
        return _run_locked(lines, load, model_ids, settings, on_line)


def _run_locked(
    lines: Sequence[ListLine],
    load: ModelLoader,
    model_ids: Mapping[str, str],
    settings: BatchSettings,
    on_line: Callable[[LineResult], None] | None,
) -> BatchReport:
    report = BatchReport()
    manifest = Manifest(settings.out_dir)

    def settle(result: LineResult) -> None:
        report.results.append(result)
        if on_line is not None:
            on_line(result)

    to_run, settled = plan_batch(lines, settings, model_ids)
    for result in settled:
        settle(result)
    try:
        for mode in modes_needed([item for item, _ in to_run]):
            group = [(item, identity) for item, identity in to_run if item.mode == mode]
            width = max(1, min(settings.batch, len(group)))
            with load(mode, width) as tts:
                _Runner(tts, manifest, settings, model_ids[mode], settle).run(group)
    finally:
        report.finished = time.perf_counter()
        with contextlib.suppress(OSError):
            manifest.compact()
    return report


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """One batch run per output folder at a time (an advisory lock: flock on POSIX, msvcrt on Windows)."""
    try:
        with exclusive_folder_lock(folder):
            yield
    except LockedError:
        raise Qwen3TTSError(
            f"another batch run is writing to {folder}", "wait for it to finish, or use another --out-dir"
        ) from None


def remove_stale_parts(folder: Path) -> list[Path]:
    """Temporary files a killed run left (`.NAME.EXT.*.part`, `.manifest.jsonl.*.part`): removed."""
    removed = []
    for path in folder.glob(".*.part"):
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _random_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") >> 1


class _Runner:
    """One loaded model's lines: voices prepared (clones cached), single lines batched, dialogues after."""

    def __init__(
        self,
        tts: TTS,
        manifest: Manifest,
        settings: BatchSettings,
        model: str,
        settle: Callable[[LineResult], None],
    ) -> None:
        self.tts = tts
        self.manifest = manifest
        self.settings = settings
        self.model = model
        self.settle = settle
        self._clones: dict[tuple[str, str | None, bool], VoicePack] = {}
        self._packs: dict[str, VoicePack] = {}
        self._lexicons: dict[Path, Lexicon] = {}

    def run(self, group: list[tuple[ListLine, dict[str, Any]]]) -> None:
        jobs: list[Job] = []
        pending: dict[int, tuple[ListLine, dict[str, Any], int]] = {}
        dialogues = []
        for item, identity in group:
            seed = self._seed(item)
            if item.dialogue:
                dialogues.append((item, identity, seed))
                continue
            try:
                options = self._options(item, identity, seed)
            except Exception as exc:  # noqa: BLE001 - any problem of one line fails that line only
                self._fail(item, seed, exc)
                continue
            pending[item.line] = (item, identity, seed)
            jobs.append(Job(item.line, item.text, options))
        with contextlib.closing(synthesize_all(self.tts, jobs, self.settings.batch)) as finished:
            for done in finished:
                item, identity, seed = pending[int(done.key)]  # type: ignore[arg-type]
                if done.error is not None or done.samples is None:
                    self._fail(item, seed, done.error)
                    continue
                replaced = [asdict(r) for r in done.replacements]
                self._finish(item, identity, seed, done.samples, done.frames, replaced)
        for item, identity, seed in dialogues:
            self._dialogue(item, identity, seed)

    # ---- one line --------------------------------------------------------------------------------------
    def _seed(self, item: ListLine) -> int:
        if item.seed is not None:
            return item.seed
        return self.settings.seed if self.settings.seed is not None else _random_seed()

    def _options(self, item: ListLine, identity: dict[str, Any], seed: int) -> dict[str, Any]:
        _check_shaping(item, self.settings)
        run_lexicon = self.settings.lexicon
        lexicon = self._lexicon(item.lexicon) if item.lexicon is not None else None
        options: dict[str, Any] = {
            "language": item.language or "auto",
            "seed": seed,
            "max_frames": self.settings.max_frames,
            "sampling": self.settings.sampling,
            "pause": self.settings.pause,
            "lexicon": run_lexicon.merged(lexicon) if run_lexicon else lexicon,
        }
        if item.design is not None:
            options["instruct"] = item.design
        elif item.voice is not None:
            options["voice"] = self._pack(item.voice)
        elif item.ref_audio is not None:
            options["voice"] = self._clone(item, identity["voice"]["sha256"])
        else:
            options.update(speaker=item.speaker, instruct=item.instruct)
        return options

    def _lexicon(self, path: Path) -> Lexicon:
        from qwen3tts_cli.lexicon import Lexicon

        if path not in self._lexicons:
            self._lexicons[path] = Lexicon.load(path)
        return self._lexicons[path]

    def _pack(self, name: str) -> VoicePack:
        if name not in self._packs:
            self._packs[name] = self.tts.voices.resolve(name, talker_hidden_size=self.tts.model.talker_hidden)
        return self._packs[name]

    def _clone(self, item: ListLine, sha256: str) -> VoicePack:
        x_vector = item.ref_text is None
        key = (sha256, item.ref_text, x_vector)
        if key not in self._clones:
            assert item.ref_audio is not None
            self._clones[key] = self.tts.clone(
                item.ref_audio,
                item.ref_text,
                name=item.name,
                language=item.language or "auto",
                x_vector_only=x_vector,
            )
        return self._clones[key]

    def _dialogue(self, item: ListLine, identity: dict[str, Any], seed: int) -> None:
        from qwen3tts_cli.longform.dialogue import DialogueSettings, render_dialogue
        from qwen3tts_cli.longform.prompts import merged_prompt_cast, split_prompt_cast
        from qwen3tts_cli.longform.script import parse_script

        @contextlib.contextmanager
        def loaded(_mode: str, _width: int) -> Iterator[TTS]:
            yield self.tts  # already loaded: the Base model of this group

        try:
            _check_shaping(item, self.settings)
            script = parse_script(item.text, source=item.name)
            if item.form == MERGED:
                cast = merged_prompt_cast(item.prompt_wavs[0], item.prompt_texts[0])
            else:
                cast = split_prompt_cast(item.prompt_wavs, item.prompt_texts)
            settings = DialogueSettings(
                language=item.language or "auto",
                seed=seed,
                sampling=self.settings.sampling,
                max_frames=self.settings.max_frames,
                batch=self.settings.batch,
            )
            result = render_dialogue(script, cast, loaded, settings)
        except Exception as exc:  # noqa: BLE001 - any problem of one line fails that line only
            self._fail(item, seed, exc)
            return
        self._finish(item, identity, seed, result.samples, result.frames)

    def _finish(
        self,
        item: ListLine,
        identity: dict[str, Any],
        seed: int,
        samples: np.ndarray,
        frames: int,
        replacements: list[dict[str, Any]] | None = None,
    ) -> None:
        from qwen3tts_cli.audio import write_audio

        try:
            samples = _shaped(samples, item, self.settings)
            target = _inside(self.settings.out_dir, item.output)
            self.manifest.append({"name": item.name, "output": item.output, "status": "writing"})
            write_audio(str(target), [samples], item.format)
            digest = sha256_file(target)
        except (Qwen3TTSError, OSError) as exc:
            self._fail(item, seed, exc)
            return
        seconds = len(samples) / SAMPLE_RATE
        record = {
            "name": item.name,
            "output": item.output,
            "line": item.line,
            **identity,
            "seed": seed,
            "frames": frames,
            "seconds": round(seconds, 3),
            "sha256": digest,
            "status": OK,
            "replacements": replacements or [],
        }
        self.manifest.append(record)
        result = LineResult(
            item.line, item.name, OK, item.output, None, seconds, frames, seed, self.model, replacements or []
        )
        self.settle(result)

    def _fail(self, item: ListLine, seed: int, error: BaseException | None) -> None:
        self.settle(LineResult(item.line, item.name, FAILED, item.output, describe(error), seed=seed))


def describe(error: BaseException | None) -> str:
    if isinstance(error, Qwen3TTSError):
        return f"{error.message} ({error.hint})" if error.hint else error.message
    if isinstance(error, OSError):
        return f"{error.strerror or error}{f': {error.filename}' if error.filename else ''}"
    return f"{type(error).__name__}: {error}" if error is not None else "failed"


def _inside(folder: Path, output: str) -> Path:
    """The output path, refused unless it is directly inside the folder (names are checked when parsed)."""
    target = folder / output
    if target.resolve().parent != folder.resolve():
        raise Qwen3TTSError(f"output {output!r} would be outside {folder}", "rename the line")
    return target


def line_shaping(item: ListLine, settings: BatchSettings) -> Shaping:
    """The run's shaping, with the line's own speed when it has one."""
    from qwen3tts_cli.shaping import Shaping

    shaping = settings.shaping or Shaping()
    return shaping if item.speed is None else replace(shaping, speed=item.speed)


def _lexicon_digest(lexicon: Lexicon | None) -> str | None:
    if not lexicon:
        return None
    return hashlib.sha256(json.dumps(lexicon.entries, ensure_ascii=False).encode("utf-8")).hexdigest()


def _check_shaping(item: ListLine, settings: BatchSettings) -> None:
    """What the line's shaping needs (the shaping extra): a per-line failure naming it when missing."""
    from qwen3tts_cli.shaping import require_libraries

    require_libraries(line_shaping(item, settings))


def _shaped(samples: np.ndarray, item: ListLine, settings: BatchSettings) -> np.ndarray:
    shaping = line_shaping(item, settings)
    if shaping.is_identity:
        return samples
    from qwen3tts_cli.shaping import shape

    return shape(samples, SAMPLE_RATE, shaping)
