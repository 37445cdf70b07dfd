"""Torch-free safetensors: read a header, memory-map tensors with numpy (bf16 widened to f32), write files.

The format is an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
then the raw little-endian payload. We map the payload once and hand out views, so converting a
multi-GB checkpoint never holds more than the tensor being written.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from qwen3tts_cli.errors import Qwen3TTSError

# safetensors dtype name -> numpy dtype of the stored bytes (bf16 is read as uint16 and widened)
_STORED_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class TensorRows:
    """Rows of a 2-D table read from the file on demand (`os.pread`), never memory-mapped.

    Random row lookups in a mapped table make the kernel map ~16 neighbouring pages per fault, so a few
    hundred generated frames hold a whole embedding table in RSS (0.6B: the 15 predictor codec embeddings,
    126 MB). Reading just the rows keeps them in the page cache, outside the process.
    """

    def __init__(self, path: Path, offset: int, rows: int, cols: int, dtype: np.dtype) -> None:
        self.shape = (rows, cols)
        self.dtype = dtype
        self._offset = offset
        self._row_bytes = cols * dtype.itemsize
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._lock = threading.Lock()  # the seek+read fallback (no pread, e.g. Windows) shares a position
        if hasattr(os, "posix_fadvise"):
            # have the kernel read the table into its page cache now (not our RSS): a lookup that had to
            # wait for the disk cost ~100 us per row, ~3.6 ms per frame at 0.6B
            os.posix_fadvise(self._fd, offset, rows * self._row_bytes, os.POSIX_FADV_WILLNEED)

    def __getitem__(self, ids: np.ndarray | list[int] | int) -> np.ndarray:
        index = np.asarray(ids, dtype=np.int64)
        wanted, inverse = np.unique(index.reshape(-1), return_inverse=True)
        if wanted.size and (wanted[0] < 0 or wanted[-1] >= self.shape[0]):
            raise IndexError(f"row ids must lie in [0, {self.shape[0]}), got {wanted[0]}..{wanted[-1]}")
        table = np.empty((wanted.size, self.shape[1]), self.dtype)
        for slot, row in enumerate(wanted):
            table[slot] = np.frombuffer(self._read(self._offset + int(row) * self._row_bytes), self.dtype)
        return table[inverse].reshape(*index.shape, self.shape[1])

    def _read(self, position: int) -> bytes:
        if hasattr(os, "pread"):
            data = os.pread(self._fd, self._row_bytes, position)
        else:
            with self._lock:
                os.lseek(self._fd, position, os.SEEK_SET)
                data = os.read(self._fd, self._row_bytes)
        if len(data) != self._row_bytes:
            raise Qwen3TTSError(f"short read at byte {position} of a table", "re-convert the model folder")
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


def release_pages(mapped: np.ndarray, begin: int, end: int) -> None:
    """Drop bytes [begin, end) of the file mapped by `mapped` (an np.memmap) from this process's RSS.

    Linux/macOS; elsewhere nothing. Read again, the pages come back from the file, so views stay valid.
    """
    mapping = getattr(mapped, "_mmap", None)  # np.memmap's mmap object
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if mapping is None or advice is None or end <= begin:
        return
    start = begin // mmap.PAGESIZE * mmap.PAGESIZE  # madvise wants page-aligned
    mapping.madvise(advice, start, end - start)


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """Widen bf16 bit patterns (uint16) to float32 exactly: bf16 is the top half of an f32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """Round float32 to bf16 bit patterns (round to nearest even), as torch's `.to(torch.bfloat16)` does."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


class SafetensorsFile(Mapping[str, np.ndarray]):
    """Read-only mapping name -> float32 (or integer) array, memory-mapped."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                prefix = f.read(8)
                if len(prefix) != 8:
                    raise ValueError("file shorter than its 8-byte header length")
                (header_len,) = struct.unpack("<Q", prefix)
                if header_len > _MAX_HEADER_BYTES:
                    raise ValueError(f"header length {header_len} is implausible")
                header = json.loads(f.read(header_len))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise Qwen3TTSError(
                f"{self.path} is not a readable safetensors file: {exc}",
                "re-download the checkpoint (a partial download leaves a truncated file)",
            ) from exc
        self.metadata: dict[str, str] = header.pop("__metadata__", {}) or {}
        self._entries: dict[str, dict] = header
        self._data_start = 8 + header_len
        size = self.path.stat().st_size
        end = max((e["data_offsets"][1] for e in header.values()), default=0)
        if self._data_start + end > size:
            raise Qwen3TTSError(
                f"{self.path} is truncated ({size} bytes, header promises {self._data_start + end})",
                "re-download the checkpoint",
            )
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.read(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:  # Mapping's default would read (and widen) the tensor
        return name in self._entries

    def dtype(self, name: str) -> str:
        return self._entries[name]["dtype"]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def raw(self, name: str) -> np.ndarray:
        """The stored values without conversion (bf16 as uint16 bit patterns), as a read-only view."""
        entry = self._entries[name]
        stored = _STORED_DTYPES.get(entry["dtype"])
        if stored is None:
            raise Qwen3TTSError(f"{self.path}: tensor {name} has unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        buf = self._map[self._data_start + begin : self._data_start + end]
        return buf.view(stored).reshape(entry["shape"])

    def rows(self, name: str) -> TensorRows:
        """Row lookups into 2-D tensor `name` that read the file instead of the mapping (see TensorRows)."""
        entry = self._entries[name]
        stored = _STORED_DTYPES.get(entry["dtype"])
        if stored is None or len(entry["shape"]) != 2:
            raise Qwen3TTSError(f"{self.path}: tensor {name} is not a 2-D table of a known dtype")
        begin, _ = entry["data_offsets"]
        rows, cols = entry["shape"]
        return TensorRows(self.path, self._data_start + begin, rows, cols, stored)

    def release(self, name: str) -> None:
        """Drop the mapped pages of tensor `name` from this process's RSS (Linux/macOS; else nothing).

        For data a library has already repacked into its own memory: if read again, the pages come back
        from the file (page cache), so views stay valid.
        """
        begin, end = self._entries[name]["data_offsets"]
        release_pages(self._map, self._data_start + begin, self._data_start + end)

    def _stored(self, name: str) -> tuple[np.dtype, int, int]:
        """(stored dtype, absolute begin, absolute end) of tensor `name`."""
        entry = self._entries[name]
        stored = _STORED_DTYPES.get(entry["dtype"])
        if stored is None:
            raise Qwen3TTSError(f"{self.path}: tensor {name} has unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        return stored, self._data_start + begin, self._data_start + end

    def _pread(self, begin: int, end: int, dtype: np.dtype) -> np.ndarray:
        out = np.empty((end - begin) // dtype.itemsize, dtype)
        with open(self.path, "rb") as f:
            f.seek(begin)
            if f.readinto(memoryview(out).cast("B")) != end - begin:
                raise Qwen3TTSError(f"{self.path} is truncated", "re-download the checkpoint")
        return out

    def load(self, name: str) -> np.ndarray:
        """Like `read`, but a private copy read from the file, never a view of the mapping.

        The converter reads every tensor once: mapped pages would stay in this process's RSS until the
        file is closed (gigabytes for a whole checkpoint), while a copy is freed when the caller drops it.
        """
        if name not in self._entries:
            raise KeyError(name)
        stored, begin, end = self._stored(name)
        return self._widened(name, self._pread(begin, end, stored).reshape(self._entries[name]["shape"]))

    def raw_blocks(self, name: str, block_bytes: int = 1 << 24) -> Iterator[bytes]:
        """The stored bytes of tensor `name`, read from the file in blocks of at most `block_bytes`."""
        _, begin, end = self._stored(name)
        with open(self.path, "rb") as f:
            f.seek(begin)
            for start in range(begin, end, block_bytes):
                block = f.read(min(block_bytes, end - start))
                if not block:
                    raise Qwen3TTSError(f"{self.path} is truncated", "re-download the checkpoint")
                yield block

    def read(self, name: str) -> np.ndarray:
        """Float tensors as float32 (bf16/f16 widened exactly), integer tensors as stored."""
        if name not in self._entries:
            raise KeyError(name)
        return self._widened(name, self.raw(name))

    def _widened(self, name: str, arr: np.ndarray) -> np.ndarray:
        """Stored values of tensor `name` as read/load return them: floats as float32, integers as stored."""
        kind = self._entries[name]["dtype"]
        if kind == "BF16":
            return bf16_to_f32(arr)
        if kind in ("F16", "F64"):
            return arr.astype(np.float32)
        return arr


_ROWS_PER_CHUNK_BYTES = 1 << 24


def array_chunks(value: np.ndarray, kind: str) -> Iterator[bytes]:
    """Encode one tensor in row blocks, so a memory-mapped source is never materialised whole.

    BF16 targets accept float32 values (rounded) or uint16 arrays, taken as bf16 bits and copied unchanged.
    """
    flat = value.reshape(-1) if value.ndim == 0 else value.reshape(value.shape[0], -1)
    row_bytes = max(1, flat[0:1].nbytes)
    step = max(1, _ROWS_PER_CHUNK_BYTES // row_bytes)
    for begin in range(0, flat.shape[0], step):
        block = np.asarray(flat[begin : begin + step])
        if kind == "BF16":
            yield (
                (block if block.dtype == np.uint16 else f32_to_bf16(block))
                .astype("<u2", copy=False)
                .tobytes()
            )
        else:
            yield np.ascontiguousarray(block, dtype=_STORED_DTYPES[kind]).tobytes()


def write_safetensors_chunks(
    path: str | Path,
    entries: list[tuple[str, str, tuple[int, ...]]],
    payload: Iterable[bytes],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a safetensors file from (name, dtype, shape) entries and their payload bytes, in order.

    The payload may be any stream of byte blocks (peak memory is one block); its total length must equal the
    sum of the tensor sizes, which is checked.
    """
    header: dict[str, dict] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, kind, shape in entries:
        size = int(np.prod(shape, dtype=np.int64)) * _STORED_DTYPES[kind].itemsize
        header[name] = {"dtype": kind, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # keep the payload 8-byte aligned, as the reference writer does
    written = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for block in payload:
            f.write(block)
            written += len(block)
    if written != offset:
        raise ValueError(f"{path}: payload has {written} bytes, the header promises {offset}")


def write_safetensors(
    path: str | Path,
    tensors: Mapping[str, np.ndarray],
    dtypes: Mapping[str, str],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write tensors; `dtypes[name]` is the safetensors dtype to store (default F32)."""
    entries = [(name, dtypes.get(name, "F32"), tuple(value.shape)) for name, value in tensors.items()]
    payload = (block for name, kind, _ in entries for block in array_chunks(tensors[name], kind))
    write_safetensors_chunks(path, entries, payload, metadata)
