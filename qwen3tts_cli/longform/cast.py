"""Who speaks with which voice: `--cast S1=vivian --cast S2=me` or a cast file, and ZipVoice prompts.

A cast value is, explicitly, `preset:NAME` (a CustomVoice speaker), `voice:NAME|PACK.json` (a saved voice,
Base model), `ref:AUDIO` (cloned now from a recording, x-vector only unless a transcript is given in a JSON
cast file) or `design:DESCRIPTION` (VoiceDesign). A bare value is a preset speaker, else a pack file or
library voice, else an audio file; a name that is both a preset and a library voice must say which.
A cast file holds `NAME=VALUE` (or `NAME<TAB>VALUE`) lines, or a JSON object whose values are such strings or
objects {"speaker", "instruct"} / {"voice"} / {"ref_audio", "ref_text", "x_vector_only"} / {"design"}.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwen3tts_cli import catalog, spec
from qwen3tts_cli.errors import Qwen3TTSError

if TYPE_CHECKING:
    from qwen3tts_cli.audio import ReferenceAudio

PRESET, PACK, REFERENCE, DESIGN = "preset", "voice", "ref", "design"
_MODE_OF = {
    PRESET: catalog.MODE_PRESETS,
    PACK: catalog.MODE_CLONE,
    REFERENCE: catalog.MODE_CLONE,
    DESIGN: catalog.MODE_DESIGN,
}
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus")
MAX_CAST_FILE_BYTES = 256 * 1024


@dataclass(frozen=True)
class CastVoice:
    """One speaker's voice; `mode` is the catalog mode (and so the model kind) it needs."""

    source: str  # PRESET, PACK, REFERENCE or DESIGN
    value: str  # speaker name, pack name/path, audio path or description
    ref_text: str | None = None
    instruct: str | None = None
    x_vector_only: bool = False
    audio: ReferenceAudio | None = field(default=None, compare=False, repr=False)  # already cut (prompts)

    @property
    def mode(self) -> str:
        return _MODE_OF[self.source]

    def describe(self) -> str:
        return f"{self.source}:{self.value}"


def _key(name: str) -> str:
    return name.strip().casefold()


class Cast:
    """Speaker name -> voice; names match case-insensitively (`s1` is `S1`)."""

    def __init__(self, voices: Mapping[str, CastVoice] | None = None) -> None:
        self._voices: dict[str, tuple[str, CastVoice]] = {}
        for name, voice in (voices or {}).items():
            self.set(name, voice)

    def set(self, name: str, voice: CastVoice) -> None:
        self._voices[_key(name)] = (name.strip(), voice)

    def get(self, name: str) -> CastVoice | None:
        found = self._voices.get(_key(name))
        return None if found is None else found[1]

    def names(self) -> list[str]:
        return [name for name, _ in self._voices.values()]

    def check_covers(self, speakers: Iterable[str]) -> None:
        missing = [name for name in speakers if self.get(name) is None]
        if missing:
            raise Qwen3TTSError(
                f"no voice for speaker(s) {', '.join(missing)} in the cast",
                "add e.g. " + " ".join(f"--cast {name}=vivian" for name in missing[:2]),
            )

    def modes(self, speakers: Iterable[str]) -> list[str]:
        """The catalog modes (model kinds) these speakers need, in order of first use."""
        found = (self.get(name) for name in speakers)
        return list(dict.fromkeys(voice.mode for voice in found if voice is not None))


def parse_cast_value(
    name: str, value: str, library_names: Iterable[str] = (), base_dir: Path | None = None
) -> CastVoice:
    """One `NAME=VALUE` entry (see the module docstring for the rules)."""
    value = value.strip()
    where = f"cast {name}={value}"
    if not value:
        raise Qwen3TTSError(f"{where}: no voice given", "e.g. --cast S1=vivian")
    prefix, sep, rest = value.partition(":")
    if sep and prefix in (PRESET, PACK, REFERENCE, DESIGN) and not _is_drive(value):
        rest = rest.strip()
        if not rest:
            raise Qwen3TTSError(f"{where}: nothing after '{prefix}:'", f"e.g. {prefix}:{_example(prefix)}")
        if prefix == PRESET:
            return CastVoice(PRESET, _preset(rest, where))
        if prefix == DESIGN:
            return CastVoice(DESIGN, rest)
        if prefix == REFERENCE:
            return CastVoice(REFERENCE, str(_existing_file(rest, base_dir, where)), x_vector_only=True)
        return CastVoice(PACK, _pack(rest, base_dir))
    known = {_key(n) for n in library_names}
    is_preset = value.lower() in spec.SPEAKER_IDS
    if is_preset and _key(value) in known:
        raise Qwen3TTSError(
            f"{where}: '{value}' is both a preset speaker and a saved voice",
            f"write preset:{value} or voice:{value}",
        )
    if is_preset:
        return CastVoice(PRESET, value.lower())
    if _key(value) in known:
        return CastVoice(PACK, value)
    path = _path(value, base_dir)
    if path.is_file():
        if path.suffix.lower() == ".json":
            return CastVoice(PACK, str(path))
        if path.suffix.lower() in AUDIO_SUFFIXES:
            return CastVoice(REFERENCE, str(path), x_vector_only=True)
    raise Qwen3TTSError(
        f"{where}: no preset speaker, saved voice or file named '{value}'",
        f"use a preset ({', '.join(spec.SPEAKER_IDS)}), a voice from `qwen3tts voices list`, a pack or audio "
        "file, or design:DESCRIPTION",
    )


def _example(prefix: str) -> str:
    return {PRESET: "vivian", PACK: "narrator", REFERENCE: "me.wav", DESIGN: "A calm old man"}[prefix]


def _is_drive(value: str) -> bool:
    return len(value) > 1 and value[1] == ":" and value[0].isalpha() and len(value.split(":")[0]) == 1


def _preset(name: str, where: str) -> str:
    if name.lower() not in spec.SPEAKER_IDS:
        raise Qwen3TTSError(
            f"{where}: unknown preset speaker '{name}'", f"use one of: {', '.join(spec.SPEAKER_IDS)}"
        )
    return name.lower()


def _path(value: str, base_dir: Path | None) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


def _pack(value: str, base_dir: Path | None) -> str:
    looks_like_path = os.sep in value or "/" in value or value.endswith(".json")
    return str(_path(value, base_dir)) if looks_like_path else value


def _existing_file(value: str, base_dir: Path | None, where: str) -> Path:
    path = _path(value, base_dir)
    if not path.is_file():
        raise Qwen3TTSError(f"{where}: no such file: {path}", "give the path of a reference recording")
    return path


def parse_cast_entries(entries: Iterable[str], library_names: Iterable[str] = ()) -> Cast:
    """`--cast NAME=VALUE` options."""
    names = list(library_names)
    cast = Cast()
    for entry in entries:
        name, sep, value = entry.partition("=")
        if not sep or not name.strip():
            raise Qwen3TTSError(f"--cast {entry!r} is not NAME=VOICE", "e.g. --cast S1=vivian")
        cast.set(name, parse_cast_value(name.strip(), value, names))
    return cast


def read_cast_file(path: str | os.PathLike[str], library_names: Iterable[str] = ()) -> Cast:
    file = Path(path)
    if not file.is_file():
        raise Qwen3TTSError(f"cast file not found: {file}", "pass an existing file")
    if file.stat().st_size > MAX_CAST_FILE_BYTES:
        raise Qwen3TTSError(f"cast file {file} is larger than 256 KB", "a cast names a few voices")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise Qwen3TTSError(f"cast file {file} is not UTF-8 text", "save it as UTF-8") from None
    names = list(library_names)
    if text.lstrip().startswith("{"):
        return _json_cast(text, file, names)
    cast = Cast()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("\t") if "\t" in line else line.partition("=")
        if not sep or not name.strip():
            raise Qwen3TTSError(f"{file}:{number}: not NAME=VOICE", "e.g. S1=vivian")
        try:
            cast.set(name, parse_cast_value(name.strip(), value, names, file.parent))
        except Qwen3TTSError as exc:
            raise Qwen3TTSError(f"{file}:{number}: {exc.message}", exc.hint) from None
    return cast


def _json_cast(text: str, file: Path, names: list[str]) -> Cast:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Qwen3TTSError(f"{file}:{exc.lineno}: not valid JSON ({exc.msg})", "fix the cast file") from None
    if not isinstance(document, dict):
        raise Qwen3TTSError(f"{file}: a JSON cast is an object of speaker -> voice", 'e.g. {"S1": "vivian"}')
    cast = Cast()
    for name, value in document.items():
        if isinstance(value, str):
            cast.set(name, parse_cast_value(name, value, names, file.parent))
        elif isinstance(value, dict):
            cast.set(name, _json_voice(name, value, file))
        else:
            raise Qwen3TTSError(f"{file}: voice of {name!r} must be a string or an object", 'e.g. "vivian"')
    return cast


_JSON_KEYS = {"speaker", "instruct", "voice", "ref_audio", "ref_text", "x_vector_only", "design"}


def _json_voice(name: str, value: dict[str, Any], file: Path) -> CastVoice:
    where = f"{file}: {name}"
    unknown = sorted(set(value) - _JSON_KEYS)
    if unknown:
        raise Qwen3TTSError(
            f"{where}: unknown key(s) {', '.join(unknown)}", f"use: {', '.join(sorted(_JSON_KEYS))}"
        )
    for key, wanted in (("x_vector_only", bool),):
        if key in value and not isinstance(value[key], wanted):
            raise Qwen3TTSError(f"{where}: {key} must be true or false", "fix the cast file")
    for key in _JSON_KEYS - {"x_vector_only"}:
        if key in value and not isinstance(value[key], str):
            raise Qwen3TTSError(f"{where}: {key} must be a string", "fix the cast file")
    kinds = [key for key in ("speaker", "voice", "ref_audio", "design") if key in value]
    if len(kinds) != 1:
        raise Qwen3TTSError(
            f"{where}: give exactly one of speaker, voice, ref_audio, design", 'e.g. {"speaker": "vivian"}'
        )
    if "speaker" in value:
        return CastVoice(PRESET, _preset(value["speaker"], where), instruct=value.get("instruct"))
    if "instruct" in value:
        raise Qwen3TTSError(f"{where}: instruct goes with a preset speaker", "drop it or add speaker")
    if "design" in value:
        return CastVoice(DESIGN, value["design"])
    if "voice" in value:
        return CastVoice(PACK, _pack(value["voice"], file.parent))
    path = _existing_file(value["ref_audio"], file.parent, where)
    ref_text = (value.get("ref_text") or "").strip() or None
    x_vector = bool(value.get("x_vector_only")) or ref_text is None
    return CastVoice(REFERENCE, str(path), ref_text=None if x_vector else ref_text, x_vector_only=x_vector)
