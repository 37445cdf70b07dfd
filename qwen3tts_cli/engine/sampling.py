"""Token selection for the talker (code 0) and the code predictor (codes 1..15), as officially done.

The official code runs Hugging Face `generate` (transformers 4.57.3). For the talker the logits
processors are, in this order:

1. repetition penalty over the code-0 tokens generated so far (`s / p` if `s > 0`, else `s * p`),
   each token once;
2. EOS banned while fewer than `min_new_tokens` (2) tokens have been generated;
3. ids 2048..3071 suppressed (set to -inf) except EOS 2150;
4. sampling only: temperature, then top-k (ties with the k-th score are kept), then top-p (skipped at 1.0),
   then softmax and one multinomial draw. Greedy decoding is the argmax after steps 1-3.

The code predictor has no penalty, no EOS and no suppression: only step 4 (or argmax when greedy).

Scores are float32 like the official ones. The draw uses numpy's `Generator`, so sampled runs are reproducible
with a seed but cannot equal torch's random stream; the distribution they are drawn from is the official one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from qwen3tts_cli import spec
from qwen3tts_cli.errors import Qwen3TTSError

FILTERED = -np.inf  # transformers' filter_value


@dataclass(frozen=True)
class SamplingParams:
    """Temperature / top-k / top-p sampling, or greedy decoding when `do_sample` is False."""

    do_sample: bool = True
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.do_sample and not self.temperature > 0:
            raise Qwen3TTSError(
                f"temperature must be > 0 when sampling (got {self.temperature})",
                "use a positive temperature, or greedy decoding",
            )
        if self.top_k < 0:
            raise Qwen3TTSError(f"top_k must be >= 0 (got {self.top_k})", "0 disables top-k")
        if not 0.0 <= self.top_p <= 1.0:
            raise Qwen3TTSError(f"top_p must be in [0, 1] (got {self.top_p})", "1.0 disables top-p")


@dataclass(frozen=True)
class TalkerRules:
    """The talker-only processors: repetition penalty, minimum length before EOS, suppressed ids."""

    eos_id: int = spec.CODEC_EOS_ID
    vocab_size: int = spec.TALKER_VOCAB_SIZE
    suppress_start: int = spec.SUPPRESSED_TOKENS_START
    repetition_penalty: float = float(spec.GENERATION_DEFAULTS["repetition_penalty"])
    min_new_tokens: int = spec.MIN_NEW_TOKENS

    def __post_init__(self) -> None:
        if not self.repetition_penalty > 0:
            raise Qwen3TTSError(
                f"repetition_penalty must be > 0 (got {self.repetition_penalty})", "1.0 disables the penalty"
            )

    @classmethod
    def from_talker_config(cls, talker_config: Mapping[str, Any], repetition_penalty: float) -> TalkerRules:
        vocab_size = int(talker_config.get("vocab_size", spec.TALKER_VOCAB_SIZE))
        return cls(
            eos_id=int(talker_config.get("codec_eos_token_id", spec.CODEC_EOS_ID)),
            vocab_size=vocab_size,
            # The official code suppresses the top 1024 ids of the codec vocabulary.
            suppress_start=vocab_size - 1024,
            repetition_penalty=float(repetition_penalty),
        )

    @cached_property
    def suppressed_mask(self) -> np.ndarray:
        mask = np.zeros(self.vocab_size, dtype=bool)
        mask[self.suppress_start :] = True
        mask[self.eos_id] = False
        return mask


# ---- the individual processors (each returns a new float32 array) ------------------------------------------
def apply_repetition_penalty(scores: np.ndarray, previous: Iterable[int], penalty: float) -> np.ndarray:
    out = np.array(scores, dtype=np.float32)
    seen = np.unique(np.fromiter(previous, dtype=np.int64))
    if penalty == 1.0 or seen.size == 0:
        return out
    picked = out[seen]
    factor = np.float32(penalty)
    out[seen] = np.where(picked < 0, picked * factor, picked / factor)
    return out


def ban_early_eos(scores: np.ndarray, generated: int, min_new_tokens: int, eos_id: int) -> np.ndarray:
    out = np.array(scores, dtype=np.float32)
    if generated < min_new_tokens:
        out[eos_id] = FILTERED
    return out


def suppress(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, np.float32(FILTERED), np.asarray(scores, dtype=np.float32)).astype(np.float32)


def apply_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    out = np.asarray(scores, dtype=np.float32)
    if temperature == 1.0:  # transformers skips the warper at exactly 1.0
        return out.copy()
    return (out / np.float32(temperature)).astype(np.float32)


def top_k_filter(scores: np.ndarray, top_k: int, min_tokens_to_keep: int = 1) -> np.ndarray:
    """Keep every score >= the k-th largest (ties at the boundary survive, as in transformers)."""
    out = np.array(scores, dtype=np.float32)
    if top_k == 0:
        return out
    k = min(max(top_k, min_tokens_to_keep), out.size)
    kth_largest = np.partition(out, out.size - k)[out.size - k]
    out[out < kth_largest] = FILTERED
    return out


def top_p_filter(scores: np.ndarray, top_p: float, min_tokens_to_keep: int = 1) -> np.ndarray:
    """Drop the least likely tokens whose cumulative probability stays <= 1 - top_p."""
    out = np.array(scores, dtype=np.float32)
    if top_p >= 1.0:  # transformers only adds the warper for top_p < 1.0
        return out
    ascending = np.argsort(out, kind="stable")
    cumulative = np.cumsum(softmax(out[ascending]), dtype=np.float32)
    drop_sorted = cumulative <= np.float32(1.0 - top_p)
    drop_sorted[out.size - min_tokens_to_keep :] = False
    out[ascending[drop_sorted]] = FILTERED
    return out


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.asarray(scores, dtype=np.float32) - np.max(scores)
    weights = np.exp(shifted, dtype=np.float32)
    return (weights / weights.sum(dtype=np.float32)).astype(np.float32)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Log-probabilities in float64 (-inf where filtered); used by tests and diagnostics."""
    values = np.asarray(scores, dtype=np.float64)
    shifted = values - np.max(values)
    with np.errstate(divide="ignore"):
        return shifted - np.log(np.exp(shifted).sum())


# ---- the two chains --------------------------------------------------------------------------------------
def warp(scores: np.ndarray, params: SamplingParams) -> np.ndarray:
    """Sampling-only warpers in transformers' order: temperature, top-k, top-p."""
    out = apply_temperature(scores, params.temperature)
    out = top_k_filter(out, params.top_k)
    return top_p_filter(out, params.top_p)


def process_talker_scores(
    logits: np.ndarray, previous_codes: Iterable[int], rules: TalkerRules, params: SamplingParams
) -> np.ndarray:
    """The talker's processed scores for the next code 0, given the code-0 tokens generated so far."""
    previous = list(previous_codes)
    out = apply_repetition_penalty(logits, previous, rules.repetition_penalty)
    out = ban_early_eos(out, len(previous), rules.min_new_tokens, rules.eos_id)
    out = suppress(out, rules.suppressed_mask)
    return warp(out, params) if params.do_sample else out


def process_predictor_scores(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    out = np.asarray(logits, dtype=np.float32)
    return warp(out, params) if params.do_sample else out.copy()


class Sampler:
    """Picks tokens from processed scores: argmax when greedy, else one seeded multinomial draw."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def pick(self, scores: np.ndarray, do_sample: bool) -> int:
        if not do_sample:
            return int(np.argmax(scores))
        kept = np.flatnonzero(np.isfinite(scores))
        if kept.size == 0:
            raise Qwen3TTSError("every token was filtered out while sampling", "relax top_k / top_p")
        probabilities = softmax(scores[kept]).astype(np.float64)
        cumulative = np.cumsum(probabilities)
        # Inverse CDF: zero-probability entries can never be the first bin above the draw.
        index = int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right"))
        return int(kept[min(index, kept.size - 1)])


class TalkerSampler:
    """Code-0 selection: the talker processor chain followed by the pick."""

    def __init__(self, rules: TalkerRules, params: SamplingParams, sampler: Sampler) -> None:
        self.rules = rules
        self.params = params
        self.sampler = sampler

    def __call__(self, logits: np.ndarray, previous_codes: Iterable[int]) -> int:
        scores = process_talker_scores(logits, previous_codes, self.rules, self.params)
        return self.sampler.pick(scores, self.params.do_sample)


class PredictorSampler:
    """Residual-code selection (codes 1..15): warpers and pick, nothing else."""

    def __init__(self, params: SamplingParams, sampler: Sampler) -> None:
        self.params = params
        self.sampler = sampler

    def __call__(self, logits: np.ndarray) -> int:
        return self.sampler.pick(process_predictor_scores(logits, self.params), self.params.do_sample)


# ---- settings of one generation -----------------------------------------------------------------------
# Official wrapper keyword -> (field in GenerationSettings' params). Precedence: explicit argument >
# generation_config.json > the official hard defaults.
_HARD_DEFAULTS: dict[str, float | int | bool] = {
    **spec.GENERATION_DEFAULTS,
    "max_new_tokens": 2048,  # the wrapper's hard default; generation_config.json says 8192
}


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that decides which tokens a generation picks."""

    talker: SamplingParams = SamplingParams()
    predictor: SamplingParams = SamplingParams()
    repetition_penalty: float = float(spec.GENERATION_DEFAULTS["repetition_penalty"])
    max_new_tokens: int = 2048  # code-0 tokens, the last of which never becomes a frame
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise Qwen3TTSError(
                f"max_new_tokens must be >= 1 (got {self.max_new_tokens})", "pass a positive limit"
            )

    @classmethod
    def from_generation_config(
        cls, generation_config: Mapping[str, Any] | None = None, seed: int | None = None, **overrides: Any
    ) -> GenerationSettings:
        """Official precedence: explicit (non-None) overrides, generation_config.json, hard defaults."""
        unknown = sorted(set(overrides) - set(_HARD_DEFAULTS))
        if unknown:
            raise TypeError(f"unknown generation setting(s): {', '.join(unknown)}")
        merged = dict(_HARD_DEFAULTS)
        merged.update(
            {k: v for k, v in (generation_config or {}).items() if k in _HARD_DEFAULTS and v is not None}
        )
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return cls(
            talker=SamplingParams(
                do_sample=bool(merged["do_sample"]),
                temperature=float(merged["temperature"]),
                top_k=int(merged["top_k"]),
                top_p=float(merged["top_p"]),
            ),
            predictor=SamplingParams(
                do_sample=bool(merged["subtalker_dosample"]),
                temperature=float(merged["subtalker_temperature"]),
                top_k=int(merged["subtalker_top_k"]),
                top_p=float(merged["subtalker_top_p"]),
            ),
            repetition_penalty=float(merged["repetition_penalty"]),
            max_new_tokens=int(merged["max_new_tokens"]),
            seed=seed,
        )
