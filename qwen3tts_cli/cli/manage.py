"""`qwen3tts voices ...`, `models ...`, `speakers`, `languages`, `convert`: thin shells over the library.

Listings go to stdout as aligned text, or as JSON with `--json` (the shapes are documented in the README's
Usage section and pinned by tests/test_cli.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from qwen3tts_cli import catalog, spec
from qwen3tts_cli.cli.common import (
    CountLine,
    JsonOption,
    ModelDirOption,
    ModelOption,
    QuietOption,
    VoicesDirOption,
    download_messages,
    print_json,
    status,
    usage_error,
)
from qwen3tts_cli.errors import Qwen3TTSError

voices_app = typer.Typer(
    help="The voice library: cloned voices saved by `qwen3tts clone`.", no_args_is_help=True
)
models_app = typer.Typer(
    help="Models: the catalog, and what is downloaded and converted.", no_args_is_help=True
)

CacheOption = Annotated[
    Path | None,
    typer.Option("--cache", envvar="QWEN3TTS_CACHE", help="Converted-model cache folder.", show_envvar=True),
]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing file or voice.")]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="HF_TOKEN", help="Hugging Face token (private repos, uploads).", show_envvar=True
    ),
]


def _table(rows: list[list[str]]) -> None:
    """Left-aligned columns, two spaces apart (no rich tables: plain text survives pipes and grep)."""
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e9:.2f} GB" if num_bytes >= 1e8 else f"{num_bytes / 1e6:.1f} MB"


# ---- voices -------------------------------------------------------------------------------------------
def _library(voices_dir: Path | None) -> Any:
    from qwen3tts_cli.voices import VoiceLibrary

    return VoiceLibrary(voices_dir)


def _pack_facts(pack: Any) -> dict[str, Any]:
    from qwen3tts_cli.voices import width_label

    return {
        "name": pack.name,
        "mode": pack.mode,
        "talker_hidden_size": pack.talker_hidden_size,
        "model_size": width_label(pack.talker_hidden_size),
        "frames": pack.frames,
        "reference_seconds": round(pack.frames / 12.5, 2),
        "reference_text": pack.reference_text,
        "reference_language": pack.reference_language,
        "description": pack.description,
        "created": pack.created,
        "tool_version": pack.tool_version,
        "audio_sha256": pack.audio_sha256,
        "provenance": pack.provenance,  # how it was made (e.g. designed: description, seed, models)
        "lexicon_entries": len(pack.lexicon),
    }


@voices_app.command("list")
def voices_list(voices_dir: VoicesDirOption = None, json_out: JsonOption = False) -> None:
    """List the saved voices (a damaged file is listed with its problem)."""
    library = _library(voices_dir)
    entries = []
    for entry in library.entries():
        facts = _pack_facts(entry.pack) if entry.pack is not None else {"name": entry.name}
        entries.append(facts | {"name": entry.name, "path": str(entry.path), "error": entry.error})
    if json_out:
        print_json({"voices_dir": str(library.root), "voices": entries})
        return
    if not entries:
        status(f"no voices in {library.root} (make one with `qwen3tts clone`)")
        return
    rows = [["NAME", "MODE", "MODEL", "REFERENCE", "DESCRIPTION"]]
    for e in entries:
        if e["error"]:
            rows.append([e["name"], "-", "-", "-", f"DAMAGED: {e['error']}"])
        else:
            reference = f"{e['reference_seconds']:.1f} s" if e["frames"] else "-"
            rows.append([e["name"], e["mode"], e["model_size"], reference, e["description"]])
    _table(rows)


@voices_app.command("show")
def voices_show(
    name: Annotated[str, typer.Argument(help="Library name or pack file.")],
    voices_dir: VoicesDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show one voice (name in the library, or a pack file)."""
    library = _library(voices_dir)
    pack = library.resolve(name)
    facts = _pack_facts(pack)
    if json_out:
        print_json(facts)
        return
    for key, value in facts.items():
        if isinstance(value, dict):  # provenance: one indented line per entry
            print(f"{key}:")
            for inner, item in value.items():
                shown = item if isinstance(item, str | int | float) else json.dumps(item, ensure_ascii=False)
                print(f"  {inner + ':':18} {shown}")
            continue
        print(f"{key + ':':20} {'' if value is None else value}")


@voices_app.command("lexicon")
def voices_lexicon(
    name: Annotated[str, typer.Argument(help="Library name of the voice.")],
    file: Annotated[
        Path | None, typer.Argument(help="TSV lexicon (written<TAB>spoken per line) to keep with the voice.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the voice's lexicon.")] = False,
    voices_dir: VoicesDirOption = None,
) -> None:
    """Set (or --clear) the pronunciation lexicon a voice always uses (see `say --lexicon`)."""
    from qwen3tts_cli.lexicon import Lexicon

    if (file is None) == (not clear):
        raise usage_error("pass a lexicon FILE or --clear", "e.g. `qwen3tts voices lexicon me fixes.tsv`")
    entries = Lexicon.load(file).entries if file is not None else ()
    path = _library(voices_dir).update(name, lexicon=entries)
    print(f"{path}: {len(entries)} lexicon entries" if entries else f"{path}: lexicon cleared")


@voices_app.command("rm")
def voices_rm(name: str, voices_dir: VoicesDirOption = None) -> None:
    """Delete a voice from the library."""
    print(f"removed {_library(voices_dir).remove(name)}")


@voices_app.command("import")
def voices_import(
    file: Annotated[Path, typer.Argument(help="A voice pack file (.json).")],
    name: Annotated[str | None, typer.Option("--name", help="Store it under this name.")] = None,
    force: ForceOption = False,
    voices_dir: VoicesDirOption = None,
) -> None:
    """Validate a voice pack file and add it to the library."""
    print(f"imported to {_library(voices_dir).import_pack(file, name=name, overwrite=force)}")


@voices_app.command("export")
def voices_export(
    name: str,
    destination: Annotated[Path, typer.Argument(help="File, or folder (writes NAME.json there).")],
    force: ForceOption = False,
    voices_dir: VoicesDirOption = None,
) -> None:
    """Copy a voice out of the library as a pack file (to share it)."""
    print(f"exported to {_library(voices_dir).export(name, destination, overwrite=force)}")


# ---- models -------------------------------------------------------------------------------------------
def _catalog_rows(cache: Path | None) -> tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]:
    from qwen3tts_cli import hub

    root = hub.cache_root(cache)
    cached = [
        {
            "name": m.name,
            "quant": m.quant,
            "path": str(m.path),
            "size_bytes": m.size_bytes,
            "complete": m.complete,
            "origin": m.origin,
        }
        for m in hub.list_models(root)
    ]
    defaults = {mode: catalog.default_model(mode).name for mode in catalog.MODES}
    models = [
        {
            "name": entry.name,
            "repo": entry.repo,
            "kind": entry.kind,
            "talker_hidden": entry.talker_hidden,
            "description": entry.description,
            "modes": list(entry.modes),
            "default_for": [mode for mode, name in defaults.items() if name == entry.name],
            "installed": [c for c in cached if c["name"] == entry.name],
        }
        for entry in catalog.CATALOG.values()
    ]
    local = [c for c in cached if c["name"].startswith("local/")]
    downloaded = [c for c in cached if c["name"].startswith("hf:")]
    return root, models, local, downloaded


@models_app.command("list")
def models_list(cache: CacheOption = None, json_out: JsonOption = False) -> None:
    """The catalog and every cached quantization: its size on disk and where it came from."""
    root, models, local, downloaded = _catalog_rows(cache)
    if json_out:
        print_json({"cache": str(root), "models": models, "local": local, "hub": downloaded})
        return
    rows = [["NAME", "KIND", "QUANT", "SIZE", "ORIGIN", "DESCRIPTION"]]
    for m in models:
        for c in m["installed"] or [None]:
            if c is None:
                rows.append([m["name"], m["kind"], "-", "-", "-", m["description"]])
                continue
            quant = c["quant"] + ("" if c["complete"] else " (partial)")
            rows.append([m["name"], m["kind"], quant, _size(c["size_bytes"]), c["origin"], m["description"]])
    for c in [*local, *downloaded]:
        kind = "local" if c["name"].startswith("local/") else "hub"
        rows.append([c["name"], kind, c["quant"], _size(c["size_bytes"]), c["origin"], c["path"]])
    _table(rows)
    print(f"\ncache: {root}")


ConvertLocallyOption = Annotated[
    bool,
    typer.Option(
        "--convert-locally",
        help="Download the official checkpoint and convert it here, even if a converted repo is configured.",
    ),
]


@models_app.command("pull")
def models_pull(
    name: Annotated[
        str, typer.Argument(help="Catalog name (e.g. 0.6b-custom) or hf:OWNER/NAME[@REVISION][:QUANT].")
    ],
    quant: Annotated[str, typer.Option("--quant", "-q", help="LM weight type.")] = catalog.DEFAULT_QUANT,
    revision: Annotated[str | None, typer.Option("--revision", help="Branch, tag or commit.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Convert again even if it is cached.")] = False,
    convert_locally: ConvertLocallyOption = False,
    token: TokenOption = None,
    cache: CacheOption = None,
    quiet: QuietOption = False,
) -> None:
    """Download (and convert, or verify) a model now (otherwise the first `say` does it)."""
    from qwen3tts_cli import hub

    path = hub.pull_model(
        name,
        quant,
        cache=cache,
        revision=revision,
        force=force,
        progress=download_messages(quiet),
        convert_locally=convert_locally,
        token=token,
    )
    print(path)


@models_app.command("publish")
def models_publish(
    model: Annotated[
        str, typer.Argument(help="Catalog name (its cached quant) or a converted model folder.")
    ],
    repo: Annotated[
        str, typer.Option("--repo", help="OWNER/NAME of the repo to upload to (created if new).")
    ],
    quant: Annotated[
        str | None, typer.Option("--quant", "-q", help="Which cached quant of a catalog model.")
    ] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private.")] = False,
    token: TokenOption = None,
    cache: CacheOption = None,
    quiet: QuietOption = False,
) -> None:
    """Upload a converted model as QUANT/ of a Hugging Face repo, with a model card (sources, sha256)."""
    from qwen3tts_cli import hub, hub_repos

    folder = Path(model).expanduser()
    if not folder.is_dir() or catalog.find(model) is not None and not hub.is_converted(folder):
        folder = hub.model_dir(model, quant or catalog.DEFAULT_QUANT, cache)
        if not hub.is_converted(folder):
            raise Qwen3TTSError(
                f"model {model} ({quant or catalog.DEFAULT_QUANT}) is not converted here",
                f"run `qwen3tts models pull {model} -q {quant or catalog.DEFAULT_QUANT}` first",
            )
    elif not hub.is_converted(folder):
        raise Qwen3TTSError(f"{folder} is not a converted model (no manifest.json)", "convert it first")
    say = download_messages(quiet)
    print(hub_repos.publish(folder.absolute(), repo, private=private, token=token, say=say))


@models_app.command("verify")
def models_verify(
    name: Annotated[
        str | None, typer.Argument(help="Catalog name, hf:OWNER/NAME or folder (default: everything cached).")
    ] = None,
    cache: CacheOption = None,
    json_out: JsonOption = False,
) -> None:
    """Check every file of cached models against its manifest's sha256; exit 1 naming the bad ones."""
    from qwen3tts_cli.cache_hygiene import verify_cached

    results = verify_cached(name, cache)
    if json_out:
        print_json(
            [
                {"name": r.model.name, "quant": r.model.quant, "path": str(r.model.path), "ok": r.ok}
                | {"bad_files": r.bad_files, "problem": r.problem}
                for r in results
            ]
        )
    else:
        for r in results:
            verdict = "ok" if r.ok else (r.problem or "BAD: " + ", ".join(r.bad_files))
            print(f"{r.model.name} {r.model.quant}: {verdict}")
    bad = [r for r in results if not r.ok]
    if bad:
        names = "; ".join(f"{r.model.path}: {r.problem or ', '.join(r.bad_files)}" for r in bad)
        raise Qwen3TTSError(
            f"{len(bad)} cached model(s) failed verification: {names}",
            "`qwen3tts models pull NAME --force` refetches or reconverts one; `models gc` removes stale ones",
        )
    if not results:
        status("nothing in the cache to verify")


@models_app.command("gc")
def models_gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    cache: CacheOption = None,
) -> None:
    """Remove stale temp folders, unfinished downloads and folders of other converter versions."""
    from qwen3tts_cli.cache_hygiene import collect, find_garbage

    garbage = find_garbage(cache)
    for item in garbage:
        print(f"{_size(item.size_bytes):>9}  {item.path}  ({item.reason})")
    total = sum(item.size_bytes for item in garbage)
    if not garbage:
        status("nothing to remove")
    elif dry_run:
        status(f"would free {_size(total)} (run without --dry-run to remove)")
    else:
        status(f"freed {_size(collect(garbage))}")


@models_app.command("rm")
def models_rm(
    name: str,
    quant: Annotated[str | None, typer.Option("--quant", "-q", help="Only this quantization.")] = None,
    download: Annotated[
        bool, typer.Option("--download", help="Also delete the downloaded checkpoint (Hugging Face cache).")
    ] = False,
    cache: CacheOption = None,
) -> None:
    """Delete a converted model (and with --download its downloaded checkpoint)."""
    from qwen3tts_cli import hub

    removed = hub.remove_model(name, quant, cache=cache, download=download)
    if not removed:
        raise Qwen3TTSError(f"model {name} is not in the cache", "see `qwen3tts models list`")
    for path in removed:
        print(f"removed {path}")


@models_app.command("path")
def models_path(
    name: str,
    quant: Annotated[str, typer.Option("--quant", "-q")] = catalog.DEFAULT_QUANT,
    cache: CacheOption = None,
) -> None:
    """Print the folder of a converted model (for --model-dir or other tools)."""
    from qwen3tts_cli import hub, hub_repos

    if hub_repos.is_ref(name):
        ref = hub_repos.parse_ref(name, None if quant == catalog.DEFAULT_QUANT else quant)
        folder, quant = hub.repo_dir(ref, cache), ref.quant
    else:
        folder = hub.model_dir(name, quant, cache)
    if not hub.is_converted(folder):
        raise Qwen3TTSError(
            f"model {name} ({quant}) is not converted yet", f"run `qwen3tts models pull {name} -q {quant}`"
        )
    print(folder)


# ---- speakers / languages -----------------------------------------------------------------------------
def _model_config(model: str | None, model_dir: Path | None) -> tuple[str, dict[str, Any] | None]:
    """(what was asked, its config.json or None for the released models' built-in facts)."""
    if model is not None and model_dir is not None:
        raise usage_error("--model and --model-dir both given", "pass one of them")
    if model is not None and model.startswith("hf:"):  # a converted repo: its own config.json says
        from qwen3tts_cli import hub

        model_dir = hub.resolve_model(model, progress=download_messages(False)).path
    if model_dir is None:
        entry = catalog.get(model) if model is not None else None
        return (entry.name if entry else "released models"), None
    path = model_dir.expanduser() / "config.json"
    try:
        return str(model_dir), json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Qwen3TTSError(
            f"cannot read {path}: {exc}", "pass a checkpoint or converted model folder"
        ) from exc


def _prompt_config(config: dict[str, Any] | None) -> Any:
    from qwen3tts_cli.engine.prompt import PromptConfig

    return PromptConfig.from_config(config) if config is not None else None


def speakers(
    model: ModelOption = None, model_dir: ModelDirOption = None, json_out: JsonOption = False
) -> None:
    """The preset speakers of CustomVoice models (and their native dialect, if any)."""
    source, config = _model_config(model, model_dir)
    if config is None and model is not None and catalog.get(model).kind != spec.KIND_CUSTOM_VOICE:
        raise Qwen3TTSError(f"model {model} has no preset speakers", "CustomVoice models have them")
    prompt = _prompt_config(config)
    dialects = spec.SPEAKER_DIALECTS if prompt is None else prompt.speaker_dialects
    names = list(spec.SPEAKER_IDS) if prompt is None else list(prompt.speaker_ids)
    listing = [{"name": name, "dialect": dialects.get(name) or None} for name in names]
    if json_out:
        print_json({"model": source, "speakers": listing})
        return
    if not listing:
        status(f"{source} has no preset speakers")
    for item in listing:
        print(item["name"] + (f"  ({item['dialect']})" if item["dialect"] else ""))


def languages(
    model: ModelOption = None, model_dir: ModelDirOption = None, json_out: JsonOption = False
) -> None:
    """The languages `say --language` accepts ('auto' lets the model decide)."""
    source, config = _model_config(model, model_dir)
    prompt = _prompt_config(config)
    if prompt is None:
        names, dialects = ["auto", *spec.LANGUAGE_IDS], list(spec.DIALECT_IDS)
    else:
        names = prompt.supported_languages
        dialects = [name for name in prompt.language_ids if "dialect" in name]
    if json_out:
        print_json({"model": source, "languages": names, "dialects": dialects})
        return
    for name in names:
        print(name)


# ---- convert ------------------------------------------------------------------------------------------
def convert(
    checkpoint: Annotated[
        Path, typer.Argument(help="Official checkpoint folder (config.json, model.safetensors...).")
    ],
    out: Annotated[Path, typer.Argument(help="Converted model folder to create.")],
    quant: Annotated[str, typer.Option("--quant", "-q", help="LM weight type.")] = catalog.DEFAULT_QUANT,
    threads: Annotated[int, typer.Option("--threads", "-t", min=1, help="Threads for quantization.")] = 2,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Convert an official checkpoint into a model folder (GGUF + ONNX + manifest) for --model-dir."""
    from qwen3tts_cli.convert.converter import convert_checkpoint

    message = download_messages(quiet)
    line = CountLine.for_terminal("qwen3tts: converting", quiet)

    def say(text: str) -> None:
        line.clear()  # a status line never lands in the middle of the count
        message(text)

    try:
        folder = convert_checkpoint(
            checkpoint,
            out,
            quant,
            threads=threads,
            overwrite=force,
            progress=say,
            tensor_progress=line.update if line.enabled else None,
        )
    finally:
        line.clear()
    print(folder)
