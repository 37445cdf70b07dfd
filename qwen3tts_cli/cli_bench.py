"""`qwen3tts bench`: measure speed on random checkpoints at the real shapes, side by side with peers.

Only typer and the standard library are imported here; the measuring code (qwen3tts_cli.bench) loads
numpy, llama.cpp and onnxruntime, so it is imported inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

DEFAULT_WORKDIR = Path.home() / ".cache" / "qwen3tts" / "bench"


def bench(
    size: str = typer.Option("0.6b", "--size", help="Checkpoint shape: tiny, tiny-wide, 0.6b or 1.7b."),
    quant: list[str] = typer.Option(
        ["q8_0"], "--quant", help="Talker/predictor precision (repeat for several): q8_0, q4_k_m, f16, ..."
    ),
    kind: str = typer.Option("custom_voice", "--kind", help="Model kind: custom_voice, voice_design, base."),
    frames: int = typer.Option(48, "--frames", min=1, help="Frames generated per run (12.5 frames = 1 s)."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed runs per measurement (min/median)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads (default: free cores)."),
    long_text: bool = typer.Option(
        True, "--long-text/--no-long-text", help="Also measure several sentences (-> pieces)."
    ),
    long_frames: int = typer.Option(24, "--long-frames", min=1, help="Frames per piece in the long text."),
    greedy: bool = typer.Option(False, "--greedy", help="Greedy decoding instead of the model's sampling."),
    seed: int = typer.Option(1234, "--seed", help="Sampling seed (and checkpoint seed 0)."),
    workdir: Path = typer.Option(
        DEFAULT_WORKDIR, "--workdir", help="Where built checkpoints and converted folders are cached."
    ),
    out: Path = typer.Option(Path("bench-results"), "--out", help="Folder for the JSON and markdown results."),
    official_python: Path | None = typer.Option(
        None, "--official-python", help="Python with torch + qwen-tts: adds the official column."
    ),
    vox_python: Path | None = typer.Option(None, "--vox-python", help="Python with vox-tts: adds its column."),
    peers_only_first: bool = typer.Option(
        True,
        "--peers-first-quant/--peers-every-quant",
        help="Run the peers once (they do not depend on --quant) or once per quant.",
    ),
    tag: str = typer.Option("", "--tag", help="Suffix for the result file names."),
) -> None:
    """Benchmark: real-time factor, first audio, per-frame split, long text, peak RSS and CPU load."""
    from qwen3tts_cli import bench as bench_lib
    from qwen3tts_cli.errors import Qwen3TTSError

    config = bench_lib.BenchConfig(
        size=size,
        quants=list(quant),
        kind=kind,
        frames=frames,
        repeats=repeats,
        threads=threads,
        long_text=long_text,
        long_frames=long_frames,
        greedy=greedy,
        seed=seed,
        workdir=workdir,
        out=out,
        official_python=official_python,
        vox_python=vox_python,
        peers_once=peers_only_first,
        tag=tag,
    )
    try:
        report = bench_lib.run_benchmark(config, say=lambda line: typer.echo(line, err=True))
    except Qwen3TTSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(report.markdown)
    typer.echo(f"results: {report.json_path} and {report.markdown_path}", err=True)
