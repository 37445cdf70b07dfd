"""Time qwentts.cpp (its CPU-only PyPI wheel `realtimetts-qwen-native-cpu`) for `qwen3tts bench`.

qwentts.cpp is a C++17/ggml port with its own graphs: one talker GGUF (talker LM + code predictor, plus the
speaker encoder of Base checkpoints) and one codec GGUF (the 12 Hz tokenizer). The GGUFs come from its own
tools in a local source tree (--qwentts-source, made by benchmarks/setup_qwentts.sh): `convert.py` writes F32
files from the official folder (it reads the safetensors through torch), `build/quantize` (tools/quantize.cpp)
derives Q8_0 / Q4_K_M / BF16 ones with its own policy (norms, RVQ codebooks and the projections around them
stay F32, conv kernels F16). Talker and codec are quantized alike, as qwentts.cpp's own tests and its
published files pair them. They are cached in --gguf-dir, keyed by checkpoint, converter commit and type.

Runs in the interpreter of the qwentts venv (never the product's), with the repository root on PYTHONPATH
for the stdlib-only probes of qwen3tts_cli.bench. Random weights never stop on their own; `max_new_tokens`
bounds every request to --frames frames. Each request is streamed (`QwenTTS.stream`, audio chunks through
the native on_chunk callback: one frame first, then up to 8), on `cpu_threads=--threads` with the codec
decoded in line (the wheel's default; its optional codec-overlap thread would add busy threads).

The stage split comes from qwentts.cpp's own timers, read from its log callback after each request:
`[Perf] Prefill`, `TalkerDecode`, `CodePredictor` (the 15 acoustic codes of a frame as one graph, sampling
included), `HostCompose` (the talker's code-0 sampling and the next input embedding: our sampling column)
and `CodecDecode`. Writes one JSON record to --result in the shape of `qwen3tts_cli.bench.stream_summary`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from qwen3tts_cli.bench import (
    QUANT_TO_QWENTTS,
    add_driver_arguments,
    cpu_load,
    repeat_quietly,
    run_record,
    write_driver_result,
)

SAMPLES_PER_FRAME = 1920  # 24 kHz / 12.5 Hz
PERF_STAGES = {
    "Prefill": "prefill",
    "TalkerDecode": "talker",
    "CodePredictor": "predictor",
    "HostCompose": "sampling",
    "CodecDecode": "decoder",
}
PERF_LINE = re.compile(r"^\[Perf\] (\w+) ([0-9.]+) ms")
FRAMES_LINE = re.compile(r"Generation done : (\d+) frames")
KINDS = {"custom_voice": "CustomVoice", "base": "Base", "voice_design": "VoiceDesign"}
VOICE_DESIGN_INSTRUCT = "A calm, clear adult voice."  # what the bench gives our voice_design runs


def source_commit(source: Path) -> str:
    """The qwentts.cpp commit of the source tree (recorded by the setup script, or its git HEAD)."""
    recorded = source / ".qwentts-commit"
    if recorded.is_file():
        return recorded.read_text().strip()
    done = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def checkpoint_names(checkpoint: Path) -> tuple[str, str]:
    """The folder name convert.py expects (Qwen3-TTS-12Hz-0.6B-CustomVoice) and its talker GGUF's stem."""
    config = json.loads((checkpoint / "config.json").read_text())
    # "0b6" -> "0.6B"; the size is only a name to convert.py (the GGUF's shapes come from config.json), so
    # the fixture's tiny shapes get a placeholder its folder pattern accepts
    tag = re.fullmatch(r"(\d+)b(\d+)", config["tts_model_size"])
    size = f"{tag.group(1)}.{tag.group(2)}B" if tag else "0B"
    kind = KINDS[config["tts_model_type"]]
    return f"Qwen3-TTS-12Hz-{size}-{kind}", f"qwen-talker-{size.lower()}-{kind.lower()}"


def _convert_f32(source: Path, checkpoint: Path, folder: Path) -> None:
    """Run qwentts.cpp's convert.py as its README does (checkpoints/ -> models/ in the working directory),
    on links to the checkpoint and its speech tokenizer; move the two F32 GGUFs into `folder`."""
    dir_name, _ = checkpoint_names(checkpoint)
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=folder) as tmp:
        work = Path(tmp)
        (work / "checkpoints").mkdir()
        (work / "checkpoints" / dir_name).symlink_to(checkpoint.resolve())
        (work / "checkpoints" / "Qwen3-TTS-Tokenizer-12Hz").symlink_to(
            (checkpoint / "speech_tokenizer").resolve()
        )
        done = subprocess.run(
            [sys.executable, str(source / "convert.py")], cwd=work, capture_output=True, text=True
        )
        made = sorted((work / "models").glob("*-F32.gguf")) if (work / "models").is_dir() else []
        if done.returncode != 0 or len(made) != 2:
            raise RuntimeError(
                f"qwentts.cpp convert.py failed: {(done.stderr or done.stdout).strip()[-800:]}"
            )
        for path in made:
            path.rename(folder / path.name)  # finished files only: an interrupted run converts again


def _quantize(quantizer: Path, f32: Path, target: Path, qtype: str) -> None:
    partial = target.with_suffix(".partial")
    done = subprocess.run([str(quantizer), str(f32), str(partial), qtype], capture_output=True, text=True)
    if done.returncode != 0 or not partial.is_file():
        raise RuntimeError(f"qwentts.cpp quantize failed: {(done.stderr or done.stdout).strip()[-800:]}")
    partial.rename(target)


def build_ggufs(
    checkpoint: Path, source: Path, gguf_dir: Path, quant: str, quantizer: Path | None = None
) -> tuple[Path, Path, dict[str, Any]]:
    """The talker and codec GGUFs of the checkpoint at `quant` in qwentts.cpp's layout, made once (cached)."""
    qtype = QUANT_TO_QWENTTS.get(quant)
    if qtype is None:
        raise ValueError(f"qwentts.cpp has no counterpart of {quant}")
    commit = source_commit(source)
    folder = gguf_dir / f"{checkpoint.name}-qwentts-{commit[:7]}"
    folder.mkdir(parents=True, exist_ok=True)
    _, stem = checkpoint_names(checkpoint)
    f32 = {"talker": folder / f"{stem}-F32.gguf", "codec": folder / "qwen-tokenizer-12hz-F32.gguf"}
    wanted = {
        part: path.with_name(path.name.replace("-F32.gguf", f"-{qtype}.gguf")) for part, path in f32.items()
    }
    built: list[str] = []
    timings: dict[str, float] = {}
    if not all(path.is_file() for path in wanted.values()):
        start = time.perf_counter()
        if not all(path.is_file() for path in f32.values()):
            _convert_f32(source, checkpoint, folder)
            built += [path.name for path in f32.values()]
            timings["convert_seconds"] = round(time.perf_counter() - start, 2)
        quantizer = quantizer or source / "build" / "quantize"
        if qtype != "F32" and not quantizer.is_file():
            raise RuntimeError(f"no quantizer at {quantizer}: build it with benchmarks/setup_qwentts.sh")
        start = time.perf_counter()
        for part, target in wanted.items():
            if qtype != "F32" and not target.is_file():
                _quantize(quantizer, f32[part], target, qtype)
                built.append(target.name)
        if qtype != "F32":
            timings["quantize_seconds"] = round(time.perf_counter() - start, 2)
    record: dict[str, Any] = {"built": built, **timings, "commit": commit}
    origin = source / "ggml" / ".origin"  # setup_qwentts.sh: where the quantizer's ggml came from
    if origin.is_file():
        record["quantizer_ggml"] = origin.read_text().strip()
    record["bytes"] = {part: path.stat().st_size for part, path in wanted.items()}
    return wanted["talker"], wanted["codec"], record


class PerfLog:
    """qwentts.cpp's log lines of the current request (the callback runs on its native threads)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, level: int, message: str) -> None:
        if level >= 1:  # INFO and up; DEBUG is per-step sampling detail
            self.lines.append(message)

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


def parse_perf(lines: list[str]) -> tuple[dict[str, float], int | None]:
    """Seconds per stage from the `[Perf]` lines of one request, and the frames it generated."""
    stages: dict[str, float] = {}
    frames = None
    for line in lines:
        if (match := PERF_LINE.match(line)) and match.group(1) in PERF_STAGES:
            stages[PERF_STAGES[match.group(1)]] = float(match.group(2)) / 1000
        elif match := FRAMES_LINE.search(line):
            frames = int(match.group(1))
    return stages, frames


def one_run(tts: Any, log: PerfLog, text: str, options: dict[str, Any], frames: int) -> dict[str, Any]:
    """One streamed request of at most `frames` frames: wall, first chunk, audio, qwentts.cpp's stages."""
    log.take()
    record: dict[str, Any] = {}
    samples, first = 0, None
    with cpu_load(record):
        start = time.perf_counter()
        for chunk, _rate in tts.stream(text=text, max_new_tokens=frames, **options):
            if first is None and len(chunk):
                first = time.perf_counter() - start
            samples += len(chunk)
        wall = time.perf_counter() - start
    stages, generated = parse_perf(log.take())
    generated = generated if generated is not None else round(samples / SAMPLES_PER_FRAME)
    return run_record(
        record,
        wall=wall,
        first=first,
        audio=samples / 24000,
        frames=generated,
        pieces=1,
        stage_seconds=stages,
    )


def request_options(tts: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Speaker / instruct for the model kind, the language, and the sampling the bench asks for."""
    options: dict[str, Any] = {"lang": args.language, "seed": args.seed}
    speakers = tts.speaker_names()
    if speakers:
        if args.speaker not in speakers:
            raise SystemExit(f"speaker {args.speaker!r} is not in the checkpoint's {speakers}")
        options["speaker"] = args.speaker
    elif args.kind == "voice_design":
        options["instruct"] = VOICE_DESIGN_INSTRUCT
    else:
        raise SystemExit(
            "a Base checkpoint needs a reference voice; the bench measures custom_voice/voice_design"
        )
    if args.greedy:
        options.update(do_sample=False)
    return options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_driver_arguments(parser)
    parser.add_argument("--qwentts-source", type=Path, required=True)
    parser.add_argument("--gguf-dir", type=Path, required=True)
    parser.add_argument("--quant", default="q8_0")
    parser.add_argument("--quantizer", type=Path, default=None, help="default: SOURCE/build/quantize")
    args = parser.parse_args()
    args.kind = json.loads((args.checkpoint / "config.json").read_text())["tts_model_type"]

    talker, codec, build = build_ggufs(
        args.checkpoint, args.qwentts_source, args.gguf_dir, args.quant, args.quantizer
    )
    import qwentts_cpp_cpu

    start = time.perf_counter()
    tts = qwentts_cpp_cpu.QwenTTS(talker, codec, cpu_threads=args.threads)
    load_seconds = time.perf_counter() - start
    log = PerfLog()
    tts.set_log_callback(log)
    options = request_options(tts, args)
    one_run(tts, log, args.text, options, min(args.frames, 4))  # warm-up
    runs = repeat_quietly(lambda: one_run(tts, log, args.text, options, args.frames), args.repeats)
    qtype = QUANT_TO_QWENTTS[args.quant]
    precision = qtype if qtype == "F32" else f"{qtype} (talker, predictor, codec; norms + RVQ F32, convs F16)"
    write_driver_result(
        args.result,
        runs,
        precision=precision,
        threads=args.threads,
        load_seconds=load_seconds,
        streaming=True,
        versions={
            "realtimetts-qwen-native-cpu": version("realtimetts-qwen-native-cpu"),
            "qwentts.cpp native": tts.library.version(),
            "qwentts.cpp converter": build["commit"],
        },
        build=build,
        files={"talker": str(talker), "codec": str(codec)},
        cpu_kernels="the wheel's fixed AVX2/FMA/F16C/BMI2 baseline (GGML_NATIVE=OFF)",
        frames_short=[r["frames"] for r in runs if r["frames"] < args.frames],
    )
    tts.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
