"""`qwen3tts dialogue`: a script of turns, a cast of voices, one mixed file (plus stems and subtitles).

Checked in order of cost: script, cast and outputs (no model), then every model the cast needs is resolved
(downloaded and converted if allowed; offline and missing is refused here, before any audio is made), then the
models are loaded one at a time and the turns generated (library: `longform.dialogue.render_dialogue`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qwen3tts_cli.cli.common import (
    CodecDeviceOption,
    DeviceOption,
    GpuLayersOption,
    JsonOption,
    QuantOption,
    QuietOption,
    StatusLine,
    ThreadsOption,
    VoicesDirOption,
    device_choice,
    print_json,
    read_text,
    status,
    usage_error,
)
from qwen3tts_cli.cli.kind_models import kind_loader, resolve_kind_models
from qwen3tts_cli.cli.shaping_options import (
    MaxPauseOption,
    NormalizeOption,
    SpeedOption,
    TrimSilenceOption,
    shaping_from_options,
)

if TYPE_CHECKING:
    from qwen3tts_cli.longform.cast import Cast

CAST_PANEL = "Cast"
MIX_PANEL = "Mix"


def dialogue(
    script: Annotated[
        str, typer.Argument(help="Script file ('-' = stdin): '[S1] text' or 'Name: text' lines.")
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="The mixed dialogue: an audio file, or '-' for stdout.")
    ],
    audio_format: Annotated[
        str | None, typer.Option("--format", help="wav, flac, ogg, mp3; stdout: wav/pcm.")
    ] = None,
    cast_entries: Annotated[
        list[str] | None,
        typer.Option(
            "--cast",
            help="SPEAKER=VOICE, repeatable: a preset (vivian), a saved voice or pack file, an audio "
            "file, or preset:/voice:/ref:/design: explicitly.",
            rich_help_panel=CAST_PANEL,
        ),
    ] = None,
    cast_file: Annotated[
        Path | None,
        typer.Option(
            "--cast-file", help="SPEAKER=VOICE lines, or a JSON object.", rich_help_panel=CAST_PANEL
        ),
    ] = None,
    prompt_wavs: Annotated[
        list[Path] | None,
        typer.Option(
            "--prompt-wav",
            help="ZipVoice prompt: one recording of both speakers (its --prompt-text has [S1]/[S2]), or one "
            "per speaker (S1, S2, ... in order), cloned with the Base model.",
            rich_help_panel=CAST_PANEL,
        ),
    ] = None,
    prompt_texts: Annotated[
        list[str] | None,
        typer.Option("--prompt-text", help="Transcript of each --prompt-wav.", rich_help_panel=CAST_PANEL),
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="A catalog name or model folder, repeatable: one per kind the cast needs (presets: "
            "CustomVoice, clones: Base, design: VoiceDesign). Kinds not given use the catalog default.",
        ),
    ] = None,
    quant: QuantOption = None,
    threads: ThreadsOption = None,
    device: DeviceOption = "auto",
    gpu_layers: GpuLayersOption = None,
    codec_device: CodecDeviceOption = "auto",
    exact: Annotated[bool, typer.Option("--exact", help="f32 KV cache, no flash attention.")] = False,
    language: Annotated[str, typer.Option("--language", "-l", help="Language or 'auto'.")] = "auto",
    seed: Annotated[int | None, typer.Option("--seed", min=0, help="Turn k uses SEED + 1000*k.")] = None,
    greedy: Annotated[bool, typer.Option("--greedy", help="No sampling.")] = False,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", min=1, help="Frames per piece at most.")
    ] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Turns generated together.")] = 8,
    pause: Annotated[
        float,
        typer.Option("--pause", min=0.0, max=10.0, help="Seconds between turns.", rich_help_panel=MIX_PANEL),
    ] = 0.4,
    stereo: Annotated[
        bool,
        typer.Option(
            "--stereo",
            help="Each speaker on its own channel (more than two: panned left to right).",
            rich_help_panel=MIX_PANEL,
        ),
    ] = False,
    equal: Annotated[
        bool,
        typer.Option(
            "--equal-loudness/--no-equal-loudness",
            help="Bring every turn to the same loudness.",
            rich_help_panel=MIX_PANEL,
        ),
    ] = True,
    stems: Annotated[
        Path | None,
        typer.Option(
            "--stems", help="Folder for each turn's file and turns.json.", rich_help_panel=MIX_PANEL
        ),
    ] = None,
    srt: Annotated[
        Path | None, typer.Option("--srt", help="Write SubRip subtitles.", rich_help_panel=MIX_PANEL)
    ] = None,
    lexicon_file: Annotated[
        Path | None, typer.Option("--lexicon", help="Respellings for every turn (TSV, as `say --lexicon`).")
    ] = None,
    speed: SpeedOption = 1.0,
    trim_silence: TrimSilenceOption = False,
    max_pause: MaxPauseOption = None,
    normalize: NormalizeOption = None,
    voices_dir: VoicesDirOption = None,
    quiet: QuietOption = False,
    json_out: JsonOption = False,
) -> None:
    """Speak a multi-speaker script into one file: [S1]/[S2] turns or Name: lines, a voice per speaker."""
    from qwen3tts_cli import audio
    from qwen3tts_cli.longform.dialogue import DialogueSettings, render_dialogue
    from qwen3tts_cli.longform.mixdown import atomic_write_text, srt_text, write_stems
    from qwen3tts_cli.longform.script import parse_script, read_script
    from qwen3tts_cli.tts import SamplingOptions

    started = time.perf_counter()
    devices = device_choice(device, gpu_layers, codec_device)
    parsed = parse_script(read_text(None, "-")) if script == "-" else read_script(script)
    cast = _cast(cast_entries or [], cast_file, prompt_wavs or [], prompt_texts or [], voices_dir)
    cast.check_covers(parsed.speakers)
    shaping = shaping_from_options(speed, trim_silence, max_pause, normalize)
    lexicon = None
    if lexicon_file is not None:
        from qwen3tts_cli.lexicon import Lexicon

        lexicon = Lexicon.load(lexicon_file)
    if equal:
        from qwen3tts_cli.shaping import Shaping, require_libraries

        require_libraries(Shaping(normalize="loudness"))  # equal loudness measures with pyloudnorm
    if output == "-" and sys.stdout.isatty():
        raise usage_error("-o - writes audio to a terminal", "redirect it (> out.wav) or pass -o FILE")
    sink = audio.open_output(output, audio_format, channels=2 if stereo else 1)
    for extra in (srt,):
        if extra is not None and not extra.parent.is_dir():
            raise usage_error(f"folder does not exist: {extra.parent}", "create it first")
    needed = cast.modes(parsed.speakers)
    devices.check_installed()
    folders = _resolve_models(models or [], needed, cast, parsed.speakers, quant, quiet)
    settings = DialogueSettings(
        language=language,
        seed=seed,
        sampling=SamplingOptions(greedy=greedy),
        max_frames=max_frames,
        pause=pause,
        stereo=stereo,
        equal_loudness=equal,
        batch=batch,
        shaping=None if shaping.is_identity else shaping,
        lexicon=lexicon,
    )
    done = [0]
    turns_line = StatusLine(not quiet and sys.stderr.isatty())

    def on_turn(_index: int, _seconds: float) -> None:
        done[0] += 1
        turns_line.show(f"turn {done[0]}/{len(parsed.turns)}")

    load = kind_loader(folders, threads, exact, voices_dir, devices)
    try:
        result = render_dialogue(parsed, cast, load, settings, on_turn)
    finally:
        turns_line.clear()  # before the error or status line
    with sink:
        sink.write(result.samples)
    timeline = result.timeline
    if stems is not None:
        timeline = write_stems(
            stems, result.turns, timeline, result.sample_rate, output if output != "-" else None
        )
    if srt is not None:
        atomic_write_text(srt, srt_text(timeline))
    peak_mb = _peak_rss_mb()
    facts: dict[str, Any] = {
        "output": output,
        "seconds": round(result.seconds, 3),
        "channels": 2 if stereo else 1,
        "turns": len(parsed.turns),
        "speakers": {name: cast.get(name).describe() for name in parsed.speakers},  # type: ignore[union-attr]
        "models": {mode: str(folders[mode]) for mode in needed},
        "seed": result.seed,
        "shaping": None if shaping.is_identity else shaping.as_dict(),
        "frames": result.frames,
        "stems": str(stems) if stems is not None else None,
        "srt": str(srt) if srt is not None else None,
        "timeline": [
            {"speaker": e.speaker, "text": e.text, "start": round(e.start, 3), "end": round(e.end, 3)}
            for e in timeline
        ],
        "peak_rss_mb": peak_mb,
        "elapsed_seconds": round(time.perf_counter() - started, 3),
    }
    if json_out:
        print_json(facts, stream=sys.stdout if output != "-" else sys.stderr, indent=None)
    elif not quiet:
        kinds = ", ".join(needed)
        status(
            f"{result.seconds:.2f} s dialogue ({len(parsed.turns)} turns, {len(parsed.speakers)} speakers) "
            f"to {'stdout' if output == '-' else output}; models ({kinds}) loaded one at a time, peak memory "
            f"{peak_mb} MB"
        )


def _cast(
    entries: list[str], cast_file: Path | None, wavs: list[Path], texts: list[str], voices_dir: Path | None
) -> Cast:
    """Prompts first, then the cast file, then --cast entries: later sources override a speaker."""
    from qwen3tts_cli.longform.cast import Cast, parse_cast_entries, read_cast_file
    from qwen3tts_cli.longform.prompts import merged_prompt_cast, split_prompt_cast
    from qwen3tts_cli.voices import VoiceLibrary

    library = VoiceLibrary(voices_dir).names()
    cast = Cast()
    if wavs or texts:
        if len(wavs) == 1 and len(texts) == 1 and "[S" in texts[0].upper():
            cast = merged_prompt_cast(wavs[0], texts[0])
        else:
            cast = split_prompt_cast(wavs, texts)
    for source in (
        read_cast_file(cast_file, library) if cast_file else None,
        parse_cast_entries(entries, library),
    ):
        if source is not None:
            for name in source.names():
                voice = source.get(name)
                assert voice is not None
                cast.set(name, voice)
    return cast


def _resolve_models(
    given: list[str], modes: list[str], cast: Cast, speakers: list[str], quant: str | None, quiet: bool
) -> dict[str, Path]:
    """A converted model folder for every mode the cast needs; nothing is loaded yet."""
    from qwen3tts_cli.longform.cast import PRESET

    needs = {}
    for mode in modes:
        voices = {s: v for s in speakers if (v := cast.get(s)) is not None and v.mode == mode}
        styled = any(v.source == PRESET and v.instruct for v in voices.values())
        needs[mode] = (f"{', '.join(voices)} need(s)", styled)
    return {mode: resolved.path for mode, resolved in resolve_kind_models(given, needs, quant, quiet).items()}


def _peak_rss_mb() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / 1024) if sys.platform != "darwin" else round(peak / 1024 / 1024)
