"""Talker and code predictor -> llama.cpp GGUF (arch `qwen3`), plus the side tables used outside llama.cpp.

Both language models are plain Qwen3 decoder stacks that we always drive with input embeddings, so each
becomes a standard `qwen3` GGUF with a dummy vocabulary (`tokenizer.ggml.model = "none"`). Everything that
is not a decoder stack (text embedding + projection, codec embeddings, the 15 predictor heads, the 1.7B
`small_to_mtp_projection`) goes to `tables.safetensors` and is applied in numpy, exactly as shipped (for
the integer quants the file also holds 8-bit copies of the heads, run by ONNX Runtime: engine/heads.py).

Tensors are streamed: the GGUF header is written from the tensor plan first, then one tensor at a time is
read (memory-mapped, bf16 widened to f32) and appended, so converting never holds the whole model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from qwen3tts_cli.convert.checkpoint import Checkpoint, LMShape
from qwen3tts_cli.convert.heads import BLOCK, can_quantize, quantize_head
from qwen3tts_cli.convert.safetensors import array_chunks, write_safetensors_chunks
from qwen3tts_cli.engine import tables as table_names
from qwen3tts_cli.errors import Qwen3TTSError

ARCH = "qwen3"
# Our own metadata key: which of the two models a GGUF holds (the quantizer keeps predictor ffn_down wide).
KEY_COMPONENT = "qwen3tts.component"
COMPONENT_TALKER = "talker"
COMPONENT_PREDICTOR = "predictor"
# The predictor's llama.cpp vocabulary is never used (its 15 heads run outside), but token_embd and output
# must exist with `vocab_size` rows; 16 keeps them negligible.
PREDICTOR_DUMMY_VOCAB = 16

# Official per-layer tensor suffix -> llama.cpp `blk.N.` suffix (same mapping as llama.cpp's qwen3 converter).
LAYER_TENSOR_MAP: dict[str, str] = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}

TALKER_PREFIX = "talker.model."
PREDICTOR_PREFIX = "talker.code_predictor.model."

Loader = Callable[[], np.ndarray]


@dataclass(frozen=True)
class PlannedTensor:
    """One GGUF tensor: its name, numpy shape (out, in) and how to read it when its turn comes."""

    name: str
    shape: tuple[int, ...]
    load: Loader


def _layer_shapes(shape: LMShape) -> dict[str, tuple[int, ...]]:
    """Expected numpy shapes of one decoder layer, keyed by GGUF suffix (catches mismatched configs)."""
    q_width = shape.heads * shape.head_dim
    kv_width = shape.kv_heads * shape.head_dim
    return {
        "attn_norm.weight": (shape.hidden,),
        "attn_q.weight": (q_width, shape.hidden),
        "attn_k.weight": (kv_width, shape.hidden),
        "attn_v.weight": (kv_width, shape.hidden),
        "attn_output.weight": (shape.hidden, q_width),
        "attn_q_norm.weight": (shape.head_dim,),
        "attn_k_norm.weight": (shape.head_dim,),
        "ffn_norm.weight": (shape.hidden,),
        "ffn_gate.weight": (shape.intermediate, shape.hidden),
        "ffn_up.weight": (shape.intermediate, shape.hidden),
        "ffn_down.weight": (shape.hidden, shape.intermediate),
    }


def _stored_shape(ckpt: Checkpoint, name: str) -> tuple[int, ...]:
    # a header lookup: `name in ckpt.weights` would read (and widen) the whole tensor
    try:
        return ckpt.weights.shape(name)
    except KeyError:
        raise Qwen3TTSError(
            f"{ckpt.folder}/model.safetensors has no tensor {name}", "the checkpoint is incomplete"
        ) from None


def _checked(ckpt: Checkpoint, name: str, expected: tuple[int, ...]) -> PlannedTensor:
    """Plan a checkpoint tensor after checking its stored shape against the config."""
    stored = _stored_shape(ckpt, name)
    if stored != expected:
        raise Qwen3TTSError(
            f"tensor {name} has shape {list(stored)}, config.json implies {list(expected)}",
            "config.json and model.safetensors come from different models",
        )
    return PlannedTensor("", expected, lambda: ckpt.tensor(name))


def _stack_plan(ckpt: Checkpoint, prefix: str, shape: LMShape) -> list[PlannedTensor]:
    """The decoder layers and final norm of one stack under `prefix` (talker or predictor)."""
    expected = _layer_shapes(shape)
    plan: list[PlannedTensor] = []
    for layer in range(shape.layers):
        for official, ours in LAYER_TENSOR_MAP.items():
            src = _checked(ckpt, f"{prefix}layers.{layer}.{official}", expected[ours])
            plan.append(PlannedTensor(f"blk.{layer}.{ours}", src.shape, src.load))
    norm = _checked(ckpt, f"{prefix}norm.weight", (shape.hidden,))
    plan.append(PlannedTensor("output_norm.weight", norm.shape, norm.load))
    return plan


def _add_hparams(writer: gguf.GGUFWriter, shape: LMShape, vocab: int, name: str, component: str) -> None:
    writer.add_name(name)
    writer.add_string(KEY_COMPONENT, component)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(shape.max_positions)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.intermediate)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    # required: head_dim (128) differs from hidden / heads in the real models
    writer.add_key_length(shape.head_dim)
    writer.add_value_length(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    # a dummy vocabulary: llama.cpp then needs no token list, only the row count of token_embd/output
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("none")


def write_gguf(
    out_path: str | Path, shape: LMShape, vocab: int, name: str, component: str, plan: list[PlannedTensor]
) -> None:
    """Write an f32 `qwen3` GGUF, streaming the planned tensors one by one."""
    writer = gguf.GGUFWriter(str(out_path), arch=ARCH)
    _add_hparams(writer, shape, vocab, name, component)
    for tensor in plan:
        nbytes = int(np.prod(tensor.shape)) * 4
        writer.add_tensor_info(tensor.name, tensor.shape, np.dtype(np.float32), nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in plan:
        data = np.ascontiguousarray(tensor.load(), dtype=np.float32)
        if data.shape != tensor.shape:
            raise Qwen3TTSError(f"tensor {tensor.name} read as {data.shape}, expected {tensor.shape}")
        writer.write_tensor_data(data)
    writer.close()


def talker_plan(ckpt: Checkpoint) -> list[PlannedTensor]:
    shape = ckpt.talker_shape
    vocab = int(ckpt.talker_config["vocab_size"])
    embd = _checked(ckpt, table_names.TALKER_CODEC_EMBEDDING, (vocab, shape.hidden))
    head = _checked(ckpt, table_names.TALKER_CODEC_HEAD, (vocab, shape.hidden))
    return [
        # never read (we feed embeddings) but llama.cpp requires it; the codec embedding has the right shape
        PlannedTensor("token_embd.weight", embd.shape, embd.load),
        *_stack_plan(ckpt, TALKER_PREFIX, shape),
        PlannedTensor("output.weight", head.shape, head.load),
    ]


def predictor_plan(ckpt: Checkpoint) -> list[PlannedTensor]:
    shape = ckpt.predictor_shape
    dummy = (PREDICTOR_DUMMY_VOCAB, shape.hidden)

    def zeros() -> np.ndarray:
        return np.zeros(dummy, dtype=np.float32)

    return [
        PlannedTensor("token_embd.weight", dummy, zeros),
        *_stack_plan(ckpt, PREDICTOR_PREFIX, shape),
        PlannedTensor("output.weight", dummy, zeros),
    ]


def write_talker_gguf(ckpt: Checkpoint, out_path: str | Path) -> None:
    """The talker (28-layer Qwen3, codec head as `output`, 3072 logits) as an f32 GGUF."""
    vocab = int(ckpt.talker_config["vocab_size"])
    write_gguf(out_path, ckpt.talker_shape, vocab, "Qwen3-TTS talker", COMPONENT_TALKER, talker_plan(ckpt))


def write_predictor_gguf(ckpt: Checkpoint, out_path: str | Path) -> None:
    """The code predictor (5-layer Qwen3 at predictor width, input = projected embedding) as an f32 GGUF."""
    write_gguf(
        out_path,
        ckpt.predictor_shape,
        PREDICTOR_DUMMY_VOCAB,
        "Qwen3-TTS code predictor",
        COMPONENT_PREDICTOR,
        predictor_plan(ckpt),
    )


# ---- tables.safetensors ---------------------------------------------------------------------------------
def table_sources(ckpt: Checkpoint) -> list[str]:
    """Official names of every tensor stored in tables.safetensors (we keep the official names)."""
    groups = int(ckpt.talker_config.get("num_code_groups", 16))
    names = [
        table_names.TEXT_EMBEDDING,
        *table_names.TEXT_PROJECTION,
        table_names.TALKER_CODEC_EMBEDDING,
        *(table_names.predictor_embedding_name(g) for g in range(1, groups)),
        *(table_names.predictor_head_name(g) for g in range(1, groups)),
    ]
    if ckpt.talker_shape.hidden != ckpt.predictor_shape.hidden:
        names += list(table_names.MTP_PROJECTION)
    return names


def write_tables(ckpt: Checkpoint, out_path: str | Path, *, int8_heads: bool = False) -> None:
    """tables.safetensors: the text embedding in its shipped dtype (bf16 bits copied), everything else f32.

    Memory-mapped at run time: only the looked-up rows of the 151936-row text embedding are ever paged in.
    `int8_heads` adds 8-bit copies of the 15 predictor heads and of the 1.7B `small_to_mtp_projection`
    (convert/heads.py) for the integer-quantized models, when the widths split into whole blocks; the f32
    originals stay for the exact path.

    Streamed: the header comes from the stored shapes, then each tensor is read (the bf16 text embedding
    copied in blocks from the file), written and dropped; an 8-bit head re-reads its f32 head when its turn
    comes, so at most one head is held.
    """
    sources = table_sources(ckpt)
    entries: list[tuple[str, str, tuple[int, ...]]] = []
    parts: list[Callable[[], Iterator[bytes]]] = []
    for name in sources:
        shape = _stored_shape(ckpt, name)  # a clear error when it is missing
        if name == table_names.TEXT_EMBEDDING and ckpt.weights.dtype(name) == "BF16":
            entries.append((name, "BF16", shape))  # the shipped bf16 bits, copied unchanged
            parts.append(lambda name=name: ckpt.tensor_blocks(name))
        else:
            entries.append((name, "F32", shape))
            parts.append(lambda name=name: array_chunks(ckpt.tensor(name), "F32"))
    if int8_heads and can_quantize(ckpt.predictor_shape.hidden):
        groups = int(ckpt.talker_config.get("num_code_groups", 16))
        quantized = [
            (table_names.predictor_head_q8_names(g), table_names.predictor_head_name(g))
            for g in range(1, groups)
        ]
        projection = table_names.MTP_PROJECTION_WEIGHT
        if projection in sources and can_quantize(_stored_shape(ckpt, projection)[1]):
            quantized.append((table_names.MTP_PROJECTION_Q8, projection))
        for (codes_name, scales_name), source in quantized:
            rows, width = _stored_shape(ckpt, source)
            entries.append((codes_name, "U8", (rows, width // BLOCK, BLOCK)))
            entries.append((scales_name, "F32", (rows, width // BLOCK)))
            parts.append(lambda source=source: _quantized_blocks(ckpt.tensor(source)))
    write_safetensors_chunks(out_path, entries, (block for part in parts for block in part()))


def _quantized_blocks(weight: np.ndarray) -> Iterator[bytes]:
    codes, scales = quantize_head(weight)
    yield from array_chunks(codes, "U8")
    yield from array_chunks(scales, "F32")
