"""One model per voice kind, for commands that may need several (`batch`, `dialogue`).

`--model NAME|DIR` (repeatable, one per kind) names some; the other kinds a run needs get the catalog
default. Everything is resolved (downloaded and converted when allowed) before any audio is made, so a kind
that cannot be had offline fails first, naming who needs it. Loading is left to the library, one kind at a
time (`kind_loader`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from qwen3tts_cli.cli.common import DeviceChoice, download_messages, usage_error
from qwen3tts_cli.errors import Qwen3TTSError

if TYPE_CHECKING:
    from qwen3tts_cli.hub import ResolvedModel
    from qwen3tts_cli.longform.dialogue import ModelLoader
    from qwen3tts_cli.tts import TTS


def as_model_target(name: str) -> str | Path:
    """A folder when it looks like one (a separator, or it exists), else a catalog name or hf: reference."""
    if name.startswith("hf:"):
        return name
    return Path(name).expanduser() if ("/" in name or "\\" in name or Path(name).exists()) else name


def resolve_kind_models(
    given: list[str], needs: Mapping[str, tuple[str, bool]], quant: str | None, quiet: bool
) -> dict[str, ResolvedModel]:
    """mode -> resolved model. `needs[mode] = (who needs it, for messages; styled: wants instructions)`."""
    from qwen3tts_cli import catalog, hub

    progress = download_messages(quiet)
    by_kind: dict[str, ResolvedModel] = {}
    for name in given:
        resolved = hub.resolve_model(as_model_target(name), quant, progress=progress)
        kind = resolved.manifest.kind
        if kind in by_kind:
            raise usage_error(f"two --model options are {kind} models", "give one model per kind")
        by_kind[kind] = resolved
    unused = sorted(set(by_kind) - {catalog.KIND_FOR_MODE[mode] for mode in needs})
    if unused and needs:  # with nothing to speak (every line bad), the lines' errors say more
        raise usage_error(f"--model gives a {', '.join(unused)} model nothing here uses", "drop it")
    models: dict[str, ResolvedModel] = {}
    for mode, (who, styled) in needs.items():
        kind = catalog.KIND_FOR_MODE[mode]
        if kind in by_kind:
            models[mode] = by_kind[kind]
            continue
        default = catalog.default_model(mode, instruct=styled).name
        try:
            models[mode] = hub.resolve_model(default, quant, progress=progress)
        except Qwen3TTSError as exc:
            raise Qwen3TTSError(
                f"{who} a {kind} model ({default}) that cannot be had: {exc.message}",
                exc.hint or f"pass --model NAME|DIR for the {kind} model",
            ) from None
    return models


def kind_loader(
    folders: Mapping[str, Path],
    threads: int | None,
    exact: bool,
    voices_dir: Path | None,
    devices: DeviceChoice | None = None,
) -> ModelLoader:
    """(mode, batch width) -> the loaded model of that mode, closed when the caller's `with` ends."""

    @contextmanager
    def load(mode: str, width: int) -> Iterator[TTS]:
        from qwen3tts_cli.tts import TTS

        with TTS.load(
            folders[mode],
            threads=threads,
            exact=exact,
            voices_dir=voices_dir,
            max_batch=width,
            **(devices or DeviceChoice()).load_options(),
        ) as tts:
            yield tts

    return load
