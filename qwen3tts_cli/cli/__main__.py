"""`python -m qwen3tts_cli.cli ARGS`: what the installed `qwen3tts` script runs."""

from qwen3tts_cli.cli.app import main

main()
