"""Seeded fixture checkpoints (official layout, names, shapes, dtypes, determinism) and the committed goldens
they produced (inputs rebuild byte-identically, recorded arrays agree with the fixture weights)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR, GoldenStore

from qwen3tts_cli import spec
from qwen3tts_cli.convert.checkpoint import Checkpoint
from qwen3tts_cli.convert.safetensors import SafetensorsFile
from qwen3tts_cli.fixtures import checkpoint as fx

OFFICIAL = json.loads((DATA_DIR / "official_tensor_names_0.6b_base.json").read_text())["tensors"]
OFFICIAL_CONFIG_TEXT = (DATA_DIR / "official_config_0.6b_base.json").read_text()
OFFICIAL_GENERATION_CONFIG = (DATA_DIR / "official_generation_config.json").read_bytes()
PROJECTION = {
    "talker.code_predictor.small_to_mtp_projection.weight",
    "talker.code_predictor.small_to_mtp_projection.bias",
}
EXPECTED_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "speech_tokenizer/config.json",
    "speech_tokenizer/configuration.json",
    "speech_tokenizer/preprocessor_config.json",
    "speech_tokenizer/model.safetensors",
}
TINY_SIZES = ("tiny", "tiny-wide")
STORE = GoldenStore()
GOLDEN_SIZES = STORE.sizes()


def official_names(file: str) -> set[str]:
    return {name for name, t in OFFICIAL.items() if t["file"] == file}


def expected_model_names(kind: str, size: str) -> set[str]:
    names = official_names(fx.MODEL_FILE)
    if kind != spec.KIND_BASE:
        names = {n for n in names if not n.startswith("speaker_encoder.")}
    if size in ("tiny-wide", "1.7b"):
        names |= PROJECTION
    return names


_STACK_LAYER = re.compile(
    r"^(talker\.model|talker\.code_predictor\.model|decoder\.pre_transformer|encoder\.encoder_transformer)"
    r"\.layers\.\d+\."
)


def layer_agnostic(names: set[str]) -> set[str]:
    """Names with transformer layer indices folded ("talker.model.layers.#.mlp..."): tiny stacks have fewer
    layers than 0.6B; every other index (conv stacks, 16/32 codebook levels, 15 heads) is kept."""
    return {_STACK_LAYER.sub(r"\1.layers.#.", name) for name in names}


def layer_counts(names: set[str]) -> dict[str, int]:
    counts: dict[str, set[str]] = {}
    for name in names:
        match = _STACK_LAYER.match(name)
        if match:
            counts.setdefault(match.group(1), set()).add(match.group(0))
    return {stack: len(layers) for stack, layers in counts.items()}


def relative_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


# ---- layout, names, dtypes --------------------------------------------------------------------------------
@pytest.mark.parametrize("size", TINY_SIZES)
@pytest.mark.parametrize("kind", spec.MODEL_KINDS)
def test_tiny_fixture_has_the_official_layout_names_and_dtypes(tmp_path: Path, kind: str, size: str) -> None:
    start = time.perf_counter()
    folder = fx.build_checkpoint(tmp_path / "ckpt", kind, size, seed=3)
    assert time.perf_counter() - start < 20  # ~1 s here; tests build them freely
    assert relative_files(folder) == EXPECTED_FILES
    weights = SafetensorsFile(folder / fx.MODEL_FILE)
    codec = SafetensorsFile(folder / fx.CODEC_FILE)
    assert layer_agnostic(set(weights)) == layer_agnostic(expected_model_names(kind, size))
    assert layer_agnostic(set(codec)) == layer_agnostic(official_names(fx.CODEC_FILE))
    cfg, codec_cfg = fx.model_config(kind, size), fx.codec_config(size)
    assert layer_counts(set(weights)) == {
        "talker.model": cfg["talker_config"]["num_hidden_layers"],
        "talker.code_predictor.model": cfg["talker_config"]["code_predictor_config"]["num_hidden_layers"],
    }
    assert layer_counts(set(codec)) == {
        "decoder.pre_transformer": codec_cfg["decoder_config"]["num_hidden_layers"],
        "encoder.encoder_transformer": codec_cfg["encoder_config"]["num_hidden_layers"],
    }
    assert {weights.dtype(n) for n in weights} == {"BF16"}
    assert {codec.dtype(n) for n in codec} == {"F32"}
    assert weights.metadata == {"format": "pt"} == codec.metadata  # transformers rejects other formats
    planned = fx.planned_tensors(kind, size)
    assert {n: (weights.shape(n), weights.dtype(n)) for n in weights} == planned[fx.MODEL_FILE]
    assert {n: (codec.shape(n), codec.dtype(n)) for n in codec} == planned[fx.CODEC_FILE]


@pytest.mark.parametrize("size", TINY_SIZES)
def test_tiny_fixture_is_readable_by_the_product_loader(tmp_path: Path, size: str) -> None:
    folder = fx.build_checkpoint(tmp_path, spec.KIND_BASE, size)
    ckpt = Checkpoint(folder)
    dims = fx.FIXTURE_SIZES[size]
    assert ckpt.kind == spec.KIND_BASE and ckpt.size_tag == size
    assert ckpt.talker_shape.hidden == dims.talker.hidden
    assert ckpt.predictor_shape.hidden == dims.predictor.hidden
    talker_hidden, predictor_hidden = dims.talker.hidden, dims.predictor.hidden
    assert ckpt.tensor("talker.model.codec_embedding.weight").shape == (spec.TALKER_VOCAB_SIZE, talker_hidden)
    # predictor tables live in talker width (shared with the talker input sum), heads in predictor width
    assert ckpt.tensor("talker.code_predictor.model.codec_embedding.14.weight").shape == (2048, talker_hidden)
    assert ckpt.tensor("talker.code_predictor.lm_head.0.weight").shape == (2048, predictor_hidden)
    assert ckpt.tensor("speaker_encoder.fc.weight").shape == (talker_hidden, 3072, 1)
    assert ckpt.codec_tensor(
        "encoder.quantizer.acoustic_residual_vector_quantizer.layers.30.codebook.initialized"
    )[0] == np.float32(1.0)
    assert (size == "tiny-wide") == ("talker.code_predictor.small_to_mtp_projection.weight" in ckpt.weights)


def test_planned_0_6b_base_is_the_official_inventory() -> None:
    planned = fx.planned_tensors(spec.KIND_BASE, "0.6b")
    ours = {
        name: (file, list(shape), dtype)
        for file, tensors in planned.items()
        for name, (shape, dtype) in tensors.items()
    }
    theirs = {name: (t["file"], t["shape"], t["dtype"]) for name, t in OFFICIAL.items()}
    assert len(theirs) == 974
    assert ours == theirs


@pytest.mark.parametrize(
    ("kind", "size", "params"),
    [  # parameter counts of the official classes at real dims (architecture.md §3.1)
        (spec.KIND_CUSTOM_VOICE, "0.6b", 905_788_672),
        (spec.KIND_BASE, "0.6b", 914_643_008),
        (spec.KIND_VOICE_DESIGN, "1.7b", 1_916_676_352),
        (spec.KIND_BASE, "1.7b", 1_928_677_440),
    ],
)
def test_real_size_plans_have_the_official_parameter_counts(kind: str, size: str, params: int) -> None:
    planned = fx.planned_tensors(kind, size)
    count = sum(int(np.prod(shape)) for shape, _ in planned[fx.MODEL_FILE].values())
    assert count == params
    codec = sum(int(np.prod(shape)) for shape, _ in planned[fx.CODEC_FILE].values())
    assert codec == 153_714_657 + 16_842_784  # codec parameters + codebook buffers


def test_1_7b_plan_projects_talker_width_to_predictor_width() -> None:
    model = fx.planned_tensors(spec.KIND_CUSTOM_VOICE, "1.7b")[fx.MODEL_FILE]
    assert model["talker.code_predictor.small_to_mtp_projection.weight"] == ((1024, 2048), "BF16")
    assert model["talker.text_projection.linear_fc2.weight"] == ((2048, 2048), "BF16")
    assert model["talker.code_predictor.model.codec_embedding.0.weight"] == ((2048, 2048), "BF16")


# ---- configs ----------------------------------------------------------------------------------------------
def test_0_6b_base_config_equals_the_released_config_json() -> None:
    ours = fx.model_config(spec.KIND_BASE, "0.6b")
    assert json.dumps(ours) == json.dumps(json.loads(OFFICIAL_CONFIG_TEXT))  # values and key order


def test_generation_config_is_the_shipped_245_bytes(tmp_path: Path) -> None:
    folder = fx.build_checkpoint(tmp_path, spec.KIND_VOICE_DESIGN)
    assert (folder / "generation_config.json").read_bytes() == OFFICIAL_GENERATION_CONFIG
    assert len(OFFICIAL_GENERATION_CONFIG) == 245


@pytest.mark.parametrize("kind", spec.MODEL_KINDS)
def test_config_voice_tables_per_kind(kind: str) -> None:
    cfg = fx.model_config(kind, "tiny")
    talker = cfg["talker_config"]
    assert cfg["tts_model_type"] == kind and cfg["tts_model_size"] == "tiny"
    assert cfg["speaker_encoder_config"] == {"enc_dim": 64, "sample_rate": 24000}
    if kind == spec.KIND_CUSTOM_VOICE:
        assert talker["spk_id"] == spec.SPEAKER_IDS
        assert talker["spk_is_dialect"]["dylan"] == "beijing_dialect"
        assert talker["codec_language_id"]["sichuan_dialect"] == 2062
    else:
        assert talker["spk_id"] == {} and talker["spk_is_dialect"] == {}
        assert talker["codec_language_id"] == spec.LANGUAGE_IDS


@pytest.mark.parametrize("size", fx.SIZES)
def test_codec_config_upsamples_by_one_frame(size: str) -> None:
    cfg = fx.codec_config(size)
    dec, enc = cfg["decoder_config"], cfg["encoder_config"]
    assert int(np.prod(dec["upsample_rates"] + dec["upsampling_ratios"])) == spec.SAMPLES_PER_FRAME
    assert int(np.prod(enc["upsampling_ratios"])) * 2 == spec.SAMPLES_PER_FRAME  # + the stride-2 downsample
    assert cfg["decode_upsample_rate"] == cfg["encode_downsample_rate"] == spec.SAMPLES_PER_FRAME


def test_unknown_kind_or_size_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        fx.build_checkpoint(tmp_path, "talking_cat")
    with pytest.raises(ValueError, match="unknown fixture size"):
        fx.build_checkpoint(tmp_path, spec.KIND_BASE, "2b")


# ---- determinism and values --------------------------------------------------------------------------------
def test_build_is_deterministic_per_seed(tmp_path: Path) -> None:
    first = fx.file_digests(fx.build_checkpoint(tmp_path / "a", spec.KIND_BASE, "tiny", seed=5))
    again = fx.file_digests(fx.build_checkpoint(tmp_path / "b", spec.KIND_BASE, "tiny", seed=5))
    other = fx.file_digests(fx.build_checkpoint(tmp_path / "c", spec.KIND_BASE, "tiny", seed=6))
    assert first == again
    changed = {name for name in first if first[name] != other[name]}
    assert changed == {fx.MODEL_FILE, fx.CODEC_FILE}


def test_kinds_get_their_own_talker_but_share_the_codec(tmp_path: Path) -> None:
    cv = fx.file_digests(fx.build_checkpoint(tmp_path / "cv", spec.KIND_CUSTOM_VOICE))
    vd = fx.file_digests(fx.build_checkpoint(tmp_path / "vd", spec.KIND_VOICE_DESIGN))
    assert cv[fx.MODEL_FILE] != vd[fx.MODEL_FILE]
    assert cv[fx.CODEC_FILE] == vd[fx.CODEC_FILE]


def test_streaming_in_small_chunks_writes_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = fx.file_digests(fx.build_checkpoint(tmp_path / "whole", spec.KIND_BASE, "tiny-wide"))
    monkeypatch.setattr(fx, "_CHUNK_ELEMENTS", 999)  # odd: chunks split tensors mid-row
    chunked = fx.file_digests(fx.build_checkpoint(tmp_path / "chunked", spec.KIND_BASE, "tiny-wide"))
    assert chunked == whole


def test_weights_follow_the_scaled_init_rules(tiny_checkpoints: dict[str, Path]) -> None:
    ckpt = Checkpoint(tiny_checkpoints[spec.KIND_BASE])
    q = ckpt.tensor("talker.model.layers.0.self_attn.q_proj.weight")
    assert abs(q.std() * 64**0.5 - 1) < 0.05  # N(0, 1/fan_in)
    norm = ckpt.tensor("talker.model.layers.1.post_attention_layernorm.weight")
    assert abs(norm.mean() - 1) < 0.05 and 0.05 < norm.std() < 0.15  # 1 + 0.1 N
    emb = ckpt.tensor("talker.model.text_embedding.weight")
    assert abs(emb.std() - 1) < 0.01
    usage = ckpt.codec_tensor("decoder.quantizer.rvq_rest.vq.layers.3._codebook.cluster_usage")
    assert usage.min() >= 0.5 and usage.max() < 1.5
    scale = ckpt.codec_tensor("decoder.pre_transformer.layers.0.mlp_layer_scale.scale")
    assert scale.min() >= 0.05 and scale.max() < 0.15
    residual_out = ckpt.codec_tensor("decoder.decoder.1.block.2.conv2.conv.weight")  # [32, 32, 1]
    assert abs(residual_out.std() * 32**0.5 / 0.25 - 1) < 0.1  # damped x0.25
    snake = ckpt.codec_tensor("decoder.decoder.2.block.0.alpha")
    assert np.abs(snake).max() < 0.6  # log-alpha near 0


# ---- the committed goldens ---------------------------------------------------------------------------------
assert GOLDEN_SIZES, "tests/golden/<size>/fixture.json missing: run tests/parity/make_goldens.py"


@pytest.mark.parametrize("size", GOLDEN_SIZES)
@pytest.mark.parametrize("kind", spec.MODEL_KINDS)
def test_golden_inputs_rebuild_byte_identically(
    checkpoint_factory, golden: GoldenStore, size: str, kind: str
) -> None:
    recorded = golden.fixture(size)["checkpoints"][kind]
    folder = checkpoint_factory(kind, size, recorded["seed"])
    assert fx.file_digests(folder) == recorded["sha256"]


def test_tiny_sizes_share_one_codec(golden: GoldenStore) -> None:
    shas = [golden.fixture(size)["checkpoints"][spec.KIND_BASE]["sha256"] for size in TINY_SIZES]
    codec_files = [name for name in shas[0] if name.startswith("speech_tokenizer/")]
    assert len(codec_files) == 4
    assert all(shas[0][name] == shas[1][name] for name in codec_files)
    assert shas[0][fx.MODEL_FILE] != shas[1][fx.MODEL_FILE]


@pytest.mark.parametrize("size", GOLDEN_SIZES)
def test_golden_provenance_and_reload_check(golden: GoldenStore, size: str) -> None:
    info = golden.fixture(size)
    assert info["versions"]["qwen-tts"] == "0.1.1" and info["versions"]["transformers"] == "4.57.3"
    assert info["generation"] == {"do_sample": False, "subtalker_dosample": False, "max_new_tokens": 8}
    reload = info["reload_check"]
    assert set(reload["weights_max_abs_diff"].values()) == {0.0}
    assert reload["codes_equal"] and reload["wav_max_abs_diff"] == 0.0
    assert reload["attention_backends"] == ["eager"]
    assert all(not v["missing"] and not v["unexpected"] for v in reload["loading"].values())


def _golden_case_params() -> list[tuple[str, str]]:
    return [(size, case) for size in GOLDEN_SIZES for case in STORE.cases(size)]


@pytest.mark.parametrize(("size", "case"), _golden_case_params())
def test_golden_case_arrays_are_consistent(golden: GoldenStore, size: str, case: str) -> None:
    g = golden.case(size, case)
    summary = golden.fixture(size)["cases"][case]
    frames, prompt_len = summary["frames"], summary["prompt_len"]
    hidden = fx.FIXTURE_SIZES[size].talker.hidden
    assert g["codes"].shape == (frames, 16) and g["codes"].max() < spec.CODEBOOK_SIZE
    assert np.array_equal(g["codes"][:, 0], g["talker_sequences"][:-1])
    assert np.array_equal(g["predictor_codes"], g["codes"][:, 1:])
    # float16 logits can tie or swap near-equal maxima, so check "the chosen code is a maximum up to rounding"
    logits = g["predictor_logits"].astype(np.float32)
    chosen = np.take_along_axis(logits, g["predictor_codes"][..., None], axis=-1)[..., 0]
    assert np.all(chosen >= logits.max(-1) - 2e-3 * np.abs(logits.max(-1)))
    assert g["prefill_inputs_embeds"].shape == (prompt_len, hidden)
    assert g["talker_inputs_embeds"].shape == (prompt_len + frames, hidden)
    assert np.array_equal(g["talker_inputs_embeds"][:prompt_len], g["prefill_inputs_embeds"])
    assert g["talker_logits"].shape == (prompt_len + frames, spec.TALKER_VOCAB_SIZE)
    assert g["predictor_inputs_embeds"].shape == (frames, 16, hidden)
    assert g["predictor_hidden"].shape == (frames, 16, fx.FIXTURE_SIZES[size].predictor.hidden)
    samples = frames * spec.SAMPLES_PER_FRAME
    if (
        "ref_code" in g
    ):  # ICL decodes reference ++ generated, then cuts the reference part in float arithmetic
        ref_frames = len(g["ref_code"])
        assert np.array_equal(g["decode_input_codes"], np.concatenate([g["ref_code"], g["codes"]]))
        total = (ref_frames + frames) * spec.SAMPLES_PER_FRAME
        samples = total - int(ref_frames / (ref_frames + frames) * total)
    assert g["wav"].shape == (samples,) == (summary["samples"],)
    if case.endswith("_eos"):
        assert int(g["eos_step"]) == frames and g["talker_sequences"][-1] == spec.CODEC_EOS_ID


def _exact_talker_logits(ckpt: Checkpoint, g: dict[str, np.ndarray]) -> np.ndarray:
    head = ckpt.tensor("talker.codec_head.weight").copy()
    if "codec_head_eos_row" in g:
        head[spec.CODEC_EOS_ID] = g["codec_head_eos_row"]
    return g["talker_hidden"].astype(np.float64) @ head.T.astype(np.float64)


def _greedy_code0(logits: np.ndarray, sequence: np.ndarray) -> list[int]:
    """Official talker processing: repetition penalty 1.05, EOS banned 2 steps, ids 2048+ (not EOS) banned."""
    picked = []
    for step, row in enumerate(logits):
        row = row.copy()
        for prev in set(sequence[:step].tolist()):
            row[prev] = row[prev] / 1.05 if row[prev] > 0 else row[prev] * 1.05
        eos = row[spec.CODEC_EOS_ID]
        row[spec.SUPPRESSED_TOKENS_START :] = -np.inf
        row[spec.CODEC_EOS_ID] = -np.inf if step < spec.MIN_NEW_TOKENS else eos
        picked.append(int(row.argmax()))
    return picked


@pytest.mark.parametrize(("size", "case"), _golden_case_params())
def test_golden_logits_follow_from_the_fixture_weights(
    checkpoint_factory, golden, size: str, case: str
) -> None:
    """logits == hidden @ head.T with the fixture's weights, and greedy processing reproduces the tokens."""
    g = golden.case(size, case)
    ckpt = Checkpoint(checkpoint_factory(golden.fixture(size)["cases"][case]["kind"], size))
    talker = _exact_talker_logits(ckpt, g)
    np.testing.assert_allclose(g["talker_logits"].astype(np.float32), talker, rtol=1e-3, atol=1e-3)
    prompt_len = g["prefill_inputs_embeds"].shape[0]
    assert _greedy_code0(talker[prompt_len - 1 :], g["talker_sequences"]) == g["talker_sequences"].tolist()
    for group in range(1, 16):
        head = ckpt.tensor(f"talker.code_predictor.lm_head.{group - 1}.weight")
        exact = g["predictor_hidden"][:, group] @ head.T
        np.testing.assert_allclose(
            g["predictor_logits"][:, group - 1].astype(np.float32), exact, rtol=1e-3, atol=1e-3
        )
        assert np.array_equal(exact.argmax(-1), g["predictor_codes"][:, group - 1])  # greedy, no processing


@pytest.mark.parametrize("size", GOLDEN_SIZES)
@pytest.mark.parametrize("case", ["cv_english", "clone_icl_stream"])
def test_golden_step_inputs_follow_the_dual_track_rules(
    checkpoint_factory, golden, size: str, case: str
) -> None:
    """Predictor inputs, projection and per-step talker inputs rebuilt from codes and fixture tables."""
    g = golden.case(size, case)
    ckpt = Checkpoint(checkpoint_factory(golden.fixture(size)["cases"][case]["kind"], size))
    codes, prompt_len = g["codes"], g["prefill_inputs_embeds"].shape[0]
    talker_table = ckpt.tensor("talker.model.codec_embedding.weight")
    tables = [ckpt.tensor(f"talker.code_predictor.model.codec_embedding.{j}.weight") for j in range(15)]
    inputs = g["predictor_inputs_embeds"]
    np.testing.assert_allclose(
        inputs[:, 0], g["talker_hidden"][prompt_len - 1 : prompt_len - 1 + len(codes)], atol=1e-6
    )
    np.testing.assert_allclose(inputs[:, 1], talker_table[codes[:, 0]], atol=0)
    for position in range(2, 16):
        np.testing.assert_allclose(inputs[:, position], tables[position - 2][codes[:, position - 1]], atol=0)
    if size == "tiny-wide":
        weight = ckpt.tensor("talker.code_predictor.small_to_mtp_projection.weight")
        bias = ckpt.tensor("talker.code_predictor.small_to_mtp_projection.bias")
        np.testing.assert_allclose(g["predictor_projected"], inputs @ weight.T + bias, atol=1e-5)
    else:
        assert np.array_equal(g["predictor_projected"], inputs)
    trailing, pad = g["trailing_text_hidden"], g["tts_pad_embed"]
    for step, frame in enumerate(codes):
        text = trailing[step] if step < len(trailing) else pad
        expected = talker_table[frame[0]] + sum(tables[j][frame[j + 1]] for j in range(15)) + text
        np.testing.assert_allclose(g["talker_inputs_embeds"][prompt_len + step], expected, atol=1e-5)


@pytest.mark.parametrize("size", GOLDEN_SIZES)
def test_golden_role_tokens_carry_only_the_text_track(checkpoint_factory, golden, size: str) -> None:
    g = golden.case(size, "cv_english")
    ckpt = Checkpoint(checkpoint_factory(spec.KIND_CUSTOM_VOICE, size))
    role = g["input_ids"][:3]
    assert role.tolist() == [spec.IM_START_ID, spec.ASSISTANT_ID, spec.NEWLINE_ID]
    e = ckpt.tensor("talker.model.text_embedding.weight")[role]
    h = e @ ckpt.tensor("talker.text_projection.linear_fc1.weight").T + ckpt.tensor(
        "talker.text_projection.linear_fc1.bias"
    )
    h = h / (1 + np.exp(-h))  # SiLU
    out = h @ ckpt.tensor("talker.text_projection.linear_fc2.weight").T + ckpt.tensor(
        "talker.text_projection.linear_fc2.bias"
    )
    np.testing.assert_allclose(g["prefill_inputs_embeds"][:3], out, atol=1e-5)


def test_golden_components_have_the_documented_shapes(golden: GoldenStore) -> None:
    d37, d340, enc = (
        golden.component("decoder_37"),
        golden.component("decoder_340"),
        golden.component("encoder"),
    )
    assert d37["codes"].shape == (37, 16) and d37["wav_forward"].shape == d37["wav_api"].shape == (37 * 1920,)
    assert np.abs(d37["wav_forward"]).max() < 1  # well inside the clamp: the damped init works
    assert d340["codes"].shape == (340, 16) and d340["wav_full"].shape == (340 * 1920,)
    assert enc["codes"].shape == (17, 16)
    ref = golden.ref_audio()
    assert ref.shape == (31200,) and abs(np.abs(ref).max() - 0.5) < 1e-6
    for size in GOLDEN_SIZES:
        speaker = golden.component("speaker", size)
        assert speaker["mel"].shape == (121, 128)
        assert speaker["embedding"].shape == (fx.FIXTURE_SIZES[size].talker.hidden,)
