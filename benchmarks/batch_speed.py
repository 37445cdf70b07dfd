#!/usr/bin/env python3
"""Batched generation speed: LM milliseconds per frame per sequence for B sequences in one llama.cpp batch.

Runs `engine.batch.BatchedFrameGenerator` on a converted random checkpoint at the real 0.6B shape, B = 1, 2,
4, 8 different sentences at once, and times every step (one talker decode for all sequences, one predictor
frame = 16 batched decodes, the 15 stacked heads, all sampling). Random weights never stop on their own, and
the official sampler may pick EOS at any time, so EOS is banned for the run (the ban is one numpy assignment
per step, the compute is unchanged) and every sequence makes exactly `--frames` frames.

Also measured: the prefill (all prompts in one decode vs one decode per prompt: time to the first frame),
optionally the codec decoder on the generated codes (`--decoder`, for an end-to-end RTF estimate), and the
load other processes put on the machine while each block ran (/proc/stat), so noisy numbers are visible; a
point measured while others used more than `--max-others` cores is repeated (up to `--retries` times).

usage (from the repo root, product venv):
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/batch_speed.py --quant q8_0 \
      --out benchmarks/results
The converted folder is looked up in --folder, then under /work/benchwork/converted and /work/bench (folders
with manifest.json of that quant and size 0.6b), else built with the fixture generator into --work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen3tts_cli.convert.checkpoint import read_json  # noqa: E402
from qwen3tts_cli.engine.batch import BatchedFrameGenerator  # noqa: E402
from qwen3tts_cli.engine.llama import LlamaModel, LlamaOptions  # noqa: E402
from qwen3tts_cli.engine.prompt import Prompt, PromptConfig, custom_voice_prompt  # noqa: E402
from qwen3tts_cli.engine.sampling import GenerationSettings, TalkerRules  # noqa: E402
from qwen3tts_cli.engine.tables import Tables  # noqa: E402
from qwen3tts_cli.engine.text_tokenizer import TextTokenizer  # noqa: E402

FRAME_SECONDS = 0.08
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "A long text is split into sentences, and each one becomes a piece of audio.",
    "Several pieces can share one pass over the weights when they run together.",
    "On a small machine the memory bus, not the arithmetic, sets the pace.",
    "Every frame of speech lasts eighty milliseconds at twelve and a half hertz.",
    "The code predictor adds fifteen residual codes to each frame it is given.",
    "Batching trades the latency of one stream for the throughput of many.",
    "When the last sentence is done, the pieces are joined with short fades.",
]
SEARCH_ROOTS = [Path("/work/benchwork/converted"), Path("/work/bench")]
HZ = os.sysconf("SC_CLK_TCK")


# ---- load of other processes (/proc/stat) --------------------------------------------------------------
def _busy_and_steal() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq, steal


def _own_ticks() -> float:
    times = os.times()
    return (times.user + times.system) * HZ


class LoadMeter:
    """Cores used by this process, by other processes and stolen, over a block."""

    def __enter__(self) -> LoadMeter:
        self.start = time.perf_counter()
        self.busy, self.steal = _busy_and_steal()
        self.own = _own_ticks()
        return self

    def __exit__(self, *_exc: object) -> None:
        wall = time.perf_counter() - self.start
        busy, steal = _busy_and_steal()
        own = _own_ticks() - self.own
        self.self_cores = own / HZ / wall
        self.other_cores = max(0.0, (busy - self.busy - own) / HZ / wall)
        self.steal_cores = (steal - self.steal) / HZ / wall

    def as_dict(self) -> dict[str, float]:
        return {
            "self_cores": round(self.self_cores, 2),
            "other_cores": round(self.other_cores, 2),
            "steal_cores": round(self.steal_cores, 2),
        }


def wait_until_quiet(max_others: float, timeout: float) -> float:
    """Sample the other processes' load second by second until it is at most `max_others` cores (or the
    timeout passes); returns the last sample."""
    deadline = time.monotonic() + timeout
    while True:
        with LoadMeter() as meter:
            time.sleep(1.0)
        if meter.other_cores <= max_others or time.monotonic() >= deadline:
            return meter.other_cores


def rss_mb() -> float:
    """Resident memory of this process now (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


# ---- timing wrappers -------------------------------------------------------------------------------------
class TimedModel:
    """Forwards to a LlamaModel and adds up the wall time of its decodes."""

    def __init__(self, model: LlamaModel) -> None:
        self.model = model
        self.seconds = 0.0
        self.n_seq_max = model.n_seq_max

    def clear(self) -> None:
        self.model.clear()

    def clear_sequence(self, seq: int) -> None:
        self.model.clear_sequence(seq)

    def decode_sequences(self, embeds: np.ndarray, seq_ids: np.ndarray) -> tuple[Any, Any]:
        start = time.perf_counter()
        try:
            return self.model.decode_sequences(embeds, seq_ids)
        finally:
            self.seconds += time.perf_counter() - start


class TimedTables:
    """Forwards to Tables and adds up the wall time of the predictor heads."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.seconds = 0.0

    def codec_embed(self, group: int, ids: np.ndarray) -> np.ndarray:
        return self.tables.codec_embed(group, ids)

    def project(self, x: np.ndarray) -> np.ndarray:
        return self.tables.project(x)

    def predictor_head(self, group: int, hidden: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            return self.tables.predictor_head(group, hidden)
        finally:
            self.seconds += time.perf_counter() - start

    def predictor_head_rows(self, group: int, hidden: np.ndarray) -> Sequence[np.ndarray]:
        start = time.perf_counter()
        try:
            return self.tables.predictor_head_rows(group, hidden)
        finally:
            self.seconds += time.perf_counter() - start


@dataclass
class StepClock:
    """Wall time of every batched step, split into talker decode, predictor decodes and the rest."""

    walls: list[float] = field(default_factory=list)
    talker: list[float] = field(default_factory=list)
    predictor: list[float] = field(default_factory=list)
    heads: list[float] = field(default_factory=list)


def timed_steps(
    events: Iterator[tuple[int, np.ndarray]],
    talker: TimedModel,
    predictor: TimedModel,
    tables: TimedTables,
    first: int,
) -> tuple[StepClock, float, dict[int, list[np.ndarray]]]:
    """Consume the events; a step ends when sequence `first`'s frame arrives (the first in slot order).

    Returns the clock of every step after the first, the time to the first frame, and the frames."""
    clock = StepClock()
    frames: dict[int, list[np.ndarray]] = {}
    start = time.perf_counter()
    last = (start, 0.0, 0.0, 0.0)
    to_first = 0.0
    for index, frame in events:
        frames.setdefault(index, []).append(frame)
        if index != first:
            continue
        now = (time.perf_counter(), talker.seconds, predictor.seconds, tables.seconds)
        if len(frames[first]) == 1:
            to_first = now[0] - start
        else:
            clock.walls.append(now[0] - last[0])
            clock.talker.append(now[1] - last[1])
            clock.predictor.append(now[2] - last[2])
            clock.heads.append(now[3] - last[3])
        last = now
    return clock, to_first, frames


# ---- the model folder and prompts -------------------------------------------------------------------------
def find_folder(quant: str, size: str, folder: str | None, work: Path) -> Path:
    """--folder, else a converted folder of this quant and size found under SEARCH_ROOTS, else build one."""
    if folder:
        return Path(folder)
    size_tag = {"0.6b": "0b6", "1.7b": "1b7"}.get(size, size)
    for root in [*SEARCH_ROOTS, work]:
        for manifest in sorted(root.glob("*/manifest.json")) if root.is_dir() else []:
            info = json.loads(manifest.read_text())
            if (info.get("quant"), info.get("size_tag"), info.get("kind")) == (
                quant,
                size_tag,
                "custom_voice",
            ):
                return manifest.parent
    return build_folder(quant, size, work)


def build_folder(quant: str, size: str, work: Path) -> Path:
    from qwen3tts_cli.convert.converter import convert_checkpoint
    from qwen3tts_cli.fixtures.checkpoint import build_checkpoint

    out = work / f"custom_voice-{size}-{quant}"
    if (out / "manifest.json").is_file():
        return out
    source = work / f"checkpoint-{size}"
    if not (source / "config.json").is_file():
        print(f"building a random {size} checkpoint in {source} ...", flush=True)
        build_checkpoint(source, "custom_voice", size, seed=0)
    print(f"converting to {quant} in {out} ...", flush=True)
    return convert_checkpoint(source, out, quant, threads=2)


def make_prompts(folder: Path, count: int) -> tuple[Tables, list[Prompt], dict[str, Any], dict[str, Any]]:
    config = read_json(folder / "config.json")
    prompt_config = PromptConfig.from_config(config)
    tokenizer = TextTokenizer(folder / "tokenizer.json")
    tables = Tables(folder / "tables.safetensors", int8_heads=True)  # as the product: 8-bit where stored
    speaker = next(iter(prompt_config.speaker_ids))
    prompts = [
        custom_voice_prompt(
            prompt_config,
            tables,
            tokenizer.assistant_ids(SENTENCES[i % len(SENTENCES)]),
            speaker,
            "English",
        )
        for i in range(count)
    ]
    generation = folder / "generation_config.json"
    return tables, prompts, config, read_json(generation) if generation.is_file() else {}


# ---- one measurement -------------------------------------------------------------------------------------
@dataclass
class Setup:
    folder: Path
    tables: Tables
    prompts: list[Prompt]
    config: dict[str, Any]
    generation: dict[str, Any]
    threads: int
    frames: int
    warmup: int
    unified: bool
    slots: int | None = None  # sequences the contexts hold (default: the batch size)


def open_pair(setup: Setup, slots: int) -> tuple[LlamaModel, LlamaModel]:
    longest = max(len(p.prefill) for p in setup.prompts)
    talker_ctx = 256 * -(-(longest + setup.frames + 8) // 256)
    talker = LlamaModel(
        setup.folder / "talker.gguf",
        LlamaOptions(
            n_ctx=talker_ctx,
            n_threads=setup.threads,
            n_seq_max=slots,
            kv_unified=setup.unified,
            # as LoadedModel for quantized models: a q8_0 KV cache (f16 for f16/f32 weights)
            kv_type="f16" if read_json(setup.folder / "manifest.json")["quant"] in ("f16", "f32") else "q8_0",
            flash_attn="on",
        ),
    )
    predictor = LlamaModel(
        setup.folder / "predictor.gguf",
        LlamaOptions(
            n_ctx=16,
            n_batch=max(16, 2 * slots),
            n_threads=setup.threads,
            want_logits=False,
            n_seq_max=slots,
            kv_unified=setup.unified,
        ),
    )
    return talker, predictor


def settings_for(setup: Setup, count: int, frames: int) -> list[GenerationSettings]:
    base = GenerationSettings.from_generation_config(setup.generation, max_new_tokens=frames + 1)
    return [replace(base, seed=1000 + i) for i in range(count)]


def no_eos_rules(setup: Setup, settings: GenerationSettings) -> TalkerRules:
    rules = TalkerRules.from_talker_config(setup.config.get("talker_config", {}), settings.repetition_penalty)
    return replace(rules, min_new_tokens=10**9)  # fixed frame counts: EOS is never allowed


def measure_steps(setup: Setup, batch: int, joint_prefill: bool = True) -> dict[str, Any]:
    """Time `frames` steps of `batch` sequences (the first `warmup` steps are dropped)."""
    talker, predictor = open_pair(setup, max(batch, setup.slots or batch))
    rss_open = rss_mb()
    with talker, predictor:
        timed_talker, timed_predictor = TimedModel(talker), TimedModel(predictor)
        timed_tables = TimedTables(setup.tables)
        settings = settings_for(setup, batch, setup.frames)
        generator = BatchedFrameGenerator(
            timed_talker,
            timed_predictor,
            timed_tables,
            no_eos_rules(setup, settings[0]),
            joint_prefill=joint_prefill,
        )
        load_before = loadavg()
        with LoadMeter() as meter:
            clock, to_first, frames = timed_steps(
                generator.frames(setup.prompts[:batch], settings),
                timed_talker,
                timed_predictor,
                timed_tables,
                first=0,
            )
        rss_end = rss_mb()
    assert all(len(f) == setup.frames for f in frames.values()), "a sequence stopped early"
    keep = slice(setup.warmup, None)
    walls, talk, pred, heads = clock.walls[keep], clock.talker[keep], clock.predictor[keep], clock.heads[keep]
    step = statistics.median(walls)
    talker_ms = statistics.median(talk) * 1e3
    predictor_ms = statistics.median(pred) * 1e3
    heads_ms = statistics.median(heads) * 1e3
    rest = [w - t - p - h for w, t, p, h in zip(walls, talk, pred, heads, strict=True)]
    rest_ms = statistics.median(rest) * 1e3
    return {
        "batch": batch,
        "joint_prefill": joint_prefill,
        "steps_timed": len(walls),
        "step_ms_median": round(step * 1e3, 1),
        "step_ms_min": round(min(walls) * 1e3, 1),
        "talker_ms": round(talker_ms, 1),
        "predictor_ms": round(predictor_ms, 1),
        "heads_ms": round(heads_ms, 1),
        "sampling_other_ms": round(rest_ms, 1),
        "ms_per_frame_per_seq": round(step * 1e3 / batch, 1),
        "lm_rtf_per_seq": round(step / batch / FRAME_SECONDS, 3),
        "first_frame_ms": round(to_first * 1e3, 1),
        "prompt_positions": [len(p.prefill) for p in setup.prompts[:batch]],
        "slots": max(batch, setup.slots or batch),
        "talker_ctx_per_seq": talker.n_ctx,
        "rss_mb_open": round(rss_open),
        "rss_mb_end": round(rss_end),
        "loadavg_before": load_before,
        **meter.as_dict(),
        "codes": {i: np.stack(f) for i, f in frames.items()},
    }


def measure_with_retries(setup: Setup, batch: int, args: argparse.Namespace, **kw: Any) -> dict[str, Any]:
    """Repeat a point measured while other processes were busy; keep the quietest run."""
    best: dict[str, Any] | None = None
    for attempt in range(1 + args.retries):
        wait_until_quiet(args.max_others, args.wait_quiet)
        result = measure_steps(setup, batch, **kw)
        result["attempt"] = attempt + 1
        if best is None or result["other_cores"] < best["other_cores"]:
            best = result
        if result["other_cores"] <= args.max_others:
            break
        print(f"  noisy (others {result['other_cores']:.2f} cores), repeating", flush=True)
    assert best is not None
    return best


def measure_decoder(setup: Setup, codes: dict[int, np.ndarray]) -> dict[str, Any]:
    """Decode every sequence's codes with one streaming decoder, one after another (as a caller would)."""
    from qwen3tts_cli.engine.decoder import StreamingDecoder

    decoder = StreamingDecoder(setup.folder / "codec_decoder.onnx", threads=setup.threads)
    decoder.decode(codes[0][:4])  # warm-up
    samples = 0
    with LoadMeter() as meter:
        start = time.perf_counter()
        for index in sorted(codes):
            decoder.reset()
            for begin in range(0, len(codes[index]), 8):
                samples += len(decoder.push(codes[index][begin : begin + 8]))
        seconds = time.perf_counter() - start
    audio = samples / 24000
    return {
        "decoder_seconds": round(seconds, 2),
        "audio_seconds": round(audio, 2),
        "decoder_rtf": round(seconds / audio, 3),
        **meter.as_dict(),
    }


def agreement(codes: dict[int, np.ndarray], earlier: dict[int, np.ndarray]) -> float | None:
    """Fraction of codes equal to the same sequence's codes in a smaller batch (same prompt and seed)."""
    shared = [i for i in codes if i in earlier]
    if not shared:
        return None
    return float(np.mean([np.mean(codes[i] == earlier[i]) for i in shared]))


# ---- report ------------------------------------------------------------------------------------------------
def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# Batched generation speed ({meta['size']}, {meta['threads']} threads)",
        "",
        f"{meta['cpu']}; llama-cpp-python {meta['llama_cpp_python']}; frames per sequence {meta['frames']} "
        f"(first {meta['warmup']} steps dropped); EOS banned so every sequence runs the same length; "
        "official sampling defaults (top-k 50, temperature 0.9) incl. the repetition penalty.",
        "",
        "| quant | B | step ms (median / min) | talker ms | predictor ms | heads ms | sampling+rest ms "
        "| LM ms per frame per seq | LM RTF per seq | speed-up vs B=1 | first frame ms | RSS MiB "
        "| codes = smaller batch | others / steal cores | loadavg before | slots | KV |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.get("kind") != "steps":
            continue
        solo = [
            x for x in results if x.get("kind") == "steps" and x["quant"] == r["quant"] and x["batch"] == 1
        ]
        speed_up = f"{solo[0]['ms_per_frame_per_seq'] / r['ms_per_frame_per_seq']:.2f}x" if solo else "n/a"
        lines.append(
            f"| {r['quant']} | {r['batch']} | {r['step_ms_median']} / {r['step_ms_min']} | {r['talker_ms']} "
            f"| {r['predictor_ms']} | {r['heads_ms']} | {r['sampling_other_ms']} "
            f"| **{r['ms_per_frame_per_seq']}** "
            f"| {r['lm_rtf_per_seq']} | {speed_up} "
            f"| {r['first_frame_ms']} | {r['rss_mb_end']} | {r['codes_equal_to_smaller_batch']} "
            f"| {r['other_cores']} / {r['steal_cores']} "
            f"| {' '.join(str(v) for v in r['loadavg_before'])} | {r['slots']} "
            f"| {'unified' if meta['kv_unified'] else 'per sequence'} {r['talker_ctx_per_seq']} |"
        )
    prefill = [r for r in results if r.get("kind") == "prefill"]
    if prefill:
        lines += [
            "",
            "Prefill: time to the first frame (all prompts prefilled + one predictor frame).",
            "",
            "| quant | B | one decode for all prompts ms | one decode per prompt ms | others cores |",
            "|---|---|---|---|---|",
        ]
        for r in prefill:
            lines.append(
                f"| {r['quant']} | {r['batch']} | {r['joint_ms']} | {r['separate_ms']} | {r['other_cores']} |"
            )
    decoders = [r for r in results if r.get("kind") == "decoder"]
    for r in decoders:
        lm = r["lm_seconds"]
        lines += [
            "",
            f"End to end estimate ({r['quant']}, B={r['batch']}): LM {lm:.2f} s + codec decoder "
            f"{r['decoder_seconds']} s for {r['audio_seconds']} s of audio -> RTF "
            f"{(lm + r['decoder_seconds']) / r['audio_seconds']:.3f} (decoder alone {r['decoder_rtf']}, "
            f"others {r['other_cores']} cores).",
        ]
    return "\n".join(lines) + "\n"


def meta_info(args: argparse.Namespace) -> dict[str, Any]:
    import llama_cpp

    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "size": args.size,
        "threads": args.threads,
        "frames": args.frames,
        "warmup": args.warmup,
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "llama_cpp_python": llama_cpp.__version__,
        "kv_unified": args.unified,
        "slots": args.slots,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quant", nargs="+", default=["q8_0"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--size", default="0.6b")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--folder", help="a converted model folder (its quant is used as given)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/qwen3tts-batch-bench"))
    parser.add_argument("--unified", action="store_true", help="one KV buffer for all sequences")
    parser.add_argument("--slots", type=int, help="open the contexts with this many sequences (default: B)")
    parser.add_argument("--prefill", action="store_true", help="also compare joint vs per-prompt prefill")
    parser.add_argument("--decoder", action="store_true", help="also decode the largest batch's codes")
    parser.add_argument("--max-others", type=float, default=0.15, help="cores; busier points are repeated")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--wait-quiet", type=float, default=120.0, help="seconds to wait for a quiet machine")
    parser.add_argument("--out", type=Path, help="folder for batch_speed.json / batch_speed.md")
    args = parser.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    meta = meta_info(args)
    results: list[dict[str, Any]] = []
    for quant in args.quant:
        folder = find_folder(quant, args.size, args.folder, args.work)
        tables, prompts, config, generation = make_prompts(folder, max(args.batch))
        setup = Setup(
            folder,
            tables,
            prompts,
            config,
            generation,
            args.threads,
            args.frames,
            args.warmup,
            args.unified,
            args.slots,
        )
        print(f"{quant}: {folder}", flush=True)
        seen_codes: dict[int, np.ndarray] = {}  # sequence -> its codes in the first batch that held it
        for batch in args.batch:
            result = measure_with_retries(setup, batch, args)
            codes = result.pop("codes")
            result["codes_equal_to_smaller_batch"] = agreement(codes, seen_codes)
            for index, frames in codes.items():
                seen_codes.setdefault(index, frames)
            results.append({"kind": "steps", "quant": quant, **result})
            print(
                f"  B={batch}: step {result['step_ms_median']} ms (talker {result['talker_ms']}, predictor "
                f"{result['predictor_ms']}, heads {result['heads_ms']}, "
                f"rest {result['sampling_other_ms']}) -> "
                f"{result['ms_per_frame_per_seq']} ms/frame/seq, RTF {result['lm_rtf_per_seq']}, "
                f"others {result['other_cores']} cores",
                flush=True,
            )
            if args.decoder and batch == max(args.batch):
                lm_seconds = result["step_ms_median"] / 1e3 * args.frames + result["first_frame_ms"] / 1e3
                decoded = measure_decoder(setup, codes)
                results.append(
                    {"kind": "decoder", "quant": quant, "batch": batch, "lm_seconds": lm_seconds, **decoded}
                )
                print(f"  decoder: {decoded}", flush=True)
        if args.prefill:
            for batch in [b for b in args.batch if b > 1]:
                short = replace(setup, frames=2, warmup=0)
                joint = measure_steps(short, batch, joint_prefill=True)
                separate = measure_steps(short, batch, joint_prefill=False)
                results.append(
                    {
                        "kind": "prefill",
                        "quant": quant,
                        "batch": batch,
                        "joint_ms": joint["first_frame_ms"],
                        "separate_ms": separate["first_frame_ms"],
                        "other_cores": max(joint["other_cores"], separate["other_cores"]),
                    }
                )
                print(
                    f"  prefill B={batch}: joint {joint['first_frame_ms']} ms, separate "
                    f"{separate['first_frame_ms']} ms",
                    flush=True,
                )
    report = markdown(results, meta)
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "batch_speed.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
        (args.out / "batch_speed.md").write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
