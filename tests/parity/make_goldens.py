#!/usr/bin/env python3
"""Write golden outputs of the OFFICIAL qwen-tts implementation for the seeded fixture checkpoints.

    python tests/parity/make_goldens.py --out tests/golden [--size tiny|tiny-wide]

Runs in the reference venv (torch 2.13.0 CPU, qwen-tts 0.1.1, transformers 4.57.3; see
tests/golden/README.md). It installs nothing: it builds the fixture checkpoints with
`qwen3tts_cli.fixtures.checkpoint.build_checkpoint`, loads them through the official loader, runs the
official public API greedily with recording hooks, and saves small .npz files plus fixture.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(HERE), str(REPO)]

import numpy as np  # noqa: E402
import official  # noqa: E402
import torch  # noqa: E402

from qwen3tts_cli import spec  # noqa: E402
from qwen3tts_cli.convert.safetensors import SafetensorsFile, bf16_to_f32, f32_to_bf16  # noqa: E402
from qwen3tts_cli.fixtures.checkpoint import build_checkpoint, file_digests  # noqa: E402

GOLDEN_SIZES = ("tiny", "tiny-wide")
SEEDS = {spec.KIND_CUSTOM_VOICE: 0, spec.KIND_VOICE_DESIGN: 0, spec.KIND_BASE: 0}
MAX_NEW_TOKENS = 8
# Logits are the bulk of the goldens (vocab 3072 / 2048 per row), so they are stored as float16; hidden
# states are float32, so exact logits can always be recomputed as hidden @ head.T from the fixture weights.
LOGITS_DTYPE = np.float16
LOGIT_ARRAYS = ("talker_logits", "predictor_logits")
# tiny and tiny-wide share the codec (same dims and seed, byte-identical speech_tokenizer/), so the codec
# components are stored once; the speaker encoder depends on the talker width and is stored per size.
CODEC_COMPONENT_SIZES = ("tiny",)
GREEDY = {"do_sample": False, "subtalker_dosample": False, "max_new_tokens": MAX_NEW_TOKENS}
REF_TEXT = "Reference words."
CLONE_TEXT = "Nice to meet you."
EOS_CASE = "cv_english_eos"
EOS_BASE_CASE = "cv_english"
EOS_MARGIN = 0.5  # logit margin between EOS and the best other token, at and before the forced step


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    call: str
    kwargs: dict[str, Any]
    clone_prompt: str | None = None  # "icl" | "xvector" for voice clone


CASES = (
    Case(
        "cv_english",
        spec.KIND_CUSTOM_VOICE,
        "generate_custom_voice",
        {"text": "Hello world.", "speaker": "Vivian", "language": "English"},
    ),
    Case(
        "cv_dylan_auto_instruct_stream",
        spec.KIND_CUSTOM_VOICE,
        "generate_custom_voice",
        {
            "text": "Hi there!",
            "speaker": "Dylan",
            "language": "Auto",
            "instruct": "Speak slowly.",
            "non_streaming_mode": False,
        },
    ),
    Case(
        "vd_english",
        spec.KIND_VOICE_DESIGN,
        "generate_voice_design",
        {"text": "Good morning.", "instruct": "A calm male voice.", "language": "English"},
    ),
    Case(
        "clone_icl_stream",
        spec.KIND_BASE,
        "generate_voice_clone",
        {"text": CLONE_TEXT, "language": "English"},
        "icl",
    ),
    Case(
        "clone_icl_nonstream",
        spec.KIND_BASE,
        "generate_voice_clone",
        {"text": CLONE_TEXT, "language": "English", "non_streaming_mode": True},
        "icl",
    ),
    Case(
        "clone_xvector",
        spec.KIND_BASE,
        "generate_voice_clone",
        {"text": CLONE_TEXT, "language": "English"},
        "xvector",
    ),
)


def synth_ref_audio(seconds: float = 1.3, sample_rate: int = spec.SAMPLE_RATE, seed: int = 7) -> np.ndarray:
    """A voice-like reference: harmonics of a vibrato tone under a Hann envelope, a little noise, peak 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    x = sum((0.3 / h) * np.sin(h * phase) for h in range(1, 8))
    x *= 0.5 * (1 - np.cos(2 * np.pi * np.minimum(t / seconds, 1)))
    x += 0.01 * rng.standard_normal(len(t))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {k: v.astype(LOGITS_DTYPE) if k in LOGIT_ARRAYS else v for k, v in arrays.items()}
    np.savez_compressed(path, **stored)


# ---- consistency checks on what the official code did (a failed check means a recording bug) ---------
def check_talker_greedy(arrays: dict[str, np.ndarray]) -> None:
    """Greedy code-0 tokens == argmax of raw logits after repetition penalty, min-new-tokens, suppression."""
    prompt_len = arrays["prefill_inputs_embeds"].shape[0]
    sequence = arrays["talker_sequences"]
    logits = arrays["talker_logits"][prompt_len - 1 :]
    assert logits.shape[0] == sequence.shape[0], (logits.shape, sequence.shape)
    for step, token in enumerate(sequence):
        row = logits[step].astype(np.float64)
        for prev in set(sequence[:step].tolist()):
            row[prev] = row[prev] / 1.05 if row[prev] > 0 else row[prev] * 1.05
        row[spec.SUPPRESSED_TOKENS_START :] = np.where(
            np.arange(spec.SUPPRESSED_TOKENS_START, spec.TALKER_VOCAB_SIZE) == spec.CODEC_EOS_ID,
            row[spec.SUPPRESSED_TOKENS_START :],
            -np.inf,
        )
        if step < spec.MIN_NEW_TOKENS:
            row[spec.CODEC_EOS_ID] = -np.inf
        assert int(np.argmax(row)) == int(token), f"step {step}: argmax {np.argmax(row)} != {token}"


def check_case(arrays: dict[str, np.ndarray]) -> None:
    codes, sequence = arrays["codes"], arrays["talker_sequences"]
    prompt_len = arrays["prefill_inputs_embeds"].shape[0]
    assert np.array_equal(codes[:, 0], sequence[:-1])
    assert arrays["talker_inputs_embeds"].shape[0] == prompt_len + codes.shape[0]
    assert np.array_equal(arrays["talker_inputs_embeds"][:prompt_len], arrays["prefill_inputs_embeds"])
    assert arrays["predictor_logits"].shape[:2] == (codes.shape[0], spec.NUM_CODE_GROUPS - 1)
    assert np.array_equal(arrays["predictor_logits"].argmax(-1), codes[:, 1:])
    check_talker_greedy(arrays)


# ---- cases ------------------------------------------------------------------------------------------------
@dataclass
class Models:
    wrappers: dict[str, Any]
    clone_prompts: dict[str, Any]


def run_case(models: Models, case: Case) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    wrapper = models.wrappers[case.kind]
    kwargs = dict(case.kwargs)
    if case.clone_prompt:
        kwargs["voice_clone_prompt"] = models.clone_prompts[case.clone_prompt]
    recorder = official.Recorder(wrapper)
    try:
        wavs, sample_rate = getattr(wrapper, case.call)(**kwargs, **GREEDY)
    finally:
        recorder.remove()
    assert sample_rate == spec.SAMPLE_RATE
    arrays = recorder.arrays()
    arrays["wav"] = np.asarray(wavs[0], dtype=np.float32)
    if case.clone_prompt:
        item = models.clone_prompts[case.clone_prompt][0]
        arrays["ref_spk_embedding"] = official._np(item.ref_spk_embedding)
        if item.ref_code is not None:
            arrays["ref_code"] = official._np(item.ref_code)
    arrays["predictor_codes"] = arrays["codes"][:, 1:].copy()
    check_case(arrays)
    summary = {
        "kind": case.kind,
        "call": case.call,
        "kwargs": case.kwargs,
        "clone_prompt": case.clone_prompt,
        "frames": int(arrays["codes"].shape[0]),
        "prompt_len": int(arrays["prefill_inputs_embeds"].shape[0]),
        "trailing_len": int(arrays["trailing_text_hidden"].shape[0]),
        "samples": int(arrays["wav"].shape[0]),
        "talker_sequences": arrays["talker_sequences"].tolist(),
    }
    return arrays, summary


def _best_other_logit(head: np.ndarray, hidden: np.ndarray, sequence: np.ndarray, step: int) -> float:
    """Largest processed logit among the tokens greedy decoding may pick at `step`, EOS excluded."""
    row = head @ hidden.astype(np.float64)
    for prev in set(sequence[:step].tolist()):
        row[prev] = row[prev] / 1.05 if row[prev] > 0 else row[prev] * 1.05
    return float(row[: spec.SUPPRESSED_TOKENS_START].max())


def choose_eos_row(head: np.ndarray, arrays: dict[str, np.ndarray]) -> tuple[int, np.ndarray]:
    """An EOS row (bf16-representable) that wins at step k by EOS_MARGIN and loses by EOS_MARGIN before k."""
    prompt_len = arrays["prefill_inputs_embeds"].shape[0]
    hidden = arrays["talker_hidden"][prompt_len - 1 :]  # hidden[t] produced token t
    sequence = arrays["talker_sequences"]
    best = [_best_other_logit(head, hidden[t], sequence, t) for t in range(len(sequence))]
    for step in range(4, len(sequence) - 1):
        direction = hidden[step] / np.linalg.norm(hidden[step])
        row = direction * (best[step] + EOS_MARGIN) / float(direction @ hidden[step])
        row = bf16_to_f32(f32_to_bf16(row.astype(np.float32)))
        wins = float(row @ hidden[step]) > best[step] + EOS_MARGIN / 2
        loses_before = all(
            float(row @ hidden[t]) < best[t] - EOS_MARGIN for t in range(spec.MIN_NEW_TOKENS, step)
        )
        if wins and loses_before:
            return step, row
    raise RuntimeError("no decode step admits a forced EOS; try another seed")


def run_eos_case(models: Models, base_arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    """cv_english with codec_head row 2150 replaced so greedy decoding stops at a chosen step."""
    case = next(c for c in CASES if c.name == EOS_BASE_CASE)
    weight = models.wrappers[case.kind].model.talker.codec_head.weight
    step, row = choose_eos_row(weight.detach().double().numpy(), base_arrays)
    original = weight[spec.CODEC_EOS_ID].detach().clone()
    with torch.no_grad():
        weight[spec.CODEC_EOS_ID] = torch.from_numpy(row)
    try:
        arrays, summary = run_case(models, case)
    finally:
        with torch.no_grad():
            weight[spec.CODEC_EOS_ID] = original
    assert arrays["codes"].shape[0] == step, (arrays["codes"].shape, step)
    assert arrays["talker_sequences"][-1] == spec.CODEC_EOS_ID
    assert np.array_equal(arrays["talker_sequences"][:step], base_arrays["talker_sequences"][:step])
    arrays["codec_head_eos_row"] = row.astype(np.float32)
    arrays["eos_step"] = np.int64(step)
    summary["eos_step"] = step
    summary["note"] = "talker.codec_head.weight[2150] replaced by codec_head_eos_row for this run only"
    return arrays, summary


# ---- components -----------------------------------------------------------------------------------------
def random_codes(frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, spec.CODEBOOK_SIZE, size=(frames, spec.NUM_CODE_GROUPS))


@torch.inference_mode()
def decoder_components(wrapper: Any) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    tokenizer = wrapper.model.speech_tokenizer
    decoder = tokenizer.model.decoder
    codes37 = random_codes(37, seed=37)
    forward37 = official._np(decoder(torch.from_numpy(codes37.T[None]).long())[0, 0])
    api_wavs, _ = tokenizer.decode([{"audio_codes": torch.from_numpy(codes37)}])
    api37 = np.asarray(api_wavs[0], dtype=np.float32)
    codes340 = random_codes(340, seed=340)
    full340 = official._np(decoder(torch.from_numpy(codes340.T[None]).long())[0, 0])
    chunked340 = official._np(decoder.chunked_decode(torch.from_numpy(codes340.T[None]).long())[0, 0])
    split = 300 * spec.SAMPLES_PER_FRAME
    facts = {
        "decoder_37_api_vs_forward_max_abs_diff": float(np.abs(api37 - forward37).max()),
        "decoder_37_peak": float(np.abs(forward37).max()),
        "decoder_340_chunked_vs_full_max_abs_diff_first_300_frames": float(
            np.abs(chunked340[:split] - full340[:split]).max()
        ),
        "decoder_340_chunked_vs_full_max_abs_diff_after_300_frames": float(
            np.abs(chunked340[split:] - full340[split:]).max()
        ),
    }
    files = {
        "decoder_37": {"codes": codes37, "wav_forward": forward37, "wav_api": api37},
        "decoder_340": {"codes": codes340, "wav_full": full340},
    }
    return files, facts


def encoder_component(wrapper: Any, wav: np.ndarray) -> dict[str, np.ndarray]:
    encoded = wrapper.model.speech_tokenizer.encode(wav, sr=spec.SAMPLE_RATE)
    return {"codes": official._np(encoded.audio_codes[0])}


def speaker_component(base_wrapper: Any, wav: np.ndarray) -> dict[str, np.ndarray]:
    embedding = base_wrapper.model.extract_speaker_embedding(wav, spec.SAMPLE_RATE)
    return {"mel": official.speaker_mel(wav), "embedding": official._np(embedding)}


# ---- reload check ---------------------------------------------------------------------------------------
def weights_max_abs_diff(folder: Path, wrapper: Any) -> float:
    """Official loaded weights vs the fixture files read with our numpy reader."""
    model = wrapper.model
    worst = 0.0
    pairs = (
        (SafetensorsFile(folder / "model.safetensors"), model.state_dict()),
        (
            SafetensorsFile(folder / "speech_tokenizer" / "model.safetensors"),
            model.speech_tokenizer.model.state_dict(),
        ),
    )
    for stored, loaded in pairs:
        for name in stored:
            ours = stored.read(name).astype(np.float32)
            theirs = loaded[name].detach().to(torch.float32).numpy().reshape(ours.shape)
            worst = max(worst, float(np.abs(ours - theirs).max()))
    return worst


def reload_check(folders: dict[str, Path], models: Models, first: dict[str, np.ndarray]) -> dict[str, Any]:
    """Loaded weights == fixture weights, and a freshly loaded model reproduces the first case exactly."""
    report: dict[str, Any] = {"weights_max_abs_diff": {}}
    for kind, wrapper in models.wrappers.items():
        report["weights_max_abs_diff"][kind] = weights_max_abs_diff(folders[kind], wrapper)
    fresh, _ = official.load_official(folders[CASES[0].kind])
    again, _ = run_case(Models({CASES[0].kind: fresh}, {}), CASES[0])
    report["rerun_case"] = CASES[0].name
    report["codes_equal"] = bool(np.array_equal(again["codes"], first["codes"]))
    report["wav_max_abs_diff"] = float(np.abs(again["wav"] - first["wav"]).max())
    report["attention_backends"] = official.attention_backends(fresh.model)
    return report


# ---- driver ---------------------------------------------------------------------------------------------
def log(message: str) -> None:
    print(f"[make_goldens {time.strftime('%H:%M:%S')}] {message}", flush=True)


def build_models(work: Path, size: str) -> tuple[dict[str, Path], Models, dict[str, Any]]:
    folders: dict[str, Path] = {}
    wrappers: dict[str, Any] = {}
    checkpoints: dict[str, Any] = {}
    loading: dict[str, Any] = {}
    for kind, seed in SEEDS.items():
        folder = build_checkpoint(work / kind, kind, size, seed)
        folders[kind] = folder
        checkpoints[kind] = {"seed": seed, "sha256": file_digests(folder)}
        wrappers[kind], loading[kind] = official.load_official(folder)
        problems = loading[kind]["missing"] + loading[kind]["unexpected"]
        assert not problems, f"{kind}: official loader key mismatch {problems[:10]}"
        log(f"built and loaded {size}/{kind}")
    return folders, Models(wrappers, {}), {"checkpoints": checkpoints, "loading": loading}


def make_clone_prompts(models: Models, ref_wav: np.ndarray) -> None:
    base = models.wrappers[spec.KIND_BASE]
    ref = (ref_wav, spec.SAMPLE_RATE)
    models.clone_prompts["icl"] = base.create_voice_clone_prompt(ref_audio=ref, ref_text=REF_TEXT)
    models.clone_prompts["xvector"] = base.create_voice_clone_prompt(ref_audio=ref, x_vector_only_mode=True)


def generate_size(out: Path, size: str, work: Path) -> dict[str, Any]:
    target = out / size
    folders, models, meta = build_models(work, size)
    ref_wav = synth_ref_audio()
    save_npz(target / "ref_audio.npz", {"wav": ref_wav, "sample_rate": np.int64(spec.SAMPLE_RATE)})
    make_clone_prompts(models, ref_wav)
    cases: dict[str, Any] = {}
    results: dict[str, dict[str, np.ndarray]] = {}
    for case in CASES:
        arrays, summary = run_case(models, case)
        save_npz(target / f"{case.name}.npz", arrays)
        results[case.name], cases[case.name] = arrays, summary
        log(f"{size}/{case.name}: {summary['frames']} frames, prompt {summary['prompt_len']}")
    arrays, summary = run_eos_case(models, results[EOS_BASE_CASE])
    save_npz(target / f"{EOS_CASE}.npz", arrays)
    cases[EOS_CASE] = summary
    log(f"{size}/{EOS_CASE}: EOS at step {summary['eos_step']}")
    components: dict[str, Any] = {"codec_components_in": CODEC_COMPONENT_SIZES[0]}
    if size in CODEC_COMPONENT_SIZES:
        codec_owner = models.wrappers[spec.KIND_CUSTOM_VOICE]
        decoder_files, components["facts"] = decoder_components(codec_owner)
        for name, arrays in decoder_files.items():
            save_npz(target / "components" / f"{name}.npz", arrays)
        save_npz(target / "components" / "encoder.npz", encoder_component(codec_owner, ref_wav))
    save_npz(
        target / "components" / "speaker.npz", speaker_component(models.wrappers[spec.KIND_BASE], ref_wav)
    )
    log(f"{size}: components written")
    fixture = {
        "size": size,
        "checkpoints": meta["checkpoints"],
        "versions": official.versions(),
        "generation": GREEDY,
        "ref_audio": {"seconds": 1.3, "seed": 7, "ref_text": REF_TEXT},
        "cases": cases,
        "components": components,
        "reload_check": {"loading": meta["loading"], **reload_check(folders, models, results[CASES[0].name])},
    }
    (target / "fixture.json").write_text(json.dumps(fixture, indent=1) + "\n", encoding="utf-8")
    log(f"{size}: fixture.json written")
    return fixture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "golden")
    parser.add_argument("--size", choices=GOLDEN_SIZES, action="append", help="default: all golden sizes")
    parser.add_argument(
        "--work", type=Path, default=None, help="where to build checkpoints (default: a tmp dir)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for size in args.size or GOLDEN_SIZES:
        with tempfile.TemporaryDirectory(dir=args.work, prefix=f"qwen3tts-golden-{size}-") as tmp:
            generate_size(args.out, size, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
