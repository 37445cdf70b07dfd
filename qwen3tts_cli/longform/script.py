"""Dialogue scripts: `[S1] text` / `[S2] text` (ZipVoice's markers) or `Name: text`, parsed into turns.

Rules (README "Dialogues"):
- A script that contains any `[Sn]` marker is a marker script: every marker starts a turn, several markers may
  share a line (ZipVoice writes a whole dialogue on one line), and a line without a marker continues the turn
  before it. Otherwise each `Name: text` line starts a turn of `Name` (a name is 1-40
  characters, starts with a letter and has no `:`, `[` or `]`; a space follows the colon, so `10:30` is no
  name) and any other line continues the
  turn before it.
- Blank lines and lines starting with `#` are skipped. Text after the marker may begin with style tags
  (`[S1] [Happy] text`), which `say` turns into an instruction; they stay in the turn's text.
- Every problem is a `Qwen3TTSError` naming the line: text before the first turn, a turn with nothing to say,
  undecodable UTF-8, a script too large.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.text import is_speakable, split_leading_tags

MAX_SCRIPT_BYTES = 1 << 20
MAX_TURNS = 5000
MAX_NAME_LENGTH = 40

_MARKER = re.compile(r"\[\s*[Ss](\d{1,3})\s*\]")
_NAMED = re.compile(r"^\s*([^\W\d_][^:\[\]]{0,39}?)\s*:(?:\s+(.*)|\s*$)")


@dataclass(frozen=True)
class Turn:
    """One speaker's consecutive text; `line` is where it starts (1-based)."""

    speaker: str
    text: str
    line: int


@dataclass(frozen=True)
class Script:
    turns: list[Turn]
    source: str = ""

    @property
    def speakers(self) -> list[str]:
        """Speakers in order of first appearance (the stereo/pan order)."""
        return list(dict.fromkeys(turn.speaker for turn in self.turns))


def _error(source: str, line: int, problem: str, hint: str) -> Qwen3TTSError:
    where = f"{source}:{line}" if source else f"line {line}"
    return Qwen3TTSError(f"{where}: {problem}", hint)


def read_script(path: str | os.PathLike[str]) -> Script:
    file = Path(path)
    if not file.is_file():
        raise Qwen3TTSError(f"script not found: {file}", "pass an existing text file")
    if file.stat().st_size > MAX_SCRIPT_BYTES:
        raise Qwen3TTSError(
            f"script {file} is larger than {MAX_SCRIPT_BYTES >> 20} MB", "split it into several dialogues"
        )
    return parse_script(file.read_bytes(), source=str(file))


def parse_script(content: str | bytes, source: str = "") -> Script:
    """Turns of a script (text or UTF-8 bytes). Raises Qwen3TTSError naming the line of any problem."""
    lines = _decoded_lines(content, source)
    marker_script = any(_MARKER.search(line) for line in lines)
    building: list[list] = []  # [speaker, parts, line]
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        for speaker, text in _line_turns(line, marker_script):
            if speaker is None:
                if not building:
                    hint = (
                        "start it with a speaker marker, e.g. [S1]" if marker_script else "e.g. 'Anna: Hello'"
                    )
                    raise _error(source, number, "text before the first speaker", hint)
                building[-1][1].append(text)
                continue
            building.append([speaker, [text] if text else [], number])
            if len(building) > MAX_TURNS:
                raise _error(source, number, f"more than {MAX_TURNS} turns", "split the script")
    if not building:
        raise Qwen3TTSError(
            f"no turns in {source or 'the script'}", "write lines like '[S1] Hello' or 'Anna: Hello'"
        )
    turns = []
    for speaker, parts, number in building:
        text = " ".join(part for part in parts if part)
        _, words = split_leading_tags(text)
        if not is_speakable(words):
            raise _error(source, number, f"turn of {speaker} has nothing to say", "give the turn some text")
        turns.append(Turn(speaker, text, number))
    return Script(turns, source)


def _decoded_lines(content: str | bytes, source: str) -> list[str]:
    if isinstance(content, str):
        if len(content.encode("utf-8", "surrogatepass")) > MAX_SCRIPT_BYTES:
            raise Qwen3TTSError(f"script is larger than {MAX_SCRIPT_BYTES >> 20} MB", "split it")
        return content.removeprefix("\ufeff").splitlines()
    if len(content) > MAX_SCRIPT_BYTES:
        raise Qwen3TTSError(f"script is larger than {MAX_SCRIPT_BYTES >> 20} MB", "split it")
    lines = []
    for number, raw in enumerate(content.removeprefix(b"\xef\xbb\xbf").splitlines(), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise _error(source, number, "not valid UTF-8", "save the script as UTF-8") from None
    return lines


def _line_turns(line: str, marker_script: bool) -> list[tuple[str | None, str]]:
    """(speaker or None for a continuation, text) for each turn started or continued on this line."""
    if marker_script:
        found = list(_MARKER.finditer(line))
        if not found:
            return [(None, line)]
        pieces: list[tuple[str | None, str]] = []
        if line[: found[0].start()].strip():
            pieces.append((None, line[: found[0].start()].strip()))
        for index, match in enumerate(found):
            end = found[index + 1].start() if index + 1 < len(found) else len(line)
            pieces.append((f"S{int(match.group(1))}", line[match.end() : end].strip()))
        return pieces
    named = _NAMED.match(line)
    if named is None:
        return [(None, line)]
    return [(named.group(1).strip(), (named.group(2) or "").strip())]
