"""`say --codes-out`: the generated codec codes, saved for inspection or for re-decoding later.

Two layouts, chosen by the file extension:
  NAME.npy   int64 [frames, 16]: every piece's frames, concatenated in reading order. When the text was
             split into several pieces, NAME.pieces.json sits next to it:
             {"piece_frames": [F0, F1, ...], "piece_start": [0, F0, ...], "pieces": ["text 0", ...]}
  NAME.npz   codes (as above), piece_frames int64 [P], piece_start int64 [P], piece_text str [P]
Each piece is an independent utterance (its own talker sequence and decoder stream), so its codes must be
decoded separately: `codes[start:start + frames]`. Files are written atomically (temp file + rename).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.platform_compat import replace_file
from qwen3tts_cli.spec import NUM_CODE_GROUPS

CODES_SUFFIXES = (".npy", ".npz")
SIDECAR_SUFFIX = ".pieces.json"


def check_codes_target(path: Path) -> Path:
    """Refuse a bad --codes-out before any work: unknown extension or a missing folder."""
    path = path.expanduser()
    if path.suffix.lower() not in CODES_SUFFIXES:
        raise Qwen3TTSError(
            f"--codes-out must end in .npy or .npz (got '{path.name}')", "e.g. --codes-out codes.npy"
        )
    if not path.parent.is_dir():
        raise Qwen3TTSError(f"folder does not exist: {path.parent}", "create it first or choose another path")
    if path.is_dir():
        raise Qwen3TTSError(f"--codes-out is a folder: {path}", "give a file name, e.g. codes.npy")
    return path


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.stem + SIDECAR_SUFFIX)


class CodesCollector:
    """Frames as `TTS.stream` reports them, per piece (a few bytes per frame: fine to keep in memory)."""

    def __init__(self, pieces: int) -> None:
        self._chunks: list[list[np.ndarray]] = [[] for _ in range(pieces)]

    def add(self, piece: int, codes: np.ndarray) -> None:
        self._chunks[piece].append(np.asarray(codes, dtype=np.int64))

    def per_piece(self) -> list[np.ndarray]:
        empty = np.zeros((0, NUM_CODE_GROUPS), dtype=np.int64)
        return [np.concatenate(chunks) if chunks else empty for chunks in self._chunks]

    def save(self, path: Path, texts: list[str]) -> None:
        per_piece = self.per_piece()
        codes = np.concatenate(per_piece) if per_piece else np.zeros((0, NUM_CODE_GROUPS), np.int64)
        frames = np.array([len(piece) for piece in per_piece], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(frames)[:-1]]).astype(np.int64) if len(frames) else frames
        if path.suffix.lower() == ".npz":
            _atomic_write(
                path,
                lambda f: np.savez(
                    f, codes=codes, piece_frames=frames, piece_start=starts, piece_text=np.array(texts)
                ),
            )
            return
        _atomic_write(path, lambda f: np.save(f, codes))
        if len(per_piece) > 1:
            document = {"piece_frames": frames.tolist(), "piece_start": starts.tolist(), "pieces": texts}
            text = json.dumps(document, ensure_ascii=False, indent=1) + "\n"
            _atomic_write(sidecar_path(path), lambda f: f.write(text.encode("utf-8")))


def _atomic_write(target: Path, write: Callable[[IO[bytes]], object]) -> None:
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(name, _new_file_mode())
        replace_file(name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise


def _new_file_mode() -> int:
    """mkstemp makes 0600 files; give the result the mode a plain open() would have."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
