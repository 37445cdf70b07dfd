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
from qwen3tts_cli.platform_compat import can_encode

# ---- reusable options -----------------------------------------------------------------------------------
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Catalog model name (see `qwen3tts models list`) or converted repo hf:OWNER/NAME[@REV][:QUANT].",
    ),
]
ConvertLocallyFlag = Annotated[
    bool,
    typer.Option(
        "--convert-locally",
        help="Convert the official checkpoint here even if the catalog names a converted repo "
        "(same as QWEN3TTS_CONVERT_LOCALLY=1).",
    ),
]


def apply_convert_locally(convert_locally: bool) -> None:
    """--convert-locally: every model this command resolves skips converted repos (read by the catalog)."""
    if convert_locally:
        import os

        from qwen3tts_cli.catalog import CONVERT_LOCALLY_ENV

        os.environ[CONVERT_LOCALLY_ENV] = "1"


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
DEVICE_PANEL = "Device"
DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where the language models run: auto (the installed llama.cpp build's GPU, else the CPU), cpu, "
        "cuda, vulkan or metal.",
        rich_help_panel=DEVICE_PANEL,
    ),
]
GpuLayersOption = Annotated[
    str | None,
    typer.Option(
        "--gpu-layers",
        metavar="N|all",
        help="Layers of each language model on the GPU (default: all).",
        rich_help_panel=DEVICE_PANEL,
    ),
]
CodecDeviceOption = Annotated[
    str,
    typer.Option(
        "--codec-device",
        help="Where the codec and speaker encoder run (ONNX Runtime): auto, cpu, cuda, dml or coreml.",
        rich_help_panel=DEVICE_PANEL,
    ),
]


@dataclass(frozen=True)
class DeviceChoice:
    """--device, --gpu-layers and --codec-device, checked for spelling (the build is checked at load)."""

    device: str = "auto"
    gpu_layers: int | None = None  # -1: all
    codec_device: str = "auto"

    def load_options(self) -> dict[str, Any]:
        """Keyword arguments for TTS.load."""
        return {"device": self.device, "gpu_layers": self.gpu_layers, "codec_device": self.codec_device}

    def check_installed(self) -> None:
        """Raise the one-line error now when the installed builds lack the device (before any download or
        any line of a list is spoken)."""
        from qwen3tts_cli.engine.devices import choose_codec_provider, onnx_providers, place_language_models

        place_language_models(self.device, self.gpu_layers)
        choose_codec_provider(self.codec_device, onnx_providers())


def devices_line(used: dict[str, Any]) -> str:
    """One status line: where the language models and the codec run (LoadedModel.devices_used())."""
    layers = "" if used["lm_backend"] == "CPU" else f", {used['gpu_layers']} layers"
    memory = used.get("lm_device_memory_used")
    taken = f", {memory / (1 << 20):.0f} MiB on the device" if memory else ""
    return (
        f"qwen3tts: language models on {used['lm_device']}{layers}{taken}; "
        f"codec on {used['codec_provider'].removesuffix('ExecutionProvider')}"
    )


def device_choice(
    device: str = "auto", gpu_layers: str | None = None, codec_device: str = "auto"
) -> DeviceChoice:
    """The options as typed -> DeviceChoice; a misspelt value is a usage error before anything loads."""
    from qwen3tts_cli.engine.devices import CODEC_DEVICE_CHOICES, DEVICE_CHOICES, parse_gpu_layers

    device, codec_device = device.lower(), codec_device.lower()
    if device not in DEVICE_CHOICES:
        raise usage_error(f"unknown --device {device!r}", f"use one of: {', '.join(DEVICE_CHOICES)}")
    if codec_device not in CODEC_DEVICE_CHOICES:
        raise usage_error(
            f"unknown --codec-device {codec_device!r}", f"use one of: {', '.join(CODEC_DEVICE_CHOICES)}"
        )
    try:
        layers = parse_gpu_layers(gpu_layers)
    except Qwen3TTSError as exc:
        raise usage_error(exc.message, exc.hint) from None
    if device == "cpu" and layers not in (None, 0):
        raise usage_error("--gpu-layers needs a GPU device", "drop --gpu-layers or pick --device")
    return DeviceChoice(device, layers, codec_device)


# ---- messages -------------------------------------------------------------------------------------------
def status(message: str) -> None:
    """A line for the person at the terminal (stderr, so stdout stays clean for data)."""
    print(message, file=sys.stderr, flush=True)


def print_json(document: Any, *, stream: TextIO | None = None, indent: int | None = 2) -> None:
    """JSON as UTF-8 text; on a stream whose encoding cannot hold it (a cp1252 Windows pipe) as \\u escapes,
    which every JSON reader decodes to the same text ('?' replacements would change the data)."""
    out = stream or sys.stdout
    text = json.dumps(document, indent=indent, ensure_ascii=False, default=str)
    if not can_encode(out, text):
        text = json.dumps(document, indent=indent, ensure_ascii=True, default=str)
    print(text, file=out, flush=True)


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
class StatusLine:
    """One line on stderr that rewrites itself (only when `enabled`: a terminal), wiped by `clear()`."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._drawn = False

    def show(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r" + text + "\x1b[K")
            sys.stderr.flush()
            self._drawn = True

    def clear(self) -> None:
        """Wipe the line (before other output, and at the end)."""
        if self._drawn:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._drawn = False


@dataclass
class Progress:
    """One self-rewriting status line on a terminal: piece i/N, frames, seconds of audio. Silent otherwise."""

    pieces: int
    enabled: bool
    frames: int = 0
    piece: int = 0
    seconds: float = 0.0
    _last_draw: float = 0.0
    interval: float = 0.1

    def __post_init__(self) -> None:
        self._status = StatusLine(self.enabled)

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
        self._status.show(
            f"piece {self.piece + 1}/{self.pieces}  {self.frames} frames  {self.seconds:.1f} s of audio"
        )

    def close(self) -> None:
        self._status.clear()


@dataclass
class CountLine:
    """A self-rewriting "LABEL: tensor n of m" line on a terminal; silent when stderr is piped or quiet."""

    label: str
    enabled: bool
    interval: float = 0.1
    _last_draw: float = 0.0

    def __post_init__(self) -> None:
        self._status = StatusLine(self.enabled)

    @classmethod
    def for_terminal(cls, label: str, quiet: bool) -> CountLine:
        return cls(label=label, enabled=not quiet and sys.stderr.isatty())

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        # the first and the last count are always drawn, the ones between at most every `interval`
        if not self.enabled or (1 < done < total and now - self._last_draw < self.interval):
            return
        self._last_draw = now
        self._status.show(f"{self.label}: tensor {done} of {total}")

    def clear(self) -> None:
        self._status.clear()


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
