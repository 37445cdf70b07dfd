"""`qwen3tts clone`: a voice pack from a recording, saved in the voice library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qwen3tts_cli import catalog
from qwen3tts_cli.cli.common import (
    JsonOption,
    ModelDirOption,
    ModelOption,
    QuantOption,
    QuietOption,
    ThreadsOption,
    VoicesDirOption,
    model_argument,
    print_json,
)
from qwen3tts_cli.cli.voice import load_tts, model_for
from qwen3tts_cli.errors import Qwen3TTSError


def clone(
    reference: Annotated[Path, typer.Argument(help="Reference recording (3-20 s of clear speech).")],
    name: Annotated[str, typer.Option("--name", "-n", help="Name of the voice in the library.")],
    transcript: Annotated[
        str | None,
        typer.Option("--text", help="What is said in the recording (without it: x-vector only, a warning)."),
    ] = None,
    language: Annotated[str, typer.Option("--language", "-l", help="Language of the recording.")] = "auto",
    x_vector_only: Annotated[
        bool, typer.Option("--x-vector-only", help="Keep only the speaker embedding (no transcript).")
    ] = False,
    description: Annotated[str, typer.Option("--description", help="A note stored with the voice.")] = "",
    force: Annotated[bool, typer.Option("--force", help="Replace a voice of the same name.")] = False,
    model: ModelOption = None,
    model_dir: ModelDirOption = None,
    quant: QuantOption = None,
    threads: ThreadsOption = None,
    voices_dir: VoicesDirOption = None,
    quiet: QuietOption = False,
    json_out: JsonOption = False,
) -> None:
    """Clone a voice from a recording and save it in the voice library (use it with `say --voice NAME`)."""
    from qwen3tts_cli.voices import VoiceLibrary, validate_name

    library = VoiceLibrary(voices_dir)
    validate_name(name)
    if library.path_for(name).exists() and not force:
        raise Qwen3TTSError(f"a voice named '{name}' already exists", "choose another name, or pass --force")
    chosen = model_for(model_argument(model, model_dir), catalog.MODE_CLONE, styled=False)
    tts = load_tts(chosen, catalog.MODE_CLONE, quant, threads, False, voices_dir, quiet)
    with tts:
        pack = tts.clone(
            reference,
            transcript,
            name=name,
            language=language,
            x_vector_only=x_vector_only,
            description=description,
        )
    path = library.save(pack, overwrite=force)
    if json_out:
        document = {
            "name": pack.name,
            "path": str(path),
            "mode": pack.mode,
            "frames": pack.frames,
            "talker_hidden_size": pack.talker_hidden_size,
            "model": str(tts.model.folder),
        }
        print_json(document, indent=None)
    else:
        detail = f"{pack.frames} reference frames" if pack.frames else "speaker embedding only"
        print(f"saved voice '{pack.name}' ({pack.mode}, {detail}) to {path}")
