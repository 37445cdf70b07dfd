"""The `qwen3tts` command line: a thin Typer shell over the library (tts.py, voices.py, hub.py, ...).

    qwen3tts say "Hello there." -o hello.wav
    qwen3tts clone me.wav --text "What I said." --name me
    qwen3tts say --voice me -f chapter.txt -o chapter.flac

Every failure the user can fix is one line on stderr, `error: <message> (<hint>)`, and a non-zero exit code
(1; 2 for a wrong command line; 130 after Ctrl-C, 143 after SIGTERM or, on Windows, Ctrl-Break). `--debug`
(anywhere on the command line, or QWEN3TTS_DEBUG=1) adds the traceback. Library warnings print as
`warning: ...` lines. Each command lives in its own module of this package (see __init__.py).
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from qwen3tts_cli import __version__
from qwen3tts_cli.cli.batch import batch
from qwen3tts_cli.cli.clone import clone
from qwen3tts_cli.cli.common import UsageProblem, error_line, show_warnings_as_lines
from qwen3tts_cli.cli.dialogue import dialogue
from qwen3tts_cli.cli.doctor import doctor
from qwen3tts_cli.cli.manage import convert, languages, models_app, speakers, voices_app
from qwen3tts_cli.cli.say import say
from qwen3tts_cli.cli.serve import serve
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.platform_compat import enable_terminal_escapes, stop_signals, tolerate_console_encoding

PROG = "qwen3tts"
DEBUG_FLAG = "--debug"
DEBUG_ENV = "QWEN3TTS_DEBUG"
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM

app = typer.Typer(
    name=PROG,
    help="Qwen3-TTS offline on the CPU: speak text with preset, designed or cloned voices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"{PROG} {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    debug: Annotated[
        bool, typer.Option(DEBUG_FLAG, help="Show tracebacks (accepted anywhere on the command line).")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Global options (run() lifts --debug out of the arguments before Typer sees them)."""


app.command("say")(say)
app.command("clone")(clone)
app.command("dialogue")(dialogue)
app.command("batch")(batch)
app.add_typer(voices_app, name="voices")
app.add_typer(models_app, name="models")
app.command("speakers")(speakers)
app.command("languages")(languages)
app.command("doctor")(doctor)
app.command("convert")(convert)
app.command("serve")(serve)


def _register_bench() -> None:
    """`bench` lives in bench.py (its own engineer); the CLI must work even while it is missing."""
    try:
        from qwen3tts_cli.cli.bench import bench
    except ImportError:
        return
    app.command("bench")(bench)


_register_bench()


# ---- running ------------------------------------------------------------------------------------------
def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """Remove `--debug` wherever it is (before a `--` separator); env QWEN3TTS_DEBUG=1 also turns it on."""
    args = list(argv)
    end = args.index("--") if "--" in args else len(args)
    debug = DEBUG_FLAG in args[:end]
    if debug:
        args = [a for a in args[:end] if a != DEBUG_FLAG] + args[end:]
    env = os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
    return args, debug or env


@contextmanager
def _terminal_signals() -> Iterator[None]:
    """SIGTERM (SIGBREAK) unwinds like Ctrl-C (temporary files removed, nothing half-written), exit 143."""

    def terminate(_signum: int, _frame: Any) -> None:
        raise SystemExit(EXIT_TERMINATED)

    previous: dict[int, Any] = {}
    try:
        for sig in stop_signals():
            previous[sig] = signal.signal(sig, terminate)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _is_command_line_error(exc: BaseException) -> bool:
    """Typer's (vendored) click errors: bad options, missing arguments... (duck-typed across versions)."""
    return hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)


def _report(exc: BaseException, debug: bool) -> int:
    """Print one `error: ...` line (plus the traceback with --debug); returns the exit code."""
    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, Qwen3TTSError):
        print(error_line(exc), file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, UsageProblem) else EXIT_ERROR
    if isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "Abort":  # older Typer: Ctrl-C -> Abort
        return _interrupted()
    if _is_command_line_error(exc):
        context = getattr(exc, "ctx", None)
        where = getattr(context, "command_path", None) or PROG
        print(f"error: {exc.format_message()} (see `{where} --help`)", file=sys.stderr)  # type: ignore[attr-defined]
        return int(exc.exit_code)  # type: ignore[attr-defined]
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    hint = "" if debug else "; run again with --debug for the traceback"
    print(f"error: internal error: {type(exc).__name__}: {exc} (please report it{hint})", file=sys.stderr)
    return EXIT_ERROR


def _interrupted() -> int:
    print("error: interrupted (nothing was written)", file=sys.stderr)
    return EXIT_INTERRUPTED


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command line; returns the exit code (tests call this in-process)."""
    args, debug = split_debug(sys.argv[1:] if argv is None else argv)
    tolerate_console_encoding(sys.stdout, sys.stderr)  # a cp1252 console must not crash on Chinese text
    if getattr(sys.stderr, "isatty", lambda: False)():
        enable_terminal_escapes(sys.stderr)  # Windows consoles: the status lines' escapes, not text
    command = typer.main.get_command(app)
    try:
        with warnings.catch_warnings(), _terminal_signals():  # both restored afterwards (in-process use)
            show_warnings_as_lines()
            result = command.main(args=args, prog_name=PROG, standalone_mode=False)
    except (Exception, KeyboardInterrupt) as exc:  # KeyboardInterrupt: outside Typer's own handling
        if type(exc).__name__ == "NoArgsIsHelpError":
            return EXIT_USAGE  # Typer has printed the help already
        return _report(exc, debug)
    if result == EXIT_INTERRUPTED:  # Typer turns Ctrl-C into Exit(130) and returns the code
        return _interrupted()
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
