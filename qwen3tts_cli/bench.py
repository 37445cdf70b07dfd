"""The benchmark behind `qwen3tts bench`: speed on seeded random checkpoints at the real shapes.

Random weights never stop on their own, so every run generates a fixed number of frames. Each configuration
is measured in a fresh subprocess (`python -m qwen3tts_cli.bench ours ...`), so its peak RSS is its own and
one configuration's caches do not warm the next. Peers (the official PyTorch code, vox-tts, upstream
llama.cpp's own Qwen3-TTS pipeline and qwentts.cpp) run the same random weights through driver scripts in
`benchmarks/`, each in its own interpreter.

The machine is shared, so every measurement records how many cores OTHER processes used while it ran
(/proc/stat minus our own CPU time) and the load average: noisy numbers are visible as such.

This module's top level uses the standard library only: the peer drivers import its probes from
interpreters that do not have llama.cpp or onnxruntime.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "qwen3tts-bench/1"
FRAME_RATE = 12.5  # codec frames per second of audio
SAMPLE_RATE = 24000
SPEAKER = "ryan"
LANGUAGE = "english"
# one utterance of ordinary length (prefill ~30 positions), and a paragraph that splits into pieces
SHORT_TEXT = "The quick brown fox jumps over the lazy dog, then rests in the warm afternoon sun."
LONG_TEXT = (  # eight sentences, seven pieces: at 56 frames each, 31.4 s of speech
    "The morning train was late again. Nobody on the platform seemed surprised. "
    "A child counted the pigeons out loud while her father read the news. "
    "When the train finally arrived, everyone stepped aboard in silence. "
    "The carriage smelled of coffee and rain. An old man folded his umbrella with great care. "
    "Outside, the fields slid past in shades of grey and green. "
    "By the time they reached the city, the clouds had begun to lift."
)
QUANT_TO_VOX = {"q8_0": ("bf16", "q8"), "q4_k_m": ("bf16", "q4"), "q4_0": ("bf16", "q4"), "f16": ("f16", "")}
# qwentts.cpp's types for ours (its quantizer has k-quants and Q8_0 but no Q4_0, and BF16 as its 16-bit type)
QUANT_TO_QWENTTS = {"f32": "F32", "f16": "BF16", "q8_0": "Q8_0", "q5_k_m": "Q5_K_M", "q4_k_m": "Q4_K_M"}
Say = Callable[[str], None]


# ---- configuration and report ----------------------------------------------------------------------------
@dataclass
class BenchConfig:
    """What to measure; mirrors the options of `qwen3tts bench`."""

    size: str = "0.6b"
    quants: list[str] = field(default_factory=lambda: ["q8_0"])
    kind: str = "custom_voice"
    frames: int = 48
    repeats: int = 3
    threads: int | None = None
    long_text: bool = True
    long_frames: int = 56
    long_batch: int = 8  # pieces generated together for the long text (`say --batch`)
    greedy: bool = False
    seed: int = 1234
    workdir: Path = Path.home() / ".cache" / "qwen3tts" / "bench"
    out: Path = Path("bench-results")
    official_python: Path | None = None  # None: this interpreter when the peer is installed in it
    vox_python: Path | None = None
    # a llama.cpp source tree (the one llama-cpp-python was built from) whose converter makes the GGUFs of
    # upstream's own Qwen3-TTS pipeline (arch qwen3tts + mtmd); None: no llama.cpp column
    llama_cpp_source: Path | None = None
    # a qwentts.cpp source tree (convert.py + its built quantizer, see benchmarks/setup_qwentts.sh) and a
    # Python with its CPU wheel (realtimetts-qwen-native-cpu) and the converter's torch; None: no column
    qwentts_source: Path | None = None
    qwentts_python: Path | None = None
    peers: bool = True  # False: measure ours only, even where peers are installed
    peers_every_quant: bool = True
    tag: str = ""
    checkpoint_seed: int = 0
    blas_threads: int | None = None  # numpy's BLAS threads in our worker; None: as the environment says
    # text vocabulary of the random checkpoint: "auto" (the real Qwen one if dashscope is installed, else
    # the synthetic fixture), "fixture", or the path of a Qwen tiktoken rank file
    vocabulary: str = "auto"
    device: str = "auto"  # our language models' device (auto|cpu|cuda|vulkan|metal), as `say --device`
    gpu_layers: int | None = None  # None: all layers when on a GPU
    codec_device: str = "auto"  # ONNX Runtime provider for the codec (auto|cpu|cuda|dml|coreml)


@dataclass
class BenchReport:
    data: dict[str, Any]
    markdown: str
    json_path: Path
    markdown_path: Path


# ---- probes: memory, CPU load, machine (stdlib only; the peer drivers use them too) ----------------------
def peak_rss_mb(pid: str = "self") -> float | None:
    """Peak resident set size (VmHWM) of a process in MiB, or None where /proc is missing."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except (ImportError, OSError):
        return None


def _system_cpu_seconds() -> tuple[float, float] | None:
    """(busy, all) CPU seconds of the whole machine since boot, summed over cores (/proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # Windows has no load average
        return None


class CpuLoad:
    """CPU use of this process (and its waited-for children) and of everyone else over a stretch of time."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._system = _system_cpu_seconds()
        self._own = _own_cpu_seconds()
        self._loadavg = _loadavg()

    def result(self) -> dict[str, Any]:
        wall = max(time.perf_counter() - self._wall, 1e-9)
        own = (_own_cpu_seconds() - self._own) / wall
        record: dict[str, Any] = {
            "seconds": round(wall, 3),
            "own_cores": round(own, 3),
            "loadavg_start": self._loadavg,
            "loadavg_end": _loadavg(),
        }
        now = _system_cpu_seconds()
        if now is not None and self._system is not None:
            system = (now[0] - self._system[0]) / wall
            record["machine_cores_busy"] = round(system, 3)
            record["other_cores"] = round(max(0.0, system - own), 3)
        return record


@contextmanager
def cpu_load(into: dict[str, Any], key: str = "load") -> Iterator[None]:
    """Record the CPU load of the enclosed block into `into[key]`."""
    probe = CpuLoad()
    try:
        yield
    finally:
        into[key] = probe.result()


def machine_info() -> dict[str, Any]:
    """CPU model, cores and memory of this machine, and the Python that runs the benchmark."""
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next(
            (ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), ""
        )
        info["simd"] = [f for f in ("avx2", "avx512f", "avx512_vnni", "f16c", "fma") if f" {f}" in flags]
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return info


QUIET_CORES = 0.25  # a run is "quiet" when other processes used less than this many cores meanwhile


def repeat_quietly(
    run: Callable[[], dict[str, Any]], repeats: int, extra: int | None = None
) -> list[dict[str, Any]]:
    """Call `run` until `repeats` of its records were quiet, at most `repeats + extra` times (default 2x).

    With n_threads = cores, llama.cpp and torch slow down several-fold when another process takes a core,
    so noisy runs are repeated rather than averaged in; every run is kept (marked) in the record.
    """
    extra = repeats if extra is None else extra
    runs: list[dict[str, Any]] = []
    while len(runs) < repeats + extra:
        record = run()
        record["quiet"] = record.get("load", {}).get("other_cores", 0.0) < QUIET_CORES
        runs.append(record)
        if sum(r["quiet"] for r in runs) >= repeats:
            break
    return runs


def summary(values: list[float]) -> dict[str, float]:
    """min / median / max of a measurement over repeats."""
    return {
        "min": round(min(values), 4),
        "median": round(statistics.median(values), 4),
        "max": round(max(values), 4),
    }


# ---- preparation: checkpoints and converted folders, cached in the work dir ------------------------------
def resolve_vocabulary(choice: str) -> Path | None:
    """The tiktoken rank file a benchmark checkpoint takes its text vocabulary from; None: synthetic."""
    from qwen3tts_cli.errors import Qwen3TTSError
    from qwen3tts_cli.fixtures.qwen_vocab import find_qwen_tiktoken

    if choice == "fixture":
        return None
    if choice == "auto":
        return find_qwen_tiktoken()
    path = Path(choice).expanduser()
    if not path.is_file():
        raise Qwen3TTSError(
            f"vocabulary file {path} does not exist",
            "pass a Qwen tiktoken rank file (qwen.tiktoken), 'auto' or 'fixture'",
        )
    return path


def checkpoint_dir(workdir: Path, kind: str, size: str, seed: int = 0, real_vocabulary: bool = False) -> Path:
    suffix = "-qwenvocab" if real_vocabulary else ""
    return workdir / "checkpoints" / f"{kind}-{size}-seed{seed}{suffix}"


def converted_dir(workdir: Path, checkpoint: Path, quant: str) -> Path:
    return workdir / "converted" / f"{checkpoint.name}-{quant}"


_DONE = ".bench-complete.json"


def prepare_checkpoint(
    workdir: Path, kind: str, size: str, seed: int, say: Say, vocabulary: Path | None = None
) -> tuple[Path, dict]:
    """A seeded random checkpoint in the official layout; built once, then reused."""
    target = checkpoint_dir(workdir, kind, size, seed, real_vocabulary=vocabulary is not None)
    marker = target / _DONE
    if marker.is_file():
        return target, {**json.loads(marker.read_text()), "cached": True}
    from qwen3tts_cli.fixtures.checkpoint import build_checkpoint

    say(f"building a random {kind} checkpoint at {size} shapes in {target} ...")
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    start = time.perf_counter()
    build_checkpoint(staging, kind, size=size, seed=seed, vocabulary=vocabulary)
    record = {
        "kind": kind,
        "size": size,
        "seed": seed,
        "vocabulary": str(vocabulary) if vocabulary else "fixture (synthetic, ~3x more tokens for English)",
        "build_seconds": round(time.perf_counter() - start, 2),
    }
    record["bytes"] = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
    (staging / _DONE).write_text(json.dumps(record))
    staging.rename(target)
    return target, {**record, "cached": False}


def prompt_lengths(checkpoint: Path) -> dict[str, Any]:
    """Text tokens of the benchmark texts under the checkpoint's tokenizer (they set the prefill time)."""
    from qwen3tts_cli.convert.tokenizer import build_tokenizer
    from qwen3tts_cli.text import split_text

    tokenizer = build_tokenizer(checkpoint)

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return {"single": count(SHORT_TEXT), "long_pieces": [count(piece) for piece in split_text(LONG_TEXT)]}


def _current_conversion(folder: Path) -> bool:
    """Made by this converter version and holding every optional table it writes, so that the bench
    measures what a fresh conversion gives (older folders keep working for users, only slower)."""
    from qwen3tts_cli.convert.manifest import CONVERTER_VERSION

    try:
        version = json.loads((folder / "manifest.json").read_text())["converter_version"]
    except (OSError, ValueError, KeyError):
        return False
    return version == CONVERTER_VERSION and not _lacks_int8_projection(folder / "tables.safetensors")


def _lacks_int8_projection(tables: Path) -> bool:
    """A quantized folder with 8-bit heads and a `small_to_mtp_projection` but no 8-bit copy of the latter
    (converted before it existed)."""
    from qwen3tts_cli.convert.safetensors import SafetensorsFile
    from qwen3tts_cli.engine import tables as names
    from qwen3tts_cli.errors import Qwen3TTSError

    try:
        stored = set(SafetensorsFile(tables))
    except (OSError, ValueError, Qwen3TTSError):
        return True
    quantized = names.predictor_head_q8_names(1)[0] in stored
    return quantized and names.MTP_PROJECTION_WEIGHT in stored and names.MTP_PROJECTION_Q8[0] not in stored


def prepare_converted(
    workdir: Path, checkpoint: Path, quant: str, threads: int, say: Say
) -> tuple[Path, dict]:
    """The checkpoint converted at `quant` (in a subprocess, so its time and peak memory are its own)."""
    target = converted_dir(workdir, checkpoint, quant)
    record_file = target.parent / f"{target.name}.convert.json"
    if _current_conversion(target) and record_file.is_file():
        return target, {**json.loads(record_file.read_text()), "cached": True}
    shutil.rmtree(target, ignore_errors=True)  # missing, unfinished or made by an older converter
    say(f"converting to {quant} in {target} ...")
    target.parent.mkdir(parents=True, exist_ok=True)
    record = _run_worker(
        ["convert", str(checkpoint), str(target), "--quant", quant, "--threads", str(threads)], say
    )
    record_file.write_text(json.dumps(record))
    return target, {**record, "cached": False}


def _run_worker(
    args: list[str], say: Say, timeout: float = 7200, blas_threads: int | None = None
) -> dict[str, Any]:
    """Run `python -m qwen3tts_cli.bench ARGS` in a fresh interpreter; it writes its result as JSON."""
    with tempfile.TemporaryDirectory(prefix="qwen3tts-bench-") as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "qwen3tts_cli.bench", *args, "--result", str(result)]
        env = dict(os.environ)
        if blas_threads is not None:
            env.update(dict.fromkeys(_BLAS_VARS, str(blas_threads)))
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        if done.returncode != 0 or not result.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-12:]
            from qwen3tts_cli.errors import Qwen3TTSError

            raise Qwen3TTSError(
                f"benchmark worker `{' '.join(args[:1])}` failed ({done.returncode}): " + " | ".join(tail),
                "run it again; see the message above",
            )
        return json.loads(result.read_text())


# ---- our measurement (runs inside the worker) -------------------------------------------------------------
STAGES = ("talker", "predictor", "heads", "sampling", "decoder")


class FrameProfiler:
    """Times the calls of one loaded model by wrapping the methods the frame loop calls.

    The wrappers are instance attributes (and, for the samplers, the names `engine.generate` looks up), so
    engine code stays untouched; anything not wrapped shows up as `other`.
    """

    def __init__(self, model: Any) -> None:
        self.seconds = dict.fromkeys((*STAGES, "prefill"), 0.0)
        self.calls = dict.fromkeys((*STAGES, "prefill"), 0)
        # LM seconds by the thread count llama.cpp ran with (the decoder takes cores while it works), and
        # when the last LM call ended: what follows is decoding only
        self.lm_seconds_by_threads: dict[str, float] = {}
        self.last_lm_end: float | None = None
        # `decode` goes through `decode_sequences` too, so wrapping the latter times solo and batched steps
        self._wrap(model.talker, "decode_sequences", "talker")
        self._wrap(model.predictor, "decode_sequences", "predictor")
        for name in ("predictor_head", "predictor_head_rows", "codec_embed", "project", "frame_embed"):
            self._wrap(model.tables, name, "heads")
        # the decoder's own calls: on the worker thread when it runs beside the LMs
        self._wrap(model.decoder, "run", "decoder")
        self._wrap_samplers()

    def reset(self) -> None:
        for key in self.seconds:
            self.seconds[key] = 0.0
            self.calls[key] = 0
        self.lm_seconds_by_threads.clear()
        self.last_lm_end = None

    def _wrap(self, owner: Any, name: str, stage: str) -> None:
        original = getattr(owner, name, None)
        if original is not None:
            setattr(owner, name, self._timed(original, stage, owner))

    def _timed(self, function: Callable[..., Any], stage: str, owner: Any = None) -> Callable[..., Any]:
        seconds, calls, by_threads = self.seconds, self.calls, self.lm_seconds_by_threads
        is_lm = stage in ("talker", "predictor")

        def timed(*args: Any, **kwargs: Any) -> Any:
            key = stage
            if stage == "talker" and len(args) > 1 and _feeds_a_prompt(args[1]):
                key = "prefill"  # a piece's prompt (in a batch, with the other sequences' steps), not a step
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                end = time.perf_counter()
                seconds[key] += end - start
                calls[key] += 1
                if is_lm:
                    threads = str(getattr(owner, "threads_in_use", "?"))
                    by_threads[threads] = by_threads.get(threads, 0.0) + end - start
                    self.last_lm_end = end

        return timed

    def _wrap_samplers(self) -> None:
        from qwen3tts_cli.engine import batch, generate

        for module in (generate, batch):  # the solo and the batched frame loops
            for name in ("TalkerSampler", "PredictorSampler"):
                cls = getattr(module, name, None)
                if cls is None:
                    continue

                def make(*args: Any, _cls: Any = cls, **kwargs: Any) -> Callable[..., Any]:
                    return self._timed(_cls(*args, **kwargs), "sampling")

                setattr(module, name, make)


def _feeds_a_prompt(seq_ids: Any) -> bool:
    """Whether a talker call gives some sequence several positions at once (its prompt)."""
    ids = list(seq_ids)
    return len(ids) > len(set(ids))


def run_record(
    record: dict[str, Any],
    *,
    wall: float,
    first: float | None,
    audio: float,
    frames: int,
    pieces: int,
    stage_seconds: dict[str, float],
) -> dict[str, Any]:
    """One timed request in the shape every engine reports (ours and the peer drivers), into `record`."""
    record.update(
        wall_seconds=round(wall, 4),
        first_audio_seconds=round(first if first is not None else wall, 4),
        audio_seconds=round(audio, 4),
        frames=frames,
        pieces=pieces,
        rtf=round(wall / audio, 4) if audio else None,
        stage_seconds={k: round(v, 4) for k, v in stage_seconds.items()},
    )
    return record


def write_driver_result(
    path: Path,
    runs: list[dict[str, Any]],
    *,
    precision: str,
    threads: int,
    load_seconds: float,
    streaming: bool,
    versions: dict[str, str],
    **extra: Any,
) -> None:
    """A peer driver's measurement, written to --result in the shape `run_peer` reads back."""
    record = {
        "status": "ok",
        "precision": precision,
        "threads": threads,
        "load_seconds": round(load_seconds, 2),
        "single": stream_summary(runs),
        "peak_rss_mb": round(peak_rss_mb() or 0.0, 1),
        "sample_rate": SAMPLE_RATE,
        "streaming": streaming,
        "versions": versions,
        **extra,
    }
    path.write_text(json.dumps(record), encoding="utf-8")


def add_driver_arguments(parser: Any) -> None:
    """The options `run_peer` passes to every peer driver (benchmarks/*_driver.py)."""
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--greedy", action="store_true")
    parser.add_argument("--text", required=True)
    parser.add_argument("--speaker", default="ryan")
    parser.add_argument("--language", default="english")
    parser.add_argument("--result", type=Path, required=True)


def _timed_stream(tts: Any, profiler: FrameProfiler, text: str, **options: Any) -> dict[str, Any]:
    """One streamed request: wall time, first chunk, audio length, frames and the per-stage times."""
    profiler.reset()
    frames = [0]
    pieces: set[int] = set()

    def on_codes(piece: int, codes: Any) -> None:
        frames[0] += len(codes)
        if piece not in pieces:
            pieces.add(piece)

    record: dict[str, Any] = {}
    samples = 0
    first: float | None = None
    with cpu_load(record):
        start = time.perf_counter()
        for chunk in tts.stream(text, on_codes=on_codes, **options):
            if first is None and len(chunk.samples):
                first = time.perf_counter() - start
            samples += len(chunk.samples)
        end = time.perf_counter()
        wall = end - start
    run_record(
        record,
        wall=wall,
        first=first,
        audio=samples / SAMPLE_RATE,
        frames=frames[0],
        pieces=len(pieces),
        stage_seconds=profiler.seconds,
    )
    record.update(decoder_overlapped=bool(tts.model.cores.overlaps), stage_calls=dict(profiler.calls))
    record["lm_seconds_by_threads"] = {k: round(v, 4) for k, v in profiler.lm_seconds_by_threads.items()}
    if profiler.last_lm_end is not None:
        record["decoding_after_last_frame_seconds"] = round(end - profiler.last_lm_end, 4)
    return record


def _per_frame_split(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Milliseconds per generated frame for each timed stage (median over runs), plus prefill per piece.

    A stage a runtime does not time separately (a peer's sampling, say) is left out and lands in `other`.
    """
    split: dict[str, float] = {}
    for stage in STAGES:
        if all(stage in r["stage_seconds"] for r in runs):
            split[stage] = statistics.median(
                1000 * r["stage_seconds"][stage] / max(r["frames"], 1) for r in runs
            )
    split["other"] = statistics.median(
        1000 * (r["wall_seconds"] - _serial_seconds(r)) / max(r["frames"], 1) for r in runs
    )
    split["total"] = statistics.median(1000 * r["wall_seconds"] / max(r["frames"], 1) for r in runs)
    if all("prefill" in r["stage_seconds"] for r in runs):
        split["prefill_per_piece"] = statistics.median(
            1000 * r["stage_seconds"]["prefill"] / max(r["pieces"], 1) for r in runs
        )
    return {k: round(v, 2) for k, v in split.items()}


def _serial_seconds(run: dict[str, Any]) -> float:
    """Stage time spent on the caller's thread: a decoder running beside the LMs is not part of it."""
    stages = run["stage_seconds"]
    if run.get("decoder_overlapped"):
        return sum(v for k, v in stages.items() if k != "decoder")
    return sum(stages.values())


def measure_ours(
    folder: Path,
    *,
    frames: int,
    repeats: int,
    threads: int,
    greedy: bool,
    seed: int,
    long_text: bool,
    long_frames: int,
    long_batch: int = 1,
    device: str = "auto",
    gpu_layers: int | None = None,
    codec_device: str = "auto",
) -> dict[str, Any]:
    """Load a converted folder and time streaming requests. Runs in a fresh process (see `main`).

    The single sentence runs on a model opened for one sequence, so its peak RSS is that of a plain `say`;
    the long text then runs on a second load with `long_batch` sequence slots (their KV caches cost more)."""
    from qwen3tts_cli.model import LoadedModel
    from qwen3tts_cli.tts import TTS, SamplingOptions

    result: dict[str, Any] = {"folder": str(folder), "threads": threads, "blas": _blas_info()}
    start = time.perf_counter()
    placed = {"device": device, "gpu_layers": gpu_layers, "codec_device": codec_device}
    model = LoadedModel(folder, threads=threads, **placed)
    result["load_seconds"] = round(time.perf_counter() - start, 3)
    result["devices"] = model.devices_used()
    result["rss_after_load_mb"] = _current_rss_mb()
    tts = TTS(model)
    profiler = FrameProfiler(model)
    speaker = SPEAKER if model.kind == "custom_voice" else None
    options: dict[str, Any] = {
        "sampling": SamplingOptions(greedy=greedy),
        "seed": seed,
        "language": LANGUAGE if LANGUAGE in model.languages else "auto",
    }
    if speaker is not None:
        options["speaker"] = speaker
    if model.kind == "voice_design":
        options["instruct"] = "A calm, clear adult voice."
    _timed_stream(tts, profiler, SHORT_TEXT, max_frames=min(frames, 4), split=False, **options)  # warm-up
    runs = repeat_quietly(
        lambda: _timed_stream(tts, profiler, SHORT_TEXT, max_frames=frames, split=False, **options), repeats
    )
    result["single"] = stream_summary(runs)
    result["peak_rss_mb"] = round(peak_rss_mb() or 0.0, 1)
    model.close()
    if long_text:
        model = LoadedModel(folder, threads=threads, max_batch=long_batch, **placed)
        tts = TTS(model)
        profiler = FrameProfiler(model)
        options["batch"] = long_batch
        long_runs = repeat_quietly(
            lambda: _timed_stream(tts, profiler, LONG_TEXT, max_frames=long_frames, **options), repeats
        )
        result["long"] = stream_summary(long_runs)
        result["long"]["batch"] = long_batch
        result["long_peak_rss_mb"] = round(peak_rss_mb() or 0.0, 1)
        model.close()
    return result


def _blas_info() -> dict[str, Any]:
    """numpy's BLAS and its thread count in this process (numpy heads share the cores with llama.cpp)."""
    info: dict[str, Any] = {k: os.environ[k] for k in _THREAD_VARS if k in os.environ}
    try:
        from threadpoolctl import threadpool_info

        info["pools"] = [
            {k: p.get(k) for k in ("internal_api", "num_threads", "architecture")} for p in threadpool_info()
        ]
    except ImportError:
        pass
    return info


def stream_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs of one request (each: wall/first-audio/audio seconds, frames, pieces, rtf, stage_seconds, load)
    summarised: min/median/max and the per-frame split, over the quiet runs when there are any (else over
    all, and `used` says so). The peer drivers report in the same shape."""
    quiet = [r for r in runs if r.get("quiet", True)]
    used = quiet or runs
    return {
        "runs": runs,
        "used": "quiet" if quiet else "all (none was quiet)",
        "quiet_runs": len(quiet),
        "rtf": summary([r["rtf"] for r in used if r["rtf"] is not None] or [float("nan")]),
        "first_audio_seconds": summary([r["first_audio_seconds"] for r in used]),
        "wall_seconds": summary([r["wall_seconds"] for r in used]),
        "audio_seconds": used[0]["audio_seconds"],
        "frames": used[0]["frames"],
        "pieces": used[0]["pieces"],
        "per_frame_ms": _per_frame_split(used),
        "other_cores": summary([r.get("load", {}).get("other_cores", 0.0) for r in used]),
    }


def _current_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


# ---- peers ----------------------------------------------------------------------------------------------
def benchmarks_dir() -> Path | None:
    """The repository's benchmarks/ folder with the peer drivers (absent in an installed wheel)."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    return folder if (folder / "official_driver.py").is_file() else None


# what a peer driver imports: with these installed here, this interpreter runs the peer by itself
PEER_MODULES = {
    "official": ("torch", "qwen_tts"),
    "vox": ("vox",),
    "upstream": ("llama_cpp",),
    "qwentts": ("qwentts_cpp_cpu", "torch", "safetensors", "gguf"),  # the wheel + what convert.py imports
}
# where a missing peer comes from
PEER_HINTS = {
    "official": "install torch + qwen-tts here, or pass --official-python",
    "vox": "install vox-tts here, or pass --vox-python; see benchmarks/setup_vox.sh",
    "upstream": "install llama-cpp-python here",
    "qwentts": "pass --qwentts-python; see benchmarks/setup_qwentts.sh",
}


def peer_python(name: str, given: Path | None) -> Path | None:
    """The interpreter that runs peer `name`: the one given, else this one when the peer is installed in it
    (found without importing it), else None."""
    if given is not None:
        return given
    try:
        installed = all(importlib.util.find_spec(module) is not None for module in PEER_MODULES[name])
    except (ImportError, ValueError):
        installed = False
    return Path(sys.executable) if installed else None


def run_peer(name: str, python: Path | None, args: list[str], say: Say, timeout: float = 7200) -> dict:
    """Run a peer driver script from benchmarks/ in its own interpreter; a missing peer says so."""
    if python is None:
        return {"status": f"not installed ({PEER_HINTS.get(name, 'install it here')})"}
    if not Path(python).exists():
        return {"status": f"not installed ({python} does not exist)"}
    folder = benchmarks_dir()
    if folder is None:
        return {"status": "driver scripts not found (run from a source checkout)"}
    with tempfile.TemporaryDirectory(prefix=f"qwen3tts-{name}-") as tmp:
        result = Path(tmp) / "result.json"
        command = [str(python), str(folder / f"{name}_driver.py"), *args, "--result", str(result)]
        say(f"running {name}: {' '.join(command[1:])}")
        env = dict(os.environ, PYTHONPATH=str(folder.parent))
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"status": f"failed: timed out after {timeout:.0f} s"}
        if done.returncode != 0 or not result.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-6:]
            return {"status": f"failed ({done.returncode}): " + " | ".join(tail)}
        record = json.loads(result.read_text())
        record.setdefault("status", "ok")
        return record


def _peer_common_args(config: BenchConfig, threads: int) -> list[str]:
    args = ["--frames", str(config.frames), "--repeats", str(config.repeats), "--threads", str(threads)]
    args += ["--seed", str(config.seed), "--text", SHORT_TEXT, "--speaker", SPEAKER, "--language", LANGUAGE]
    return args + (["--greedy"] if config.greedy else [])


# ---- the whole run --------------------------------------------------------------------------------------
def default_threads() -> int:
    from qwen3tts_cli.engine.llama import free_cores

    return free_cores()


def run_benchmark(config: BenchConfig, say: Say = lambda _line: None) -> BenchReport:
    """Prepare, measure ours at every quant and the peers, write JSON + markdown into `config.out`."""
    from qwen3tts_cli.errors import Qwen3TTSError

    check_config(config)
    threads = config.threads or default_threads()
    workdir = Path(config.workdir).expanduser()
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {**_jsonable(asdict(config)), "threads": threads},
        "machine": machine_info(),
        "text": {"single": SHORT_TEXT, "long": LONG_TEXT},
        "environment": {k: os.environ[k] for k in _THREAD_VARS if k in os.environ},
        "ours": {},
        "official": None,
        "vox": {},
        "upstream": {},
        "qwentts": {},
    }
    from qwen3tts_cli import __version__

    data["version"] = __version__
    checkpoint, record = prepare_checkpoint(
        workdir, config.kind, config.size, config.checkpoint_seed, say, resolve_vocabulary(config.vocabulary)
    )
    data["checkpoint"] = {**record, "folder": str(checkpoint)}
    data["text"]["tokens"] = prompt_lengths(checkpoint)
    for quant in config.quants:
        try:
            folder, conversion = prepare_converted(workdir, checkpoint, quant, threads, say)
        except Qwen3TTSError as exc:
            data["ours"][quant] = {"status": f"conversion failed: {exc}"}
            continue
        say(f"measuring ours at {quant} ({config.frames} frames x {config.repeats}, {threads} threads) ...")
        entry: dict[str, Any] = {"conversion": conversion}
        try:
            entry.update(
                _run_worker(_ours_args(folder, config, threads), say, blas_threads=config.blas_threads)
            )
            entry["status"] = "ok"
        except Qwen3TTSError as exc:
            entry["status"] = f"failed: {exc}"
        data["ours"][quant] = entry
        say(_one_line(quant, entry))
    if not config.peers:
        data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return write_report(data, Path(config.out), config.tag)
    data["official"] = run_peer(
        "official",
        peer_python("official", config.official_python),
        ["--checkpoint", str(checkpoint), *_peer_common_args(config, threads)],
        say,
    )
    vox_quants = config.quants if config.peers_every_quant else config.quants[:1]
    for quant in vox_quants:
        dtype, vox_quant = QUANT_TO_VOX.get(quant, ("bf16", "q8"))
        label = vox_quant or dtype
        if label in data["vox"]:
            continue
        tmod = workdir / "vox" / f"{checkpoint.name}-{label}.tmod"
        args = ["--checkpoint", str(checkpoint), "--tmod", str(tmod), "--dtype", dtype, "--quant", vox_quant]
        data["vox"][label] = run_peer(
            "vox", peer_python("vox", config.vox_python), args + _peer_common_args(config, threads), say
        )
    data["upstream"] = _run_upstream(config, workdir, threads, say)
    data["qwentts"] = _run_qwentts(config, workdir, checkpoint, threads, say)
    data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return write_report(data, Path(config.out), config.tag)


def _run_upstream(config: BenchConfig, workdir: Path, threads: int, say: Say) -> dict[str, Any]:
    """Upstream llama.cpp's Qwen3-TTS pipeline at each quant, on a Base checkpoint of the same size and seed:
    upstream loads only checkpoints with a speaker encoder, and the talker, predictor and codec have the
    same shapes in every kind. Its converter needs torch: it runs in the official peer's interpreter."""
    quants = config.quants if config.peers_every_quant else config.quants[:1]
    source = Path(config.llama_cpp_source).expanduser() if config.llama_cpp_source else None
    converter = peer_python("official", config.official_python)
    if source is None:
        reason = "pass --llama-cpp-source; see benchmarks/setup_upstream.sh"
    elif not (source / "convert_hf_to_gguf.py").is_file():
        reason = f"no convert_hf_to_gguf.py in {source}; make it with benchmarks/setup_upstream.sh"
    elif converter is None:
        reason = "upstream's converter needs a Python with torch: pass --official-python"
    else:
        reason = ""
    if reason:
        return {quant: {"status": f"not run ({reason})"} for quant in quants}
    checkpoint, _ = prepare_checkpoint(
        workdir, "base", config.size, config.checkpoint_seed, say, resolve_vocabulary(config.vocabulary)
    )
    records: dict[str, Any] = {}
    for quant in quants:
        args = ["--checkpoint", str(checkpoint), "--llama-cpp-source", str(source), "--quant", quant]
        args += ["--converter-python", str(converter), "--gguf-dir", str(workdir / "upstream")]
        records[quant] = run_peer(
            "upstream", peer_python("upstream", None), args + _peer_common_args(config, threads), say
        )
    return records


def _run_qwentts(
    config: BenchConfig, workdir: Path, checkpoint: Path, threads: int, say: Say
) -> dict[str, Any]:
    """qwentts.cpp at each quant on the same checkpoint as ours, converted by its own convert.py and
    quantizer from the local source tree (cached under workdir/qwentts), timed by benchmarks/qwentts_driver.py
    in the interpreter that has its CPU wheel."""
    quants = config.quants if config.peers_every_quant else config.quants[:1]
    source = Path(config.qwentts_source).expanduser() if config.qwentts_source else None
    if source is None:
        reason = "pass --qwentts-source; see benchmarks/setup_qwentts.sh"
    elif not (source / "convert.py").is_file():
        reason = f"no convert.py in {source}; make it with benchmarks/setup_qwentts.sh"
    else:
        reason = ""
    records: dict[str, Any] = {}
    for quant in quants:
        qtype = QUANT_TO_QWENTTS.get(quant)
        if reason:
            records[quant] = {"status": f"not run ({reason})"}
        elif qtype is None:
            formats = ", ".join(sorted(set(QUANT_TO_QWENTTS.values())))
            records[quant] = {"status": f"not run (qwentts.cpp has no {quant}; it has {formats})"}
        elif qtype != "F32" and not (source / "build" / "quantize").is_file():
            hint = "build it with benchmarks/setup_qwentts.sh"
            records[quant] = {"status": f"not run (no quantizer in {source}/build; {hint})"}
        else:
            args = ["--checkpoint", str(checkpoint), "--qwentts-source", str(source), "--quant", quant]
            args += ["--gguf-dir", str(workdir / "qwentts")]
            records[quant] = run_peer(
                "qwentts",
                peer_python("qwentts", config.qwentts_python),
                args + _peer_common_args(config, threads),
                say,
            )
    return records


def check_config(config: BenchConfig) -> None:
    """Refuse unknown sizes, kinds and precisions before anything is built."""
    from qwen3tts_cli import spec
    from qwen3tts_cli.convert.quantize import QUANT_TYPES
    from qwen3tts_cli.errors import Qwen3TTSError
    from qwen3tts_cli.fixtures.checkpoint import SIZES

    if config.size not in SIZES:
        raise Qwen3TTSError(f"unknown size {config.size!r}", f"use one of {', '.join(SIZES)}")
    if config.kind not in spec.MODEL_KINDS:
        raise Qwen3TTSError(f"unknown kind {config.kind!r}", f"use one of {', '.join(spec.MODEL_KINDS)}")
    unknown = [q for q in config.quants if q not in QUANT_TYPES]
    if unknown:
        raise Qwen3TTSError(f"unknown precision {unknown[0]!r}", f"use one of {', '.join(QUANT_TYPES)}")
    if config.frames < 1 or config.repeats < 1 or config.long_frames < 1:
        raise Qwen3TTSError("frames, repeats and long frames must be at least 1", "pass positive numbers")
    from qwen3tts_cli.engine.devices import choose_codec_provider, onnx_providers, place_language_models

    place_language_models(config.device, config.gpu_layers)  # a missing device fails before any build
    choose_codec_provider(config.codec_device, onnx_providers())


_BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_THREAD_VARS = (*_BLAS_VARS, "OMP_WAIT_POLICY", "OPENBLAS_CORETYPE")


def _ours_args(folder: Path, config: BenchConfig, threads: int) -> list[str]:
    args = ["ours", str(folder), "--frames", str(config.frames), "--repeats", str(config.repeats)]
    args += ["--threads", str(threads), "--seed", str(config.seed), "--long-frames", str(config.long_frames)]
    args += ["--long-batch", str(config.long_batch), "--device", config.device]
    args += ["--codec-device", config.codec_device]
    if config.gpu_layers is not None:
        args += ["--gpu-layers", str(config.gpu_layers)]
    if config.greedy:
        args.append("--greedy")
    if not config.long_text:
        args.append("--no-long-text")
    return args


def _one_line(quant: str, entry: dict[str, Any]) -> str:
    single = entry.get("single")
    if not single:
        return f"  {quant}: {entry.get('status')}"
    used = entry.get("devices") or {}
    where = (
        f" on {used['lm_device']} ({used['lm_description']})"
        if used.get("lm_backend", "CPU") != "CPU"
        else ""
    )
    return (
        f"  {quant}{where}: RTF {single['rtf']['median']:.3f} (min {single['rtf']['min']:.3f}), first audio"
        f" {1000 * single['first_audio_seconds']['median']:.0f} ms, peak RSS {entry['peak_rss_mb']:.0f} MiB,"
        f" other processes {single['other_cores']['median']:.2f} cores"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ---- output ---------------------------------------------------------------------------------------------
def write_report(data: dict[str, Any], out: Path, tag: str = "") -> BenchReport:
    out.mkdir(parents=True, exist_ok=True)
    config = data["config"]
    stem = f"bench-{config['size']}-{'-'.join(config['quants'])}" + (f"-{tag}" if tag else "")
    markdown = render_markdown(data)
    json_path, markdown_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    markdown_path.write_text(markdown, encoding="utf-8")
    return BenchReport(data, markdown, json_path, markdown_path)


def _fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None or value != value:  # None or NaN
        return "–"
    return f"{value:.{digits}f}{unit}"


def _peer_rtf(record: dict[str, Any] | None) -> float | None:
    if not record or record.get("status") != "ok":
        return None
    return record.get("single", {}).get("rtf", {}).get("median")


def _ratio(peer: float | None, ours: float | None) -> str:
    if peer is None or not ours:
        return "–"
    return f"{peer / ours:.2f}× faster" if peer >= ours else f"{ours / peer:.2f}× slower"


def _devices_seen(data: dict[str, Any]) -> str:
    """' (LMs on Vulkan0 llvmpipe ..., codec on CPUExecutionProvider)': what our runs really used."""
    seen = sorted(
        {
            f"LMs on {d['lm_device']} ({d['lm_description']}), codec on {d['codec_provider']}"
            for entry in data.get("ours", {}).values()
            if isinstance(entry, dict) and isinstance(d := entry.get("devices"), dict)
        }
    )
    return f" ({'; '.join(seen)})" if seen else ""


def render_markdown(data: dict[str, Any]) -> str:
    """The human summary: one row per configuration, ratios to each peer, the per-frame split, load."""
    config, machine = data["config"], data["machine"]
    lines = [
        f"# qwen3tts bench: {config['kind']} {config['size']}",
        "",
        f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('memory_gb')} GB;"
        f" threads {config['threads']} (numpy BLAS threads: {config.get('blas_threads') or 'inherited'});"
        f" ours: --device {config.get('device', 'auto')} --codec-device {config.get('codec_device', 'auto')}"
        f"{_devices_seen(data)};"
        f" {config['frames']} frames per run"
        f" ({config['frames'] / FRAME_RATE:.2f} s of audio), {config['repeats']} runs each,"
        f" {'greedy' if config['greedy'] else 'sampled'}"
        f" (seed {config['seed']}); started {data['started']}.",
        "",
        "RTF = wall seconds / audio seconds (lower is better; < 1 is faster than real time), median of the"
        " quiet runs (min in brackets). First audio = time to the first streamed chunk. `other cores` = CPU"
        f" used by other processes while measuring (median); a run is quiet below {QUIET_CORES}; noisy runs"
        " are repeated (up to twice the repeats) and left out of the numbers, but kept in the JSON.",
        "",
        "| engine | precision | RTF | first audio | peak RSS | long text RTF | other cores"
        " | vs official | vs vox | vs llama.cpp | vs qwentts.cpp |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    official_rtf = _peer_rtf(data.get("official"))
    for quant, entry in data["ours"].items():
        peers = {name: data.get(name) or {} for name in ("vox", "upstream", "qwentts")}
        lines.append(_our_row(quant, entry, official_rtf, peers))
    for name, record in _peer_records(data):
        lines.append(_peer_row(name, record))
    lines += ["", "## Where the time goes (ms per frame)", ""]
    lines += _split_table(data)
    lines += ["", "## Conversion", ""]
    lines += _conversion_table(data)
    lines.append("")
    return "\n".join(lines)


def _vox_label(quant: str) -> str:
    dtype, vox_quant = QUANT_TO_VOX.get(quant, ("bf16", "q8"))
    return vox_quant or dtype


def _peer_records(data: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """Every peer measurement of a report, named as the tables show it."""
    peers: list[tuple[str, dict[str, Any] | None]] = [("official (PyTorch fp32)", data.get("official"))]
    peers += [(f"vox-tts {label}", record) for label, record in data.get("vox", {}).items()]
    peers += [(f"llama.cpp qwen3tts+mtmd {q}", record) for q, record in (data.get("upstream") or {}).items()]
    peers += [(f"qwentts.cpp {q}", record) for q, record in (data.get("qwentts") or {}).items()]
    return peers


def _our_row(
    quant: str, entry: dict[str, Any], official_rtf: float | None, peers: dict[str, dict[str, Any]]
) -> str:
    """Our row; `peers` holds the per-precision records of vox, upstream and qwentts."""
    single = entry.get("single")
    if not single:
        return f"| qwen3tts | {quant} | {entry.get('status')} | | | | | | | | |"
    rtf = single["rtf"]
    long = entry.get("long")
    long_rtf = "–"
    if long:
        long_rtf = (
            f"{_fmt(long['rtf']['median'])} ({long['pieces']} pieces, {long['audio_seconds']:.1f} s,"
            f" batch {long.get('batch', 1)}, {_fmt(entry.get('long_peak_rss_mb'), 0, ' MiB')})"
        )
    vox_rtf = _peer_rtf(peers["vox"].get(_vox_label(quant)))
    upstream_rtf = _peer_rtf(peers["upstream"].get(quant))
    qwentts_rtf = _peer_rtf(peers["qwentts"].get(quant))
    return (
        f"| qwen3tts | {quant} | {_fmt(rtf['median'])} ({_fmt(rtf['min'])}) |"
        f" {_fmt(1000 * single['first_audio_seconds']['median'], 0, ' ms')} |"
        f" {_fmt(entry.get('peak_rss_mb'), 0, ' MiB')} | {long_rtf} |"
        f" {_quietness(single)} | {_ratio(official_rtf, rtf['median'])} |"
        f" {_ratio(vox_rtf, rtf['median'])} | {_ratio(upstream_rtf, rtf['median'])} |"
        f" {_ratio(qwentts_rtf, rtf['median'])} |"
    )


def _quietness(single: dict[str, Any]) -> str:
    runs = single.get("runs", [])
    quiet = single.get("quiet_runs", len(runs))
    return f"{_fmt(single.get('other_cores', {}).get('median'))} ({quiet}/{len(runs)} quiet)"


def _peer_row(name: str, record: dict[str, Any] | None) -> str:
    if not record or record.get("status") != "ok":
        status = (record or {}).get("status", "not run")
        return f"| {name} | | {status} | | | | | | | | |"
    single = record["single"]
    rtf = single["rtf"]
    return (
        f"| {name} | {record.get('precision', '')} | {_fmt(rtf['median'])} ({_fmt(rtf['min'])}) |"
        f" {_fmt(1000 * single['first_audio_seconds']['median'], 0, ' ms')}"
        f"{'' if record.get('streaming', True) else ' (no streaming)'} |"
        f" {_fmt(record.get('peak_rss_mb'), 0, ' MiB')} | – |"
        f" {_quietness(single)} | | | | |"
    )


def _split_table(data: dict[str, Any]) -> list[str]:
    head = "| precision | talker | predictor (15 steps) | heads+embeds | sampling | decoder | other | total |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for quant, entry in data["ours"].items():
        split = entry.get("single", {}).get("per_frame_ms")
        if not split:
            continue
        cells = " | ".join(_fmt(split[k], 1) for k in (*STAGES, "other", "total"))
        lines.append(f"| {quant} | {cells} |")
    for quant, entry in data["ours"].items():
        long = entry.get("long") or {}
        split = long.get("per_frame_ms")
        if split:  # per frame of one piece; the batch steps all its pieces at once
            cells = " | ".join(_fmt(split.get(k), 1) for k in (*STAGES, "other", "total"))
            lines.append(f"| {quant}, long text (batch {long.get('batch', '?')}) | {cells} |")
    for label, record in _peer_records(data):
        split = (record or {}).get("single", {}).get("per_frame_ms")
        if not split:
            continue
        cells = " | ".join(_fmt(split.get(k), 1) for k in (*STAGES, "other", "total"))
        lines.append(f"| {label} | {cells} |")
    prefill = {
        q: e.get("single", {}).get("per_frame_ms", {}).get("prefill_per_piece")
        for q, e in data["ours"].items()
    }
    for label, record in _peer_records(data):  # the peers that time their prompt apart
        peer_prefill = (record or {}).get("single", {}).get("per_frame_ms", {}).get("prefill_per_piece")
        if peer_prefill is not None:
            prefill[label] = peer_prefill
    lines += [
        "",
        "Prompt prefill (ms, once per piece): " + ", ".join(f"{q} {_fmt(v, 0)}" for q, v in prefill.items()),
        "",
        "Long-text rows: ms per generated frame, summed over the batch's sequences (one batched talker"
        " call serves every piece; its prompt prefills, counted apart, share calls with the others' steps).",
    ]
    lines += _long_text_budget(data)
    overlapped = any(
        run.get("decoder_overlapped")
        for entry in data["ours"].values()
        for run in entry.get("single", {}).get("runs", [])
    )
    if overlapped:
        lines += [
            "",
            "Our decoder runs on its own thread beside the LMs (which use fewer threads meanwhile): its"
            " column is time on that thread, not part of `other` = wall - the caller thread's stages.",
        ]
    return lines


def _long_text_budget(data: dict[str, Any]) -> list[str]:
    """Where the long text's core-seconds went in its median run: LM time per thread count, the decoder
    beside it, and the decoding left after the last frame (what keeps a batch from real time)."""
    lines: list[str] = []
    for quant, entry in data["ours"].items():
        runs = [r for r in (entry.get("long") or {}).get("runs", []) if "lm_seconds_by_threads" in r]
        if not runs:
            continue
        run = sorted(runs, key=lambda r: r["wall_seconds"])[len(runs) // 2]
        lm = ", ".join(
            f"{seconds:.1f} s on {threads} thread{'s' if threads != '1' else ''}"
            for threads, seconds in sorted(run["lm_seconds_by_threads"].items())
        )
        decoder = run["stage_seconds"].get("decoder", 0.0)
        tail = run.get("decoding_after_last_frame_seconds")
        lines.append(
            f"- {quant} long text, median run ({run['wall_seconds']:.1f} s for {run['audio_seconds']:.1f} s"
            f" of audio): LMs {lm}; decoder {decoder:.1f} s beside them; {_fmt(tail, 1)} s of decoding"
            " after the last frame."
        )
    return ["", *lines] if lines else []


def _conversion_table(data: dict[str, Any]) -> list[str]:
    ckpt = data.get("checkpoint", {})
    lines = [
        f"Random checkpoint: {ckpt.get('bytes', 0) / 1e9:.2f} GB, built in"
        f" {_fmt(ckpt.get('build_seconds'), 1, ' s')}{' (cached)' if ckpt.get('cached') else ''}.",
        "",
        "| precision | convert time | convert peak RSS | model folder |",
        "|---|---|---|---|",
    ]
    for quant, entry in data["ours"].items():
        conv = entry.get("conversion")
        if not conv:
            continue
        lines.append(
            f"| {quant} | {_fmt(conv.get('seconds'), 1, ' s')} | {_fmt(conv.get('peak_rss_mb'), 0, ' MiB')} |"
            f" {conv.get('bytes', 0) / 1e6:.0f} MB |"
        )
    script = data.get("convert_script")
    if script:
        lines += [
            "",
            f"`{script.get('command')}`: {script.get('status')},"
            f" wall {_fmt(script.get('wall_seconds'), 1, ' s')},"
            f" peak RSS {_fmt(script.get('peak_rss_mb'), 0, ' MiB')}.",
        ]
    return lines


# ---- worker entry points (`python -m qwen3tts_cli.bench ...`) ---------------------------------------------
def _convert_worker(source: Path, target: Path, quant: str, threads: int) -> dict[str, Any]:
    from qwen3tts_cli.convert.converter import convert_checkpoint

    record: dict[str, Any] = {"quant": quant}
    with cpu_load(record):
        start = time.perf_counter()
        convert_checkpoint(source, target, quant=quant, threads=threads, overwrite=True)
        record["seconds"] = round(time.perf_counter() - start, 2)
    record["peak_rss_mb"] = round(peak_rss_mb() or 0.0, 1)
    record["bytes"] = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    return record


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m qwen3tts_cli.bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ours = sub.add_parser("ours", help="measure one converted folder")
    ours.add_argument("folder", type=Path)
    ours.add_argument("--frames", type=int, default=48)
    ours.add_argument("--repeats", type=int, default=3)
    ours.add_argument("--threads", type=int, default=2)
    ours.add_argument("--seed", type=int, default=1234)
    ours.add_argument("--greedy", action="store_true")
    ours.add_argument("--no-long-text", action="store_true")
    ours.add_argument("--long-frames", type=int, default=56)
    ours.add_argument("--long-batch", type=int, default=8)
    ours.add_argument("--device", default="auto")
    ours.add_argument("--gpu-layers", type=int, default=None)
    ours.add_argument("--codec-device", default="auto")
    ours.add_argument("--result", type=Path, required=True)
    convert = sub.add_parser("convert", help="convert a checkpoint, timing it")
    convert.add_argument("source", type=Path)
    convert.add_argument("target", type=Path)
    convert.add_argument("--quant", default="q8_0")
    convert.add_argument("--threads", type=int, default=2)
    convert.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "ours":
        record = measure_ours(
            args.folder,
            frames=args.frames,
            repeats=args.repeats,
            threads=args.threads,
            greedy=args.greedy,
            seed=args.seed,
            long_text=not args.no_long_text,
            long_frames=args.long_frames,
            long_batch=args.long_batch,
            device=args.device,
            gpu_layers=args.gpu_layers,
            codec_device=args.codec_device,
        )
    else:
        record = _convert_worker(args.source, args.target, args.quant, args.threads)
    args.result.write_text(json.dumps(record), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
