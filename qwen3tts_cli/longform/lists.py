"""Batch lists for `qwen3tts batch`: parsed and checked line by line, without any model.

Formats (README "Batch lists"), detected per file:
- JSONL when the file name ends in `.jsonl` or its first line that is neither blank nor a `#` comment starts
  with `{`: one object per line with `name`, `text` and any of `speaker`, `voice`, `ref_audio` + `ref_text`,
  `design`, `instruct`, `language`, `seed`, `speed`, `format`, `lexicon`.
- Otherwise TSV, judged per line by its number of tab-separated columns:
  2  `{name}\\t{text}`: the voice comes from the command line (--speaker/--voice/--design/--instruct);
  4  ZipVoice `{wav_name}\\t{prompt_transcription}\\t{prompt_wav}\\t{text}`: cloned from the prompt; when the
     transcription carries `[S1]`/`[S2]` markers it is a merged two-speaker prompt and the text is a dialogue;
  6  ZipVoice split prompts `{wav_name}\\t{spk1_text}\\t{spk2_text}\\t{spk1_wav}\\t{spk2_wav}\\t{text}`:
     a two-speaker dialogue, each speaker cloned from their own prompt.
Paths (prompts, `ref_audio`, `lexicon`, a `voice` pack file) are relative to the list file. Blank lines
and lines starting with `#` are skipped. Each line is decoded on its own, so one bad byte costs one line.

A name is an output file stem: the output is `DIR/NAME.EXT` (EXT from the line's `format`, else the
command line's, else wav); a trailing audio extension is dropped (`a.wav` -> `a`). Names must stay inside
DIR on every system: no `/` or `\\`, no `.`/`..` or leading dot, no control or `<>:"|?*` characters, no
trailing dot or space, no reserved Windows device name (CON, NUL, COM1...), at most 200 UTF-8 bytes, and
unique ignoring case and Unicode normalization. Every bad line becomes a `LineError`; only whole-file
problems raise.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from qwen3tts_cli import catalog
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.platform_compat import is_reserved_file_name

MAX_LIST_BYTES = 32 << 20
MAX_NAME_BYTES = 200
AUDIO_FORMATS = ("wav", "flac", "ogg", "mp3")  # audio.OUTPUT_FORMATS (a test keeps them equal)
SPEED_RANGE = (0.5, 2.0)
MAX_SEED = 2**63

JSONL, TSV = "jsonl", "tsv"
SHORT, ZIPVOICE, MERGED, SPLIT, JSON_LINE = "short", "zipvoice", "zipvoice-merged", "zipvoice-split", "json"

_MARKER = re.compile(r"\[\s*[Ss]\d{1,3}\s*\]")
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"|?*/\\]')
_JSON_STRINGS = (
    "name",
    "text",
    "speaker",
    "voice",
    "ref_audio",
    "ref_text",
    "design",
    "instruct",
    "language",
)
_JSON_KEYS = frozenset((*_JSON_STRINGS, "seed", "speed", "format", "lexicon"))
_COLUMNS_HINT = (
    "expected 2 columns (name, text), 4 (ZipVoice: name, prompt transcription, prompt wav, text) or 6 "
    "(ZipVoice split prompts: name, spk1 text, spk2 text, spk1 wav, spk2 wav, text), separated by tabs"
)


@dataclass(frozen=True)
class LineError:
    line: int  # 1-based line number in the list file
    name: str | None
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}{f' ({self.name})' if self.name else ''}: {self.reason}"


@dataclass(frozen=True)
class ListDefaults:
    """The command line's voice and options, for lines that do not give their own."""

    speaker: str | None = None
    voice: str | None = None
    design: str | None = None
    instruct: str | None = None
    language: str | None = None
    format: str | None = None


@dataclass(frozen=True)
class ListLine:
    """One line to speak. Exactly one voice source is set (speaker may be None: the default preset)."""

    line: int
    name: str
    text: str
    format: str = "wav"
    form: str = SHORT
    speaker: str | None = None
    voice: str | None = None
    ref_audio: Path | None = None
    ref_text: str | None = None
    design: str | None = None
    instruct: str | None = None
    language: str | None = None
    seed: int | None = None
    speed: float | None = None
    lexicon: Path | None = None
    prompt_wavs: tuple[Path, ...] = ()  # two-speaker lines: one merged prompt, or one per speaker
    prompt_texts: tuple[str, ...] = ()

    @property
    def output(self) -> str:
        return f"{self.name}.{self.format}"

    @property
    def dialogue(self) -> bool:
        return self.form in (MERGED, SPLIT)

    @property
    def mode(self) -> str:
        """The catalog mode (so the model kind) the line needs."""
        if self.design is not None:
            return catalog.MODE_DESIGN
        if self.voice is not None or self.ref_audio is not None or self.prompt_wavs:
            return catalog.MODE_CLONE
        return catalog.MODE_PRESETS

    def files(self) -> list[Path]:
        """Files the line reads (checked by `check_files`)."""
        found = [*self.prompt_wavs]
        if self.ref_audio is not None:
            found.append(self.ref_audio)
        if self.lexicon is not None:
            found.append(self.lexicon)
        return found


@dataclass(frozen=True)
class ParsedList:
    lines: list[ListLine]
    errors: list[LineError]
    format: str  # JSONL or TSV


def read_list(path: str | os.PathLike[str], defaults: ListDefaults | None = None) -> ParsedList:
    """Parse a list file; raises Qwen3TTSError only when the file as a whole cannot be used."""
    file = Path(path)
    if not file.exists():
        raise Qwen3TTSError(f"list file not found: {file}", "pass an existing list (.tsv, .txt or .jsonl)")
    if not file.is_file():
        raise Qwen3TTSError(f"list is not a file: {file}", "pass a list file, not a folder")
    if file.stat().st_size > MAX_LIST_BYTES:
        raise Qwen3TTSError(
            f"list {file} is larger than {MAX_LIST_BYTES >> 20} MB", "split it into several lists"
        )
    try:
        content = file.read_bytes()
    except OSError as exc:
        raise Qwen3TTSError(f"cannot read the list {file}: {exc.strerror}", "check its permissions") from None
    return parse_list(content, base_dir=file.parent, defaults=defaults, jsonl=file.suffix.lower() == ".jsonl")


def parse_list(
    content: bytes,
    *,
    base_dir: Path | None = None,
    defaults: ListDefaults | None = None,
    jsonl: bool = False,
) -> ParsedList:
    """Lines and line-numbered errors of a list's bytes. Never raises for the content of a line."""
    if len(content) > MAX_LIST_BYTES:
        raise Qwen3TTSError(f"list is larger than {MAX_LIST_BYTES >> 20} MB", "split it into several lists")
    defaults = defaults or ListDefaults()
    base = base_dir or Path(".")
    raw_lines = content.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    kind = JSONL if jsonl or _first_content(raw_lines).startswith(b"{") else TSV
    lines: list[ListLine] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(raw_lines, start=1):
        raw = raw.removesuffix(b"\r")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"not valid UTF-8 (byte {exc.start + 1}); save the list as UTF-8"
            errors.append(LineError(number, None, reason))
            continue
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            parsed = _json_line(number, text, base) if kind == JSONL else _tsv_line(number, text, base)
            parsed = _with_defaults(parsed, defaults)
        except _Bad as bad:
            errors.append(LineError(number, bad.name, bad.reason))
            continue
        key = unicodedata.normalize("NFC", parsed.name).casefold()  # one file on macOS/Windows too
        if key in seen:
            errors.append(
                LineError(number, parsed.name, f"duplicate name (line {seen[key]} has it); names are outputs")
            )
            continue
        seen[key] = number
        lines.append(parsed)
    return ParsedList(lines, errors, kind)


def check_files(lines: Sequence[ListLine]) -> tuple[list[ListLine], list[LineError]]:
    """Lines whose files (references, prompts, lexicon) exist and can be read; the others as errors."""
    good: list[ListLine] = []
    errors: list[LineError] = []
    for item in lines:
        problem = next((p for p in (_file_problem(f) for f in item.files()) if p), None)
        if problem is None:
            good.append(item)
        else:
            errors.append(LineError(item.line, item.name, problem))
    return good, errors


def _file_problem(path: Path) -> str | None:
    if not path.exists():
        return f"file not found: {path}"
    if not path.is_file():
        return f"not a file: {path}"
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    return None


# ---- one line ------------------------------------------------------------------------------------------
class _Bad(Exception):
    def __init__(self, reason: str, name: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.name = name


def _first_content(raw_lines: list[bytes]) -> bytes:
    for raw in raw_lines:
        stripped = raw.strip()
        if stripped and not stripped.startswith(b"#"):
            return stripped
    return b""


def _tsv_line(number: int, text: str, base: Path) -> ListLine:
    columns = text.split("\t")
    name = _name(columns[0]) if columns else ""
    if len(columns) == 2:
        return ListLine(number, name, format="", text=_text(columns[1], name), form=SHORT)
    if len(columns) == 4:
        transcript, wav, spoken = columns[1].strip(), _path(columns[2], base, name), _text(columns[3], name)
        if not transcript:
            raise _Bad("the prompt transcription is empty", name)
        if _MARKER.search(transcript):
            _dialogue_text(spoken, name, limit=None)
            return ListLine(
                number,
                name,
                format="",
                text=spoken,
                form=MERGED,
                prompt_wavs=(wav,),
                prompt_texts=(transcript,),
            )
        if _MARKER.search(spoken):
            raise _Bad("the text has [S1]/[S2] markers but the prompt transcription has none", name)
        return ListLine(
            number, name, format="", text=spoken, form=ZIPVOICE, ref_audio=wav, ref_text=transcript
        )
    if len(columns) == 6:
        texts = (columns[1].strip(), columns[2].strip())
        if not all(texts):
            raise _Bad("a speaker's prompt transcription is empty", name)
        wavs = (_path(columns[3], base, name), _path(columns[4], base, name))
        spoken = _text(columns[5], name)
        _dialogue_text(spoken, name, limit=2)
        return ListLine(
            number, name, format="", text=spoken, form=SPLIT, prompt_wavs=wavs, prompt_texts=texts
        )
    raise _Bad(f"{len(columns)} column(s); {_COLUMNS_HINT}", name or None)


def _json_line(number: int, text: str, base: Path) -> ListLine:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Bad(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(document, dict):
        raise _Bad('a JSONL line is one object, e.g. {"name": "a", "text": "Hello."}')
    raw_name = document.get("name")
    name = raw_name if isinstance(raw_name, str) else None
    unknown = sorted(set(document) - _JSON_KEYS)
    if unknown:
        raise _Bad(f"unknown key(s) {', '.join(unknown)}; use: {', '.join(sorted(_JSON_KEYS))}", name)
    for key in (*_JSON_STRINGS, "format", "lexicon"):
        if key in document and not isinstance(document[key], str):
            raise _Bad(f"{key} must be a string", name)
    for key in ("name", "text"):
        if key not in document:
            raise _Bad(f"no {key}", name)
    name = _name(document["name"])
    seed = document.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED):
        raise _Bad("seed must be an integer from 0 to 2^63-1", name)
    speed = document.get("speed")
    if speed is not None:
        if isinstance(speed, bool) or not isinstance(speed, (int, float)):
            raise _Bad("speed must be a number", name)
        if not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
            raise _Bad(f"speed must be {SPEED_RANGE[0]}-{SPEED_RANGE[1]} (got {speed})", name)
        speed = float(speed)
    sources = [key for key in ("speaker", "voice", "ref_audio", "design") if key in document]
    if len(sources) > 1:
        raise _Bad(f"give one voice, not {' and '.join(sources)}", name)
    if "ref_text" in document and "ref_audio" not in document:
        raise _Bad("ref_text goes with ref_audio", name)
    if "instruct" in document and sources and sources[0] != "speaker":
        raise _Bad(f"instruct styles a preset speaker; it cannot go with {sources[0]}", name)
    spoken = _text(document["text"], name)
    if _MARKER.search(spoken):
        raise _Bad("[S1]/[S2] dialogue lines need a ZipVoice prompt (TSV); JSONL lines have one voice", name)
    fmt = document.get("format")
    ref_text = (document.get("ref_text") or "").strip() or None
    return ListLine(
        number,
        name,
        spoken,
        format=_format(fmt, name) if fmt is not None else "",
        form=JSON_LINE,
        speaker=_nonempty(document, "speaker", name),
        voice=_voice_value(_nonempty(document, "voice", name), base),
        ref_audio=_path(document["ref_audio"], base, name) if "ref_audio" in document else None,
        ref_text=ref_text,
        design=_nonempty(document, "design", name),
        instruct=_nonempty(document, "instruct", name),
        language=_nonempty(document, "language", name),
        seed=seed,
        speed=speed,
        lexicon=_path(document["lexicon"], base, name) if "lexicon" in document else None,
    )


def _nonempty(document: dict[str, Any], key: str, name: str) -> str | None:
    if key not in document:
        return None
    value = document[key].strip()
    if not value:
        raise _Bad(f"{key} is empty", name)
    return value


def _voice_value(value: str | None, base: Path) -> str | None:
    """A pack file (has a separator or ends in .json) is relative to the list; a library name stays."""
    if value is None or not ("/" in value or os.sep in value or value.endswith(".json")):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def _with_defaults(item: ListLine, defaults: ListDefaults) -> ListLine:
    """Fill what the line leaves open from the command line; ZipVoice lines carry their own voice."""
    fmt = item.format or (_format(defaults.format, item.name) if defaults.format else "wav")
    language = item.language or defaults.language
    has_voice = any(v is not None for v in (item.speaker, item.voice, item.ref_audio, item.design)) or bool(
        item.prompt_wavs
    )
    if has_voice:
        return replace(item, format=fmt, language=language)
    instruct = item.instruct or defaults.instruct
    if defaults.design is not None:
        if item.instruct is not None:
            raise _Bad("instruct styles a preset speaker; the command line gives --design", item.name)
        return replace(item, format=fmt, language=language, design=defaults.design)
    if defaults.voice is not None:
        if item.instruct is not None:
            raise _Bad("instruct styles a preset speaker; the command line gives --voice", item.name)
        return replace(item, format=fmt, language=language, voice=defaults.voice)
    return replace(item, format=fmt, language=language, speaker=defaults.speaker, instruct=instruct)


def _dialogue_text(text: str, name: str, limit: int | None) -> None:
    from qwen3tts_cli.longform.script import parse_script

    if not _MARKER.search(text):
        raise _Bad("a two-speaker prompt needs a text with [S1]/[S2] markers", name)
    try:
        script = parse_script(text)
    except Qwen3TTSError as exc:
        raise _Bad(f"dialogue text: {exc.message.removeprefix('line 1: ')}", name) from None
    if limit is not None:
        extra = [s for s in script.speakers if s not in {f"S{i}" for i in range(1, limit + 1)}]
        if extra:
            raise _Bad(f"the text has {', '.join(extra)} but the prompts give S1 and S2 only", name)


def _text(raw: str, name: str | None) -> str:
    from qwen3tts_cli.text import is_speakable, split_leading_tags

    text = raw.strip()
    if not text:
        raise _Bad("empty text", name)
    if not is_speakable(split_leading_tags(text)[1]):
        raise _Bad("the text has nothing to say (no letters or digits)", name)
    return text


def _path(raw: str, base: Path, name: str | None) -> Path:
    value = raw.strip()
    if not value:
        raise _Bad("an audio or lexicon path is empty", name)
    if "\x00" in value:
        raise _Bad("a path contains a NUL character", name)
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _format(raw: str, name: str | None) -> str:
    fmt = raw.strip().lower().lstrip(".")
    if fmt not in AUDIO_FORMATS:
        raise _Bad(f"unknown format {raw!r}; use one of: {', '.join(AUDIO_FORMATS)}", name)
    return fmt


def output_name(raw: str) -> str:
    """The safe output stem of a line's name (see the module docstring); raises ValueError with the reason."""
    name = raw.strip()
    stem, dot, ext = name.rpartition(".")
    if dot and stem and ext.lower() in AUDIO_FORMATS:
        name = stem
    if not name:
        raise ValueError("empty name")
    if name in (".", "..") or name.startswith("."):
        raise ValueError(f"unsafe name {raw!r}: it may not start with a dot")
    if _UNSAFE_CHARS.search(name):
        raise ValueError(f'unsafe name {raw!r}: no path separators, control characters or <>:"|?*')
    if name.endswith((" ", ".")):
        raise ValueError(f"unsafe name {raw!r}: it may not end with a space or a dot")
    if is_reserved_file_name(name):
        raise ValueError(f"unsafe name {raw!r}: a reserved device name on Windows")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"unsafe name {raw!r}: not valid Unicode") from None
    if size > MAX_NAME_BYTES:
        raise ValueError(f"name longer than {MAX_NAME_BYTES} bytes")
    if Path(name).is_absolute() or Path(name).name != name:
        raise ValueError(f"unsafe name {raw!r}")
    return name


def _name(raw: str) -> str:
    try:
        return output_name(raw)
    except ValueError as exc:
        shown = raw.strip()[:60] or None
        raise _Bad(str(exc), shown) from None
