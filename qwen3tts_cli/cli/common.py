"""Pieces shared by the `qwen3tts` commands: option types, messages on stderr, JSON, text input, progress.

Everything here is cheap to import (no numpy, llama.cpp or ONNX Runtime) so `qwen3tts --help` stays fast.
Conventions: data a script may parse goes to stdout (lists, JSON, audio with `-o -`); everything a person
reads while a command runs (status, progress, warnings, errors) goes to stderr.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from qwen3tts_cli.errors import Qwen3TTSError

# ---- reusable options -----------------------------------------------------------------------------------
ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Catalog model name (see `qwen3tts models list`)."),
]
ModelDirOption = Annotated[
    Path | None,
    typer.Option("--model-dir", help="A local official checkpoint folder or a converted model folder."),
]
QuantOption = Annotated[
    str | None,
    typer.Option("--quant", "-q", help="LM weight type of a catalog model: f32, f16, q8_0, q5_k_m, q4_k_m."),
]
ThreadsOption = Annotated[
    int | None, typer.Option("--threads", "-t", min=1, help="CPU threads (default: the free cores).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
VoicesDirOption = Annotated[
    Path | None,
    typer.Option(
        "--voices-dir",
        envvar="QWEN3TTS_VOICES_DIR",
        help="Voice library folder (default: the user data folder).",
        show_envvar=True,
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", help="No progress or status messages.")]


# ---- messages -------------------------------------------------------------------------------------------
def status(message: str) -> None:
    """A line for the person at the terminal (stderr, so stdout stays clean for data)."""
    print(message, file=sys.stderr, flush=True)


def print_json(document: Any, *, stream: TextIO | None = None, indent: int | None = 2) -> None:
    text = json.dumps(document, indent=indent, ensure_ascii=False, default=str)
    print(text, file=stream or sys.stdout, flush=True)


def error_line(exc: Qwen3TTSError) -> str:
    return f"error: {exc.message} ({exc.hint})" if exc.hint else f"error: {exc.message}"


class UsageProblem(Qwen3TTSError):
    """A wrong command line (conflicting or missing options): reported like any error, exit code 2."""


def usage_error(message: str, hint: str) -> UsageProblem:
    return UsageProblem(message, hint)


def show_warnings_as_lines() -> None:
    """Print our warnings as one `warning: ...` line each; others keep Python's format (call it inside
    `warnings.catch_warnings()` to have the previous hook restored)."""
    from qwen3tts_cli.audio import Qwen3TTSWarning

    previous = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, Qwen3TTSWarning):
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            previous(message, category, *args, **kwargs)

    warnings.showwarning = show  # type: ignore[assignment]
    warnings.simplefilter("always", Qwen3TTSWarning)  # the same problem in two pieces is still reported


# ---- text input -----------------------------------------------------------------------------------------
STDIN_MARK = "-"


def read_text(argument: str | None, file: str | None) -> str:
    """The text to speak: the argument, `-f FILE`, `-f -` (stdin) or piped stdin when neither is given."""
    if argument is not None and file is not None:
        raise usage_error("give the text either as an argument or with --file, not both", "drop one of them")
    if argument is not None:
        return argument
    if file == STDIN_MARK or (file is None and not sys.stdin.isatty()):
        return _decode(sys.stdin.buffer.read(), "standard input")
    if file is not None:
        return _read_text_file(Path(file))
    raise usage_error(
        "no text to speak", 'pass it as an argument (qwen3tts say "Hello"), with -f FILE, or pipe it in'
    )


def _read_text_file(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise Qwen3TTSError(f"text file not found: {path}", "check the path") from None
    except OSError as exc:
        raise Qwen3TTSError(f"cannot read the text file {path}: {exc.strerror}", "check the path") from None
    return _decode(data, str(path))


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")  # a BOM (Windows editors) is not text to speak
    except UnicodeDecodeError as exc:
        raise Qwen3TTSError(
            f"{source} is not UTF-8 text (byte {exc.start})", "save or convert it as UTF-8"
        ) from None


# ---- progress -------------------------------------------------------------------------------------------
@dataclass
class Progress:
    """One self-rewriting status line on a terminal: piece i/N, frames, seconds of audio. Silent otherwise."""

    pieces: int
    enabled: bool
    frames: int = 0
    piece: int = 0
    seconds: float = 0.0
    _last_draw: float = 0.0
    _drawn: bool = False
    interval: float = 0.1

    @classmethod
    def for_terminal(cls, pieces: int, quiet: bool) -> Progress:
        return cls(pieces=pieces, enabled=not quiet and sys.stderr.isatty())

    def frames_done(self, piece: int, count: int) -> None:
        self.piece = piece
        self.frames += count
        self._draw()

    def audio_done(self, seconds: float) -> None:
        self.seconds += seconds

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last_draw < self.interval):
            return
        self._last_draw = now
        line = f"piece {self.piece + 1}/{self.pieces}  {self.frames} frames  {self.seconds:.1f} s of audio"
        sys.stderr.write("\r" + line + "\x1b[K")
        sys.stderr.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._drawn = False


@dataclass
class CountLine:
    """A self-rewriting "LABEL: tensor n of m" line on a terminal; silent when stderr is piped or quiet."""

    label: str
    enabled: bool
    interval: float = 0.1
    _last_draw: float = 0.0
    _drawn: bool = False

    @classmethod
    def for_terminal(cls, label: str, quiet: bool) -> CountLine:
        return cls(label=label, enabled=not quiet and sys.stderr.isatty())

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        # the first and the last count are always drawn, the ones between at most every `interval`
        if not self.enabled or (1 < done < total and now - self._last_draw < self.interval):
            return
        self._last_draw = now
        sys.stderr.write(f"\r{self.label}: tensor {done} of {total}\x1b[K")
        sys.stderr.flush()
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._drawn = False


def download_messages(quiet: bool) -> Any:
    """The hub/converter progress callback: status lines unless quiet; tqdm bars only on a terminal."""
    if quiet or not sys.stderr.isatty():
        try:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        except ImportError:  # pragma: no cover - huggingface-hub is a dependency
            pass
    if quiet:
        return lambda _message: None
    return lambda message: status(f"qwen3tts: {message}")


# ---- model selection ------------------------------------------------------------------------------------
def model_argument(model: str | None, model_dir: Path | None) -> str | Path | None:
    """--model NAME or --model-dir PATH (a Path makes the hub treat it as a folder, never a name)."""
    if model is not None and model_dir is not None:
        raise usage_error("--model and --model-dir both given", "pass one of them")
    if model_dir is not None:
        return model_dir.expanduser()
    return model
