"""The frame loop: order of talker / code-predictor calls, stop rules, step inputs (fakes), goldens (real)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from qwen3tts_cli import spec
from qwen3tts_cli.engine.generate import FrameGenerator, GenerationTrace
from qwen3tts_cli.engine.prompt import Prompt, PromptConfig
from qwen3tts_cli.engine.sampling import GenerationSettings, SamplingParams, TalkerRules

GROUPS = spec.NUM_CODE_GROUPS
HIDDEN = 2 + GROUPS  # text id, 16 codec groups, position marker
EOS = spec.CODEC_EOS_ID
GREEDY = GenerationSettings(
    talker=SamplingParams(do_sample=False), predictor=SamplingParams(do_sample=False), max_new_tokens=50
)


class TaggedTables:
    """codec_embed puts id+1 in dimension 1+group; project doubles; head g picks (3*last_code + g) % 2048."""

    def codec_embed(self, group: int, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids).reshape(-1)
        out = np.zeros((len(ids), HIDDEN), dtype=np.float32)
        out[:, 1 + group] = ids + 1
        return out

    def project(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32) * 2

    def predictor_head(self, group: int, hidden: np.ndarray) -> np.ndarray:
        fed = hidden[1 : 1 + GROUPS] / 2 - 1  # the code whose embedding was fed last
        last_code = int(fed[fed >= 0][-1])
        logits = np.zeros(2048, dtype=np.float32)
        logits[(3 * last_code + group) % 2048] = 1.0
        return logits


class ScriptedTalker:
    """Logits whose argmax follows `script` (then its last entry); hidden = input with a position mark."""

    def __init__(self, script: list[int], runner_up: int = 9) -> None:
        self.script = script
        self.runner_up = runner_up
        self.calls: list[np.ndarray] = []
        self.clears = 0
        self.position = 0

    def clear(self) -> None:
        self.clears += 1
        self.position = 0

    def decode(self, embeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(embeds.copy())
        hidden = embeds.copy()
        hidden[:, -1] = np.arange(self.position, self.position + len(embeds))
        self.position += len(embeds)
        logits = np.zeros((len(embeds), spec.TALKER_VOCAB_SIZE), dtype=np.float32)
        logits[-1, self.script[min(len(self.calls) - 1, len(self.script) - 1)]] = 10.0
        logits[-1, self.runner_up] = 5.0
        return hidden, logits


class RecordingPredictor:
    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []
        self.events: list[str] = []

    def clear(self) -> None:
        self.events.append("clear")

    def decode(self, embeds: np.ndarray) -> tuple[np.ndarray, None]:
        self.events.append(f"decode{len(embeds)}")
        self.calls.append(embeds.copy())
        return embeds.copy(), None


def text_vector(token: int) -> np.ndarray:
    vector = np.zeros(HIDDEN, dtype=np.float32)
    vector[0] = token
    return vector


def make_prompt(trailing: list[int], prefill_len: int = 4) -> Prompt:
    prefill = np.zeros((prefill_len, HIDDEN), dtype=np.float32)
    prefill[:, 0] = np.arange(100, 100 + prefill_len)
    return Prompt(
        prefill=prefill, trailing=np.stack([text_vector(t) for t in trailing]), tts_pad=text_vector(7)
    )


def expected_frame(code0: int) -> list[int]:
    codes = [code0]
    for group in range(1, GROUPS):
        codes.append((3 * codes[-1] + group) % 2048)
    return codes


def run(script: list[int], settings: GenerationSettings = GREEDY, trailing: list[int] | None = None):
    talker, predictor = ScriptedTalker(script), RecordingPredictor()
    generator = FrameGenerator(talker, predictor, TaggedTables(), TalkerRules())
    trace = GenerationTrace()
    codes = generator.generate(make_prompt(trailing or [201, 202]), settings, trace)
    return codes, talker, predictor, trace


# ---- fakes: order and contents of every call ---------------------------------------------------------
def test_frames_stop_at_eos_and_the_eos_frame_is_not_emitted() -> None:
    codes, talker, _, trace = run([5, 6, 8, EOS])
    assert codes.dtype == np.int64 and codes.shape == (3, GROUPS)
    assert codes.tolist() == [expected_frame(5), expected_frame(6), expected_frame(8)]
    assert trace.talker_codes == [5, 6, 8, EOS]
    assert len(talker.calls) == 4 and talker.clears == 1


def test_talker_step_input_is_frame_embedding_sum_plus_trailing_text_then_tts_pad() -> None:
    codes, talker, _, _ = run([5, 6, 8, 10, EOS], trailing=[201, 202])
    np.testing.assert_array_equal(talker.calls[0], make_prompt([201, 202]).prefill)
    for step, call in enumerate(talker.calls[1:]):
        assert call.shape == (1, HIDDEN)
        assert call[0, 0] == [201, 202, 7, 7][step]  # trailing text, then tts_pad
        np.testing.assert_array_equal(call[0, 1 : 1 + GROUPS], codes[step] + 1)  # all 16 embeddings summed


def test_predictor_runs_fresh_two_position_prefill_then_fourteen_single_steps() -> None:
    codes, talker, predictor, _ = run([5, 6, EOS])
    assert predictor.events == (["clear", "decode2"] + ["decode1"] * 14) * 2
    first = predictor.calls[0]
    talker_hidden = talker.calls[0][-1].copy()
    talker_hidden[-1] = len(talker.calls[0]) - 1  # the fake talker's hidden of the last prompt position
    np.testing.assert_array_equal(first[0], talker_hidden * 2)  # projected talker hidden
    np.testing.assert_array_equal(first[1], TaggedTables().codec_embed(0, [5])[0] * 2)  # projected code 0
    for group, call in enumerate(predictor.calls[1:15], start=1):
        np.testing.assert_array_equal(call[0], TaggedTables().codec_embed(group, [codes[0, group]])[0] * 2)


def test_max_new_tokens_drops_the_last_token() -> None:
    settings = GenerationSettings(
        talker=SamplingParams(do_sample=False), predictor=SamplingParams(do_sample=False), max_new_tokens=4
    )
    codes, talker, _, trace = run([5, 6, 8, 10, 12], settings)
    assert codes[:, 0].tolist() == [5, 6, 8]
    assert trace.talker_codes == [5, 6, 8, 10]
    assert len(talker.calls) == 4  # prefill + 3 steps; no step for the dropped token


def test_single_token_limit_gives_no_frames() -> None:
    settings = GenerationSettings(
        talker=SamplingParams(do_sample=False), predictor=SamplingParams(do_sample=False), max_new_tokens=1
    )
    codes, talker, predictor, _ = run([5], settings)
    assert codes.shape == (0, GROUPS) and len(talker.calls) == 1 and not predictor.calls


def test_eos_is_not_taken_before_two_tokens() -> None:
    codes, _, _, trace = run([EOS])
    assert trace.talker_codes == [9, 9, EOS]  # the runner-up wins while EOS is banned
    assert len(codes) == 2


def test_frames_are_yielded_before_the_next_talker_step() -> None:
    talker, predictor = ScriptedTalker([5, 6, EOS]), RecordingPredictor()
    frames = FrameGenerator(talker, predictor, TaggedTables(), TalkerRules()).frames(
        make_prompt([201]), GREEDY
    )
    first = next(frames)
    assert first.tolist() == expected_frame(5) and len(talker.calls) == 1
    assert next(frames).tolist() == expected_frame(6) and len(talker.calls) == 2
    with pytest.raises(StopIteration):
        next(frames)


def test_trace_arrays_have_the_golden_shapes() -> None:
    codes, _, _, trace = run([5, 6, 8, EOS])
    arrays = trace.stacked()
    assert arrays["talker_inputs_embeds"].shape == (4 + 3, HIDDEN)
    assert arrays["talker_logits"].shape == (7, spec.TALKER_VOCAB_SIZE)
    assert arrays["predictor_inputs_embeds"].shape == (3, GROUPS, HIDDEN)
    assert arrays["predictor_hidden"].shape == (3, GROUPS, HIDDEN)
    assert arrays["predictor_logits"].shape == (3, GROUPS - 1, 2048)
    assert arrays["talker_sequences"].tolist() == [5, 6, 8, EOS]


def test_sampled_runs_are_reproducible_with_a_seed() -> None:
    def sampled(seed: int) -> np.ndarray:
        class NoisyTables(TaggedTables):
            def predictor_head(self, group: int, hidden: np.ndarray) -> np.ndarray:
                return np.linspace(0.0, 3.0, 2048, dtype=np.float32)

        settings = GenerationSettings(max_new_tokens=6, seed=seed)
        talker = ScriptedTalker([5])
        generator = FrameGenerator(talker, RecordingPredictor(), NoisyTables(), TalkerRules())
        return generator.generate(make_prompt([201]), settings)

    assert np.array_equal(sampled(3), sampled(3))
    assert not np.array_equal(sampled(3), sampled(4))


# ---- goldens: the whole loop on the converted fixture (real tables, llama.cpp in exact mode) ---------------
from test_prompt import GOLDEN, GOLDEN_CASES  # noqa: E402  (one definition of the golden cases)


def fixture_seed(size: str, kind: str) -> int:
    fixture = GOLDEN / size / "fixture.json"
    return json.loads(fixture.read_text())["checkpoints"][kind]["seed"] if fixture.is_file() else 0


class EosRowTalker:
    """The golden forced-EOS run replaced row 2150 of the codec head; recompute that logit column."""

    def __init__(self, talker: Any, eos_row: np.ndarray) -> None:
        self.talker = talker
        self.eos_row = eos_row.astype(np.float32)

    def clear(self) -> None:
        self.talker.clear()

    def decode(self, embeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hidden, logits = self.talker.decode(embeds)
        logits = logits.copy()
        logits[:, EOS] = hidden @ self.eos_row
        return hidden, logits


@pytest.fixture(scope="module")
def converted_models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(size, kind) -> (checkpoint config, Tables, talker, predictor) of the fixture the goldens came from."""
    from qwen3tts_cli.convert.checkpoint import Checkpoint
    from qwen3tts_cli.convert.lm import write_predictor_gguf, write_tables, write_talker_gguf
    from qwen3tts_cli.engine.llama import LlamaModel, LlamaOptions
    from qwen3tts_cli.engine.tables import Tables
    from qwen3tts_cli.fixtures.checkpoint import build_checkpoint

    cache: dict[tuple[str, str], Any] = {}

    def get(size: str, kind: str) -> Any:
        if (size, kind) not in cache:
            folder = build_checkpoint(
                tmp_path_factory.mktemp(f"{size}-{kind}"), kind, size, seed=fixture_seed(size, kind)
            )
            ckpt = Checkpoint(folder)
            write_tables(ckpt, folder / "tables.safetensors")
            write_talker_gguf(ckpt, folder / "talker.gguf")
            write_predictor_gguf(ckpt, folder / "predictor.gguf")
            talker = LlamaModel(
                folder / "talker.gguf", LlamaOptions(n_ctx=256, n_batch=64, n_threads=1, exact=True)
            )
            predictor = LlamaModel(
                folder / "predictor.gguf",
                LlamaOptions(n_ctx=32, n_batch=16, n_threads=1, exact=True, want_logits=False),
            )
            cache[(size, kind)] = (ckpt, Tables(folder / "tables.safetensors"), talker, predictor)
        return cache[(size, kind)]

    yield get
    for _, _, talker, predictor in cache.values():
        talker.close()
        predictor.close()


@pytest.mark.parametrize(("size", "case"), GOLDEN_CASES)
def test_greedy_generation_equals_official(size: str, case: str, converted_models: Any) -> None:
    from test_prompt import case_prompt

    fixture = json.loads((GOLDEN / size / "fixture.json").read_text())
    info = fixture["cases"][case]
    data = np.load(GOLDEN / size / f"{case}.npz")
    ckpt, tables, talker, predictor = converted_models(size, info["kind"])
    if "codec_head_eos_row" in data:
        talker = EosRowTalker(talker, data["codec_head_eos_row"])
    prompt = case_prompt(info["kind"], info["kwargs"], data, PromptConfig.from_config(ckpt.config), tables)
    settings = GenerationSettings.from_generation_config(ckpt.generation_config, **fixture["generation"])
    rules = TalkerRules.from_talker_config(ckpt.talker_config, settings.repetition_penalty)
    trace = GenerationTrace()
    codes = FrameGenerator(talker, predictor, tables, rules).generate(prompt, settings, trace)

    np.testing.assert_array_equal(codes, data["codes"])
    np.testing.assert_array_equal(trace.talker_codes, data["talker_sequences"])
    ours = trace.stacked()
    np.testing.assert_allclose(ours["talker_inputs_embeds"], data["talker_inputs_embeds"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours["talker_hidden"], data["talker_hidden"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(
        ours["predictor_inputs_embeds"], data["predictor_inputs_embeds"], rtol=0, atol=1e-3
    )
    np.testing.assert_allclose(ours["predictor_hidden"], data["predictor_hidden"], rtol=0, atol=1e-3)
    # golden logits are stored as float16
    np.testing.assert_allclose(ours["talker_logits"], data["talker_logits"], rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(ours["predictor_logits"], data["predictor_logits"], rtol=2e-3, atol=2e-3)


def test_sampled_generation_on_the_real_models_is_reproducible(converted_models: Any) -> None:
    from qwen3tts_cli.engine.prompt import custom_voice_prompt

    ckpt, tables, talker, predictor = converted_models("tiny", spec.KIND_CUSTOM_VOICE)
    ids = [spec.IM_START_ID, spec.ASSISTANT_ID, spec.NEWLINE_ID, 40, 41, 42, spec.IM_END_ID, spec.NEWLINE_ID]
    ids += [spec.IM_START_ID, spec.ASSISTANT_ID, spec.NEWLINE_ID]
    prompt = custom_voice_prompt(PromptConfig.from_config(ckpt.config), tables, ids, "Vivian", "English")
    generator = FrameGenerator(
        talker, predictor, tables, TalkerRules.from_talker_config(ckpt.talker_config, 1.05)
    )

    def sampled(seed: int) -> np.ndarray:
        settings = GenerationSettings.from_generation_config(
            ckpt.generation_config, seed=seed, max_new_tokens=6
        )
        return generator.generate(prompt, settings)

    first = sampled(11)
    assert first.shape[1] == GROUPS and 1 <= len(first) <= 5 and (first < 2048).all()
    np.testing.assert_array_equal(first, sampled(11))
    assert not np.array_equal(first, sampled(12))
