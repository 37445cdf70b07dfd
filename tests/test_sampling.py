"""Sampling chain: official processed distributions (golden), each processor's rule, seeded draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qwen3tts_cli import spec
from qwen3tts_cli.engine.sampling import (
    GenerationSettings,
    PredictorSampler,
    Sampler,
    SamplingParams,
    TalkerRules,
    TalkerSampler,
    apply_repetition_penalty,
    ban_early_eos,
    log_softmax,
    process_predictor_scores,
    process_talker_scores,
    top_k_filter,
    top_p_filter,
)
from qwen3tts_cli.errors import Qwen3TTSError

GOLDEN = Path(__file__).parent / "golden" / "sampling"


def _params(row: np.ndarray) -> SamplingParams:
    return SamplingParams(
        do_sample=bool(row[0]), temperature=float(row[1]), top_k=int(row[2]), top_p=float(row[3])
    )


def _assert_same_distribution(ours: np.ndarray, official_logprobs: np.ndarray) -> float:
    mine = log_softmax(ours)
    assert np.array_equal(np.isneginf(mine), np.isneginf(official_logprobs))
    finite = np.isfinite(official_logprobs)
    diff = float(np.max(np.abs(mine[finite] - official_logprobs[finite])))
    assert diff <= 1e-5
    return diff


# ---- parity with transformers' processors (golden from tests/parity/check_sampling_live.py) ------------
def test_talker_chain_matches_official_processors() -> None:
    data = np.load(GOLDEN / "processors.npz")
    assert len(data["talker_logits"]) >= 10
    filtered_counts = set()
    for logits, history, params, expected in zip(
        data["talker_logits"],
        data["talker_history"],
        data["talker_params"],
        data["talker_logprobs"],
        strict=True,
    ):
        rules = TalkerRules(repetition_penalty=float(params[4]))
        ours = process_talker_scores(logits, [int(t) for t in history if t >= 0], rules, _params(params))
        _assert_same_distribution(ours, expected)
        filtered_counts.add(int(np.isneginf(expected).sum()))
    assert len(filtered_counts) > 2  # the cases exercise different filters (greedy, top-k, top-p)


def test_predictor_chain_matches_official_processors() -> None:
    data = np.load(GOLDEN / "processors.npz")
    for logits, params, expected in zip(
        data["predictor_logits"], data["predictor_params"], data["predictor_logprobs"], strict=True
    ):
        _assert_same_distribution(process_predictor_scores(logits, _params(params)), expected)


def test_official_processor_order_is_the_one_implemented() -> None:
    captured = json.loads((GOLDEN / "processors.json").read_text())
    talker = [p["class"] for p in captured["custom"]["talker_processors"]]
    assert talker == [
        "RepetitionPenaltyLogitsProcessor",
        "MinLengthLogitsProcessor",
        "MinNewTokensLengthLogitsProcessor",
        "SuppressTokensLogitsProcessor",
        "TemperatureLogitsWarper",
        "TopKLogitsWarper",
        "TopPLogitsWarper",
    ]
    predictor = [p["class"] for p in captured["custom"]["predictor_processors"]]
    assert predictor == ["TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"]
    assert captured["greedy"]["predictor_processors"] == []


# ---- individual rules ----------------------------------------------------------------------------------
def test_repetition_penalty_divides_positive_and_multiplies_negative_scores_once() -> None:
    scores = np.array([2.0, -2.0, 1.0, 0.0], dtype=np.float32)
    out = apply_repetition_penalty(scores, [0, 1, 1, 3], 2.0)
    np.testing.assert_array_equal(out, np.array([1.0, -4.0, 1.0, 0.0], dtype=np.float32))
    np.testing.assert_array_equal(scores, [2.0, -2.0, 1.0, 0.0])  # input untouched


def test_eos_is_banned_for_the_first_two_tokens_only() -> None:
    scores = np.zeros(3072, dtype=np.float32)
    assert np.isneginf(ban_early_eos(scores, 0, 2, 2150)[2150])
    assert np.isneginf(ban_early_eos(scores, 1, 2, 2150)[2150])
    assert ban_early_eos(scores, 2, 2, 2150)[2150] == 0.0


def test_suppressed_ids_are_the_control_block_except_eos() -> None:
    mask = TalkerRules().suppressed_mask
    assert mask.sum() == 1023
    assert not mask[:2048].any() and not mask[spec.CODEC_EOS_ID]
    assert mask[2048] and mask[spec.CODEC_BOS_ID] and mask[3071]


def test_greedy_talker_never_picks_a_control_id_and_respects_min_new_tokens() -> None:
    logits = np.zeros(3072, dtype=np.float32)
    logits[3065] = 100.0  # a speaker id
    logits[spec.CODEC_EOS_ID] = 50.0
    logits[17] = 1.0
    pick = TalkerSampler(TalkerRules(), SamplingParams(do_sample=False), Sampler(0))
    assert pick(logits, []) == 17
    assert pick(logits, [17]) == 17  # EOS still banned after one token; 17 penalised but still best
    assert pick(logits, [5, 6]) == spec.CODEC_EOS_ID


def test_greedy_applies_the_repetition_penalty() -> None:
    logits = np.zeros(3072, dtype=np.float32)
    logits[10], logits[11] = 1.04, 1.0
    pick = TalkerSampler(TalkerRules(), SamplingParams(do_sample=False), Sampler(0))
    assert pick(logits, [3, 4]) == 10
    assert pick(logits, [3, 10]) == 11  # 1.04 / 1.05 < 1.0


def test_top_k_keeps_every_tie_with_the_kth_score() -> None:
    scores = np.array([5.0, 4.0, 4.0, 4.0, 1.0], dtype=np.float32)
    out = top_k_filter(scores, 2)
    np.testing.assert_array_equal(np.isfinite(out), [True, True, True, True, False])
    assert np.isfinite(top_k_filter(scores, 0)).all()  # 0 disables


def test_top_p_keeps_the_smallest_head_reaching_p_and_at_least_one_token() -> None:
    scores = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    np.testing.assert_array_equal(np.isfinite(top_p_filter(scores, 0.8)), [True, True, False, False])
    np.testing.assert_array_equal(np.isfinite(top_p_filter(scores, 0.81)), [True, True, True, False])
    assert np.isfinite(top_p_filter(scores, 0.0)).sum() == 1


# ---- draws ---------------------------------------------------------------------------------------------
def test_same_seed_gives_same_draws_and_other_seeds_differ() -> None:
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((30, 2048)).astype(np.float32)
    params = SamplingParams(temperature=1.0, top_k=0)

    def draws(seed: int) -> list[int]:
        pick = PredictorSampler(params, Sampler(seed))
        return [pick(row) for row in logits]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_draws_follow_the_processed_distribution() -> None:
    logits = np.log(np.array([0.5, 0.25, 0.15, 0.07, 0.03], dtype=np.float32))
    params = SamplingParams(temperature=1.0, top_k=3)  # the two least likely tokens are filtered
    pick = PredictorSampler(params, Sampler(123))
    counts = np.bincount([pick(logits) for _ in range(20000)], minlength=5)
    assert counts[3] == 0 and counts[4] == 0
    expected = np.array([0.5, 0.25, 0.15]) / 0.9
    np.testing.assert_allclose(counts[:3] / counts.sum(), expected, atol=0.015)


def test_greedy_pick_is_argmax() -> None:
    scores = np.array([0.1, 3.0, -np.inf, 2.9], dtype=np.float32)
    assert Sampler(0).pick(scores, do_sample=False) == 1


def test_sampling_with_everything_filtered_is_a_clear_error() -> None:
    with pytest.raises(Qwen3TTSError):
        Sampler(0).pick(np.full(4, -np.inf, dtype=np.float32), do_sample=True)


# ---- settings ------------------------------------------------------------------------------------------
def test_settings_precedence_explicit_then_generation_config_then_hard_defaults() -> None:
    settings = GenerationSettings.from_generation_config(
        {"temperature": 0.5, "top_k": 30, "max_new_tokens": 8192}, top_k=7, subtalker_dosample=False
    )
    assert settings.talker == SamplingParams(do_sample=True, temperature=0.5, top_k=7, top_p=1.0)
    assert settings.predictor.do_sample is False and settings.predictor.temperature == 0.9
    assert settings.max_new_tokens == 8192 and settings.repetition_penalty == 1.05
    assert GenerationSettings.from_generation_config(None).max_new_tokens == 2048
    assert GenerationSettings.from_generation_config({}, top_k=None).talker.top_k == 50


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(TypeError):
        GenerationSettings.from_generation_config({}, topk=3)
    with pytest.raises(Qwen3TTSError):
        SamplingParams(temperature=0.0)
    with pytest.raises(Qwen3TTSError):
        GenerationSettings(max_new_tokens=0)
