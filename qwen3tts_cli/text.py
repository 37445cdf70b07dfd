"""Text handling: splitting long text into pieces to generate one by one, and style control.

Splitting is lazy: `split_text` takes a string or any iterable of lines (an open file, stdin) and yields
pieces as it reads, holding at most one finished piece back (to absorb a tiny successor). Sentences end at
Latin `.!?;` or an ellipsis followed by a space, at CJK `。！？；`, and lines end at newlines; a blank line is
a paragraph break, never crossed by a piece. A piece ends where a sentence ends once it holds `min_length`
(so short sentences merge); a line that ends without punctuation (hard-wrapped prose, verse) only ends a
piece when the next line would not fit in `max_length`. Sentences longer than `max_length` are cut at commas
and colons, then at spaces, then anywhere.

Lengths are "spoken weight": one per visible character, three per CJK ideograph, kana or hangul syllable,
because those carry about a syllable each; so the same limits give pieces of similar duration in every
language (max 300 is roughly 20 s of speech).

Style control (`parse_control`): leading `[Tag]`s and voice attributes become the instruct for models that
take one; an explicit instruct wins over both. Warnings use `audio.warn` (a `Qwen3TTSWarning`).

`plan_text` is everything done to a request's text before the model sees it (tags, lexicon, splitting):
`TTS.plan` and `say --show-text` (which loads no model) both call it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from qwen3tts_cli.audio import warn
from qwen3tts_cli.errors import Qwen3TTSError

if TYPE_CHECKING:
    from qwen3tts_cli.lexicon import Lexicon, Replacement

DEFAULT_MIN_LENGTH = 30
DEFAULT_MAX_LENGTH = 300

_CLOSERS = "\"'”’)\\]}»」』）》】"
# A sentence ends after CJK terminal punctuation, or after Latin terminal punctuation / an ellipsis that
# is followed by whitespace or the line end (so "3.14", "e.g.x" and "file.txt" stay whole).
_SENTENCE_END = re.compile(rf"[。！？；]+[{_CLOSERS}]*\s*|(?:[.!?;…]+)[{_CLOSERS}]*(?:\s+|$)")
_CLAUSE_END = re.compile(r"[,:](?=\s)|[，、：]")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_SPEAKABLE = re.compile(r"[^\W_]")  # a letter or digit in any script


def spoken_length(text: str) -> int:
    """Visible characters, CJK ones counted three times (see module docstring)."""
    visible = sum(1 for char in text if not char.isspace())
    return visible + 2 * len(_CJK.findall(text))


def is_speakable(text: str) -> bool:
    """True when the text has at least one letter or digit (punctuation alone produces no speech)."""
    return _SPEAKABLE.search(text) is not None


def require_speakable(text: str) -> None:
    if not text.strip():
        raise Qwen3TTSError(
            "the text is empty", "pass the text to speak as an argument, with --file, or on stdin"
        )
    if not is_speakable(text):
        raise Qwen3TTSError(
            f"the text has nothing to speak (only punctuation or symbols): {text.strip()[:40]!r}",
            "pass text with words in it",
        )


def _joined(left: str, right: str) -> str:
    """Join two fragments with a space, except across CJK where words are not space-separated."""
    if not left:
        return right
    if _CJK.match(left[-1]) or _CJK.match(right[0]) or left[-1] in "。！？；，、：":
        return left + right
    return f"{left} {right}"


# ---- splitting --------------------------------------------------------------------------------------


@dataclass
class _Unit:
    """A sentence, the part of one on a line, or a cut of an overlong one; and its paragraph."""

    text: str
    paragraph: int
    ends_sentence: bool

    @property
    def length(self) -> int:
        return spoken_length(self.text)


def _lines(source: str | Iterable[str]) -> Iterable[str]:
    return io.StringIO(source, newline=None) if isinstance(source, str) else source


def _sentences(line: str) -> Iterator[tuple[str, bool]]:
    """(sentence, ends with terminal punctuation) for each sentence or sentence part on the line."""
    start = 0
    for match in _SENTENCE_END.finditer(line):
        sentence = line[start : match.end()].strip()
        start = match.end()
        if sentence:
            yield sentence, True
    rest = line[start:].strip()
    if rest:
        yield rest, False


def _units(source: str | Iterable[str], max_length: int) -> Iterator[_Unit]:
    """Speakable sentences in reading order, overlong ones already cut; blank lines bump the paragraph."""
    paragraph = 0
    for raw in _lines(source):
        for line in raw.splitlines() or [""]:  # an iterable may hand over several lines at once
            if not line.strip():
                paragraph += 1
                continue
            for sentence, ends_sentence in _sentences(line):
                parts = _cut_overlong(sentence, max_length)
                for index, part in enumerate(parts):
                    if is_speakable(part):
                        yield _Unit(part, paragraph, ends_sentence and index == len(parts) - 1)


def _cut_overlong(sentence: str, max_length: int) -> list[str]:
    """Cut a sentence longer than max_length at commas, else at spaces, else anywhere."""
    if spoken_length(sentence) <= max_length:
        return [sentence]
    pieces: list[str] = []
    for clause in _split_after(sentence, _CLAUSE_END):
        if spoken_length(clause) <= max_length:
            pieces.append(clause)
            continue
        for word in clause.split():
            pieces.extend([word] if spoken_length(word) <= max_length else _hard_cut(word, max_length))
    return _pack_fragments(pieces, max_length)


def _split_after(text: str, pattern: re.Pattern[str]) -> list[str]:
    parts: list[str] = []
    start = 0
    for match in pattern.finditer(text):
        parts.append(text[start : match.end()].strip())
        start = match.end()
    parts.append(text[start:].strip())
    return [part for part in parts if part]


def _hard_cut(word: str, max_length: int) -> list[str]:
    cuts: list[str] = []
    current = ""
    for char in word:
        if current and spoken_length(current + char) > max_length:
            cuts.append(current)
            current = ""
        current += char
    if current:
        cuts.append(current)
    return cuts


def _pack_fragments(fragments: list[str], max_length: int) -> list[str]:
    """Greedily rejoin consecutive fragments while they fit in max_length."""
    packed: list[str] = []
    for fragment in fragments:
        if packed and spoken_length(_joined(packed[-1], fragment)) <= max_length:
            packed[-1] = _joined(packed[-1], fragment)
        else:
            packed.append(fragment)
    return packed


def split_text(
    source: str | Iterable[str],
    min_length: int = DEFAULT_MIN_LENGTH,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> Iterator[str]:
    """Yield the pieces to synthesize one after another (see module docstring).

    Raises Qwen3TTSError (on the first `next`) when the whole text has nothing to speak.
    """
    if not 0 < min_length <= max_length:
        raise ValueError(f"need 0 < min_length <= max_length, got {min_length}, {max_length}")
    held: _Unit | None = None  # finished piece kept back in case a tiny successor should join it
    building: _Unit | None = None
    produced = False
    for unit in _units(source, max_length):
        if building is not None and _starts_new_piece(building, unit, min_length, max_length):
            held, ready = _absorb_tiny(held, building, min_length, max_length)
            if ready is not None:
                produced = True
                yield ready.text
            building = None
        building = unit if building is None else _merged(building, unit)
    if building is not None:
        held, ready = _absorb_tiny(held, building, min_length, max_length)
        if ready is not None:
            produced = True
            yield ready.text
    if held is not None:
        produced = True
        yield held.text
    if not produced:
        raise Qwen3TTSError(
            "the text has nothing to speak (it is empty or only punctuation)", "pass text with words in it"
        )


def _merged(first: _Unit, second: _Unit) -> _Unit:
    return _Unit(_joined(first.text, second.text), first.paragraph, second.ends_sentence)


def _starts_new_piece(building: _Unit, unit: _Unit, min_length: int, max_length: int) -> bool:
    if unit.paragraph != building.paragraph:
        return True
    if building.ends_sentence and building.length >= min_length:
        return True
    return spoken_length(_joined(building.text, unit.text)) > max_length


def _absorb_tiny(
    held: _Unit | None, finished: _Unit, min_length: int, max_length: int
) -> tuple[_Unit | None, _Unit | None]:
    """Merge a tiny finished piece into the held one when they share a paragraph and fit; else rotate.

    Returns (new held piece, piece ready to yield).
    """
    if (
        held is not None
        and finished.length < min_length
        and held.paragraph == finished.paragraph
        and spoken_length(_joined(held.text, finished.text)) <= max_length
    ):
        return _merged(held, finished), None
    return finished, held


# ---- style control ----------------------------------------------------------------------------------

InstructSource = Literal["explicit", "tags", "attributes", "tags+attributes", "none"]


@dataclass(frozen=True)
class ControlledText:
    """The text to speak with its style instruction, and where that instruction came from."""

    text: str
    instruct: str | None
    source: InstructSource


_LEADING_TAGS = re.compile(r"\A\s*((?:\[[^\[\]\\\n]*\]\s*)+)")
_TAG = re.compile(r"\[([^\[\]\\\n]*)\]")
_ESCAPED_BRACKET = re.compile(r"\\([\[\]])")


def split_leading_tags(text: str) -> tuple[list[str], str]:
    """`[Happy][Slow] Hi [there]` -> (["Happy", "Slow"], "Hi [there]").

    `\\[` and `\\]` anywhere are literal brackets, so `\\[Happy] hi` speaks "[Happy] hi" with no tag.
    """
    match = _LEADING_TAGS.match(text)
    tags: list[str] = []
    if match:
        tags = [tag.strip() for tag in _TAG.findall(match.group(1)) if tag.strip()]
        text = text[match.end() :]
    return tags, _ESCAPED_BRACKET.sub(r"\1", text).strip()


ATTRIBUTE_NAMES = ("gender", "age", "emotion", "pace", "pitch")
_GENDERS = {"male": "male", "man": "male", "m": "male", "female": "female", "woman": "female", "f": "female"}
_PACES = {"very slow": "very slow", "slow": "slow", "normal": None, "fast": "fast", "very fast": "very fast"}
_PITCHES = {"low": "low", "normal": None, "medium": None, "high": "high", "deep": "deep"}
_FREE_WORDS = re.compile(r"^[A-Za-z][A-Za-z -]{0,39}$")


def attributes_to_instruct(attributes: Mapping[str, str | None]) -> str | None:
    """Compose one English sentence from seed-service style attributes, deterministically.

    {"gender": "female", "age": "young", "emotion": "happy", "pace": "slow", "pitch": "low"} ->
    "A young female voice, speaking in a happy tone, at a slow pace, with a low pitch."
    """
    values = _validated_attributes(attributes)
    voice = " ".join(word for word in (values.get("age"), values.get("gender")) if word)
    clauses = []
    if values.get("emotion"):
        clauses.append(f"in {_article(values['emotion'])} {values['emotion']} tone")
    if values.get("pace"):
        clauses.append(f"at {_article(values['pace'])} {values['pace']} pace")
    if values.get("pitch"):
        clauses.append(f"with {_article(values['pitch'])} {values['pitch']} pitch")
    if voice and clauses:
        return f"{_article(voice).capitalize()} {voice} voice, speaking " + ", ".join(clauses) + "."
    if voice:
        return f"{_article(voice).capitalize()} {voice} voice."
    if clauses:
        return "Speak " + ", ".join(clauses) + "."
    return None


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _validated_attributes(attributes: Mapping[str, str | None]) -> dict[str, str]:
    unknown = sorted(set(attributes) - set(ATTRIBUTE_NAMES))
    if unknown:
        raise Qwen3TTSError(
            f"unknown voice attribute(s): {', '.join(unknown)}", f"use: {', '.join(ATTRIBUTE_NAMES)}"
        )
    values: dict[str, str] = {}
    for name in ATTRIBUTE_NAMES:
        raw = attributes.get(name)
        if raw is None or not str(raw).strip():
            continue
        value = " ".join(str(raw).lower().split())
        normalized = _normalized_attribute(name, value)
        if normalized:
            values[name] = normalized
    return values


def _normalized_attribute(name: str, value: str) -> str | None:
    choices = {"gender": _GENDERS, "pace": _PACES, "pitch": _PITCHES}.get(name)
    if choices is not None:
        if value not in choices:
            raise Qwen3TTSError(
                f"{name} '{value}' is not one of: {', '.join(sorted(choices))}", f"pass a valid {name}"
            )
        return choices[value]
    if not _FREE_WORDS.match(value):
        raise Qwen3TTSError(
            f"{name} '{value}' must be a few English words (letters, spaces, hyphens; at most 40 characters)",
            f"e.g. --{name} {'young' if name == 'age' else 'cheerful'}",
        )
    return value


def parse_control(
    text: str,
    instruct: str | None = None,
    attributes: Mapping[str, str | None] | None = None,
    accepts_instruct: bool = True,
) -> ControlledText:
    """Resolve the style instruction of a text.

    Leading `[Tag]`s are always removed from the spoken text (they are never read aloud); later brackets
    stay. Precedence: an explicit `instruct` (even "", meaning none) > tags and attributes, which combine
    as "<attribute sentence> <tag, tag>". A model that takes no instruct gets none, with a warning.
    """
    tags, spoken = split_leading_tags(text)
    require_speakable(spoken)
    from_attributes = attributes_to_instruct(attributes or {})
    from_tags = ", ".join(tags) or None
    resolved: str | None
    source: InstructSource
    if instruct is not None:
        if from_tags or from_attributes:
            warn("an explicit instruct was given; the [tags] and voice attributes are ignored")
        resolved, source = instruct.strip() or None, "explicit"
    elif from_tags and from_attributes:
        resolved, source = f"{from_attributes} {from_tags}", "tags+attributes"
    elif from_tags or from_attributes:
        resolved, source = from_tags or from_attributes, "tags" if from_tags else "attributes"
    else:
        resolved, source = None, "none"
    if resolved is not None and not accepts_instruct:
        warn(f"this model takes no style instruction; ignoring {resolved!r}")
        return ControlledText(spoken, None, "none")
    return ControlledText(spoken, resolved, source)


# ---- the whole text path ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedText:
    """What the model will get: the pieces of the final text, the instruct, and the lexicon's work."""

    pieces: list[str]
    text: str  # after leading tags are removed and the lexicon is applied
    instruct: str | None
    replacements: list[Replacement]


def plan_text(
    text: str,
    instruct: str | None = None,
    attributes: Mapping[str, str | None] | None = None,
    *,
    accepts_instruct: bool = True,
    lexicon: Lexicon | None = None,
    split: bool = True,
) -> PlannedText:
    """Leading tags -> instruct (`parse_control`), then the lexicon on the rest (tags are never
    rewritten), then the split into pieces (or one stripped piece)."""
    controlled = parse_control(text, instruct, attributes, accepts_instruct=accepts_instruct)
    spoken, replacements = lexicon.apply(controlled.text) if lexicon else (controlled.text, [])
    if replacements:
        require_speakable(spoken)  # respellings could leave only punctuation
    pieces = list(split_text(spoken)) if split else [spoken.strip()]
    return PlannedText(pieces, spoken, controlled.instruct, replacements)
