"""`qwen3tts serve`: one model behind HTTP (OpenAI + Qwen-TTS service APIs, metrics) and/or Wyoming.

Concurrent requests share the model's llama.cpp batch (`--max-batch` sequences at once, `--max-queue`
waiting, more are refused with 429). SIGTERM or Ctrl-C stops accepting, lets requests in flight finish for
up to `--shutdown-timeout` seconds, cancels the rest and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from qwen3tts_cli import platform_compat
from qwen3tts_cli.cli.common import (
    CodecDeviceOption,
    DeviceOption,
    GpuLayersOption,
    ModelDirOption,
    ModelOption,
    QuantOption,
    QuietOption,
    ThreadsOption,
    VoicesDirOption,
    device_choice,
    devices_line,
    model_argument,
    status,
    usage_error,
)
from qwen3tts_cli.platform_compat import stop_signals

API_KEY_ENV = "QWEN3TTS_API_KEY"
SERVER_EXTRA = 'pip install "qwen3tts-cli[server]"'
LIMITS = "Limits"


def _require_server_extra(wyoming: bool) -> None:
    """One line naming the install command when the server's packages are missing."""
    modules = ["starlette", "uvicorn", "av", "prometheus_client", "multipart"] + (
        ["wyoming"] if wyoming else []
    )
    missing = []
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise usage_error(
            f"`qwen3tts serve` needs packages that are not installed ({', '.join(missing)})", SERVER_EXTRA
        )


def serve(
    model: ModelOption = None,
    model_dir: ModelDirOption = None,
    quant: QuantOption = None,
    threads: ThreadsOption = None,
    device: DeviceOption = "auto",
    gpu_layers: GpuLayersOption = None,
    codec_device: CodecDeviceOption = "auto",
    exact: Annotated[bool, typer.Option("--exact", help="f32 KV cache, no flash attention.")] = False,
    voices_dir: VoicesDirOption = None,
    host: Annotated[str, typer.Option(help="Address to bind (localhost by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="HTTP port.")] = 8880,
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="Sequences generated together.", rich_help_panel=LIMITS)
    ] = 8,
    max_queue: Annotated[
        int,
        typer.Option("--max-queue", min=0, help="Requests that may wait for a slot.", rich_help_panel=LIMITS),
    ] = 32,
    reserved_slots: Annotated[
        int,
        typer.Option(
            "--reserved-slots",
            min=0,
            help="Slots a long text's extra pieces leave to new requests.",
            rich_help_panel=LIMITS,
        ),
    ] = 1,
    max_input_chars: Annotated[
        int, typer.Option("--max-input-chars", min=1, help="Longest input text.", rich_help_panel=LIMITS)
    ] = 4096,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", min=0.01, help="Largest voice sample.", rich_help_panel=LIMITS)
    ] = 10.0,
    request_timeout: Annotated[
        float | None,
        typer.Option(
            "--request-timeout", min=1, help="Stop a request after this many seconds.", rich_help_panel=LIMITS
        ),
    ] = None,
    shutdown_timeout: Annotated[
        float,
        typer.Option(
            "--shutdown-timeout",
            min=0,
            help="On SIGTERM, let requests finish this long.",
            rich_help_panel=LIMITS,
        ),
    ] = 30.0,
    max_frames: Annotated[
        int | None,
        typer.Option("--max-frames", min=1, help="At most this many frames (12.5/s) per text piece."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(min=0, help="Seed for requests that give none (default: fresh per request).")
    ] = None,
    default_voice: Annotated[
        str | None,
        typer.Option(
            "--default-voice",
            help="Voice used when a request names none or one of OpenAI's (alloy, ...). Default: ryan on "
            "preset models.",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar=API_KEY_ENV, show_envvar=True, help="Require Authorization: Bearer KEY."
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option("--cors-origin", help="Allow browsers from this origin (repeatable).")
    ] = None,
    wyoming: Annotated[
        str | None, typer.Option("--wyoming", help="Also serve Wyoming, e.g. tcp://127.0.0.1:10200.")
    ] = None,
    no_http: Annotated[bool, typer.Option("--no-http", help="Wyoming only.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Serve the model to many clients at once: OpenAI speech API, Qwen-TTS service API, Wyoming."""
    if no_http and not wyoming:
        raise usage_error("--no-http leaves nothing to serve", "add --wyoming tcp://127.0.0.1:10200")
    if (
        wyoming and wyoming.startswith("unix://") and platform_compat.is_windows()
    ):  # asyncio has no Unix sockets there
        raise usage_error("--wyoming unix://... is not available on Windows", "use tcp://127.0.0.1:10200")
    devices = device_choice(device, gpu_layers, codec_device)
    _require_server_extra(bool(wyoming))
    from qwen3tts_cli import catalog, spec
    from qwen3tts_cli.cli.voice import load_tts, model_for
    from qwen3tts_cli.server.synthesis import ServerSettings

    chosen = model_for(model_argument(model, model_dir), catalog.MODE_PRESETS, False)
    tts = load_tts(
        chosen,
        catalog.MODE_PRESETS,
        quant,
        threads,
        exact,
        voices_dir,
        quiet,
        max_batch,
        max_queue,
        reserved_slots,
        devices=devices,
    )
    try:
        if not quiet:
            status(devices_line(tts.model.devices_used()))
        if default_voice is None and tts.kind == spec.KIND_CUSTOM_VOICE:
            default_voice = "ryan" if "ryan" in tts.speakers else (tts.speakers or [None])[0]
        settings = ServerSettings(
            model_id=_model_id(chosen),
            other_names=_catalog_names(chosen, tts),
            max_input_chars=max_input_chars,
            max_upload_bytes=int(max_upload_mb * (1 << 20)),
            api_key=api_key or None,
            cors_origins=tuple(cors_origin or ()),
            request_timeout=request_timeout,
            max_frames=max_frames,
            seed=seed,
            default_voice=default_voice,
        )
        logging.basicConfig(
            level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
        )
        asyncio.run(_run(tts, settings, None if no_http else (host, port), wyoming, shutdown_timeout, quiet))
    finally:
        tts.close()


def _model_id(chosen: str | Path) -> str:
    return chosen.name if isinstance(chosen, Path) else str(chosen)


def _catalog_names(chosen: str | Path, tts: Any) -> tuple[str, ...]:
    """The catalog's short name and official repo id of the served model, also accepted as `model`."""
    from qwen3tts_cli import catalog

    source = str(chosen) if not isinstance(chosen, Path) else tts.model.manifest.source_repo
    entry = catalog.find(source) if source else None
    return () if entry is None else (entry.name, entry.repo)


async def _run(
    tts: Any,
    settings: Any,
    http: tuple[str, int] | None,
    wyoming: str | None,
    shutdown_timeout: float,
    quiet: bool,
) -> None:
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    # uvicorn re-raises the signal it caught after its graceful shutdown; these handlers make that a no-op,
    # so a stop by SIGTERM or Ctrl-C ends with exit code 0
    loop = asyncio.get_running_loop()
    previous = {
        sig: signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
        for sig in (*stop_signals(), signal.SIGINT)
    }
    try:
        if wyoming:
            from qwen3tts_cli.server.wyoming import run_wyoming

            tasks.append(
                asyncio.create_task(
                    run_wyoming(
                        tts,
                        wyoming,
                        stop=stop,
                        max_frames=settings.max_frames,
                        seed=settings.seed,
                        default_voice=settings.default_voice,
                    )
                )
            )
            if not quiet:
                status(f"qwen3tts: Wyoming on {wyoming}")
        if http is not None:
            import uvicorn

            from qwen3tts_cli.server.app import create_app

            config = uvicorn.Config(
                create_app(tts, settings),
                host=http[0],
                port=http[1],
                log_level="warning" if quiet else "info",
                timeout_graceful_shutdown=shutdown_timeout,
                lifespan="off",
            )
            server = uvicorn.Server(config)
            if not quiet:
                where = f"[{http[0]}]" if ":" in http[0] else http[0]
                url = f"http://{where}:{http[1]}"
                status(f"qwen3tts: {settings.model_id} ({tts.kind}) on {url} (pid {os.getpid()})")
            await server.serve()
            stop.set()
        else:
            await stop.wait()
        for task in tasks:
            await asyncio.wait_for(task, timeout=shutdown_timeout + 5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
