"""The `qwen3tts` command line: a thin Typer shell over the library, one module per command group.

app.py holds the Typer app, error reporting and exit codes; say.py, clone.py, manage.py (voices, models,
speakers, languages, convert), doctor.py, bench.py and serve.py the commands; common.py, voice.py,
speak.py and codes.py the option checks and output sinks they share.
"""

from qwen3tts_cli.cli.app import app, main, run

__all__ = ["app", "main", "run"]
