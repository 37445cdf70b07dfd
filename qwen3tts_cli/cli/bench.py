"""`qwen3tts bench`: measure speed on random checkpoints at the real shapes, side by side with peers.

Only typer and the standard library are imported here; the measuring code (qwen3tts_cli.bench) loads
numpy, llama.cpp and onnxruntime, so it is imported inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qwen3tts_cli.cli.common import CodecDeviceOption, DeviceOption, GpuLayersOption, device_choice

DEFAULT_WORKDIR = Path.home() / ".cache" / "qwen3tts" / "bench"
DEFAULT_OUT = Path("bench-results")


def bench(
    size: Annotated[str, typer.Option(help="Checkpoint shape: tiny, tiny-wide, 0.6b or 1.7b.")] = "0.6b",
    quant: Annotated[
        list[str] | None,
        typer.Option(help="Talker/predictor precision; repeat for several (q8_0, q4_k_m, f16)."),
    ] = None,
    kind: Annotated[str, typer.Option(help="Model kind: custom_voice, voice_design or base.")] = (
        "custom_voice"
    ),
    frames: Annotated[int, typer.Option(min=1, help="Frames per run (12.5 frames = 1 s of audio).")] = 48,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs per measurement (min and median).")] = 3,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads (default: free cores).")] = None,
    long_text: Annotated[bool, typer.Option(help="Also time several sentences (-> pieces).")] = True,
    long_frames: Annotated[int, typer.Option(min=1, help="Frames per piece of the long text.")] = 56,
    long_batch: Annotated[
        int, typer.Option(min=1, help="Pieces of the long text generated together (as `say --batch`).")
    ] = 8,
    greedy: Annotated[bool, typer.Option(help="Greedy decoding instead of the model's sampling.")] = False,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 1234,
    workdir: Annotated[
        Path, typer.Option(help="Cache of built checkpoints and converted folders (reruns are fast).")
    ] = DEFAULT_WORKDIR,
    out: Annotated[Path, typer.Option(help="Folder for the JSON and markdown results.")] = DEFAULT_OUT,
    official_python: Annotated[
        Path | None,
        typer.Option(
            help="A Python with torch + qwen-tts (default: this one if it has them): official column."
        ),
    ] = None,
    vox_python: Annotated[
        Path | None, typer.Option(help="A Python with vox-tts (default: this one, if it has it): its column.")
    ] = None,
    llama_cpp_source: Annotated[
        Path | None,
        typer.Option(
            help="The llama.cpp source tree llama-cpp-python was built from: its converter makes the GGUFs "
            "of upstream's own Qwen3-TTS pipeline (needs --official-python's torch); its column."
        ),
    ] = None,
    qwentts_source: Annotated[
        Path | None,
        typer.Option(
            help="A qwentts.cpp source tree with its built quantizer (benchmarks/setup_qwentts.sh): its "
            "convert.py and quantizer make the GGUFs of the qwentts.cpp column."
        ),
    ] = None,
    qwentts_python: Annotated[
        Path | None,
        typer.Option(
            help="A Python with realtimetts-qwen-native-cpu and torch (default: this one if it has them): "
            "runs the qwentts.cpp column."
        ),
    ] = None,
    peers: Annotated[
        bool, typer.Option(help="Measure the peers where installed (--no-peers: ours only).")
    ] = True,
    peers_every_quant: Annotated[
        bool,
        typer.Option(help="Run the vox, llama.cpp and qwentts.cpp columns at every quant, not once."),
    ] = True,
    blas_threads: Annotated[
        int | None, typer.Option(min=1, help="numpy BLAS threads in the measured process (default: inherit).")
    ] = None,
    vocabulary: Annotated[
        str,
        typer.Option(
            help="Text vocabulary of the random checkpoint: auto (the real Qwen one from an installed "
            "dashscope package, else fixture), fixture (synthetic, ~3x longer prompts), or a "
            "qwen.tiktoken path."
        ),
    ] = "auto",
    tag: Annotated[str, typer.Option(help="Suffix for the result file names.")] = "",
    device: DeviceOption = "auto",
    gpu_layers: GpuLayersOption = None,
    codec_device: CodecDeviceOption = "auto",
) -> None:
    """Benchmark: real-time factor, first audio, per-frame split, long text, peak RSS and CPU load."""
    from qwen3tts_cli import bench as bench_lib
    from qwen3tts_cli.errors import Qwen3TTSError

    devices = device_choice(device, gpu_layers, codec_device)
    config = bench_lib.BenchConfig(
        size=size,
        quants=list(quant) if quant else ["q8_0"],
        kind=kind,
        frames=frames,
        repeats=repeats,
        threads=threads,
        long_text=long_text,
        long_frames=long_frames,
        long_batch=long_batch,
        greedy=greedy,
        seed=seed,
        workdir=workdir,
        out=out,
        official_python=official_python,
        vox_python=vox_python,
        llama_cpp_source=llama_cpp_source,
        qwentts_source=qwentts_source,
        qwentts_python=qwentts_python,
        peers=peers,
        peers_every_quant=peers_every_quant,
        tag=tag,
        blas_threads=blas_threads,
        vocabulary=vocabulary,
        device=devices.device,
        gpu_layers=devices.gpu_layers,
        codec_device=devices.codec_device,
    )
    try:
        report = bench_lib.run_benchmark(config, say=lambda line: typer.echo(line, err=True))
    except Qwen3TTSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(report.markdown)
    typer.echo(f"results: {report.json_path} and {report.markdown_path}", err=True)
