"""`qwen3tts say`: the options, checked in order of cost, then one streamed request.

Order: text and option conflicts (voice.py), output target and sinks (speak.py), then the model is
resolved (maybe downloaded and converted) and loaded, the request built and streamed into the sinks.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from qwen3tts_cli.cli.codes import check_codes_target
from qwen3tts_cli.cli.common import (
    CodecDeviceOption,
    ConvertLocallyFlag,
    DeviceOption,
    GpuLayersOption,
    JsonOption,
    ModelDirOption,
    ModelOption,
    QuantOption,
    QuietOption,
    ThreadsOption,
    VoicesDirOption,
    apply_convert_locally,
    device_choice,
    model_argument,
    read_text,
)
from qwen3tts_cli.cli.shaping_options import (
    MaxPauseOption,
    NormalizeOption,
    PauseOption,
    SpeedOption,
    TrimSilenceOption,
    check_pause,
    shaping_from_options,
)
from qwen3tts_cli.cli.speak import SpeakResult, open_sinks, output_target, report, speak, summary
from qwen3tts_cli.cli.voice import (
    GenerationChoice,
    VoiceChoice,
    batch_size,
    build_request,
    check_catalog_names,
    check_speakable,
    load_tts,
    model_for,
)

SAMPLING_PANEL = "Sampling"
VOICE_PANEL = "Voice"
OUTPUT_PANEL = "Output"
MODEL_PANEL = "Model"


def say(
    text: Annotated[
        str | None, typer.Argument(help="Text to speak. Without it: --file, or text piped on stdin.")
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="Read the text from a UTF-8 file ('-' = stdin).")
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Audio file (wav, flac, ogg, mp3 by extension) or '-' for stdout (wav or raw pcm). "
            "Default: stdout when piped, else --play.",
            rich_help_panel=OUTPUT_PANEL,
        ),
    ] = None,
    audio_format: Annotated[
        str | None,
        typer.Option(
            "--format", help="wav, flac, ogg, mp3; for stdout wav or pcm.", rich_help_panel=OUTPUT_PANEL
        ),
    ] = None,
    play: Annotated[
        bool,
        typer.Option("--play", help="Play while speaking (needs sounddevice).", rich_help_panel=OUTPUT_PANEL),
    ] = False,
    codes_out: Annotated[
        Path | None,
        typer.Option(
            "--codes-out",
            help="Save the generated codes: .npy (frames x 16 int64, plus NAME.pieces.json when there are "
            "several pieces) or .npz (codes, piece_frames, piece_start, piece_text).",
            rich_help_panel=OUTPUT_PANEL,
        ),
    ] = None,
    model: ModelOption = None,
    model_dir: ModelDirOption = None,
    quant: QuantOption = None,
    threads: ThreadsOption = None,
    device: DeviceOption = "auto",
    gpu_layers: GpuLayersOption = None,
    codec_device: CodecDeviceOption = "auto",
    exact: Annotated[
        bool,
        typer.Option(
            "--exact", help="f32 KV cache, no flash attention: the parity mode.", rich_help_panel=MODEL_PANEL
        ),
    ] = False,
    speaker: Annotated[
        str | None, typer.Option("--speaker", "-s", help="Preset speaker.", rich_help_panel=VOICE_PANEL)
    ] = None,
    language: Annotated[
        str, typer.Option("--language", "-l", help="Language or 'auto'.", rich_help_panel=VOICE_PANEL)
    ] = "auto",
    instruct: Annotated[
        str | None,
        typer.Option(
            "--instruct", "-i", help="Style instruction (1.7B CustomVoice).", rich_help_panel=VOICE_PANEL
        ),
    ] = None,
    design: Annotated[
        str | None,
        typer.Option("--design", help="Describe a new voice (VoiceDesign).", rich_help_panel=VOICE_PANEL),
    ] = None,
    gender: Annotated[str | None, typer.Option(help="male / female.", rich_help_panel=VOICE_PANEL)] = None,
    age: Annotated[
        str | None, typer.Option(help="e.g. young, middle-aged, old.", rich_help_panel=VOICE_PANEL)
    ] = None,
    emotion: Annotated[
        str | None, typer.Option(help="e.g. happy, sad, calm.", rich_help_panel=VOICE_PANEL)
    ] = None,
    pace: Annotated[
        str | None, typer.Option(help="very slow ... very fast.", rich_help_panel=VOICE_PANEL)
    ] = None,
    pitch: Annotated[str | None, typer.Option(help="low, high, deep.", rich_help_panel=VOICE_PANEL)] = None,
    voice: Annotated[
        str | None,
        typer.Option(
            "--voice", "-v", help="A saved voice: library name or pack file.", rich_help_panel=VOICE_PANEL
        ),
    ] = None,
    ref_audio: Annotated[
        Path | None,
        typer.Option("--ref-audio", help="Clone inline from this recording.", rich_help_panel=VOICE_PANEL),
    ] = None,
    ref_text: Annotated[
        str | None, typer.Option("--ref-text", help="Transcript of --ref-audio.", rich_help_panel=VOICE_PANEL)
    ] = None,
    x_vector_only: Annotated[
        bool,
        typer.Option(
            "--x-vector-only", help="Clone from the speaker embedding alone.", rich_help_panel=VOICE_PANEL
        ),
    ] = False,
    streaming_text: Annotated[
        bool | None,
        typer.Option(
            "--streaming-text/--non-streaming-text",
            help="Override the official text layout (default: non-streaming for presets/design, streaming "
            "for clones).",
        ),
    ] = None,
    no_split: Annotated[bool, typer.Option("--no-split", help="Speak the text as one piece.")] = False,
    lexicon_file: Annotated[
        Path | None,
        typer.Option(
            "--lexicon",
            help="Respellings applied before the text is tokenized: a UTF-8 TSV of written<TAB>spoken lines "
            "(README: Pronunciation). A --voice pack's own lexicon applies too; this file wins.",
        ),
    ] = None,
    show_text: Annotated[
        bool,
        typer.Option(
            "--show-text",
            help="Print the text the model would get, one piece per line (after [tags] and lexicon; the "
            "instruct on stderr), and exit without loading a model.",
        ),
    ] = False,
    batch: Annotated[
        int | None,
        typer.Option(
            "--batch",
            min=1,
            help="Text pieces generated together in one llama.cpp batch (faster for long text; more memory). "
            "Default: 8 for files and pipes, 1 with --play.",
        ),
    ] = None,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", min=1, help="At most this many frames (12.5/s) per piece.")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", min=0, help="Sampling seed (random when not given).", rich_help_panel=SAMPLING_PANEL
        ),
    ] = None,
    greedy: Annotated[
        bool,
        typer.Option(
            "--greedy", help="No sampling: always the likeliest code.", rich_help_panel=SAMPLING_PANEL
        ),
    ] = False,
    temperature: Annotated[float | None, typer.Option(min=0.0, rich_help_panel=SAMPLING_PANEL)] = None,
    top_k: Annotated[int | None, typer.Option(min=0, rich_help_panel=SAMPLING_PANEL)] = None,
    top_p: Annotated[float | None, typer.Option(min=0.0, max=1.0, rich_help_panel=SAMPLING_PANEL)] = None,
    repetition_penalty: Annotated[float | None, typer.Option(min=0.0, rich_help_panel=SAMPLING_PANEL)] = None,
    subtalker_temperature: Annotated[
        float | None, typer.Option(min=0.0, rich_help_panel=SAMPLING_PANEL)
    ] = None,
    subtalker_top_k: Annotated[int | None, typer.Option(min=0, rich_help_panel=SAMPLING_PANEL)] = None,
    subtalker_top_p: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, rich_help_panel=SAMPLING_PANEL)
    ] = None,
    speed: SpeedOption = 1.0,
    trim_silence: TrimSilenceOption = False,
    max_pause: MaxPauseOption = None,
    pause: PauseOption = None,
    normalize: NormalizeOption = None,
    voices_dir: VoicesDirOption = None,
    quiet: QuietOption = False,
    json_out: JsonOption = False,
    convert_locally: ConvertLocallyFlag = False,
) -> None:
    """Speak text into an audio file, stdout or the speakers (shaping options buffer the utterance)."""
    started = time.perf_counter()
    apply_convert_locally(convert_locally)
    choice = VoiceChoice(
        speaker=speaker,
        language=language,
        instruct=instruct,
        design=design,
        attributes=_attributes(gender=gender, age=age, emotion=emotion, pace=pace, pitch=pitch),
        voice=voice,
        ref_audio=ref_audio,
        ref_text=ref_text,
        x_vector_only=x_vector_only,
    )
    devices = device_choice(device, gpu_layers, codec_device)
    spoken = read_text(text, file)
    tagged = check_speakable(spoken)
    mode = choice.mode()
    chosen = model_for(model_argument(model, model_dir), mode, choice.styled or tagged)
    check_catalog_names(chosen, choice)
    lexicon = _read_lexicon(lexicon_file)
    if show_text:
        _show_text(spoken, choice, chosen, lexicon, not no_split, voices_dir, quiet, json_out)
        return
    target, play = output_target(output, play)
    sinks = open_sinks(target, audio_format, play)
    codes_target = check_codes_target(codes_out) if codes_out is not None else None
    shaping, pause = shaping_from_options(speed, trim_silence, max_pause, normalize), check_pause(pause)
    from qwen3tts_cli.tts import SamplingOptions  # here: --show-text never imports the engine

    sampling = SamplingOptions(
        greedy=greedy,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        subtalker_temperature=subtalker_temperature,
        subtalker_top_k=subtalker_top_k,
        subtalker_top_p=subtalker_top_p,
    )
    if seed is None and not greedy:  # pick it here so --json can report it (rerun with --seed N)
        seed = int.from_bytes(os.urandom(4), "little") >> 1
    pieces_together = batch_size(batch, spoken, not no_split, play)
    generation = GenerationChoice(sampling, seed, max_frames, not no_split, streaming_text, pieces_together)
    with load_tts(
        chosen, mode, quant, threads, exact, voices_dir, quiet, pieces_together, devices=devices
    ) as tts:
        request = replace(build_request(tts, spoken, choice, generation), pause=pause, lexicon=lexicon)
        result = speak(tts, request, sinks, codes_target, quiet, shaping)
    facts = summary(tts, target, audio_format, play, request, result, codes_target, started)
    facts |= _lexicon_facts(request, result)
    report(facts, target, quiet, json_out)


def _read_lexicon(file: Path | None) -> Any:
    """--lexicon, read before any model is resolved: a bad line fails before a download."""
    if file is None:
        return None
    from qwen3tts_cli.lexicon import Lexicon

    return Lexicon.load(file)


def _lexicon_facts(request: Any, result: SpeakResult) -> dict[str, Any]:
    """--json: the final text and every replacement, when a lexicon (--lexicon or the pack's) was used."""
    if request.lexicon is None and not (request.voice is not None and request.voice.lexicon):
        return {}
    return {"text": result.text, "replacements": [asdict(r) for r in result.replacements]}


def _show_text(
    spoken: str,
    choice: VoiceChoice,
    model: str | Path,
    lexicon: Any,
    split: bool,
    voices_dir: Path | None,
    quiet: bool,
    json_out: bool,
) -> None:
    """--show-text: the same text path as TTS.plan (`text.plan_text`), with no model resolved or loaded."""
    from qwen3tts_cli import catalog
    from qwen3tts_cli.cli.common import print_json, status
    from qwen3tts_cli.lexicon import for_voice
    from qwen3tts_cli.text import plan_text
    from qwen3tts_cli.voices import VoiceLibrary

    pack = VoiceLibrary(voices_dir).resolve(choice.voice) if choice.voice is not None else None
    entry = catalog.find(model) if isinstance(model, str) else None
    planned = plan_text(
        spoken,
        choice.design if choice.design is not None else choice.instruct,
        choice.attributes or None,
        accepts_instruct=entry.capabilities.instruct if entry is not None else True,
        lexicon=for_voice(pack, lexicon),
        split=split,
    )
    replacements = [asdict(r) for r in planned.replacements]
    if json_out:
        print_json(
            {
                "text": planned.text,
                "pieces": planned.pieces,
                "instruct": planned.instruct,
                "replacements": replacements,
            }
        )
        return
    for piece in planned.pieces:
        print(piece)
    if planned.instruct is not None:
        status(f"instruct: {planned.instruct}")
    if replacements and not quiet:
        used = (f"{r['written']} -> {r['spoken']} x{r['count']}" for r in replacements)
        status("lexicon: " + ", ".join(used))


def _attributes(**values: str | None) -> dict[str, str]:
    return {name: value for name, value in values.items() if value is not None}
