"""Streaming one request into its outputs (file, stdout, speakers) with progress, codes and a summary.

Chunks go from `TTS.stream` straight into the sinks of `audio.open_output` (an atomic temp-file writer or a
pipe writer) and the player: memory stays bounded however long the text, and a failure or Ctrl-C leaves no
half-written file (the writer removes its temporary file; an existing output is untouched).
"""

from __future__ import annotations

import sys
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwen3tts_cli.cli.codes import CodesCollector
from qwen3tts_cli.cli.common import Progress, print_json, status, usage_error

if TYPE_CHECKING:
    from qwen3tts_cli.audio import AudioSink
    from qwen3tts_cli.shaping import Shaping
    from qwen3tts_cli.tts import TTS, Request


def output_target(output: str | None, play: bool) -> tuple[str | None, bool]:
    """No -o: audio goes to stdout when it is piped, else it is played."""
    if output is not None or play:
        return output, play
    if not sys.stdout.isatty():
        return "-", False
    return None, True


def open_sinks(target: str | None, audio_format: str | None, play: bool) -> list[AudioSink]:
    """Create (not yet enter) every sink: folder, format and playback problems surface before any work."""
    from qwen3tts_cli import audio

    sinks: list[AudioSink] = []
    if target is not None:
        sinks.append(audio.open_output(target, audio_format))
    elif audio_format is not None:
        raise usage_error("--format needs an output", "add -o FILE or -o -")
    if play:
        sinks.append(audio.AudioPlayer())
    return sinks


@dataclass
class SpeakResult:
    samples: int = 0
    frames: int = 0
    pieces: list[str] = field(default_factory=list)
    instruct: str | None = None
    shaping: dict[str, Any] | None = None  # what was applied, with the length before it
    text: str = ""  # what the pieces were split from (after tags and lexicon)
    replacements: list[Any] = field(default_factory=list)  # lexicon.Replacement


def speak(
    tts: TTS,
    request: Request,
    sinks: list[AudioSink],
    codes_target: Path | None,
    quiet: bool,
    shaping: Shaping | None = None,
) -> SpeakResult:
    """Plan (errors surface before any output is opened), then stream every chunk into every sink.

    With a non-identity `shaping` the utterance is collected, shaped as a whole, then written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stream below plans again and warns once, for real
        plan = tts.plan(request)
    result = SpeakResult(
        pieces=plan.pieces, instruct=plan.instruct, text=plan.text, replacements=plan.replacements
    )
    progress = Progress.for_terminal(len(plan.pieces), quiet)
    codes = CodesCollector(len(plan.pieces)) if codes_target is not None else None

    def on_codes(piece: int, chunk: Any) -> None:
        result.frames += len(chunk)
        progress.frames_done(piece, len(chunk))
        if codes is not None:
            codes.add(piece, chunk)

    options = {f.name: getattr(request, f.name) for f in fields(request) if f.name != "text"}
    held = [] if shaping is not None and not shaping.is_identity else None
    with ExitStack() as stack:
        outputs = [stack.enter_context(sink) for sink in sinks]
        try:
            for chunk in tts.stream(request.text, on_codes=on_codes, **options):
                if held is not None:
                    held.append(chunk.samples)  # shaped and written whole below
                else:
                    for out in outputs:
                        out.write(chunk.samples)
                result.samples += len(chunk.samples)
                progress.audio_done(len(chunk.samples) / chunk.sample_rate)
        finally:
            progress.close()
        if held is not None and shaping is not None:
            result.samples = _write_shaped(held, tts.sample_rate, shaping, outputs, result)
        if codes is not None and codes_target is not None:
            codes.save(codes_target, plan.pieces)  # before the audio is renamed into place
    return result


def _write_shaped(
    held: list[Any], sample_rate: int, shaping: Shaping, outputs: list[AudioSink], result: SpeakResult
) -> int:
    import numpy as np

    from qwen3tts_cli.shaping import shape

    whole = np.concatenate(held) if held else np.zeros(0, np.float32)
    shaped = shape(whole, sample_rate, shaping)
    for out in outputs:
        out.write(shaped)
    result.shaping = {**shaping.as_dict(), "seconds_before": round(len(whole) / sample_rate, 3)}
    return len(shaped)


def summary(
    tts: TTS,
    target: str | None,
    audio_format: str | None,
    play: bool,
    request: Request,
    result: SpeakResult,
    codes_target: Path | None,
    started: float,
) -> dict[str, Any]:
    from qwen3tts_cli.audio import output_format_for

    elapsed = time.perf_counter() - started
    seconds = result.samples / tts.sample_rate
    return {
        "output": target,
        "format": output_format_for(target, audio_format) if target is not None else None,
        "played": play,
        "model": str(tts.model.folder),
        "kind": tts.kind,
        "samples": result.samples,
        "sample_rate": tts.sample_rate,
        "seconds": round(seconds, 3),
        "frames": result.frames,
        "pieces": len(result.pieces),
        "instruct": result.instruct,
        "seed": request.seed,
        "pause": request.pause,
        "shaping": result.shaping,
        "codes_out": str(codes_target) if codes_target is not None else None,
        "elapsed_seconds": round(elapsed, 3),
        "real_time_factor": round(elapsed / seconds, 3) if seconds else None,
        "devices": tts.model.devices_used(),
    }


def report(summary: dict[str, Any], target: str | None, quiet: bool, json_out: bool) -> None:
    to_stdout = target != "-"  # with `-o -` stdout carries the audio
    if json_out:
        print_json(summary, stream=sys.stdout if to_stdout else sys.stderr, indent=None)
    elif not quiet:
        where = "stdout" if target == "-" else (target or "the speakers")
        status(
            f"{summary['seconds']:.2f} s of audio ({summary['frames']} frames, {summary['pieces']} piece(s)) "
            f"to {where} in {summary['elapsed_seconds']:.1f} s"
        )
