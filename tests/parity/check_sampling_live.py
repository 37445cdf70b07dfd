#!/usr/bin/env python3
"""Live parity of our sampling chain (qwen3tts_cli/engine/sampling.py) with the official one.

Runs in the reference venv (torch + transformers 4.57.3 + qwen-tts 0.1.1), e.g.
    OMP_NUM_THREADS=1 /work/refenv/bin/python tests/parity/check_sampling_live.py [--write-golden]

It does not re-implement the official chain: it runs the official `generate_custom_voice` on a tiny
seeded fixture with several generation settings and captures the `LogitsProcessorList` that
transformers builds for the talker and for the code predictor (spy on `_get_logits_processor`). Those
captured lists are then applied to seeded random logits and token histories; our processed scores must
give the same filtered set (exactly) and the same log-probabilities (max abs diff printed, bound 1e-5).

`--write-golden` stores the cases and the official log-probabilities in tests/golden/sampling/ so that
the default (torch-free) test run checks them (tests/test_sampling.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import official  # noqa: E402  (sets offline flags, stubs torchaudio)
import torch  # noqa: E402
from transformers.generation.utils import GenerationMixin  # noqa: E402

from qwen3tts_cli.engine.sampling import (  # noqa: E402
    SamplingParams,
    TalkerRules,
    log_softmax,
    process_predictor_scores,
    process_talker_scores,
)
from qwen3tts_cli.fixtures.checkpoint import build_checkpoint  # noqa: E402

GOLDEN = REPO / "tests" / "golden" / "sampling"
TOLERANCE = 1e-5

# Generation settings to capture (official wrapper keyword arguments).
SETTINGS: dict[str, dict[str, Any]] = {
    "official_defaults": dict(do_sample=True, subtalker_dosample=True),  # 0.9 / 50 / 1.0 / 1.05
    "custom": dict(
        do_sample=True,
        temperature=0.7,
        top_k=20,
        top_p=0.8,
        repetition_penalty=1.3,
        subtalker_dosample=True,
        subtalker_temperature=1.3,
        subtalker_top_k=10,
        subtalker_top_p=0.9,
    ),
    "no_topk": dict(do_sample=True, top_k=0, temperature=1.0, subtalker_top_k=0, subtalker_temperature=1.0),
    "greedy": dict(do_sample=False, subtalker_dosample=False),
}


# ---- capture the official processor lists -------------------------------------------------------------
def capture_processors(wrapper: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The first talker and code-predictor processor lists built during one official generate call."""
    captured: dict[str, Any] = {}
    original = GenerationMixin._get_logits_processor

    def spy(self: Any, generation_config: Any, *args: Any, **kw: Any) -> Any:
        processors = original(self, generation_config, *args, **kw)
        role = "predictor" if "CodePredictor" in type(self).__name__ else "talker"
        captured.setdefault(role, (processors, generation_config))
        return processors

    GenerationMixin._get_logits_processor = spy
    try:
        torch.manual_seed(0)
        wrapper.generate_custom_voice(
            text="Hi.", speaker="Vivian", language="English", max_new_tokens=3, **kwargs
        )
    finally:
        GenerationMixin._get_logits_processor = original
    return captured


def describe(processors: Any) -> list[dict[str, Any]]:
    out = []
    for proc in processors:
        fields = {}
        for key, value in vars(proc).items():
            if torch.is_tensor(value):
                value = value.tolist() if value.numel() <= 4 else f"tensor[{value.numel()}]"
            if isinstance(value, (int, float, str, bool, list)) or value is None:
                fields[key] = value
        out.append({"class": type(proc).__name__, **fields})
    return out


def params_of(settings: dict[str, Any], prefix: str) -> SamplingParams:
    defaults = {"do_sample": True, "temperature": 0.9, "top_k": 50, "top_p": 1.0}
    names = {k: (f"subtalker_{k}" if prefix else k) for k in defaults}
    names["do_sample"] = "subtalker_dosample" if prefix else "do_sample"
    values = {k: settings.get(names[k], defaults[k]) for k in defaults}
    return SamplingParams(**values)


# ---- cases ---------------------------------------------------------------------------------------------
def talker_cases(rng: np.random.Generator, with_ties: bool) -> list[tuple[np.ndarray, list[int]]]:
    vocab = 3072
    cases = []
    for history in ([], [7], [7, 7, 1234], list(rng.integers(0, 2048, 40))):
        logits = (rng.standard_normal(vocab) * 3).astype(np.float32)
        logits[list(history)[:3]] += 4.0  # make penalised tokens matter
        logits[2150] = logits.max() + 1.0  # EOS on top: banned only while < 2 tokens exist
        cases.append((logits, [int(t) for t in history]))
    if with_ties:  # many equal scores at the top-k boundary: transformers keeps every tie
        logits = np.round(rng.standard_normal(vocab) * 2).astype(np.float32)
        cases.append((logits, [3, 5]))
    return cases


def predictor_cases(rng: np.random.Generator, with_ties: bool) -> list[np.ndarray]:
    cases = [(rng.standard_normal(2048) * s).astype(np.float32) for s in (1.0, 4.0)]
    if with_ties:
        cases.append(np.round(rng.standard_normal(2048) * 2).astype(np.float32))
    return cases


def official_scores(processors: Any, logits: np.ndarray, history: list[int]) -> np.ndarray:
    input_ids = torch.tensor([history], dtype=torch.long).reshape(1, len(history))
    scores = processors(input_ids, torch.from_numpy(logits.copy())[None])
    return scores[0].numpy()


def compare(ours: np.ndarray, theirs: np.ndarray) -> float:
    ours_lp, theirs_lp = log_softmax(ours), log_softmax(theirs)
    if not np.array_equal(np.isneginf(ours_lp), np.isneginf(theirs_lp)):
        return float("inf")
    finite = np.isfinite(theirs_lp)
    return float(np.max(np.abs(ours_lp[finite] - theirs_lp[finite])))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write-golden", action="store_true", help="store cases in tests/golden/sampling/")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(20240611)
    report: dict[str, Any] = {"settings": {}, "max_abs_logprob_diff": 0.0}
    golden: dict[str, list[Any]] = {
        k: [] for k in ("t_logits", "t_hist", "t_params", "t_lp", "p_logits", "p_params", "p_lp")
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_checkpoint(Path(tmp) / "cv", "custom_voice", "tiny", seed=0)
        wrapper, _ = official.load_official(folder)
        config = json.loads((folder / "config.json").read_text())
        for name, settings in SETTINGS.items():
            captured = capture_processors(wrapper, settings)
            talker_list, talker_cfg = captured["talker"]
            predictor_list, _ = captured["predictor"]
            talker_params = params_of(settings, "")
            predictor_params = params_of(settings, "subtalker")
            rules = TalkerRules.from_talker_config(
                config["talker_config"], settings.get("repetition_penalty", 1.05)
            )
            ties = talker_params.top_p >= 1.0
            worst = 0.0
            for logits, history in talker_cases(rng, ties):
                theirs = official_scores(talker_list, logits, history)
                ours = process_talker_scores(logits, history, rules, talker_params)
                worst = max(worst, compare(ours, theirs))
                golden["t_logits"].append(logits)
                golden["t_hist"].append(history)
                golden["t_params"].append(
                    [
                        talker_params.do_sample,
                        talker_params.temperature,
                        talker_params.top_k,
                        talker_params.top_p,
                        rules.repetition_penalty,
                    ]
                )
                golden["t_lp"].append(log_softmax(theirs).astype(np.float32))
            for logits in predictor_cases(rng, predictor_params.top_p >= 1.0):
                theirs = official_scores(predictor_list, logits, [1, 2])
                ours = process_predictor_scores(logits, predictor_params)
                worst = max(worst, compare(ours, theirs))
                golden["p_logits"].append(logits)
                golden["p_params"].append(
                    [
                        predictor_params.do_sample,
                        predictor_params.temperature,
                        predictor_params.top_k,
                        predictor_params.top_p,
                    ]
                )
                golden["p_lp"].append(log_softmax(theirs).astype(np.float32))
            report["settings"][name] = {
                "talker_processors": describe(talker_list),
                "predictor_processors": describe(predictor_list),
                "talker_min_new_tokens": talker_cfg.min_new_tokens,
                "talker_min_length": talker_cfg.min_length,
                "max_abs_logprob_diff": worst,
            }
            report["max_abs_logprob_diff"] = max(report["max_abs_logprob_diff"], worst)
    print(json.dumps(report, indent=1))
    if args.write_golden:
        write_golden(golden, report)
    ok = report["max_abs_logprob_diff"] <= TOLERANCE
    print("OK" if ok else f"FAIL: log-prob difference above {TOLERANCE}")
    return 0 if ok else 1


def write_golden(golden: dict[str, list[Any]], report: dict[str, Any]) -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    longest = max(len(h) for h in golden["t_hist"])
    history = np.full((len(golden["t_hist"]), longest), -1, dtype=np.int64)
    for row, h in enumerate(golden["t_hist"]):
        history[row, : len(h)] = h
    np.savez_compressed(
        GOLDEN / "processors.npz",
        talker_logits=np.stack(golden["t_logits"]),
        talker_history=history,
        talker_params=np.asarray(golden["t_params"], dtype=np.float64),
        talker_logprobs=np.stack(golden["t_lp"]),
        predictor_logits=np.stack(golden["p_logits"]),
        predictor_params=np.asarray(golden["p_params"], dtype=np.float64),
        predictor_logprobs=np.stack(golden["p_lp"]),
    )
    processors = {
        name: {k: v for k, v in entry.items() if k != "max_abs_logprob_diff"}
        for name, entry in report["settings"].items()
    }
    (GOLDEN / "processors.json").write_text(json.dumps(processors, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
