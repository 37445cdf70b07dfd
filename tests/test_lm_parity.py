"""Talker and code predictor through our GGUF + llama.cpp + tables, against two independent references.

1. A float64 numpy forward of the checkpoint tensors under their OFFICIAL names (written here from the
   spec: RMSNorm, per-head q/k RMSNorm, rotate_half RoPE, GQA, SwiGLU), so the GGUF name map, the
   hyper-parameters and llama.cpp's graph are all checked without torch.
2. The official goldens (tests/golden/<size>/<case>.npz, made by the official PyTorch package):
   teacher-forced talker and code-predictor sequences, compared position by position.

Exact mode throughout: f32 weights, f32 KV cache, flash attention off.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import llama_cpp  # noqa: E402,F401  (a missing llama-cpp-python must fail the run, not skip it)
import numpy as np
import pytest

from qwen3tts_cli import spec
from qwen3tts_cli.convert.checkpoint import Checkpoint, LMShape
from qwen3tts_cli.convert.lm import (
    COMPONENT_TALKER,
    PlannedTensor,
    talker_plan,
    write_gguf,
    write_predictor_gguf,
    write_tables,
    write_talker_gguf,
)
from qwen3tts_cli.engine import tables as tn
from qwen3tts_cli.engine.llama import LlamaModel, LlamaOptions  # noqa: E402
from qwen3tts_cli.engine.tables import Tables
from qwen3tts_cli.fixtures.checkpoint import build_checkpoint

GOLDEN = Path(__file__).parent / "golden"
TOLERANCE = 1e-4
EXACT = LlamaOptions(n_ctx=512, n_batch=64, n_threads=1, exact=True)
PREDICTOR_EXACT = LlamaOptions(n_ctx=32, n_batch=16, n_threads=1, exact=True, want_logits=False)
# (size, kind) of the checkpoints used against the numpy reference: tiny-wide/base has the projection
REFERENCE_FIXTURES = [("tiny", spec.KIND_CUSTOM_VOICE), ("tiny-wide", spec.KIND_BASE)]


# ---- float64 reference of the official Qwen3 stack -------------------------------------------------------
def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def _rotate_half_rope(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """HF rotate_half RoPE on [T, heads, D]: pairs (i, i + D/2), inv_freq = theta^(-2i/D)."""
    half = x.shape[-1] // 2
    inv_freq = theta ** (-np.arange(half, dtype=np.float64) * 2.0 / x.shape[-1])
    angles = positions[:, None].astype(np.float64) * inv_freq[None, :]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def reference_stack(ckpt: Checkpoint, prefix: str, shape: LMShape, x: np.ndarray) -> np.ndarray:
    """Official decoder stack `prefix` (e.g. 'talker.model.') on inputs x [T, hidden] at positions 0..T-1,
    float64; returns the hidden states after the final RMSNorm."""

    def w(name: str) -> np.ndarray:
        return ckpt.tensor(prefix + name).astype(np.float64)

    steps = x.shape[0]
    positions = np.arange(steps)
    mask = np.triu(np.full((steps, steps), -np.inf), 1)
    h = x.astype(np.float64)
    eps, d = shape.rms_eps, shape.head_dim
    for layer in range(shape.layers):
        p = f"layers.{layer}."
        a = _rms_norm(h, w(p + "input_layernorm.weight"), eps)
        q = (a @ w(p + "self_attn.q_proj.weight").T).reshape(steps, shape.heads, d)
        k = (a @ w(p + "self_attn.k_proj.weight").T).reshape(steps, shape.kv_heads, d)
        v = (a @ w(p + "self_attn.v_proj.weight").T).reshape(steps, shape.kv_heads, d)
        q = _rotate_half_rope(
            _rms_norm(q, w(p + "self_attn.q_norm.weight"), eps), positions, shape.rope_theta
        )
        k = _rotate_half_rope(
            _rms_norm(k, w(p + "self_attn.k_norm.weight"), eps), positions, shape.rope_theta
        )
        repeat = shape.heads // shape.kv_heads
        k, v = np.repeat(k, repeat, axis=1), np.repeat(v, repeat, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(d) + mask[None]
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attn = np.einsum("hts,shd->thd", scores, v).reshape(steps, shape.heads * d)
        h = h + attn @ w(p + "self_attn.o_proj.weight").T
        f = _rms_norm(h, w(p + "post_attention_layernorm.weight"), eps)
        gate, up = f @ w(p + "mlp.gate_proj.weight").T, f @ w(p + "mlp.up_proj.weight").T
        h = h + (gate / (1.0 + np.exp(-gate)) * up) @ w(p + "mlp.down_proj.weight").T
    return _rms_norm(h, w("norm.weight"), eps)


def reference_text_embed(ckpt: Checkpoint, ids: np.ndarray) -> np.ndarray:
    e = ckpt.tensor(tn.TEXT_EMBEDDING)[ids].astype(np.float64)
    fc1 = e @ ckpt.tensor(tn.TEXT_FC1_WEIGHT).astype(np.float64).T + ckpt.tensor(tn.TEXT_FC1_BIAS)
    fc1 = fc1 / (1.0 + np.exp(-fc1))
    return fc1 @ ckpt.tensor(tn.TEXT_FC2_WEIGHT).astype(np.float64).T + ckpt.tensor(tn.TEXT_FC2_BIAS)


# ---- converted fixtures ---------------------------------------------------------------------------------
class Converted:
    """A fixture checkpoint converted to f32 GGUFs + tables, with lazily opened engines."""

    def __init__(self, folder: Path, size: str, kind: str) -> None:
        self.folder = folder
        self.ckpt = Checkpoint(build_checkpoint(folder / "ckpt", kind, size, seed=0))
        self.talker_path = folder / "talker.gguf"
        self.predictor_path = folder / "predictor.gguf"
        write_talker_gguf(self.ckpt, self.talker_path)
        write_predictor_gguf(self.ckpt, self.predictor_path)
        write_tables(self.ckpt, folder / "tables.safetensors")
        self.tables = Tables(folder / "tables.safetensors")

    def talker(self, options: LlamaOptions = EXACT) -> LlamaModel:
        return LlamaModel(self.talker_path, options)

    def talker_with_eos_row(self, row: np.ndarray) -> LlamaModel:
        """The talker with codec_head row EOS replaced (the golden forced-EOS case), exact mode."""
        plan = talker_plan(self.ckpt)
        head = plan[-1]
        assert head.name == "output.weight"

        def patched() -> np.ndarray:
            weights = head.load().copy()
            weights[spec.CODEC_EOS_ID] = row
            return weights

        plan[-1] = PlannedTensor(head.name, head.shape, patched)
        path = self.folder / "talker-eos.gguf"
        write_gguf(path, self.ckpt.talker_shape, spec.TALKER_VOCAB_SIZE, "eos test", COMPONENT_TALKER, plan)
        return LlamaModel(path, EXACT)

    def predictor(self, options: LlamaOptions = PREDICTOR_EXACT) -> LlamaModel:
        return LlamaModel(self.predictor_path, options)


_converted: dict[tuple[str, str], Converted] = {}


@pytest.fixture(scope="module")
def convert(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    def get(size: str, kind: str) -> Converted:
        if (size, kind) not in _converted:
            _converted[size, kind] = Converted(tmp_path_factory.mktemp(f"{size}-{kind}"), size, kind)
        return _converted[size, kind]

    yield get
    _converted.clear()


def run_talker(model: LlamaModel, embeds: np.ndarray, prefill: int) -> tuple[np.ndarray, np.ndarray]:
    """Prefill `prefill` positions in one call, then one position per call (as generation does)."""
    model.clear()
    hidden, logits = model.decode(embeds[:prefill])
    parts_h, parts_l = [hidden], [logits]
    for row in embeds[prefill:]:
        h, lg = model.decode(row[None])
        parts_h.append(h)
        parts_l.append(lg)
    return np.concatenate(parts_h), np.concatenate(parts_l)


def run_predictor_frame(
    model: LlamaModel, tables: Tables, projected: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One frame: fresh KV, 2-position prefill, 14 single steps; logits of groups 1..15 via our heads."""
    model.clear()
    hidden = [model.decode(projected[:2])[0]]
    for row in projected[2:]:
        hidden.append(model.decode(row[None])[0])
    hidden_all = np.concatenate(hidden)
    logits = np.stack([tables.predictor_head(g, hidden_all[g]) for g in range(1, tables.num_groups)])
    return hidden_all, logits


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def diff_beyond_storage(ours: np.ndarray, golden: np.ndarray) -> float:
    """Max abs diff beyond the rounding of the golden's storage dtype (logit goldens are stored f16)."""
    rounding = np.spacing(np.abs(golden)).astype(np.float64) / 2 if golden.dtype == np.float16 else 0.0
    return float(np.max(np.abs(ours.astype(np.float64) - golden.astype(np.float64)) - rounding))


def picks_a_golden_maximum(ours: np.ndarray, golden: np.ndarray) -> bool:
    """Our argmax is (one of) the golden's maxima on every row: f16 storage can create ties."""
    chosen = np.take_along_axis(golden, ours.argmax(-1)[..., None], axis=-1)[..., 0]
    return bool(np.all(chosen == golden.max(-1)))


# ---- against the float64 reference ----------------------------------------------------------------------
@pytest.mark.parametrize(("size", "kind"), REFERENCE_FIXTURES)
def test_talker_matches_float64_reference(convert, size: str, kind: str) -> None:
    conv = convert(size, kind)
    shape = conv.ckpt.talker_shape
    embeds = np.random.default_rng(1).standard_normal((24, shape.hidden)).astype(np.float32)
    ref_hidden = reference_stack(conv.ckpt, "talker.model.", shape, embeds)
    ref_logits = ref_hidden @ conv.ckpt.tensor(tn.TALKER_CODEC_HEAD).astype(np.float64).T
    with conv.talker() as model:
        assert (model.n_embd, model.n_vocab) == (shape.hidden, spec.TALKER_VOCAB_SIZE)
        hidden, logits = run_talker(model, embeds, prefill=16)
    dh, dl = max_diff(hidden, ref_hidden), max_diff(logits, ref_logits)
    print(f"\n[{size}] talker vs float64: hidden {dh:.2e} logits {dl:.2e}")
    assert max_diff(hidden, ref_hidden) <= TOLERANCE
    assert max_diff(logits, ref_logits) <= TOLERANCE
    assert np.array_equal(logits.argmax(-1), ref_logits.argmax(-1))


@pytest.mark.parametrize(("size", "kind"), REFERENCE_FIXTURES)
def test_predictor_matches_float64_reference(convert, size: str, kind: str) -> None:
    conv = convert(size, kind)
    rng = np.random.default_rng(2)
    talker_width = rng.standard_normal((16, conv.ckpt.talker_shape.hidden)).astype(np.float32)
    projected = conv.tables.project(talker_width)
    assert projected.shape == (16, conv.ckpt.predictor_shape.hidden)
    ref_hidden = reference_stack(
        conv.ckpt, "talker.code_predictor.model.", conv.ckpt.predictor_shape, projected
    )
    with conv.predictor() as model:
        for _frame in range(2):  # the second frame proves clear() really resets the cache
            hidden, logits = run_predictor_frame(model, conv.tables, projected)
            assert max_diff(hidden, ref_hidden) <= TOLERANCE
    ref_logits = np.stack(
        [
            ref_hidden[g] @ conv.ckpt.tensor(tn.predictor_head_name(g)).astype(np.float64).T
            for g in range(1, 16)
        ]
    )
    dh, dl = max_diff(hidden, ref_hidden), max_diff(logits, ref_logits)
    print(f"\n[{size}] predictor vs float64: hidden {dh:.2e} logits {dl:.2e}")
    assert max_diff(logits, ref_logits) <= TOLERANCE
    assert np.array_equal(logits.argmax(-1), ref_logits.argmax(-1))


@pytest.mark.parametrize(("size", "kind"), REFERENCE_FIXTURES)
def test_tables_match_checkpoint(convert, size: str, kind: str) -> None:
    conv = convert(size, kind)
    ids = np.array([spec.IM_START_ID, spec.ASSISTANT_ID, spec.NEWLINE_ID, 0, 151935, spec.TTS_PAD_ID])
    assert max_diff(conv.tables.text_embed(ids), reference_text_embed(conv.ckpt, ids)) <= 1e-5
    assert conv.tables.num_groups == spec.NUM_CODE_GROUPS
    codes = np.arange(16) * 97 % 2048
    expected = conv.ckpt.tensor(tn.TALKER_CODEC_EMBEDDING)[codes[0]].astype(np.float64)
    for g in range(1, 16):
        expected = expected + conv.ckpt.tensor(tn.predictor_embedding_name(g))[codes[g]]
        assert np.array_equal(
            conv.tables.codec_embed(g, codes[g]), conv.ckpt.tensor(tn.predictor_embedding_name(g))[codes[g]]
        )
    assert max_diff(conv.tables.frame_embed(codes), expected) <= 1e-5
    x = np.random.default_rng(3).standard_normal((3, conv.ckpt.talker_shape.hidden)).astype(np.float32)
    if conv.ckpt.talker_shape.hidden == conv.ckpt.predictor_shape.hidden:
        assert np.array_equal(conv.tables.project(x), x)
    else:
        w = conv.ckpt.tensor(tn.MTP_PROJECTION_WEIGHT).astype(np.float64)
        assert max_diff(conv.tables.project(x), x @ w.T + conv.ckpt.tensor(tn.MTP_PROJECTION_BIAS)) <= 1e-5


def test_text_embedding_keeps_shipped_bf16_bits(convert) -> None:
    conv = convert(*REFERENCE_FIXTURES[0])
    shipped = conv.ckpt.weights
    assert shipped.dtype(tn.TEXT_EMBEDDING) == "BF16"
    ours = conv.tables._file
    assert ours.dtype(tn.TEXT_EMBEDDING) == "BF16"
    assert np.array_equal(ours.raw(tn.TEXT_EMBEDDING), shipped.raw(tn.TEXT_EMBEDDING))


def test_rollback_and_chunking_are_exact(convert) -> None:
    conv = convert(*REFERENCE_FIXTURES[0])
    embeds = np.random.default_rng(4).standard_normal((40, conv.ckpt.talker_shape.hidden)).astype(np.float32)
    small_batches = LlamaOptions(n_ctx=512, n_batch=7, n_threads=1, exact=True)
    with conv.talker() as whole, conv.talker(small_batches) as chunked:
        h_whole, lg_whole = whole.decode(embeds)
        h_chunked, _ = chunked.decode(embeds)  # 40 positions in 7-position pieces
        assert max_diff(h_whole, h_chunked) <= 1e-5
        whole.rollback(25)
        assert whole.n_past == 25
        h_again, lg_again = whole.decode(embeds[25:])
        assert max_diff(h_again, h_whole[25:]) <= 1e-5
        assert max_diff(lg_again, lg_whole[25:]) <= 1e-5
        with pytest.raises(ValueError):
            whole.rollback(41)


def test_context_overflow_is_a_clear_error(convert) -> None:
    from qwen3tts_cli.errors import Qwen3TTSError

    conv = convert(*REFERENCE_FIXTURES[0])
    with conv.predictor() as model:
        model.decode(np.zeros((model.n_ctx, model.n_embd), np.float32))
        with pytest.raises(Qwen3TTSError, match="context"):
            model.decode(np.zeros((1, model.n_embd), np.float32))


# ---- against the official goldens -----------------------------------------------------------------------
def _golden_cases() -> list[tuple[str, str]]:
    cases = []
    for size in ("tiny", "tiny-wide"):
        fixture = GOLDEN / size / "fixture.json"
        if fixture.is_file():
            cases += [(size, case) for case in json.loads(fixture.read_text())["cases"]]
    return cases


GOLDEN_CASES = _golden_cases()
assert GOLDEN_CASES, "tests/golden/<size>/ missing: run tests/parity/make_goldens.py"


def _golden(convert, size: str, case: str) -> tuple[Converted, dict[str, np.ndarray]]:
    fixture = json.loads((GOLDEN / size / "fixture.json").read_text())
    kind = fixture["cases"][case]["kind"]
    assert fixture["checkpoints"][kind]["seed"] == 0
    with np.load(GOLDEN / size / f"{case}.npz") as data:
        arrays = {name: data[name] for name in data.files}
    return convert(size, kind), arrays


def _official_greedy(logits: np.ndarray, generated: list[int]) -> int:
    """Official talker logits processing, greedy: repetition penalty 1.05, EOS banned for the first 2
    tokens, ids 2048..3071 except EOS suppressed."""
    scores = logits.astype(np.float64).copy()
    for token in set(generated):
        scores[token] = scores[token] / 1.05 if scores[token] > 0 else scores[token] * 1.05
    if len(generated) < spec.MIN_NEW_TOKENS:
        scores[spec.CODEC_EOS_ID] = -np.inf
    keep_eos = scores[spec.CODEC_EOS_ID]
    scores[spec.SUPPRESSED_TOKENS_START :] = -np.inf
    scores[spec.CODEC_EOS_ID] = keep_eos
    return int(np.argmax(scores))


@pytest.mark.parametrize(("size", "case"), GOLDEN_CASES)
def test_talker_teacher_forced_matches_official(convert, size: str, case: str) -> None:
    conv, g = _golden(convert, size, case)
    prompt_len = len(g["prefill_inputs_embeds"])
    eos_row = g.get("codec_head_eos_row")  # the forced-EOS case edits one row of the codec head
    with conv.talker() if eos_row is None else conv.talker_with_eos_row(eos_row) as model:
        hidden, logits = run_talker(model, g["talker_inputs_embeds"], prefill=prompt_len)
    dh, dl = max_diff(hidden, g["talker_hidden"]), max_diff(logits, g["talker_logits"])
    beyond = diff_beyond_storage(logits, g["talker_logits"])
    print(
        f"\n[{size}/{case}] talker teacher-forced: hidden {dh:.2e} logits {dl:.2e} (beyond f16: {beyond:.2e})"
    )
    assert dh <= TOLERANCE and beyond <= TOLERANCE
    assert picks_a_golden_maximum(logits, g["talker_logits"])
    # the sampled code-0 sequence follows from our logits at positions L-1, L, ...
    generated: list[int] = []
    for row in logits[prompt_len - 1 :]:
        generated.append(_official_greedy(row, generated))
    assert generated == g["talker_sequences"].tolist()
    if eos_row is not None:
        assert generated[-1] == spec.CODEC_EOS_ID and len(generated) == int(g["eos_step"]) + 1


@pytest.mark.parametrize(("size", "case"), GOLDEN_CASES)
def test_predictor_teacher_forced_matches_official(convert, size: str, case: str) -> None:
    conv, g = _golden(convert, size, case)
    worst_hidden = worst_logits = worst_beyond = 0.0
    with conv.predictor() as model:
        for frame in range(len(g["predictor_inputs_embeds"])):
            inputs = g["predictor_inputs_embeds"][frame]
            projected = conv.tables.project(inputs)
            assert max_diff(projected, g["predictor_projected"][frame]) <= 1e-5
            hidden, logits = run_predictor_frame(model, conv.tables, projected)
            worst_hidden = max(worst_hidden, max_diff(hidden, g["predictor_hidden"][frame]))
            worst_logits = max(worst_logits, max_diff(logits, g["predictor_logits"][frame]))
            worst_beyond = max(worst_beyond, diff_beyond_storage(logits, g["predictor_logits"][frame]))
            assert np.array_equal(logits.argmax(-1), g["predictor_codes"][frame])
    print(
        f"\n[{size}/{case}] predictor teacher-forced: hidden {worst_hidden:.2e} logits {worst_logits:.2e}"
        f" (beyond f16: {worst_beyond:.2e})"
    )
    assert worst_hidden <= TOLERANCE and worst_beyond <= TOLERANCE


@pytest.mark.parametrize(("size", "case"), GOLDEN_CASES)
def test_tables_reproduce_official_embeddings(convert, size: str, case: str) -> None:
    conv, g = _golden(convert, size, case)
    tables, codes = conv.tables, g["codes"]
    inputs = g["predictor_inputs_embeds"]
    # predictor inputs: talker codec embedding of code 0, then group g-1's table for position g
    assert max_diff(inputs[:, 1], tables.codec_embed(0, codes[:, 0])) <= 1e-6
    for pos in range(2, 16):
        assert max_diff(inputs[:, pos], tables.codec_embed(pos - 1, codes[:, pos - 1])) <= 1e-6
    # text track: the pad vector, and the role tokens that carry the text track only
    assert max_diff(tables.text_embed([spec.TTS_PAD_ID])[0], g["tts_pad_embed"]) <= 1e-5
    role_start = len(g["instruct_ids"]) if "instruct_ids" in g else 0
    role = g["prefill_inputs_embeds"][role_start : role_start + 3]
    assert max_diff(tables.text_embed(g["input_ids"][:3]), role) <= 1e-5
    if "instruct_ids" in g:
        assert max_diff(tables.text_embed(g["instruct_ids"]), g["prefill_inputs_embeds"][:role_start]) <= 1e-5
    # decode-step inputs: frame embedding + trailing text (or the pad vector once the text is used up)
    prompt_len, trailing = len(g["prefill_inputs_embeds"]), g["trailing_text_hidden"]
    for step, frame in enumerate(codes):
        text = trailing[step] if step < len(trailing) else g["tts_pad_embed"]
        expected = tables.frame_embed(frame) + text
        assert max_diff(expected, g["talker_inputs_embeds"][prompt_len + step]) <= 1e-4
