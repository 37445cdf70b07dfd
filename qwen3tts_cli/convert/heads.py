"""Code-predictor heads -> 8-bit blocks in the layout of ONNX Runtime's `MatMulNBits` (com.microsoft).

With bits=8 the op reads, per output row and per block of `BLOCK` inputs, one f32 scale and `BLOCK` unsigned
codes; the weight is `(code - 128) * scale` (128 is the op's default zero point, so none is stored). The
scale is the block's absolute maximum / 127, so every code lies in 1..255 and the extremes are exact.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32  # inputs per scale: MatMulNBits' smallest block size, the most accurate one
ZERO_POINT = 128
_LEVELS = 127


def can_quantize(in_features: int) -> bool:
    """Whether a head of this input width splits into whole blocks (else it stays f32 only)."""
    return in_features > 0 and in_features % BLOCK == 0


def quantize_head(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, K] f32 -> (codes [N, K/BLOCK, BLOCK] uint8, scales [N, K/BLOCK] f32)."""
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim != 2 or not can_quantize(w.shape[1]):
        raise ValueError(f"a head must be [N, K] with K a multiple of {BLOCK}, got {list(w.shape)}")
    blocks = w.reshape(w.shape[0], -1, BLOCK)
    scales = (np.abs(blocks).max(axis=-1) / np.float32(_LEVELS)).astype(np.float32)
    safe = np.where(scales > 0, scales, np.float32(1))  # an all-zero block: codes 128, scale 0
    codes = np.clip(np.rint(blocks / safe[..., None]), -_LEVELS, _LEVELS) + ZERO_POINT
    return codes.astype(np.uint8), scales


def dequantize_head(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The [N, K] f32 weight the codes stand for (for tests and error estimates)."""
    values = (codes.astype(np.float32) - ZERO_POINT) * scales[..., None]
    return values.reshape(codes.shape[0], -1)
