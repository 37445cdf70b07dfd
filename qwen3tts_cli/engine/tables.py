"""The model parts that run in numpy around the two llama.cpp stacks, memory-mapped from tables.safetensors.

Tensors keep their official names (see `convert/lm.py::write_tables`). Code groups are numbered as in the
codec: group 0 is the talker's codebook (`talker.codec_embedding`, predicted by the talker's codec
head), groups 1..15 are the residual codebooks (`code_predictor.codec_embedding[g-1]`,
`code_predictor.lm_head[g-1]`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qwen3tts_cli.convert.safetensors import SafetensorsFile, bf16_to_f32
from qwen3tts_cli.engine.heads import Int8Heads, Int8Matrix
from qwen3tts_cli.errors import Qwen3TTSError

TEXT_EMBEDDING = "talker.model.text_embedding.weight"
TEXT_FC1_WEIGHT = "talker.text_projection.linear_fc1.weight"
TEXT_FC1_BIAS = "talker.text_projection.linear_fc1.bias"
TEXT_FC2_WEIGHT = "talker.text_projection.linear_fc2.weight"
TEXT_FC2_BIAS = "talker.text_projection.linear_fc2.bias"
TEXT_PROJECTION = (TEXT_FC1_WEIGHT, TEXT_FC1_BIAS, TEXT_FC2_WEIGHT, TEXT_FC2_BIAS)
TALKER_CODEC_EMBEDDING = "talker.model.codec_embedding.weight"
TALKER_CODEC_HEAD = "talker.codec_head.weight"  # lives in talker.gguf as `output`, not in the tables
MTP_PROJECTION_WEIGHT = "talker.code_predictor.small_to_mtp_projection.weight"
MTP_PROJECTION_BIAS = "talker.code_predictor.small_to_mtp_projection.bias"
MTP_PROJECTION = (MTP_PROJECTION_WEIGHT, MTP_PROJECTION_BIAS)


def predictor_embedding_name(group: int) -> str:
    return f"talker.code_predictor.model.codec_embedding.{group - 1}.weight"


def predictor_head_name(group: int) -> str:
    return f"talker.code_predictor.lm_head.{group - 1}.weight"


# Our own 8-bit copies of the heads (convert/heads.py layout), numbered like lm_head; only in tables of
# integer-quantized models.
def predictor_head_q8_names(group: int) -> tuple[str, str]:
    """(codes [N, K/32, 32] U8, scales [N, K/32] F32) of residual group `group`'s 8-bit head."""
    stem = f"qwen3tts.predictor_head_q8.{group - 1}"
    return f"{stem}.weight", f"{stem}.scale"


# ... and of the 1.7B `small_to_mtp_projection` weight (its bias stays f32)
MTP_PROJECTION_Q8 = ("qwen3tts.mtp_projection_q8.weight", "qwen3tts.mtp_projection_q8.scale")


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


class Tables:
    """Lookups and small matrices: text track, codec track, predictor heads and input projection (f32).

    `int8_heads`: compute the predictor heads with their 8-bit copies (engine/heads.py) when the file has
    them (integer-quantized conversions); the f32 heads then stay memory-mapped but are never read.
    """

    def __init__(self, path: str | Path, *, int8_heads: bool = False) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise Qwen3TTSError(f"{self.path} does not exist", "re-convert the model folder")
        self._file = SafetensorsFile(self.path)
        # names from the header: `name in self._file` would read the whole tensor
        names = set(self._file)
        missing = [n for n in (TEXT_EMBEDDING, *TEXT_PROJECTION, TALKER_CODEC_EMBEDDING) if n not in names]
        if missing:
            raise Qwen3TTSError(f"{self.path} lacks {', '.join(missing)}", "re-convert the model folder")
        # f32 tensors come back as read-only memory-mapped views: nothing is copied here
        self._fc1_w = self._file.read(TEXT_FC1_WEIGHT)
        self._fc1_b = self._file.read(TEXT_FC1_BIAS)
        self._fc2_w = self._file.read(TEXT_FC2_WEIGHT)
        self._fc2_b = self._file.read(TEXT_FC2_BIAS)
        self._text_is_bf16 = self._file.dtype(TEXT_EMBEDDING) == "BF16"
        # codec embeddings: f32 rows read from the file per lookup (a mapping would grow to the whole tables)
        self._embeddings = [self._file.rows(TALKER_CODEC_EMBEDDING)]
        self._heads: list[np.ndarray | None] = [None]  # group 0's head is the talker's `output`
        group = 1
        while predictor_embedding_name(group) in names:
            self._embeddings.append(self._file.rows(predictor_embedding_name(group)))
            self._heads.append(self._file.read(predictor_head_name(group)))
            group += 1
        self.num_groups = group
        if any(table.dtype != np.float32 for table in self._embeddings):
            raise Qwen3TTSError(f"{self.path} has codec embeddings that are not f32", "re-convert the model")
        self.talker_hidden = int(self._embeddings[0].shape[1])
        self._proj_w: np.ndarray | None = None
        self._proj_b: np.ndarray | None = None
        if MTP_PROJECTION_WEIGHT in names:
            self._proj_w = self._file.read(MTP_PROJECTION_WEIGHT)
            self._proj_b = self._file.read(MTP_PROJECTION_BIAS)
        self.predictor_hidden = self.talker_hidden if self._proj_w is None else int(self._proj_w.shape[0])
        self._int8 = self._load_int8_heads(names) if int8_heads else None
        self._int8_proj = self._load_int8_projection(names) if self._int8 is not None else None

    def _load_int8_heads(self, names: set[str]) -> Int8Heads | None:
        """The 8-bit heads of every residual group, or None when the file lacks any of them."""
        stored = [predictor_head_q8_names(group) for group in range(1, self.num_groups)]
        if not stored or any(n not in names for pair in stored for n in pair):
            return None
        heads = {g: (self._file.raw(c), self._file.raw(s)) for g, (c, s) in enumerate(stored, 1)}
        try:
            int8 = Int8Heads(heads)
        except Exception:  # an onnxruntime without 8-bit MatMulNBits: the f32 heads still work, only slower
            return None
        for name in (n for pair in stored for n in pair):
            self._file.release(name)  # the sessions repacked the weights: 35 MB less RSS at 0.6B
        return int8

    def _load_int8_projection(self, names: set[str]) -> Int8Matrix | None:
        """The 8-bit `small_to_mtp_projection` (1.7B), or None when the file has none."""
        if self._proj_w is None or any(n not in names for n in MTP_PROJECTION_Q8):
            return None
        codes, scales = (self._file.raw(n) for n in MTP_PROJECTION_Q8)
        projection = Int8Matrix(codes, scales, "small_to_mtp_projection")
        for name in MTP_PROJECTION_Q8:
            self._file.release(name)
        return projection

    @property
    def int8_heads(self) -> bool:
        """Whether `predictor_head` runs the 8-bit heads."""
        return self._int8 is not None

    # ---- text track ------------------------------------------------------------------------------------
    def text_embed(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Text-track vectors `linear_fc2(silu(linear_fc1(text_embedding[ids])))`: [n, talker_hidden] f32."""
        rows = self._file.raw(TEXT_EMBEDDING)[np.asarray(ids, dtype=np.int64)]
        x = bf16_to_f32(rows) if self._text_is_bf16 else np.asarray(rows, dtype=np.float32)
        hidden = _silu(x @ self._fc1_w.T + self._fc1_b)
        return (hidden @ self._fc2_w.T + self._fc2_b).astype(np.float32, copy=False)

    # ---- codec track -----------------------------------------------------------------------------------
    def codec_embed(self, group: int, ids: np.ndarray | list[int] | int) -> np.ndarray:
        """Embedding rows of code group `group` (0 = talker codec embedding, 3072 rows incl. control ids)."""
        return np.array(self._embeddings[group][np.asarray(ids, dtype=np.int64)], dtype=np.float32)

    def frame_embed(self, codes: np.ndarray | list[int]) -> np.ndarray:
        """Sum of the embeddings of one frame's codes over all groups (the talker's per-step codec input)."""
        codes = np.asarray(codes, dtype=np.int64)
        if codes.shape[-1] != self.num_groups:
            raise ValueError(f"a frame has {self.num_groups} codes, got {codes.shape[-1]}")
        total = np.zeros((*codes.shape[:-1], self.talker_hidden), dtype=np.float32)
        for group in range(self.num_groups):
            total += self._embeddings[group][codes[..., group]]
        return total

    # ---- code predictor --------------------------------------------------------------------------------
    def _head(self, group: int) -> np.ndarray:
        head = self._heads[group] if 0 < group < self.num_groups else None
        if head is None:
            raise ValueError(f"residual groups are 1..{self.num_groups - 1}, got {group}")
        return head

    def predictor_head(self, group: int, hidden: np.ndarray) -> np.ndarray:
        """Logits of residual group `group` (1..15) from predictor hidden states [..., predictor_hidden]."""
        head = self._head(group)  # checks the group; a view, nothing is read
        if self._int8 is not None:
            return self._int8.logits(group, hidden)
        return np.asarray(hidden, dtype=np.float32) @ head.T

    def predictor_head_rows(self, group: int, hidden: np.ndarray) -> np.ndarray:
        """[B, N] logits of B hidden rows [B, predictor_hidden]; row r is bit-identical to
        `predictor_head(group, hidden[r])`, so a batch picks the same codes as the solo loop."""
        head = self._head(group)
        hidden = np.asarray(hidden, dtype=np.float32)
        if self._int8 is not None:
            return self._int8.logits(group, hidden)  # one call: the 8-bit kernel keeps rows independent
        # row by row: numpy's f32 matrix-vector product is the solo kernel (sgemm rounds differently)
        return np.stack([row @ head.T for row in hidden])

    def project(self, x: np.ndarray) -> np.ndarray:
        """Talker width -> predictor width (`small_to_mtp_projection`, identity when the widths match).

        With the 8-bit heads the projection is 8-bit too when stored. 1.7B, 16 calls per frame: heads +
        lookups + projection 19.0 -> 12.8 ms per frame beside the LMs, which evict the 8 MB f32 matrix
        between calls (alone, with the matrix cached: 0.145 -> 0.067 ms per call)."""
        x = np.asarray(x, dtype=np.float32)
        if self._proj_w is None:
            return x
        if self._int8_proj is not None:
            return self._int8_proj.apply(x) + self._proj_b
        return x @ self._proj_w.T + self._proj_b
