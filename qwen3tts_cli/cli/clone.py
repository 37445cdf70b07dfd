"""`qwen3tts clone`: a voice pack from a recording (or a part of one), or from a designed voice.

    qwen3tts clone me.wav --text "What I said." --name me [--start 12.5 --end 21]
    qwen3tts clone --design "A warm, low female narrator" --name narrator [--text SAMPLE] [--seed 7]

With --design the VoiceDesign model speaks a sample line in the described voice and the Base model of the
same size clones it (the official "voice design then clone" workflow, see design_voice.py). The two models
are loaded one after the other, never together.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qwen3tts_cli import catalog, spec
from qwen3tts_cli.cli.common import (
    CodecDeviceOption,
    DeviceChoice,
    DeviceOption,
    GpuLayersOption,
    JsonOption,
    ModelDirOption,
    ModelOption,
    QuantOption,
    QuietOption,
    ThreadsOption,
    VoicesDirOption,
    device_choice,
    download_messages,
    model_argument,
    print_json,
    status,
    usage_error,
)
from qwen3tts_cli.cli.voice import load_tts, model_for
from qwen3tts_cli.errors import Qwen3TTSError

if TYPE_CHECKING:
    from qwen3tts_cli.hub import ResolvedModel
    from qwen3tts_cli.voices import VoicePack


def clone(
    reference: Annotated[
        Path | None,
        typer.Argument(help="Reference recording (3-20 s of clear speech); or use --design instead."),
    ] = None,
    name: Annotated[str, typer.Option("--name", "-n", help="Name of the voice in the library.")] = "",
    transcript: Annotated[
        str | None,
        typer.Option(
            "--text",
            help="What is said in the recording (without it: x-vector only, a warning). With --design: the "
            "sample line the designed voice reads (default: a sentence in --language, else English).",
        ),
    ] = None,
    language: Annotated[str, typer.Option("--language", "-l", help="Language of the recording.")] = "auto",
    x_vector_only: Annotated[
        bool, typer.Option("--x-vector-only", help="Keep only the speaker embedding (no transcript).")
    ] = False,
    description: Annotated[
        str | None,
        typer.Option("--description", help="A note stored with the voice (default with --design: it)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a voice of the same name.")] = False,
    start: Annotated[
        float | None, typer.Option("--start", min=0, help="Clone from this second of the recording on.")
    ] = None,
    end: Annotated[
        float | None, typer.Option("--end", min=0, help="Clone up to this second of the recording.")
    ] = None,
    design: Annotated[
        str | None,
        typer.Option("--design", help="Design a voice from this description and keep it (no recording)."),
    ] = None,
    design_model: Annotated[
        str | None,
        typer.Option(
            "--design-model",
            help="VoiceDesign model for --design: catalog name or folder (default 1.7b-design).",
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", min=0, help="Seed of the designed sample (default: random).")
    ] = None,
    keep_sample: Annotated[
        Path | None,
        typer.Option("--keep-sample", help="Also write the designed sample audio here (e.g. sample.wav)."),
    ] = None,
    model: ModelOption = None,
    model_dir: ModelDirOption = None,
    quant: QuantOption = None,
    threads: ThreadsOption = None,
    device: DeviceOption = "auto",
    gpu_layers: GpuLayersOption = None,
    codec_device: CodecDeviceOption = "auto",
    voices_dir: VoicesDirOption = None,
    quiet: QuietOption = False,
    json_out: JsonOption = False,
) -> None:
    """Clone a voice from a recording, or design one (--design), and save it in the voice library.

    --model/--model-dir name the Base model that clones (with --design: by default the Base model of the
    VoiceDesign model's size). Use the voice with `say --voice NAME`."""
    from qwen3tts_cli.voices import VoiceLibrary, validate_name

    _check_usage(reference, design, name, x_vector_only, start, end, design_model, seed, keep_sample)
    devices = device_choice(device, gpu_layers, codec_device)
    library = VoiceLibrary(voices_dir)
    validate_name(name)
    if library.path_for(name).exists() and not force:
        raise Qwen3TTSError(f"a voice named '{name}' already exists", "choose another name, or pass --force")
    base = model_argument(model, model_dir)
    if design is not None:
        pack, folder = _design_then_keep(
            design,
            name,
            sample_text=transcript,
            language=language,
            seed=seed,
            keep_sample=keep_sample,
            pack_description=description,
            design_model=design_model,
            base_model=base,
            quant=quant,
            threads=threads,
            voices_dir=voices_dir,
            quiet=quiet,
            devices=devices,
        )
    else:
        assert reference is not None  # _check_usage
        chosen = model_for(base, catalog.MODE_CLONE, styled=False)
        tts = load_tts(chosen, catalog.MODE_CLONE, quant, threads, False, voices_dir, quiet, devices=devices)
        with tts:
            pack = tts.clone(
                reference,
                transcript,
                name=name,
                language=language,
                x_vector_only=x_vector_only,
                description=description or "",
                start=start,
                end=end,
            )
        folder = tts.model.folder
    path = library.save(pack, overwrite=force)
    _report(pack, path, folder, keep_sample, json_out)


def _check_usage(
    reference: Path | None,
    design: str | None,
    name: str,
    x_vector_only: bool,
    start: float | None,
    end: float | None,
    design_model: str | None,
    seed: int | None,
    keep_sample: Path | None,
) -> None:
    """Exactly one source (a recording or --design), and only the options that go with it."""
    if reference is not None and design is not None:
        raise usage_error(
            "a REFERENCE recording and --design both given", "clone a recording OR design a voice, not both"
        )
    if reference is None and design is None:
        raise usage_error(
            "nothing to clone", 'give a REFERENCE recording, or --design "A calm, low male voice"'
        )
    if not name:
        raise usage_error("the voice needs a name", "pass --name NAME")
    if design is not None:
        if not design.strip():
            raise usage_error("--design needs a description", 'e.g. --design "A calm, low male voice"')
        used = [flag for flag, value in (("--start", start), ("--end", end)) if value is not None]
        used += ["--x-vector-only"] if x_vector_only else []
        if used:
            raise usage_error(
                f"{', '.join(used)} cannot be used with --design",
                "a designed voice is kept with its sample text (ICL) and whole",
            )
    else:
        used = [
            flag
            for flag, value in (
                ("--design-model", design_model),
                ("--seed", seed),
                ("--keep-sample", keep_sample),
            )
            if value is not None
        ]
        if used:
            raise usage_error(f"{', '.join(used)} only go with --design", "drop them, or add --design")


def _design_then_keep(
    description: str,
    name: str,
    *,
    sample_text: str | None,
    language: str,
    seed: int | None,
    keep_sample: Path | None,
    pack_description: str | None,
    design_model: str | None,
    base_model: str | Path | None,
    quant: str | None,
    threads: int | None,
    voices_dir: Path | None,
    quiet: bool,
    devices: DeviceChoice | None = None,
) -> tuple[VoicePack, Path]:
    """Resolve (download/convert) both models first, then load one at a time: design, close, clone."""
    from qwen3tts_cli import audio as audio_io
    from qwen3tts_cli.design_voice import design_sample, keep_designed_voice, model_facts

    languages = ("auto", *spec.LANGUAGE_IDS)  # every released model's; checked before any download
    if language.lower() not in languages:
        raise Qwen3TTSError(f"unknown language {language!r}", f"use one of: {', '.join(languages)}")
    writer = audio_io.AtomicAudioFileWriter(keep_sample) if keep_sample is not None else None  # checks now
    designer = _resolve(design_model or catalog.default_model(catalog.MODE_DESIGN).name, quant, quiet)
    if not designer.capabilities.design:
        raise Qwen3TTSError(
            f"--design-model {design_model} is a {designer.manifest.kind} model, not a VoiceDesign one",
            "use --design-model 1.7b-design, or leave it out",
        )
    cloner = _resolve(base_model or _base_for(designer), quant, quiet)
    if not cloner.capabilities.clone:
        raise Qwen3TTSError(
            f"the cloning model is a {cloner.manifest.kind} model, not a Base one",
            "name a Base model with --model/--model-dir (e.g. 1.7b-base)",
        )
    say = status if not quiet else (lambda _message: None)
    with load_tts(
        designer.path, catalog.MODE_DESIGN, None, threads, False, voices_dir, quiet, devices=devices
    ) as tts:
        facts = model_facts(tts)
        say(f"qwen3tts: designing the sample with {facts['id']} ({facts['quant']})")
        sample = design_sample(tts, description, text=sample_text, language=language, seed=seed)
    if writer is not None:
        with writer:
            writer.write(sample.samples)
    with load_tts(
        cloner.path, catalog.MODE_CLONE, None, threads, False, voices_dir, quiet, devices=devices
    ) as tts:
        facts = model_facts(tts)
        say(
            f"qwen3tts: designed a {sample.seconds:.1f} s sample (seed {sample.seed}); the VoiceDesign model "
            f"is closed, cloning it with {facts['id']} ({facts['quant']})"
        )
        pack = keep_designed_voice(tts, sample, name=name, description=pack_description)
        return pack, tts.model.folder


def _resolve(model: str | Path, quant: str | None, quiet: bool) -> ResolvedModel:
    from qwen3tts_cli import hub

    return hub.resolve_model(model, quant, progress=download_messages(quiet))


def _base_for(designer: ResolvedModel) -> str:
    """The catalog Base model of the VoiceDesign model's size (1.7b-design -> 1.7b-base)."""
    size = designer.manifest.size_tag
    entry = catalog.model_of_kind(spec.KIND_BASE, size)
    if entry is None:
        raise Qwen3TTSError(
            f"no catalog Base model has the VoiceDesign model's size ({size})",
            "name the Base model to clone with: --model NAME or --model-dir DIR",
        )
    return entry.name


def _report(pack: VoicePack, path: Path, folder: Path, keep_sample: Path | None, json_out: bool) -> None:
    if json_out:
        document: dict[str, Any] = {
            "name": pack.name,
            "path": str(path),
            "mode": pack.mode,
            "frames": pack.frames,
            "talker_hidden_size": pack.talker_hidden_size,
            "model": str(folder),
        }
        if pack.provenance is not None:
            document["provenance"] = pack.provenance
        if keep_sample is not None:
            document["sample"] = str(keep_sample)
        print_json(document, indent=None)
        return
    detail = f"{pack.frames} reference frames" if pack.frames else "speaker embedding only"
    print(f"saved voice '{pack.name}' ({pack.mode}, {detail}) to {path}")
    if keep_sample is not None:
        print(f"designed sample written to {keep_sample}")
