"""Pronunciation fixes: respell words before the text reaches the model's tokenizer.

A lexicon is a UTF-8 TSV file (a byte-order mark is fine), one `written<TAB>spoken` entry per line:

    # written	spoken
    GIF	jif
    SQL	sequel
    nginx	engine x
    重庆	崇庆

Lines whose first non-blank character is `#` and blank lines are skipped; spaces around each column are
dropped. Exactly two columns, neither empty, no control characters, at most 50,000 entries and 1 MB.
Every problem is a `Qwen3TTSError` naming the file, the line and the fix.

Matching rules (`Lexicon.apply`):
- Case: an entry written all in lower case matches any case (`gif` matches `gif`, `Gif`, `GIF`); an entry
  with any upper-case letter matches only that exact spelling (`US` is not `us`). Both may be listed; at one
  position the exact-case entry wins. Two entries are duplicates only when written identically.
- Whole words: an entry that starts (ends) with a letter, digit, combining mark or `_` matches only where
  the text does not continue with one of those before (after) it: `gif` does not touch `gifts`. An
  apostrophe or hyphen is a boundary (`NASA` also fixes `NASA's`; list `don't` itself to keep it whole).
  Letters of scripts written without spaces (see below) never count as word characters, so `GPU` matches
  in `用GPU计算`. Ends that are punctuation or symbols need no boundary (`&`, `C++`, `.NET`).
- Scripts without word spaces: an entry containing any Han, Hiragana, Katakana, Bopomofo, Hangul, Thai,
  Lao, Khmer, Myanmar, Tibetan or Yi character matches anywhere, as a substring.
- One pass, left to right: at each position the longest matching entry wins (exact case before
  any-case at equal length); the text after a replacement continues to be matched, but a replacement's
  own output is never matched again. The spoken form is inserted literally.

The result is what one regex alternation of all entries, sorted longest first, would give; it is computed
with dictionary look-ups per position instead, so that a 50,000-entry lexicon still applies in
milliseconds (a 50k-branch `re` pattern takes seconds to compile and about a millisecond per character).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qwen3tts_cli.errors import Qwen3TTSError

if TYPE_CHECKING:
    from qwen3tts_cli.voices import VoicePack

MAX_BYTES = 1024 * 1024
MAX_ENTRIES = 50_000
_FORMAT_HINT = "write each entry as: written form, one tab, spoken form; lines starting with # are comments"

# Scripts written without spaces between words: no word boundaries there (Han incl. extensions and
# compatibility ideographs, kana, bopomofo, hangul, Thai, Lao, Tibetan, Myanmar, Khmer, Yi, Tai scripts).
_SPACELESS = re.compile(
    "["
    "\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1100-\u11ff\u1780-\u17ff\u1950-\u19ff\u1a20-\u1aaf"
    "\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029\u3031-\u3035\u3038-\u303c\u3040-\u30ff\u3100-\u312f"
    "\u3130-\u318f\u31a0-\u31bf\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua000-\ua4cf\ua960-\ua97f"
    "\ua9e0-\ua9ff\uaa60-\uaadf\uac00-\ud7ff\uf900-\ufaff\uff66-\uffdc"
    "\U00016fe0-\U00016fff\U0001b000-\U0001b2ff\U00020000-\U0003134f"
    "]"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # only from Python strings, never from a UTF-8 file


@dataclass(frozen=True)
class Replacement:
    """One lexicon entry that changed the text, and how many times it was applied."""

    written: str
    spoken: str
    count: int


def _is_word_char(char: str) -> bool:
    if _SPACELESS.match(char):
        return False
    return char.isalnum() or char == "_" or unicodedata.category(char).startswith("M")


@dataclass(frozen=True)
class _Entry:
    written: str
    spoken: str
    bound_start: bool  # the text before a match must not be a word character
    bound_end: bool


class _Matcher:
    """Entries by length and spelling: exact-case entries by their text, any-case ones by lower case."""

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        self.exact: dict[str, _Entry] = {}
        self.folded: dict[str, _Entry] = {}
        self.starts: set[str] = set()
        lengths: set[int] = set()
        for written, spoken in entries:
            substring = _SPACELESS.search(written) is not None
            entry = _Entry(
                written,
                spoken,
                bound_start=not substring and _is_word_char(written[0]),
                bound_end=not substring and _is_word_char(written[-1]),
            )
            (self.folded if written == written.lower() else self.exact)[written] = entry
            self.starts.add(written[0])
            lengths.add(len(written))
        self.lengths = sorted(lengths, reverse=True)

    def match_at(self, text: str, start: int) -> tuple[int, _Entry] | None:
        first = text[start]
        if first not in self.starts and first.lower()[:1] not in self.starts:
            return None
        for length in self.lengths:
            end = start + length
            if end > len(text):
                continue
            candidate = text[start:end]
            for entry in (self.exact.get(candidate), self.folded.get(candidate.lower())):
                if entry is not None and _bounded(text, start, end, entry):
                    return end, entry
        return None


def _bounded(text: str, start: int, end: int, entry: _Entry) -> bool:
    if entry.bound_start and start > 0 and _is_word_char(text[start - 1]):
        return False
    return not (entry.bound_end and end < len(text) and _is_word_char(text[end]))


def _problem(source: str, where: str, message: str, hint: str = _FORMAT_HINT) -> Qwen3TTSError:
    place = " ".join(part for part in (source, where) if part)
    return Qwen3TTSError(f"lexicon{' ' + place if place else ''}: {message}", hint)


def check_entries(entries: Iterable[Sequence[str]], source: str = "") -> tuple[tuple[str, str], ...]:
    """Validate (written, spoken) pairs given other than as a file (a voice pack, the library API).

    The same rules as a file; a problem names `source` and the entry's number (1-based).
    """
    checked: list[tuple[str, str]] = []
    seen: set[str] = set()
    for number, pair in enumerate(entries, start=1):
        where = f"entry {number}"
        if number > MAX_ENTRIES:
            raise _problem(source, where, f"more than {MAX_ENTRIES} entries", "split the lexicon")
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise _problem(source, where, "an entry is a pair (written, spoken)")
        written, spoken = pair
        if not isinstance(written, str) or not isinstance(spoken, str):
            raise _problem(source, where, "written and spoken forms must be text")
        _check_forms(written, spoken, source, where)
        if written in seen:
            raise _problem(source, where, f"{written!r} is listed twice", "keep one of the entries")
        seen.add(written)
        checked.append((written, spoken))
    return tuple(checked)


def _check_forms(written: str, spoken: str, source: str, where: str) -> None:
    for name, value in (("written", written), ("spoken", spoken)):
        if not value.strip():
            raise _problem(source, where, f"the {name} form is empty")
        if value != value.strip():
            raise _problem(source, where, f"the {name} form {value!r} has spaces around it", "remove them")
        control = _CONTROL.search(value)
        if control:
            raise _problem(
                source,
                where,
                f"the {name} form contains the control character U+{ord(control.group()):04X}",
                "remove it",
            )
        if _SURROGATE.search(value):
            raise _problem(
                source, where, f"the {name} form is not valid Unicode (a lone surrogate)", "fix it"
            )


@dataclass(frozen=True)
class Lexicon:
    """Respellings applied to the text before it is tokenized (rules in the module docstring)."""

    entries: tuple[tuple[str, str], ...]
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", check_entries(self.entries, self.source))
        object.__setattr__(self, "_matcher", _Matcher(self.entries))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Lexicon:
        """Read a TSV lexicon file."""
        file = Path(path)
        try:
            size = file.stat().st_size
            if size > MAX_BYTES:
                raise _problem(
                    str(file), "", f"is {size} bytes, more than {MAX_BYTES // 1024} KB", "split the lexicon"
                )
            data = file.read_bytes()
        except IsADirectoryError as exc:
            raise Qwen3TTSError(f"lexicon {file} is a folder", "pass a TSV file") from exc
        except OSError as exc:
            raise Qwen3TTSError(
                f"cannot read lexicon {file}: {exc.strerror or exc}", "check the path"
            ) from exc
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
            line = data[: exc.start + bom].count(b"\n") + 1
            raise _problem(
                str(file), f"line {line}", "is not valid UTF-8", "save the file as UTF-8"
            ) from None
        return cls.parse(text, source=str(file))

    @classmethod
    def parse(cls, text: str, source: str = "") -> Lexicon:
        """Parse TSV text (the content of a lexicon file)."""
        if len(text) > MAX_BYTES:
            raise _problem(source, "", f"is longer than {MAX_BYTES // 1024} KB", "split the lexicon")
        entries: list[tuple[str, str]] = []
        lines_of: dict[str, int] = {}
        for number, line in enumerate(re.split(r"\r\n|\r|\n", text.removeprefix("\ufeff")), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            where = f"line {number}"
            columns = line.split("\t")
            if len(columns) != 2:
                raise _problem(source, where, f"expected 2 tab-separated columns, found {len(columns)}")
            written, spoken = (column.strip() for column in columns)
            _check_forms(written, spoken, source, where)
            if written in lines_of:
                raise _problem(
                    source,
                    where,
                    f"{written!r} is already listed on line {lines_of[written]}",
                    "keep one of the two entries",
                )
            if len(entries) == MAX_ENTRIES:
                raise _problem(source, where, f"more than {MAX_ENTRIES} entries", "split the lexicon")
            lines_of[written] = number
            entries.append((written, spoken))
        return cls(tuple(entries), source)

    def apply(self, text: str) -> tuple[str, list[Replacement]]:
        """The respelled text and, in order of first use, each entry applied with its count."""
        if not self.entries:
            return text, []
        matcher: _Matcher = self._matcher  # type: ignore[attr-defined]
        parts: list[str] = []
        used: dict[str, tuple[_Entry, int]] = {}
        position = copied = 0
        while position < len(text):
            hit = matcher.match_at(text, position)
            if hit is None:
                position += 1
                continue
            end, entry = hit
            parts += [text[copied:position], entry.spoken]
            used[entry.written] = (entry, used[entry.written][1] + 1 if entry.written in used else 1)
            position = copied = end
        parts.append(text[copied:])
        replacements = [Replacement(entry.written, entry.spoken, count) for entry, count in used.values()]
        return "".join(parts), replacements

    def merged(self, other: Lexicon | None) -> Lexicon:
        """This lexicon with `other`'s entries added; on the same written form `other` wins."""
        if not other:
            return self
        if not self:
            return other
        combined = dict(self.entries)
        combined.update(other.entries)
        return Lexicon(tuple(combined.items()), " + ".join(s for s in (self.source, other.source) if s))

    def __bool__(self) -> bool:
        return bool(self.entries)


def for_voice(voice: VoicePack | None, lexicon: Lexicon | None) -> Lexicon | None:
    """The lexicon a request uses: its voice pack's own, with `lexicon` over it (its entries win)."""
    if voice is None or not voice.lexicon:
        return lexicon
    return Lexicon(voice.lexicon, f"voice '{voice.name}'").merged(lexicon)


__all__ = ["MAX_BYTES", "MAX_ENTRIES", "Lexicon", "Replacement", "check_entries", "for_voice"]
