"""llama.cpp (llama-cpp-python low-level API) driven with input embeddings: hidden states and logits out.

This module is the one place that knows llama.cpp's quirks (measured on llama-cpp-python 0.3.36):
* the backend is initialised once per process and logging is process-global: we install one kept
  callback that shows errors only (llama.cpp writes hundreds of lines per model load otherwise);
* ctypes accepts unknown struct fields silently, so every parameter we set is checked against `_fields_`;
* a native build's AMX path segfaults on quantized weights with >= 2 positions per decode
  (ggml-org/llama.cpp#20824): extra buffer types are off by default when the library reports AMX;
* with `embeddings=True` llama.cpp outputs every position, and the hidden state it returns is the
  output of the final RMSNorm; logits = hidden @ output.T;
* OpenMP barriers stall when a thread is preempted, so the default thread count is the number of
  cores that are free right now, not the number that exist;
* several sequences can share one context (`n_seq_max`): one decode then serves a position of each, so
  every weight read is reused (bandwidth-bound CPUs gain ~3x at 8 sequences with q8_0). Without
  `kv_unified` each sequence gets its own KV stream of `n_ctx` cells, llama.cpp splits a mixed batch
  into "equal" micro-batches (the same number of positions from each sequence) and hands the outputs
  back in batch order.
"""

from __future__ import annotations

import collections
import ctypes
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from qwen3tts_cli.errors import Qwen3TTSError

# ggml_log_level in the bundled ggml: 0 NONE, 1 DEBUG, 2 INFO, 3 WARN, 4 ERROR, 5 CONT (continuation)
_LOG_WARN, _LOG_ERROR, _LOG_CONT = 3, 4, 5
# ggml_type ids used for the KV cache
KV_TYPES: dict[str, int] = {"f32": 0, "f16": 1, "q8_0": 8}
# llama_flash_attn_type
FLASH_ATTN: dict[str, int] = {"auto": -1, "off": 0, "on": 1}

_llama: ModuleType | None = None
_log_callback: Any = None  # must stay referenced for the life of the process (ctypes callback)
_last_log_level = 0
_recent_errors: collections.deque[str] = collections.deque(maxlen=8)


def _install_log_callback(lib: ModuleType) -> None:
    """Route llama.cpp/ggml logging through one kept callback: errors to stderr, the rest dropped."""
    global _log_callback
    verbose = os.environ.get("QWEN3TTS_LLAMA_LOG", "") not in ("", "0")

    @lib.llama_log_callback
    def _on_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        global _last_log_level
        if level != _LOG_CONT:
            _last_log_level = level
        message = text.decode("utf-8", "replace") if text else ""
        if _last_log_level == _LOG_ERROR:
            _recent_errors.append(message.strip())
        if verbose or _last_log_level == _LOG_ERROR:
            sys.stderr.write(message)

    _log_callback = _on_log
    lib.llama_log_set(_log_callback, ctypes.c_void_p(0))


def llama_lib() -> ModuleType:
    """The llama_cpp module, with the backend initialised and logging silenced (once per process)."""
    global _llama
    if _llama is None:
        try:
            import llama_cpp as lib
        except ImportError as exc:
            raise Qwen3TTSError(
                f"llama-cpp-python is not importable: {exc}",
                "install it with `pip install llama-cpp-python==0.3.36` (or runtime/build_llama.sh)",
            ) from exc
        _install_log_callback(lib)  # importing llama_cpp installed its own chatty Python logger
        lib.llama_backend_init()
        _llama = lib
    return _llama


def recent_llama_errors() -> str:
    """The last few error lines llama.cpp logged (for error messages)."""
    return " | ".join(line for line in _recent_errors if line)


def has_amx() -> bool:
    """True when the loaded llama.cpp was built with the AMX kernels that crash on quantized batches."""
    info = llama_lib().llama_print_system_info()
    return b"AMX_INT8 = 1" in (info or b"")


def usable_cores() -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    return max(1, min(count, os.cpu_count() or count))


def free_cores() -> int:
    """Cores not busy with other work right now (1-minute load average), at least 1, at most usable_cores."""
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))


def _set_fields(struct: ctypes.Structure, values: dict[str, Any]) -> None:
    """Assign struct fields, refusing names the struct does not have (ctypes would accept them silently)."""
    known = {name for name, *_ in type(struct)._fields_}
    unknown = sorted(set(values) - known)
    if unknown:
        raise RuntimeError(f"{type(struct).__name__} has no field(s) {unknown}: llama-cpp-python API changed")
    for name, value in values.items():
        setattr(struct, name, value)


@dataclass(frozen=True)
class LlamaOptions:
    """How to run one model. `exact=True` is the parity mode: F32 KV cache and flash attention off."""

    n_ctx: int = 4096  # positions per sequence
    n_batch: int = 256
    n_seq_max: int = 1  # independent sequences (seq ids 0..n_seq_max-1) sharing the weights
    kv_unified: bool = False  # one KV buffer for all sequences instead of one stream each
    n_threads: int | None = None  # None: free_cores() when the model is loaded
    exact: bool = False
    kv_type: str = "f16"  # f32 | f16 | q8_0 (q8_0 needs flash attention)
    flash_attn: str = "auto"  # auto | on | off
    use_extra_bufts: bool | None = None  # None: off when the library has AMX kernels, on otherwise
    want_logits: bool = True
    n_gpu_layers: int = 0  # layers on the GPU device (-1: all); 0 on a CPU-only build (engine/devices.py)
    device: str | None = None  # the ggml device to offload to (e.g. "Vulkan0"); None: llama.cpp's choice

    def kv_type_id(self) -> int:
        name = "f32" if self.exact else self.kv_type
        if name not in KV_TYPES:
            raise Qwen3TTSError(f"unknown KV cache type {name!r}", f"use one of {', '.join(KV_TYPES)}")
        return KV_TYPES[name]

    def flash_attn_id(self) -> int:
        name = "off" if self.exact else self.flash_attn
        if name not in FLASH_ATTN:
            raise Qwen3TTSError(
                f"unknown flash attention mode {name!r}", f"use one of {', '.join(FLASH_ATTN)}"
            )
        return FLASH_ATTN[name]


class LlamaModel:
    """One GGUF model with one context; input embeddings in, final-norm hidden states out.

    Positions are tracked per sequence: `decode` appends to sequence 0 after what is already in its KV
    cache, `decode_sequences` appends rows to the sequences named per row; `rollback(pos)` forgets
    positions >= pos, `clear_sequence(seq)` one sequence and `clear()` everything.
    """

    def __init__(self, path: str | Path, options: LlamaOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or LlamaOptions()
        self._lib = llama_lib()
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        if not self.path.is_file():
            raise Qwen3TTSError(f"{self.path} does not exist", "re-convert the model folder")
        self.n_threads = self.options.n_threads or free_cores()
        # when set, asked before every decode how many threads to use now (at most n_threads): the codec
        # decoder may be running on the other cores (engine/pipeline.py)
        self.threads_source: Callable[[], int] | None = None
        self._threads_now = self.n_threads
        if self.options.n_seq_max < 1:
            raise ValueError(f"n_seq_max must be >= 1, got {self.options.n_seq_max}")
        self._load_model()
        try:
            self._create_context()
        except BaseException:
            self.close()
            raise
        self._seq_past = np.zeros(self.options.n_seq_max, dtype=np.int64)

    @property
    def n_past(self) -> int:
        """Positions held by sequence 0 (the single-sequence view)."""
        return int(self._seq_past[0])

    @property
    def n_seq_max(self) -> int:
        return self.options.n_seq_max

    def positions(self, seq: int) -> int:
        """Positions held by sequence `seq`."""
        return int(self._seq_past[self._check_seq(seq)])

    # ---- setup -----------------------------------------------------------------------------------------
    def _load_model(self) -> None:
        lib = self._lib
        params = lib.llama_model_default_params()
        extra_bufts = self.options.use_extra_bufts
        if extra_bufts is None:
            extra_bufts = not has_amx()
        fields: dict[str, Any] = {"n_gpu_layers": self.options.n_gpu_layers, "use_extra_bufts": extra_bufts}
        # the devices llama.cpp may use (NULL-terminated): on a GPU only the one asked for, not every GPU the
        # build sees; on the CPU none, or a GPU build would still ship prompt batches to a GPU ("op
        # offload"): `--device cpu` would then wait for a device it was told not to use
        devices: Any = (ctypes.c_void_p * 2)(None, None)
        if self.options.n_gpu_layers != 0 and self.options.device:
            from qwen3tts_cli.engine.devices import ggml_device_handle

            devices[0] = ggml_device_handle(self.options.device)
            if devices[0] is None:  # not found by name: llama.cpp's own choice of GPUs
                devices = None
        if devices is not None:
            fields["devices"] = ctypes.cast(devices, ctypes.c_void_p)
        _set_fields(params, fields)
        self._model = lib.llama_model_load_from_file(str(self.path).encode(), params)
        del devices  # llama.cpp copied the list while loading
        if not self._model:
            raise Qwen3TTSError(
                f"llama.cpp cannot load {self.path}: {recent_llama_errors() or 'unknown error'}",
                "the file is damaged or was written by another converter version; re-convert the model",
            )
        self.n_embd = int(lib.llama_model_n_embd(self._model))
        self.n_vocab = int(lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self._model)))

    def _create_context(self) -> None:
        lib = self._lib
        opts = self.options
        n_batch = max(1, min(opts.n_batch, opts.n_ctx))
        params = lib.llama_context_default_params()
        _set_fields(
            params,
            {
                "n_ctx": opts.n_ctx * opts.n_seq_max,  # llama.cpp divides it among the streams
                "n_batch": n_batch,
                "n_ubatch": n_batch,
                "n_seq_max": opts.n_seq_max,
                "kv_unified": opts.kv_unified,
                "n_threads": self.n_threads,
                "n_threads_batch": self.n_threads,
                "embeddings": True,  # hidden states out (logits are still computed)
                "pooling_type": lib.LLAMA_POOLING_TYPE_NONE,  # one output per position
                "flash_attn_type": opts.flash_attn_id(),
                "type_k": opts.kv_type_id(),
                "type_v": opts.kv_type_id(),
                "no_perf": True,
                "op_offload": opts.n_gpu_layers != 0,  # CPU placement: never ship batches to a GPU
            },
        )
        self._ctx = lib.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise Qwen3TTSError(
                f"llama.cpp cannot create a context for {self.path}: {recent_llama_errors() or 'no details'}",
                "lower the context size, or use kv_type f16 (q8_0 needs flash attention)",
            )
        # per sequence: its own stream's cells, or (unified) the requested share of the common buffer
        self.n_ctx = opts.n_ctx if opts.kv_unified else int(lib.llama_n_ctx_seq(self._ctx))
        self.n_batch = n_batch
        self._memory = lib.llama_get_memory(self._ctx)
        self._batch = lib.llama_batch_init(n_batch, self.n_embd, 1)  # embd != 0: batch.embd is allocated
        self._slot_seq = np.zeros(n_batch, dtype=np.int64)  # what each slot's seq_id holds (ctypes writes)
        for i in range(n_batch):  # every position belongs to exactly one sequence (id 0 until told)
            self._batch.n_seq_id[i] = 1
            self._batch.seq_id[i][0] = 0
        self._embd_addr = ctypes.cast(self._batch.embd, ctypes.c_void_p).value
        self._positions = np.ctypeslib.as_array(self._batch.pos, shape=(n_batch,))
        self._output_flags = np.ctypeslib.as_array(self._batch.logits, shape=(n_batch,))
        self._output_flags[:] = 1

    # ---- KV cache --------------------------------------------------------------------------------------
    def _require_open(self) -> None:
        # a call on a freed context would crash the process (llama.cpp does not check), so refuse it here
        if not self._ctx:
            raise Qwen3TTSError(f"the model {self.path.name} is closed", "load the model again")

    def clear(self) -> None:
        """Forget every sequence (metadata only: ~20 us)."""
        self._require_open()
        self._lib.llama_memory_clear(self._memory, False)
        self._seq_past[:] = 0

    def clear_sequence(self, seq: int) -> None:
        """Forget one sequence; the others keep their positions."""
        self._require_open()
        self._check_seq(seq)
        if not self._lib.llama_memory_seq_rm(self._memory, seq, -1, -1):
            raise RuntimeError(f"llama.cpp refused to clear sequence {seq}")
        self._seq_past[seq] = 0

    def rollback(self, pos: int, seq: int = 0) -> None:
        """Forget positions >= pos of sequence `seq`; its next decode continues at `pos`."""
        self._require_open()
        held = self.positions(seq)
        if not 0 <= pos <= held:
            raise ValueError(f"cannot roll back to {pos}: the sequence has {held} positions")
        if not self._lib.llama_memory_seq_rm(self._memory, seq, pos, -1):
            raise RuntimeError(f"llama.cpp refused to remove positions >= {pos}")
        self._seq_past[seq] = pos

    def _check_seq(self, seq: int) -> int:
        if not 0 <= seq < self.options.n_seq_max:
            raise ValueError(f"sequence ids are 0..{self.options.n_seq_max - 1}, got {seq}")
        return seq

    # ---- compute ---------------------------------------------------------------------------------------
    def decode(self, embeds: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Append `embeds` [n, n_embd] to sequence 0; return (hidden [n, n_embd] after the final norm,
        logits [n, n_vocab]).

        Logits are None when the model was opened with want_logits=False. Longer inputs are split into
        n_batch chunks (same result: the KV cache carries the earlier positions).
        """
        embeds = self._as_rows(embeds)
        return self.decode_sequences(embeds, np.zeros(len(embeds), dtype=np.int64))

    def decode_sequences(
        self, embeds: np.ndarray, seq_ids: np.ndarray | list[int]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Append row i of `embeds` to sequence `seq_ids[i]` (each sequence continues at its own next
        position, rows of one sequence in order); outputs come back in the same row order."""
        self._require_open()
        embeds = self._as_rows(embeds)
        seqs = np.asarray(seq_ids, dtype=np.int64).reshape(-1)
        if len(seqs) != len(embeds):
            raise ValueError(f"{len(embeds)} rows but {len(seqs)} sequence ids")
        if len(seqs) and not (0 <= seqs.min() and seqs.max() < self.options.n_seq_max):
            raise ValueError(f"sequence ids are 0..{self.options.n_seq_max - 1}, got {sorted(set(seqs))}")
        positions = self._next_positions(seqs)
        hidden, logits = [], []
        for start in range(0, len(embeds), self.n_batch):
            stop = start + self.n_batch
            h, lg = self._decode_chunk(embeds[start:stop], seqs[start:stop], positions[start:stop])
            hidden.append(h)
            if lg is not None:
                logits.append(lg)
        joined_logits = np.concatenate(logits) if logits else None
        if not hidden:
            return np.zeros((0, self.n_embd), np.float32), joined_logits
        return np.concatenate(hidden), joined_logits

    def _as_rows(self, embeds: np.ndarray) -> np.ndarray:
        embeds = np.ascontiguousarray(embeds, dtype=np.float32)
        if embeds.ndim == 1:
            embeds = embeds[None, :]
        if embeds.ndim != 2 or embeds.shape[1] != self.n_embd:
            raise ValueError(f"expected embeddings of shape [n, {self.n_embd}], got {embeds.shape}")
        return embeds

    def _next_positions(self, seqs: np.ndarray) -> np.ndarray:
        """Each row's position: its sequence's next free position, counting the sequence's earlier rows."""
        positions = np.empty(len(seqs), dtype=np.int64)
        for seq in np.unique(seqs):
            rows = np.flatnonzero(seqs == seq)
            end = int(self._seq_past[seq]) + len(rows)
            if end > self.n_ctx:
                raise Qwen3TTSError(
                    f"the sequence needs {end} positions, the context holds {self.n_ctx}",
                    "use a shorter text or a larger context (--max-context)",
                )
            positions[rows] = np.arange(self._seq_past[seq], end)
        return positions

    def _decode_chunk(
        self, chunk: np.ndarray, seqs: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        n = len(chunk)
        self._batch.n_tokens = n
        ctypes.memmove(self._embd_addr, chunk.ctypes.data, chunk.nbytes)
        self._positions[:n] = positions
        for slot in np.flatnonzero(self._slot_seq[:n] != seqs):  # seq ids live in per-slot C arrays
            self._batch.seq_id[slot][0] = int(seqs[slot])
            self._slot_seq[slot] = seqs[slot]
        self._apply_thread_count()
        status = self._lib.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}: {recent_llama_errors()}")
        np.maximum.at(self._seq_past, seqs, positions + 1)
        hidden = np.ctypeslib.as_array(
            self._lib.llama_get_embeddings(self._ctx), shape=(n, self.n_embd)
        ).copy()
        logits = None
        if self.options.want_logits:
            logits = np.ctypeslib.as_array(
                self._lib.llama_get_logits(self._ctx), shape=(n, self.n_vocab)
            ).copy()
        return hidden, logits

    @property
    def threads_in_use(self) -> int:
        """Threads of the latest decode: fewer than n_threads while the codec decoder holds some cores."""
        return self._threads_now

    def _apply_thread_count(self) -> None:
        if self.threads_source is None:
            return
        wanted = max(1, min(self.n_threads, int(self.threads_source())))
        if wanted != self._threads_now:
            self._lib.llama_set_n_threads(self._ctx, wanted, wanted)
            self._threads_now = wanted

    # ---- lifetime --------------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the batch, context and model (idempotent)."""
        lib = self._lib
        if self._batch is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            lib.llama_free(self._ctx)
            self._ctx = None
            self._memory = None
        if self._model:
            lib.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> LlamaModel:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass
