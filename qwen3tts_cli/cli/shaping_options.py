"""The "Shaping" options shared by the speaking commands, and the checked `Shaping` they describe.

Cheap to import: `qwen3tts_cli.shaping` loads pedalboard / pyloudnorm only when audio is shaped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from qwen3tts_cli.cli.common import usage_error
from qwen3tts_cli.errors import Qwen3TTSError

if TYPE_CHECKING:
    from qwen3tts_cli.shaping import Shaping

SHAPING_PANEL = "Shaping"
MAX_PAUSE_SECONDS = 10.0  # tts.MAX_PAUSE_SECONDS, repeated so --help and option checks stay cheap

SpeedOption = Annotated[
    float,
    typer.Option(
        "--speed",
        help="Tempo 0.5..2.0 with the pitch kept (needs the shaping extra). Like --trim-silence, --max-pause "
        "and --normalize, it buffers the utterance: shaped whole, then written.",
        rich_help_panel=SHAPING_PANEL,
    ),
]
TrimSilenceOption = Annotated[
    bool,
    typer.Option(
        "--trim-silence",
        help="Trim leading and trailing silence (energy-based, 50 ms kept next to speech).",
        rich_help_panel=SHAPING_PANEL,
    ),
]
MaxPauseOption = Annotated[
    float | None,
    typer.Option(
        "--max-pause",
        metavar="SECONDS",
        help="Shorten internal pauses longer than SECONDS (0.1..10) to SECONDS.",
        rich_help_panel=SHAPING_PANEL,
    ),
]
PauseOption = Annotated[
    float | None,
    typer.Option(
        "--pause",
        metavar="SECONDS",
        help="Silence between split text pieces, 0..10 (default 0.1). Streams as usual.",
        rich_help_panel=SHAPING_PANEL,
    ),
]
NormalizeOption = Annotated[
    str | None,
    typer.Option(
        "--normalize",
        metavar="peak|loudness",
        help="peak: sample peak at -1 dBFS; loudness: -16 LUFS integrated (BS.1770), peak capped at -1 dBFS.",
        rich_help_panel=SHAPING_PANEL,
    ),
]


def shaping_from_options(
    speed: float, trim_silence: bool, max_pause: float | None, normalize: str | None
) -> Shaping:
    """The checked Shaping; a value out of range is a usage error (exit 2)."""
    from qwen3tts_cli.shaping import Shaping, require_libraries

    shaping = Shaping(speed=speed, trim_silence=trim_silence, max_pause=max_pause, normalize=normalize)
    try:
        shaping.check()
    except Qwen3TTSError as exc:
        flag = {"speed": "--speed", "max pause": "--max-pause", "unknown normalization": "--normalize"}
        name = next((f for key, f in flag.items() if exc.message.startswith(key)), "shaping")
        raise usage_error(f"{name}: {exc.message}", exc.hint) from None
    require_libraries(shaping)  # a missing extra fails now, before any model loads
    return shaping


def check_pause(pause: float | None) -> float | None:
    """--pause out of 0..10 s is a usage error before any model loads (TTS.plan checks it again)."""
    if pause is not None and not 0.0 <= pause <= MAX_PAUSE_SECONDS:
        raise usage_error(
            f"--pause must be between 0 and {MAX_PAUSE_SECONDS:g} seconds (got {pause:g})", "e.g. --pause 0.4"
        )
    return pause
