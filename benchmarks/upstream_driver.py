"""Time upstream llama.cpp's own Qwen3-TTS pipeline (arch `qwen3tts` + mtmd audio generation) for the bench.

The llama.cpp inside llama-cpp-python carries an experimental Qwen3-TTS path: the talker as a `qwen3tts`
GGUF, and an mmproj GGUF whose code predictor runs as one ggml graph per frame (15 steps, sampling on the
graph) and whose code2wav decoder is ggml too. This driver runs it the way upstream's `llama-tts` tool does
(`mtmd_helper_gen_audio_*`: prompt, then one `step_gen` per frame, then `get_output`), through the ctypes
bindings that ship with llama-cpp-python, so it needs nothing beyond the product's own venv at run time.

The two GGUFs come from upstream's own converter (`convert_hf_to_gguf.py` of the same llama.cpp, which needs
torch): --llama-cpp-source is that source tree, --converter-python an interpreter with torch (the official
one); benchmarks/setup_upstream.sh fetches both. They are cached in --gguf-dir. The talker is converted at
q8_0 directly, or at f16 and then quantized by llama.cpp (q4_k_m); the mmproj (code predictor + code2wav) at
q8_0, the finest upstream's converter offers below f16 (it keeps the predictor's ffn_down and the codec's
convolutions in f32/f16 itself). Upstream loads only checkpoints with a speaker encoder (Base): the bench
gives it a Base checkpoint of the same size, whose talker, predictor and codec have the CustomVoice shapes.

Random weights never stop on their own, so the talker token is the argmax of the 2048 semantic codes (end
of speech excluded), and every run makes exactly --frames frames.

Writes one JSON record to --result in the shape of `qwen3tts_cli.bench.stream_summary`. The split: the
predictor graph is timed on its own (GEN_CODE calls on a fixed hidden state), the talker step is the rest of
`step_gen`, the decoder is the GEN_WAV call `get_output` makes (the helper decodes in windows of 72 frames, so
a 48-frame run is decoded in one call at the end: no streaming, first audio = the whole run).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from qwen3tts_cli.bench import (
    add_driver_arguments,
    cpu_load,
    repeat_quietly,
    run_record,
    write_driver_result,
)

CODEC_VOCAB = 3072  # the talker's codec rows, appended after the text vocabulary by upstream's converter
SEMANTIC_CODES = 2048  # codebook-0 entries a frame may take (end of speech and control rows excluded)
PREDICTOR_PROBES = 24  # GEN_CODE calls timed on their own for the predictor column


class UpstreamPipeline:
    """The talker context, the mmproj context and upstream's generation helper, loaded once."""

    def __init__(self, talker: Path, mmproj: Path, threads: int) -> None:
        import llama_cpp as lib
        from llama_cpp import mtmd_cpp as mtmd

        self.lib, self.mtmd = lib, mtmd
        lib.llama_backend_init()
        model_params = lib.llama_model_default_params()
        model_params.n_gpu_layers = 0
        self.model = lib.llama_model_load_from_file(str(talker).encode(), model_params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {talker}")
        context_params = lib.llama_context_default_params()
        context_params.n_ctx = 1024
        context_params.n_batch = 512
        context_params.n_ubatch = 512
        context_params.n_threads = threads
        context_params.n_threads_batch = threads
        context_params.embeddings = True  # the helper feeds the talker's hidden state to the predictor
        context_params.no_perf = True
        self.ctx = lib.llama_init_from_model(self.model, context_params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create the talker context")
        mtmd_params = mtmd.mtmd_context_params_default()
        mtmd_params.use_gpu = False
        mtmd_params.n_threads = threads
        mtmd_params.print_timings = False
        self.mctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), self.model, mtmd_params)
        if not self.mctx:
            raise RuntimeError(f"mtmd could not load {mmproj}")
        info = mtmd.mtmd_gen_audio_get_info(self.mctx)
        if info.type != mtmd.MTMD_GEN_AUDIO_TYPE_QWEN3TTS:
            raise RuntimeError(f"{mmproj} is not a Qwen3-TTS generation mmproj")
        self.sample_rate = int(info.sample_rate)
        self.helper = mtmd.mtmd_helper_gen_audio_init(self.ctx, self.mctx)
        self.n_embd = lib.llama_model_n_embd(self.model)
        n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        self.codec_0 = n_vocab - CODEC_VOCAB

    def _next_token(self) -> int:
        logits = np.ctypeslib.as_array(
            self.lib.llama_get_logits_ith(self.ctx, -1), shape=(self.codec_0 + CODEC_VOCAB,)
        )
        return self.codec_0 + int(np.argmax(logits[self.codec_0 : self.codec_0 + SEMANTIC_CODES]))

    def run(self, text: str, frames: int, seed: int, language: str) -> dict[str, Any]:
        """One request of exactly `frames` frames; wall time and the per-stage seconds."""
        lib, mtmd = self.lib, self.mtmd
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        encoded = text.encode()
        request = mtmd.mtmd_helper_gen_audio_inp()
        request.seq_id = 0
        request.prompt = encoded
        request.prompt_len = len(encoded)
        request.speaker_ref = None
        request.lang = language.encode()
        request.top_k = 50
        request.top_p = 1.0
        request.seed = seed
        request.out_type = mtmd.MTMD_HELPER_GEN_AUDIO_OUTTYPE_PCM
        record: dict[str, Any] = {}
        stages = {"prefill": 0.0, "talker+predictor": 0.0, "decoder": 0.0}
        h_out = ctypes.POINTER(ctypes.c_float)()
        stop = ctypes.c_bool(False)
        with cpu_load(record):
            start = time.perf_counter()
            if mtmd.mtmd_helper_gen_audio_set_input(self.helper, ctypes.byref(request)) != 0:
                raise RuntimeError("mtmd_helper_gen_audio_set_input failed")
            while (left := mtmd.mtmd_helper_gen_audio_step_prompt(self.helper, 512)) != 0:
                if left < 0:
                    raise RuntimeError("the upstream prompt decode failed")
            h_state = lib.llama_get_embeddings_ith(self.ctx, -1)
            token = self._next_token()
            stages["prefill"] = time.perf_counter() - start
            for _ in range(frames):
                if (
                    mtmd.mtmd_helper_gen_audio_step_gen(
                        self.helper, token, h_state, ctypes.byref(h_out), ctypes.byref(stop)
                    )
                    != 0
                ):
                    raise RuntimeError("mtmd_helper_gen_audio_step_gen failed")
                if stop.value or not h_out:
                    raise RuntimeError("the upstream pipeline stopped early")
                h_state = h_out
                token = self._next_token()
            generated = time.perf_counter()
            stages["talker+predictor"] = generated - start - stages["prefill"]
            rate, data, size, samples = (
                ctypes.c_int32(),
                ctypes.POINTER(ctypes.c_char)(),
                ctypes.c_size_t(),
                ctypes.c_int64(),
            )
            if (
                mtmd.mtmd_helper_gen_audio_get_output(
                    self.helper,
                    ctypes.byref(rate),
                    ctypes.byref(data),
                    ctypes.byref(size),
                    ctypes.byref(samples),
                )
                != 0
            ):
                raise RuntimeError("mtmd_helper_gen_audio_get_output failed")
            wall = time.perf_counter() - start
            stages["decoder"] = wall - (generated - start)
        audio = samples.value / self.sample_rate
        return run_record(
            record, wall=wall, first=None, audio=audio, frames=frames, pieces=1, stage_seconds=stages
        )

    def predictor_seconds(self, seed: int) -> float:
        """Median seconds of one GEN_CODE call (the fused 15-step predictor graph with its sampling)."""
        mtmd = self.mtmd
        hidden = (ctypes.c_float * self.n_embd)(
            *np.random.default_rng(seed).standard_normal(self.n_embd).astype(np.float32)
        )
        request = mtmd.mtmd_gen_inp_default(self.mctx)
        request.type = mtmd.MTMD_GEN_PROCESS_TYPE_GEN_CODE
        request.code0 = 7
        request.embd = ctypes.cast(hidden, ctypes.POINTER(ctypes.c_float))
        request.seed = seed
        out = mtmd.mtmd_gen_out()
        times = []
        for _ in range(PREDICTOR_PROBES):
            start = time.perf_counter()
            if mtmd.mtmd_gen_audio_process(self.mctx, ctypes.byref(request), ctypes.byref(out)) != 0:
                raise RuntimeError("GEN_CODE failed")
            times.append(time.perf_counter() - start)
        return float(np.median(times[2:]))


def _upstream_convert(
    source: Path, python: Path, checkpoint: Path, target: Path, outtype: str, mmproj: bool
) -> None:
    command = [str(python), str(source / "convert_hf_to_gguf.py"), str(checkpoint), "--outtype", outtype]
    command += ["--mmproj"] if mmproj else []
    partial = target.with_suffix(".partial.gguf")
    env = dict(os.environ, PYTHONPATH=str(source / "gguf-py"))
    done = subprocess.run([*command, "--outfile", str(partial)], capture_output=True, text=True, env=env)
    if done.returncode != 0 or not partial.is_file():
        raise RuntimeError(f"upstream conversion failed: {(done.stderr or done.stdout).strip()[-800:]}")
    partial.rename(target)  # a finished file only: an interrupted conversion is redone, never reused


def _quantize(source: Path, target: Path, quant: str, threads: int) -> None:
    import llama_cpp as lib

    params = lib.llama_model_quantize_default_params()
    params.ftype = getattr(lib, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}")
    params.nthread = threads
    partial = target.with_suffix(".partial.gguf")
    if lib.llama_model_quantize(str(source).encode(), str(partial).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {source} to {quant}")
    partial.rename(target)


def build_ggufs(args: argparse.Namespace) -> tuple[Path, Path, dict[str, Any]]:
    """Upstream's talker GGUF at --quant and its q8_0 mmproj for the checkpoint, converted once (cached)."""
    folder = args.gguf_dir
    folder.mkdir(parents=True, exist_ok=True)
    # GGUFs of another llama.cpp version may not load in this one: the version is part of the name
    name = f"{args.checkpoint.name}-llama-cpp-python{version('llama-cpp-python')}"
    talker, mmproj = folder / f"{name}-talker-{args.quant}.gguf", folder / f"{name}-mmproj-q8_0.gguf"
    built: list[str] = []
    start = time.perf_counter()
    convert = (args.llama_cpp_source, args.converter_python, args.checkpoint)
    if not mmproj.is_file():
        _upstream_convert(*convert, mmproj, "q8_0", mmproj=True)
        built.append(mmproj.name)
    if not talker.is_file():
        if args.quant in ("q8_0", "f16", "bf16", "f32"):
            _upstream_convert(*convert, talker, args.quant, mmproj=False)
        else:
            f16 = folder / f"{name}-talker-f16.gguf"
            if not f16.is_file():
                _upstream_convert(*convert, f16, "f16", mmproj=False)
            _quantize(f16, talker, args.quant, args.threads)
        built.append(talker.name)
    record = {"built": built, "seconds": round(time.perf_counter() - start, 2) if built else 0.0}
    record["bytes"] = {"talker": talker.stat().st_size, "mmproj": mmproj.stat().st_size}
    return talker, mmproj, record


def split_stages(run: dict[str, Any], predictor: float) -> None:
    """Replace the joint talker+predictor seconds of `run` by the two columns the bench prints."""
    stages = run["stage_seconds"]
    joint = stages.pop("talker+predictor")
    stages["predictor"] = round(predictor * run["frames"], 4)
    stages["talker"] = round(max(0.0, joint - stages["predictor"]), 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_driver_arguments(parser)
    parser.add_argument("--llama-cpp-source", type=Path, required=True)
    parser.add_argument("--converter-python", type=Path, required=True)
    parser.add_argument("--gguf-dir", type=Path, required=True)
    parser.add_argument("--quant", default="q8_0")
    args = parser.parse_args()

    talker, mmproj, build = build_ggufs(args)
    start = time.perf_counter()
    pipeline = UpstreamPipeline(talker, mmproj, args.threads)
    load_seconds = time.perf_counter() - start
    pipeline.run(args.text, min(args.frames, 4), args.seed, args.language)  # warm-up
    predictor = pipeline.predictor_seconds(args.seed)
    runs = repeat_quietly(
        lambda: pipeline.run(args.text, args.frames, args.seed, args.language), args.repeats
    )
    for run in runs:
        split_stages(run, predictor)
    write_driver_result(
        args.result,
        runs,
        precision=f"{args.quant} (talker; mmproj q8_0)",
        threads=args.threads,
        load_seconds=load_seconds,
        streaming=False,
        versions={"llama-cpp-python": version("llama-cpp-python")},
        build=build,
        predictor_ms_per_frame=round(predictor * 1000, 2),
        files={"talker": str(talker), "mmproj": str(mmproj)},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
