"""Voice packs: a cloned voice saved as one JSON file, and the named library of them.

Schema (version 1; version 2 adds the optional `lexicon`), a JSON object with exactly these keys:

    format               "qwen3tts-voice"
    schema_version       1
    model_family         "qwen3-tts-12hz"
    talker_hidden_size   talker width it was made with: 1024 (0.6B) or 2048 (1.7B); the embedding length
    mode                 "icl" (reference codes + text) or "xvector" (speaker embedding only)
    speaker_embedding    {"dtype": "<f4", "length": N, "base64": ..., "sha256": ...}
    reference_codes      {"frames": F, "groups": 16, "codes": [[16 ints 0..2047] x F]}   (null for xvector)
    reference_text       transcript of the reference audio (required for icl)
    reference_language   its language (a qwen3tts language name or "auto"), or null
    sample_rate          24000, the rate the codes and embedding were computed at
    audio_sha256         sha256 of the reference audio file, or null
    name, description    free-form metadata (the library's file name is what `--voice NAME` uses)
    created              ISO 8601 UTC time
    tool_version         qwen3tts version that wrote it
    lexicon              optional (schema 2): [[written, spoken], ...] respellings applied to the text spoken
                         with this voice (qwen3tts_cli.lexicon); omitted when empty
    payload_sha256       sha256 of the canonical JSON of every field that changes the generated audio

Optional key (absent when unset, so packs without it keep their exact bytes and checksum):

    provenance           how the voice was made, a JSON object of at most MAX_PROVENANCE_BYTES, e.g. a
                         designed voice: {"method": "design", "description", "sample_text", "language",
                         "seed", "design_model", "base_model", "tool_version"}, or a clone of part of
                         a recording: {"method": "clone", "segment": [start, end]} (seconds); metadata,
                         outside the payload checksum (it does not change the generated audio)

The embedding is stored as base64 of little-endian float32 bytes, not a list of decimals: the bytes are the
exact values the encoder produced, independent of any JSON parser's float handling, 4x smaller than a
decimal list, and the sha256 is computed over exactly those bytes, so a loaded pack reproduces the same
codes bit for bit. Codes are small integers, exact and readable as a plain list. Metadata (name,
description, creation time) is outside the payload checksum so it can be edited by hand; the lexicon
changes what is spoken, so it is inside (change it with `qwen3tts voices lexicon`). A pack without a
lexicon is written as schema version 1, byte for byte as before, so older qwen3tts versions still read it.

Library folder: the `voices_dir` argument, else `$QWEN3TTS_VOICES_DIR`, else
`platformdirs.user_data_dir("qwen3tts")/voices`. A pack named NAME is the file `NAME.json` there. Writes are
atomic (temp file + os.replace) and serialized with a file lock so concurrent saves cannot clobber a name.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from qwen3tts_cli import __version__
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.platform_compat import is_reserved_file_name, replace_file
from qwen3tts_cli.spec import CODEBOOK_SIZE, DIALECT_IDS, LANGUAGE_IDS, NUM_CODE_GROUPS, SAMPLE_RATE

PACK_FORMAT = "qwen3tts-voice"
SCHEMA_VERSION = 2  # 2: the optional "lexicon" and "provenance" keys
MODEL_FAMILY = "qwen3-tts-12hz"
MODE_ICL = "icl"
MODE_XVECTOR = "xvector"
PACK_SUFFIX = ".json"
VOICES_DIR_ENV = "QWEN3TTS_VOICES_DIR"
MAX_PACK_BYTES = 16 * 1024 * 1024  # a 5-minute reference is ~1 MB; anything far bigger is not a pack
KNOWN_WIDTHS = {1024: "0.6B", 2048: "1.7B"}
LANGUAGES = frozenset(LANGUAGE_IDS) | frozenset(DIALECT_IDS) | {"auto"}

_KEYS = (
    "format",
    "schema_version",
    "model_family",
    "talker_hidden_size",
    "mode",
    "speaker_embedding",
    "reference_codes",
    "reference_text",
    "reference_language",
    "sample_rate",
    "audio_sha256",
    "name",
    "description",
    "created",
    "tool_version",
    "payload_sha256",
)
_OPTIONAL_PAYLOAD_KEYS = ("lexicon",)  # payload keys written only when set: older packs keep their checksums
_PAYLOAD_KEYS = (
    "model_family",
    "talker_hidden_size",
    "mode",
    "speaker_embedding",
    "reference_codes",
    "reference_text",
    "reference_language",
    "sample_rate",
)
_OPTIONAL_KEYS = ("provenance",)
MAX_PROVENANCE_BYTES = 16 * 1024  # a recipe, not a payload: a long description fits many times over
_NAME = re.compile(r"^[^\W_][\w.\- ]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def width_label(width: int) -> str:
    return (
        f"{KNOWN_WIDTHS[width]} (talker width {width})" if width in KNOWN_WIDTHS else f"talker width {width}"
    )


@dataclass(frozen=True, eq=False)  # eq=False: numpy fields make == ambiguous; compare with packs_equal
class VoicePack:
    """A cloned voice: what the talker prompt needs, and where it came from."""

    name: str
    mode: str
    talker_hidden_size: int
    speaker_embedding: np.ndarray  # float32 (talker_hidden_size,)
    reference_codes: np.ndarray | None = None  # int64 (frames, 16), icl only
    reference_text: str | None = None
    reference_language: str | None = None
    audio_sha256: str | None = None
    description: str = ""
    sample_rate: int = SAMPLE_RATE
    model_family: str = MODEL_FAMILY
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    tool_version: str = __version__
    provenance: Mapping[str, Any] | None = None  # how it was made (see the module docstring)
    lexicon: tuple[tuple[str, str], ...] = ()  # (written, spoken) respellings, see qwen3tts_cli.lexicon

    def __post_init__(self) -> None:
        from qwen3tts_cli.lexicon import check_entries

        source = f"voice '{self.name}'"
        object.__setattr__(self, "provenance", _normalized_provenance(self.provenance, source))
        object.__setattr__(self, "lexicon", check_entries(self.lexicon, source) if self.lexicon else ())
        object.__setattr__(self, "speaker_embedding", np.asarray(self.speaker_embedding, dtype="<f4"))
        if self.reference_codes is not None:
            object.__setattr__(self, "reference_codes", np.asarray(self.reference_codes, dtype=np.int64))
        _validate_pack(self, source=f"voice '{self.name}'")

    @property
    def frames(self) -> int:
        return 0 if self.reference_codes is None else int(self.reference_codes.shape[0])

    def check_compatible(self, talker_hidden_size: int) -> None:
        """Refuse use with a model of another width (the embedding would not fit the talker)."""
        if self.talker_hidden_size != talker_hidden_size:
            raise Qwen3TTSError(
                f"voice '{self.name}' was made with a {width_label(self.talker_hidden_size)} model; "
                f"this model is {width_label(talker_hidden_size)}",
                "clone the voice again with this model, or use a model of the size it was made with",
            )


def packs_equal(first: VoicePack, second: VoicePack) -> bool:
    """Field-by-field equality, arrays compared bit-exactly."""
    return pack_to_document(first) == pack_to_document(second)


# ---- validation -------------------------------------------------------------------------------------


def _fail(source: str, problem: str) -> Qwen3TTSError:
    return Qwen3TTSError(f"invalid voice pack {source}: {problem}", "re-create or re-export the voice pack")


def _validate_pack(pack: VoicePack, source: str) -> None:
    validate_name(pack.name)
    if pack.model_family != MODEL_FAMILY:
        raise Qwen3TTSError(
            f"voice pack {source} is for model family '{pack.model_family}', not '{MODEL_FAMILY}'",
            "use a voice pack made by qwen3tts for Qwen3-TTS 12 Hz models",
        )
    if not isinstance(pack.talker_hidden_size, int) or isinstance(pack.talker_hidden_size, bool):
        raise _fail(source, "talker_hidden_size must be an integer")
    if pack.talker_hidden_size <= 0:
        raise _fail(source, f"talker_hidden_size must be positive, got {pack.talker_hidden_size}")
    if pack.mode not in (MODE_ICL, MODE_XVECTOR):
        raise _fail(source, f"mode must be '{MODE_ICL}' or '{MODE_XVECTOR}', got {pack.mode!r}")
    _validate_embedding(pack, source)
    _validate_reference(pack, source)
    if pack.sample_rate != SAMPLE_RATE:
        raise _fail(source, f"sample_rate must be {SAMPLE_RATE}, got {pack.sample_rate}")
    if pack.audio_sha256 is not None and not (
        isinstance(pack.audio_sha256, str) and _SHA256.match(pack.audio_sha256)
    ):
        raise _fail(source, "audio_sha256 must be 64 lowercase hex digits or null")
    for key in ("description", "created", "tool_version"):
        if not isinstance(getattr(pack, key), str):
            raise _fail(source, f"{key} must be a string")


def _validate_embedding(pack: VoicePack, source: str) -> None:
    embedding = pack.speaker_embedding
    if embedding.ndim != 1 or len(embedding) != pack.talker_hidden_size:
        raise _fail(
            source,
            f"speaker embedding has shape {embedding.shape}, expected ({pack.talker_hidden_size},) "
            "(its length must equal talker_hidden_size)",
        )
    if not np.all(np.isfinite(embedding)):
        raise _fail(source, "speaker embedding contains NaN or infinite values")


def _validate_reference(pack: VoicePack, source: str) -> None:
    if pack.reference_language is not None and pack.reference_language not in LANGUAGES:
        raise _fail(source, f"unknown reference_language {pack.reference_language!r}")
    if pack.reference_text is not None and not isinstance(pack.reference_text, str):
        raise _fail(source, "reference_text must be a string or null")
    if pack.mode == MODE_XVECTOR:
        if pack.reference_codes is not None:
            raise _fail(source, "an xvector pack has no reference codes")
        return
    codes = pack.reference_codes
    if codes is None:
        raise _fail(source, "an icl pack needs reference codes")
    if codes.ndim != 2 or codes.shape[1] != NUM_CODE_GROUPS or codes.shape[0] == 0:
        raise _fail(
            source, f"reference codes have shape {codes.shape}, expected (frames >= 1, {NUM_CODE_GROUPS})"
        )
    if codes.min() < 0 or codes.max() >= CODEBOOK_SIZE:
        raise _fail(source, f"reference codes must lie in 0..{CODEBOOK_SIZE - 1}")
    if not pack.reference_text or not pack.reference_text.strip():
        raise _fail(source, "an icl pack needs the reference text (the transcript of the reference audio)")


def _normalized_provenance(value: Any, source: str) -> dict[str, Any] | None:
    """A JSON-clean copy (string keys, no NaN), at most MAX_PROVENANCE_BYTES; anything else is refused."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise _fail(source, "provenance must be a JSON object with string keys or null")
    try:
        text = json.dumps(dict(value), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _fail(source, f"provenance is not plain JSON ({exc})") from None
    if len(text.encode("utf-8")) > MAX_PROVENANCE_BYTES:
        raise _fail(source, f"provenance is larger than {MAX_PROVENANCE_BYTES // 1024} KB")
    return json.loads(text)


def validate_name(name: str) -> str:
    """Voice names become file names: letters, digits, '.', '-', '_', spaces; no path separators."""
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith((".", " ")):
        raise Qwen3TTSError(
            f"invalid voice name {name!r}",
            "use 1-64 letters, digits, '.', '-', '_' or spaces, starting with a letter or digit "
            "(no '/' or '\\')",
        )
    if is_reserved_file_name(name):  # the library must open the same files on every system
        raise Qwen3TTSError(
            f"invalid voice name {name!r}: a reserved device name on Windows", "choose another name"
        )
    return name


# ---- JSON encoding ----------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _embedding_document(embedding: np.ndarray) -> dict[str, Any]:
    raw = np.ascontiguousarray(embedding, dtype="<f4").tobytes()
    return {
        "dtype": "<f4",
        "length": len(embedding),
        "base64": base64.b64encode(raw).decode("ascii"),
        "sha256": _sha256(raw),
    }


def _codes_document(codes: np.ndarray | None) -> dict[str, Any] | None:
    if codes is None:
        return None
    return {"frames": int(codes.shape[0]), "groups": int(codes.shape[1]), "codes": codes.tolist()}


def _payload_checksum(document: dict[str, Any]) -> str:
    payload = {key: document[key] for key in _PAYLOAD_KEYS + _OPTIONAL_PAYLOAD_KEYS if key in document}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _sha256(canonical.encode("utf-8"))


def pack_to_document(pack: VoicePack) -> dict[str, Any]:
    document: dict[str, Any] = {
        "format": PACK_FORMAT,
        "schema_version": 2
        if pack.lexicon or pack.provenance is not None
        else 1,  # 1: what older readers know
        "model_family": pack.model_family,
        "talker_hidden_size": pack.talker_hidden_size,
        "mode": pack.mode,
        "speaker_embedding": _embedding_document(pack.speaker_embedding),
        "reference_codes": _codes_document(pack.reference_codes),
        "reference_text": pack.reference_text,
        "reference_language": pack.reference_language,
        "sample_rate": pack.sample_rate,
        "audio_sha256": pack.audio_sha256,
        "name": pack.name,
        "description": pack.description,
        "created": pack.created,
        "tool_version": pack.tool_version,
    }
    if pack.provenance is not None:
        document["provenance"] = dict(pack.provenance)
    if pack.lexicon:
        document["lexicon"] = [list(entry) for entry in pack.lexicon]
    document["payload_sha256"] = _payload_checksum(document)
    return document


def pack_to_json(pack: VoicePack) -> str:
    """Pretty JSON with one reference frame per line (diffable, still compact)."""
    document = pack_to_document(pack)
    codes = document["reference_codes"]
    marker = "@@codes@@"
    if codes is not None:
        codes = dict(codes, codes=marker)
    text = json.dumps(dict(document, reference_codes=codes), indent=2, ensure_ascii=False)
    if codes is not None:
        rows = ",\n".join("      " + json.dumps(row) for row in document["reference_codes"]["codes"])
        text = text.replace(json.dumps(marker), "[\n" + rows + "\n    ]", 1)
    return text + "\n"


def pack_from_json(text: str | bytes, source: str = "") -> VoicePack:
    """Parse and fully validate a pack; every defect is a Qwen3TTSError naming `source`."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(source, f"not valid JSON ({exc}); the file may be truncated") from exc
    return pack_from_document(document, source)


def pack_from_document(document: Any, source: str = "") -> VoicePack:
    if not isinstance(document, dict) or document.get("format") != PACK_FORMAT:
        raise _fail(source, f'not a qwen3tts voice pack (missing "format": "{PACK_FORMAT}")')
    _check_schema_version(document.get("schema_version"), source)
    missing = [key for key in _KEYS if key not in document]
    unknown = sorted(set(document) - set(_KEYS) - set(_OPTIONAL_KEYS) - set(_OPTIONAL_PAYLOAD_KEYS))
    if missing or unknown:
        raise _fail(source, f"missing keys {missing}, unknown keys {unknown}")
    if document["payload_sha256"] != _payload_checksum(document):
        raise _fail(source, "payload checksum mismatch: the voice data was modified or damaged")
    return VoicePack(
        name=_expect(document, "name", str, source),
        mode=_expect(document, "mode", str, source),
        talker_hidden_size=_expect(document, "talker_hidden_size", int, source),
        speaker_embedding=_decode_embedding(document["speaker_embedding"], source),
        reference_codes=_decode_codes(document["reference_codes"], source),
        reference_text=_expect(document, "reference_text", (str, type(None)), source),
        reference_language=_expect(document, "reference_language", (str, type(None)), source),
        audio_sha256=_expect(document, "audio_sha256", (str, type(None)), source),
        description=_expect(document, "description", str, source),
        sample_rate=_expect(document, "sample_rate", int, source),
        model_family=_expect(document, "model_family", str, source),
        created=_expect(document, "created", str, source),
        tool_version=_expect(document, "tool_version", str, source),
        provenance=_normalized_provenance(document.get("provenance"), source),
        lexicon=_decode_lexicon(document.get("lexicon", []), source),
    )


def _check_schema_version(version: Any, source: str) -> None:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _fail(source, f"schema_version must be a positive integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise Qwen3TTSError(
            f"voice pack {source} uses schema version {version}; this qwen3tts reads up to {SCHEMA_VERSION}",
            "upgrade qwen3tts",
        )


def _expect(document: dict[str, Any], key: str, kind: type | tuple[type, ...], source: str) -> Any:
    value = document[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _fail(source, f"{key} has the wrong type ({type(value).__name__})")
    return value


def _decode_embedding(entry: Any, source: str) -> np.ndarray:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "length", "base64", "sha256"}:
        raise _fail(source, "speaker_embedding must be {dtype, length, base64, sha256}")
    if entry["dtype"] != "<f4":
        raise _fail(source, f"speaker_embedding dtype must be '<f4', got {entry['dtype']!r}")
    try:
        raw = base64.b64decode(entry["base64"], validate=True)
    except (ValueError, TypeError) as exc:
        raise _fail(source, "speaker_embedding is not valid base64") from exc
    if _sha256(raw) != entry["sha256"]:
        raise _fail(source, "speaker embedding checksum mismatch: the embedding was modified or damaged")
    if len(raw) % 4 or len(raw) // 4 != entry["length"]:
        raise _fail(source, f"speaker_embedding holds {len(raw)} bytes, not {entry['length']} float32 values")
    return np.frombuffer(raw, dtype="<f4").copy()


def _decode_lexicon(entry: Any, source: str) -> tuple[tuple[str, str], ...]:
    from qwen3tts_cli.lexicon import check_entries

    if not isinstance(entry, list) or not all(isinstance(pair, list) for pair in entry):
        raise _fail(source, "lexicon must be a list of [written, spoken] pairs")
    try:
        return check_entries(entry)
    except Qwen3TTSError as exc:
        raise Qwen3TTSError(f"invalid voice pack {source}: {exc.message}", exc.hint) from None


def _decode_codes(entry: Any, source: str) -> np.ndarray | None:
    if entry is None:
        return None
    if not isinstance(entry, dict) or set(entry) != {"frames", "groups", "codes"}:
        raise _fail(source, "reference_codes must be null or {frames, groups, codes}")
    rows = entry["codes"]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise _fail(source, "reference_codes.codes must be a list of lists of integers")
    if not all(isinstance(value, int) and not isinstance(value, bool) for row in rows for value in row):
        raise _fail(source, "reference_codes.codes must hold only integers")
    if len({len(row) for row in rows}) > 1:
        raise _fail(source, "reference_codes rows have different lengths")
    codes = np.asarray(rows, dtype=np.int64).reshape(len(rows), -1 if rows else NUM_CODE_GROUPS)
    if list(codes.shape) != [entry["frames"], entry["groups"]]:
        raise _fail(
            source, f"reference_codes are {codes.shape}, header says ({entry['frames']}, {entry['groups']})"
        )
    return codes


# ---- files ------------------------------------------------------------------------------------------


def read_pack(path: str | os.PathLike[str]) -> VoicePack:
    file = Path(path)
    if not file.is_file():
        raise Qwen3TTSError(f"voice pack not found: {file}", "check the path, or `qwen3tts voices list`")
    if file.stat().st_size > MAX_PACK_BYTES:
        raise _fail(str(file), f"larger than {MAX_PACK_BYTES // (1024 * 1024)} MB")
    return pack_from_json(file.read_bytes(), source=str(file))


def write_pack(pack: VoicePack, path: str | os.PathLike[str]) -> Path:
    """Write atomically: readers see the old file or the complete new one, never a partial one."""
    target = Path(path)
    if not target.parent.is_dir():
        raise Qwen3TTSError(f"folder does not exist: {target.parent}", "create it first")
    _atomic_write_text(target, pack_to_json(pack))
    return target


def _atomic_write_text(target: Path, text: str) -> None:
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o644)
        replace_file(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


# ---- the library ------------------------------------------------------------------------------------


def default_voices_dir() -> Path:
    override = os.environ.get(VOICES_DIR_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("qwen3tts")) / "voices"


@dataclass(frozen=True)
class VoiceEntry:
    """One file of the library as `voices list` shows it; a damaged pack is listed with its error."""

    name: str
    path: Path
    pack: VoicePack | None
    error: str | None


class VoiceLibrary:
    """Named voice packs in one folder: list, show, save, remove, import, export, resolve."""

    def __init__(self, voices_dir: str | os.PathLike[str] | None = None):
        self.root = Path(voices_dir).expanduser() if voices_dir is not None else default_voices_dir()

    def path_for(self, name: str) -> Path:
        return self.root / f"{validate_name(name)}{PACK_SUFFIX}"

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name[: -len(PACK_SUFFIX)]
            for p in self.root.glob(f"*{PACK_SUFFIX}")
            if _NAME.match(p.stem) and not is_reserved_file_name(p.stem)
        )

    def entries(self) -> Iterator[VoiceEntry]:
        """Every pack of the library, validated; a damaged one carries its error instead of failing."""
        for name in self.names():
            path = self.path_for(name)
            try:
                yield VoiceEntry(name, path, read_pack(path), None)
            except Qwen3TTSError as exc:
                yield VoiceEntry(name, path, None, exc.message)

    def show(self, name: str) -> VoicePack:
        path = self.path_for(name)
        if not path.is_file():
            raise Qwen3TTSError(f"no voice named '{name}' in {self.root}", "see `qwen3tts voices list`")
        return read_pack(path)

    def save(self, pack: VoicePack, overwrite: bool = False) -> Path:
        """Store under pack.name; refuses to replace an existing voice unless `overwrite`."""
        path = self.path_for(pack.name)
        self._ensure_root()
        with self._lock():
            if path.exists() and not overwrite:
                raise Qwen3TTSError(
                    f"a voice named '{pack.name}' already exists", "choose another name, or pass --force"
                )
            return write_pack(pack, path)

    def update(self, name: str, **changes: Any) -> Path:
        """Change fields of a stored voice (e.g. lexicon=...): read, validate and rewrite under the lock."""
        with self._lock():
            return write_pack(replace(self.show(name), **changes), self.path_for(name))

    def remove(self, name: str) -> Path:
        path = self.path_for(name)
        missing = Qwen3TTSError(f"no voice named '{name}' in {self.root}", "see `qwen3tts voices list`")
        if not path.is_file():
            raise missing
        with self._lock():
            try:
                path.unlink()
            except FileNotFoundError:
                raise missing from None
        return path

    def import_pack(
        self, source: str | os.PathLike[str], name: str | None = None, overwrite: bool = False
    ) -> Path:
        """Validate a pack file and store it (optionally renamed) in the library."""
        pack = read_pack(source)
        if name is not None and name != pack.name:
            pack = replace(pack, name=validate_name(name))
        return self.save(pack, overwrite=overwrite)

    def export(self, name: str, destination: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Copy a voice to a file (or into a folder as NAME.json), re-validated and re-serialized."""
        pack = self.show(name)
        target = Path(destination).expanduser()
        if target.is_dir():
            target = target / f"{name}{PACK_SUFFIX}"
        if target.exists() and not overwrite:
            raise Qwen3TTSError(f"file exists: {target}", "choose another destination, or pass --force")
        return write_pack(pack, target)

    def resolve(self, name_or_path: str, talker_hidden_size: int | None = None) -> VoicePack:
        """`--voice X`: a path if it looks like one (has a separator or ends in .json), else a name."""
        looks_like_path = os.sep in name_or_path or "/" in name_or_path or name_or_path.endswith(PACK_SUFFIX)
        pack = read_pack(name_or_path) if looks_like_path else self.show(name_or_path)
        if talker_hidden_size is not None:
            pack.check_compatible(talker_hidden_size)
        return pack

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Qwen3TTSError(
                f"cannot create the voices folder {self.root}: {exc}",
                f"set {VOICES_DIR_ENV} to a writable folder",
            ) from exc

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        from filelock import FileLock, Timeout

        self._ensure_root()
        try:
            with FileLock(str(self.root / ".lock"), timeout=30):
                yield
        except Timeout as exc:
            raise Qwen3TTSError(
                f"the voices folder {self.root} is locked by another qwen3tts", "wait for it and retry"
            ) from exc
