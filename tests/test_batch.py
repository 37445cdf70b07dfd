"""Batched generation: several prompts as several llama.cpp sequences in one decode per step.

1. `LlamaModel` with several sequences: interleaved rows equal solo runs, per-sequence positions,
   clearing and rollback, errors.
2. `BatchedFrameGenerator` on fakes: one talker decode per step and one predictor batch per frame for all
   running sequences, slots freed and reused, each sequence equal to a solo `FrameGenerator` run.
3. On the converted tiny fixture (f32, exact mode): batched greedy codes == the official goldens (==
   solo runs) for prompts of different lengths and stop steps, a seeded sampled batch == solo seeded runs,
   more prompts than slots; q8_0: batched == solo.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_generate import (
    GREEDY,
    RecordingPredictor,
    ScriptedTalker,
    TaggedTables,
    expected_frame,
    make_prompt,
)

from qwen3tts_cli import spec
from qwen3tts_cli.engine.batch import BatchedFrameGenerator
from qwen3tts_cli.engine.generate import FrameGenerator
from qwen3tts_cli.engine.llama import LlamaModel, LlamaOptions
from qwen3tts_cli.engine.prompt import Prompt, PromptConfig
from qwen3tts_cli.engine.sampling import GenerationSettings, SamplingParams, TalkerRules
from qwen3tts_cli.engine.tables import Tables
from qwen3tts_cli.errors import Qwen3TTSError

GOLDEN = Path(__file__).parent / "golden"
EOS = spec.CODEC_EOS_ID
GROUPS = spec.NUM_CODE_GROUPS
F32_ROWS_ATOL = 1e-5


def greedy(max_new_tokens: int) -> GenerationSettings:
    off = SamplingParams(do_sample=False)
    return GenerationSettings(talker=off, predictor=off, max_new_tokens=max_new_tokens)


# ---- fakes: one independent single-sequence fake per slot -----------------------------------------------
class PerSlot:
    """A multi-sequence model made of one single-sequence fake per slot; records every batched call."""

    def __init__(self, make: Callable[[int], Any], slots: int) -> None:
        self.make = make
        self.models = [make(slot) for slot in range(slots)]
        self.calls: list[list[int]] = []  # seq ids of every decode_sequences call
        self.clears = 0

    @property
    def n_seq_max(self) -> int:
        return len(self.models)

    def clear(self) -> None:
        self.clears += 1
        for model in self.models:
            model.clear()

    def clear_sequence(self, seq: int) -> None:
        self.models[seq] = self.make(seq)  # a freed slot starts its script again

    def decode_sequences(self, embeds: np.ndarray, seq_ids: np.ndarray) -> tuple[np.ndarray, Any]:
        seq_ids = np.asarray(seq_ids)
        self.calls.append(seq_ids.tolist())
        hidden: list[Any] = [None] * len(embeds)
        logits: list[Any] = [None] * len(embeds)
        for seq in dict.fromkeys(seq_ids.tolist()):  # sequences in order of first appearance
            rows = np.flatnonzero(seq_ids == seq)
            h, lg = self.models[seq].decode(embeds[rows])
            for k, row in enumerate(rows):
                hidden[row] = h[k]
                logits[row] = None if lg is None else lg[k]
        return np.stack(hidden), None if logits[0] is None else np.stack(logits)


def fake_batch(scripts: list[list[int]], slots: int, **kwargs: Any) -> tuple[Any, PerSlot, PerSlot]:
    """A batched generator whose slot s plays talker script `scripts[s]` (slot = admission order here)."""
    talker = PerSlot(lambda slot: ScriptedTalker(scripts[slot]), slots)
    predictor = PerSlot(lambda _slot: RecordingPredictor(), slots)
    generator = BatchedFrameGenerator(talker, predictor, TaggedTables(), TalkerRules(), **kwargs)
    return generator, talker, predictor


def test_fakes_one_talker_call_per_step_and_one_predictor_batch_per_frame() -> None:
    generator, talker, predictor = fake_batch([[5, 6, 8, EOS], [11, 12, EOS], [20]], slots=3)
    prompts = [make_prompt([201], prefill_len=4), make_prompt([202], prefill_len=7), make_prompt([203], 2)]
    events = list(generator.frames(prompts, [GREEDY, GREEDY, greedy(4)]))

    # slot 1 stops at EOS after 2 frames, slot 2 at its limit after 3, slot 0 at EOS after 3
    assert [(i, int(f[0])) for i, f in events] == [
        (0, 5),
        (1, 11),
        (2, 20),
        (0, 6),
        (1, 12),
        (2, 20),
        (0, 8),
        (2, 20),
    ]
    for _, frame in events:
        assert frame.tolist() == expected_frame(int(frame[0]))
    # prefill of all three together, then one call per step holding one row per still-running sequence
    assert talker.calls == [[0] * 4 + [1] * 7 + [2] * 2, [0, 1, 2], [0, 1, 2], [0, 2]]
    # per frame: all running sequences' 2-position starts together, then 14 calls of one row each
    frame_calls = [[0, 0, 1, 1, 2, 2]] + [[0, 1, 2]] * 14
    assert predictor.calls == frame_calls * 2 + [[0, 0, 2, 2]] + [[0, 2]] * 14
    assert predictor.clears == 3


def test_fakes_each_sequence_equals_its_solo_run() -> None:
    scripts = [[5, 6, 8, EOS], [11, 12, 13, 14, 15], [EOS]]
    prompts = [make_prompt([201, 202]), make_prompt([203], prefill_len=6), make_prompt([204, 205, 206], 3)]
    settings = [GREEDY, greedy(3), GREEDY]
    generator, _, _ = fake_batch(scripts, slots=3)
    batched = generator.generate(prompts, settings)
    for script, prompt, setting, codes in zip(scripts, prompts, settings, batched, strict=True):
        solo = FrameGenerator(ScriptedTalker(script), RecordingPredictor(), TaggedTables(), TalkerRules())
        np.testing.assert_array_equal(codes, solo.generate(prompt, setting))
    assert [len(c) for c in batched] == [3, 2, 2]  # EOS banned for 2 tokens: [EOS] plays the runner-up


def test_fakes_more_prompts_than_slots_reuse_freed_slots_and_prefill_with_the_step() -> None:
    # slot 0 finishes first (two frames), so prompt 2 is admitted into slot 0 while slot 1 keeps running
    scripts = [[5, 6, EOS], [11, 12, 13, 14, EOS]]
    generator, talker, _ = fake_batch(scripts, slots=2)
    prompts = [make_prompt([201], prefill_len=3), make_prompt([202], 4), make_prompt([203], 5)]
    events = list(generator.frames(prompts, [GREEDY, GREEDY, greedy(2)]))

    assert [(i, int(f[0])) for i, f in events] == [(0, 5), (1, 11), (0, 6), (1, 12), (1, 13), (2, 5), (1, 14)]
    # slot 1's step and prompt 2's prefill share one decode; then both step together
    assert talker.calls == [[0] * 3 + [1] * 4, [0, 1], [0, 1], [1] + [0] * 5, [0, 1]]


def test_fakes_separate_prefill_gives_the_same_frames() -> None:
    scripts = [[5, 6, EOS], [11, 12, EOS]]
    prompts = [make_prompt([201], prefill_len=3), make_prompt([202], 4)]
    joint, _, _ = fake_batch(scripts, slots=2)
    separate, talker, _ = fake_batch(scripts, slots=2, joint_prefill=False)
    got = separate.generate(prompts, [GREEDY, GREEDY])
    for a, b in zip(joint.generate(prompts, [GREEDY, GREEDY]), got, strict=True):
        np.testing.assert_array_equal(a, b)
    assert talker.calls[:3] == [[0] * 3, [1] * 4, [0, 1]]


def test_lead_frames_run_the_first_prompt_alone_then_admit_the_others() -> None:
    scripts = [[5, 6, 8, 10, EOS], [11, 12, EOS], [20, 21, EOS]]
    generator, talker, _ = fake_batch(scripts, slots=3)
    prompts = [make_prompt([201], prefill_len=3), make_prompt([202], 4), make_prompt([203], 5)]
    events = list(generator.frames(prompts, [GREEDY] * 3, lead_frames=2))

    assert [(i, int(f[0])) for i, f in events] == [
        (0, 5),
        (0, 6),
        (0, 8),
        (1, 11),
        (2, 20),
        (0, 10),
        (1, 12),
        (2, 21),
    ]
    assert talker.calls == [[0] * 3, [0], [0] + [1] * 4 + [2] * 5, [0, 1, 2], [0, 1, 2]]


def test_lead_frames_release_the_others_when_the_lead_ends_early() -> None:
    generator, talker, _ = fake_batch([[5, 6, EOS], [11, 12, EOS]], slots=2)
    prompts = [make_prompt([201], prefill_len=3), make_prompt([202], 4)]
    events = list(generator.frames(prompts, [GREEDY] * 2, lead_frames=10))

    # prompt 1 is admitted when the lead stopped, into the lowest free slot (the lead's slot 0)
    assert [i for i, _ in events] == [0, 0, 1, 1]
    assert [int(f[0]) for i, f in events if i == 0] == [5, 6]
    assert talker.calls == [[0] * 3, [0], [0], [0] * 4, [0], [0]]


def test_on_finish_reports_each_prompt_once_before_the_next_frames() -> None:
    generator, _, _ = fake_batch([[5, 6, 8, EOS], [11, 12, EOS], [20]], slots=3)
    prompts = [make_prompt([201]), make_prompt([202]), make_prompt([203])]
    log: list[object] = []
    for index, frame in generator.frames(prompts, [GREEDY, GREEDY, greedy(4)], on_finish=log.append):
        log.append((index, int(frame[0])))
    # prompt 1 hits EOS at step 2 (reported before that step's frames); 0 (EOS) and 2 (limit) at step 3
    assert log == [(0, 5), (1, 11), (2, 20), (0, 6), (1, 12), (2, 20), 1, (0, 8), (2, 20), 0, 2]


def test_max_sequences_caps_the_slots_and_mismatched_lists_are_refused() -> None:
    generator, _, _ = fake_batch([[5, EOS]] * 4, slots=4, max_sequences=2)
    assert generator.slots == 2
    with pytest.raises(ValueError):
        list(generator.frames([make_prompt([201])], [GREEDY, GREEDY]))


def test_single_token_limit_gives_no_frames_and_no_predictor_work() -> None:
    generator, _, predictor = fake_batch([[5], [6]], slots=2)
    codes = generator.generate([make_prompt([201]), make_prompt([202])], [greedy(1), greedy(1)])
    assert [c.shape for c in codes] == [(0, GROUPS), (0, GROUPS)] and predictor.calls == []


# ---- llama.cpp with several sequences -------------------------------------------------------------------
@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """(kind, quant) -> converted tiny model folder (the checkpoint the goldens were made from)."""
    from qwen3tts_cli.convert.converter import convert_checkpoint
    from qwen3tts_cli.fixtures.checkpoint import build_checkpoint

    folders: dict[tuple[str, str], Path] = {}
    sources: dict[str, Path] = {}

    def get(kind: str, quant: str) -> Path:
        if kind not in sources:
            seed = json.loads((GOLDEN / "tiny" / "fixture.json").read_text())["checkpoints"][kind]["seed"]
            sources[kind] = build_checkpoint(tmp_path_factory.mktemp(f"ckpt-{kind}"), kind, "tiny", seed)
        if (kind, quant) not in folders:
            out = tmp_path_factory.mktemp(f"conv-{kind}-{quant}") / "model"
            folders[(kind, quant)] = convert_checkpoint(sources[kind], out, quant, threads=1)
        return folders[(kind, quant)]

    return get


def open_models(folder: Path, slots: int, exact: bool = True) -> tuple[LlamaModel, LlamaModel]:
    talker = LlamaModel(
        folder / "talker.gguf",
        LlamaOptions(n_ctx=128, n_batch=64, n_threads=1, exact=exact, n_seq_max=slots),
    )
    predictor = LlamaModel(
        folder / "predictor.gguf",
        LlamaOptions(n_ctx=16, n_batch=32, n_threads=1, exact=exact, want_logits=False, n_seq_max=slots),
    )
    return talker, predictor


@pytest.fixture
def talker_pair(converted: Callable[[str, str], Path]) -> Iterator[tuple[LlamaModel, LlamaModel]]:
    """The tiny f32 talker opened twice: with 3 sequences and with one."""
    folder = converted(spec.KIND_CUSTOM_VOICE, "f32")
    options = LlamaOptions(n_ctx=64, n_batch=16, n_threads=1, exact=True)
    with LlamaModel(folder / "talker.gguf", replace(options, n_seq_max=3)) as multi:
        with LlamaModel(folder / "talker.gguf", options) as solo:
            yield multi, solo


def test_interleaved_sequences_equal_solo_runs(talker_pair: tuple[LlamaModel, LlamaModel]) -> None:
    multi, solo = talker_pair
    rng = np.random.default_rng(0)
    inputs = {
        seq: rng.standard_normal((n, multi.n_embd)).astype(np.float32) for seq, n in enumerate([5, 9, 2])
    }
    # prefill of different lengths in one call (more rows than n_batch: split into chunks), then steps
    rows = np.concatenate([inputs[0][:3], inputs[1][:7], inputs[2]])
    seq_ids = [0] * 3 + [1] * 7 + [2] * 2
    hidden, logits = multi.decode_sequences(rows, seq_ids)
    h2, l2 = multi.decode_sequences(np.stack([inputs[1][7], inputs[0][3]]), [1, 0])
    h3, l3 = multi.decode_sequences(np.stack([inputs[0][4], inputs[1][8]]), [0, 1])
    assert [multi.positions(s) for s in range(3)] == [5, 9, 2]
    assert logits is not None and l2 is not None and l3 is not None

    got = {
        0: (np.concatenate([hidden[:3], h2[1:], h3[:1]]), np.concatenate([logits[:3], l2[1:], l3[:1]])),
        1: (np.concatenate([hidden[3:10], h2[:1], h3[1:]]), np.concatenate([logits[3:10], l2[:1], l3[1:]])),
        2: (hidden[10:], logits[10:]),
    }
    for seq, x in inputs.items():
        solo.clear()
        want_hidden, want_logits = solo.decode(x)
        # f32 mat-mul kernels round by how many rows a call holds (~1 ulp); leakage would be O(1)
        np.testing.assert_allclose(got[seq][0], want_hidden, rtol=0, atol=F32_ROWS_ATOL)
        np.testing.assert_allclose(got[seq][1], want_logits, rtol=0, atol=F32_ROWS_ATOL)


def test_clear_and_rollback_touch_one_sequence(talker_pair: tuple[LlamaModel, LlamaModel]) -> None:
    multi, solo = talker_pair
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((4, multi.n_embd)).astype(np.float32) for _ in range(2))
    multi.decode_sequences(np.concatenate([a, b]), [0] * 4 + [1] * 4)
    multi.clear_sequence(1)
    multi.rollback(2, seq=0)
    assert [multi.positions(s) for s in range(3)] == [2, 0, 0] and multi.n_past == 2
    hidden, _ = multi.decode_sequences(np.concatenate([a[2:], b[:1]]), [0, 0, 1])
    want_a, _ = solo.decode(a)
    solo.clear()
    want_b, _ = solo.decode(b[:1])
    np.testing.assert_allclose(hidden[:2], want_a[2:], rtol=0, atol=F32_ROWS_ATOL)
    np.testing.assert_allclose(hidden[2:], want_b, rtol=0, atol=F32_ROWS_ATOL)
    multi.clear()
    assert [multi.positions(s) for s in range(3)] == [0, 0, 0]


def test_bad_sequence_ids_and_full_sequences_are_refused(talker_pair: tuple[LlamaModel, LlamaModel]) -> None:
    multi, _ = talker_pair
    row = np.zeros((1, multi.n_embd), dtype=np.float32)
    with pytest.raises(ValueError):
        multi.decode_sequences(row, [3])
    with pytest.raises(ValueError):
        multi.decode_sequences(np.concatenate([row, row]), [0])
    with pytest.raises(ValueError):
        multi.clear_sequence(-1)
    multi.clear()
    multi.decode_sequences(np.zeros((multi.n_ctx, multi.n_embd), np.float32), [2] * multi.n_ctx)
    with pytest.raises(Qwen3TTSError, match="context holds"):
        multi.decode_sequences(row, [2])
    assert multi.positions(2) == multi.n_ctx
    multi.decode_sequences(row, [0])  # the other sequences still have room
    assert multi.positions(0) == 1


# ---- the batched frame loop on the converted tiny fixture -------------------------------------------------
def case_setup(
    folder: Path, names: list[str]
) -> tuple[Any, list[Prompt], GenerationSettings, TalkerRules, Any]:
    """Tables, the golden prompts of `names`, the golden generation settings, rules and golden data."""
    from test_prompt import case_prompt

    from qwen3tts_cli.convert.checkpoint import read_json
    from qwen3tts_cli.engine.tables import Tables

    fixture = json.loads((GOLDEN / "tiny" / "fixture.json").read_text())
    config = read_json(folder / "config.json")
    tables = Tables(folder / "tables.safetensors")
    data = [dict(np.load(GOLDEN / "tiny" / f"{name}.npz")) for name in names]
    prompts = [
        case_prompt(
            fixture["cases"][name]["kind"],
            fixture["cases"][name]["kwargs"],
            d,
            PromptConfig.from_config(config),
            tables,
        )
        for name, d in zip(names, data, strict=True)
    ]
    settings = GenerationSettings.from_generation_config(
        read_json(folder / "generation_config.json"), **fixture["generation"]
    )
    rules = TalkerRules.from_talker_config(config["talker_config"], settings.repetition_penalty)
    return tables, prompts, settings, rules, data


class EosRowForSlots:
    """The golden forced-EOS run replaced row 2150 of the codec head: recompute that logit for some slots."""

    def __init__(self, talker: LlamaModel, eos_row: np.ndarray, slots: set[int]) -> None:
        self.talker = talker
        self.eos_row = eos_row.astype(np.float32)
        self.slots = slots
        self.n_seq_max = talker.n_seq_max

    def clear(self) -> None:
        self.talker.clear()

    def clear_sequence(self, seq: int) -> None:
        self.talker.clear_sequence(seq)

    def decode_sequences(self, embeds: np.ndarray, seq_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hidden, logits = self.talker.decode_sequences(embeds, seq_ids)
        assert logits is not None
        rows = np.isin(np.asarray(seq_ids), list(self.slots))
        logits = logits.copy()
        logits[rows, EOS] = hidden[rows] @ self.eos_row
        return hidden, logits


CASES = {
    spec.KIND_CUSTOM_VOICE: ["cv_english", "cv_dylan_auto_instruct_stream", "cv_english_eos"],
    spec.KIND_BASE: ["clone_icl_stream", "clone_icl_nonstream", "clone_xvector"],
}


@pytest.mark.parametrize("joint_prefill", [True, False])
@pytest.mark.parametrize("kind", list(CASES))
def test_batched_greedy_equals_the_goldens(
    kind: str, joint_prefill: bool, converted: Callable[[str, str], Path]
) -> None:
    folder = converted(kind, "f32")
    tables, prompts, settings, rules, data = case_setup(folder, CASES[kind])
    talker, predictor = open_models(folder, slots=3)
    with talker, predictor:
        eos = {i for i, d in enumerate(data) if "codec_head_eos_row" in d}
        model: Any = EosRowForSlots(talker, data[min(eos)]["codec_head_eos_row"], eos) if eos else talker
        generator = BatchedFrameGenerator(model, predictor, tables, rules, joint_prefill=joint_prefill)
        events = list(generator.frames(prompts, [settings] * 3))

    for index, d in enumerate(data):
        codes = np.stack([frame for i, frame in events if i == index])
        np.testing.assert_array_equal(codes, d["codes"])
    if eos:  # the forced-EOS sequence left after 4 frames while the others went on
        order = [i for i, _ in events]
        assert order.count(2) == 4 and order[-6:] == [0, 1] * 3


@pytest.mark.parametrize("lead_frames", [0, 2])
def test_more_prompts_than_slots_and_own_limits(
    lead_frames: int, converted: Callable[[str, str], Path]
) -> None:
    folder = converted(spec.KIND_CUSTOM_VOICE, "f32")
    tables, prompts, settings, rules, data = case_setup(folder, CASES[spec.KIND_CUSTOM_VOICE][:2])
    order = [0, 1, 0, 1, 0]  # golden prompt per request
    limits = [8, 3, 5, 8, 2]  # max_new_tokens: frames = limit - 1
    talker, predictor = open_models(folder, slots=2)
    with talker, predictor:
        generator = BatchedFrameGenerator(talker, predictor, tables, rules)
        events = list(
            generator.frames(
                [prompts[k] for k in order],
                [replace(settings, max_new_tokens=n) for n in limits],
                lead_frames=lead_frames,
            )
        )
    for index, (k, limit) in enumerate(zip(order, limits, strict=True)):
        codes = [frame for i, frame in events if i == index]
        np.testing.assert_array_equal(np.stack(codes), data[k]["codes"][: limit - 1])
    first_other = next(n for n, (i, _) in enumerate(events) if i != 0)
    assert first_other == (lead_frames + 1 if lead_frames else 1)  # the lead ran alone, then in step


def sampled_settings(folder: Path, seed: int, max_new_tokens: int = 10) -> GenerationSettings:
    from qwen3tts_cli.convert.checkpoint import read_json

    config = read_json(folder / "generation_config.json")
    return GenerationSettings.from_generation_config(config, seed=seed, max_new_tokens=max_new_tokens)


def solo_runs(
    folder: Path,
    prompts: list[Prompt],
    settings: list[GenerationSettings],
    rules: TalkerRules,
    tables: Any,
    exact: bool = True,
) -> list[np.ndarray]:
    talker, predictor = open_models(folder, slots=1, exact=exact)
    with talker, predictor:
        solo = FrameGenerator(talker, predictor, tables, rules)
        return [solo.generate(p, s) for p, s in zip(prompts, settings, strict=True)]


def test_seeded_sampled_batch_equals_solo_seeded_runs(converted: Callable[[str, str], Path]) -> None:
    folder = converted(spec.KIND_CUSTOM_VOICE, "f32")
    tables, prompts, _, rules, _ = case_setup(folder, CASES[spec.KIND_CUSTOM_VOICE][:2])
    prompts = [prompts[0], prompts[1], prompts[0]]
    settings = [sampled_settings(folder, seed) for seed in (11, 12, 13)]
    want = solo_runs(folder, prompts, settings, rules, tables)
    talker, predictor = open_models(folder, slots=3)
    with talker, predictor:
        got = BatchedFrameGenerator(talker, predictor, tables, rules).generate(prompts, settings)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(got[0], got[2])  # same prompt, other seed: the streams are independent
    assert all(len(codes) >= 2 for codes in got)


@pytest.mark.parametrize("int8_heads", [False, True])
def test_q8_0_batch_equals_solo(converted: Callable[[str, str], Path], int8_heads: bool) -> None:
    """llama.cpp's q8_0 kernels give the same rows whatever the batch holds (batch-probe: bit-identical);
    so do the 8-bit heads, which take all rows of a group in one call."""
    folder = converted(spec.KIND_CUSTOM_VOICE, "q8_0")
    _, prompts, settings, rules, _ = case_setup(folder, CASES[spec.KIND_CUSTOM_VOICE][:2])
    tables = Tables(folder / "tables.safetensors", int8_heads=int8_heads)
    assert tables.int8_heads == int8_heads
    prompts = [prompts[0], prompts[1], prompts[1], prompts[0]]
    runs = [replace(settings, max_new_tokens=12)] * 2
    runs += [sampled_settings(folder, seed, 12) for seed in (5, 6)]
    want = solo_runs(folder, prompts, runs, rules, tables, exact=False)
    talker, predictor = open_models(folder, slots=4, exact=False)
    with talker, predictor:
        got = BatchedFrameGenerator(talker, predictor, tables, rules).generate(prompts, runs)
    agreement = np.mean([np.mean(a == b) for a, b in zip(got, want, strict=True)])
    assert agreement == 1.0, f"q8_0 batched/solo code agreement {agreement:.4f}"
