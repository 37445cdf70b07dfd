"""f32 GGUF -> narrower GGUF: llama.cpp's own quantizer for the integer types, gguf-py for f16.

What must stay wide stays wide: 1-D tensors (norms) are never narrowed, and in an f16 file the code
predictor's `ffn_down` stays f32, because its FFN intermediate reaches ~1.5e5 on the real weights (above
the f16 range) and llama.cpp casts a matmul's input to the weight type. llama.cpp's per-tensor overrides
(`tt_overrides`) only apply when the target type is a quantized one, so f16 is written here with gguf-py.
Integer types quantize activations per 32-block with an f16 scale (fine up to ~8e6): no override needed.
"""

from __future__ import annotations

import ctypes
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np

from qwen3tts_cli.convert.lm import ARCH, COMPONENT_PREDICTOR, KEY_COMPONENT
from qwen3tts_cli.convert.safetensors import release_pages
from qwen3tts_cli.errors import Qwen3TTSError

# name -> llama_ftype (llama.h); "f32" is a plain copy and "f16" is written with gguf-py
LLAMA_FTYPES: dict[str, int] = {"q8_0": 7, "q5_k_m": 17, "q4_k_m": 15, "q4_0": 2}
QUANT_TYPES: tuple[str, ...] = ("f32", "f16", *LLAMA_FTYPES)
PREDICTOR_KEEP_F32 = (r"\.ffn_down\.weight$",)


def _check_quant(quant: str) -> None:
    if quant not in QUANT_TYPES:
        raise Qwen3TTSError(f"unknown quantization {quant!r}", f"use one of {', '.join(QUANT_TYPES)}")


def gguf_component(path: str | Path) -> str:
    """The `qwen3tts.component` of a GGUF we wrote ('talker' / 'predictor'), '' for foreign files."""
    field = gguf.GGUFReader(str(path)).get_field(KEY_COMPONENT)
    return str(field.contents()) if field is not None else ""


def quantize_gguf(
    src: str | Path,
    dst: str | Path,
    quant: str,
    threads: int = 2,
    keep_f32: Sequence[str] | None = None,
) -> None:
    """Write `src` (an f32 GGUF from convert/lm.py) as `dst` in `quant`.

    `keep_f32`: regexes of tensor names kept f32 in an f16 file; None = the predictor's ffn_down when `src`
    is a code predictor.
    """
    _check_quant(quant)
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise Qwen3TTSError(f"{src} does not exist", "write the f32 GGUF first")
    try:
        if quant == "f32":
            shutil.copyfile(src, dst)
        elif quant == "f16":
            if keep_f32 is None:
                keep_f32 = PREDICTOR_KEEP_F32 if gguf_component(src) == COMPONENT_PREDICTOR else ()
            write_f16_gguf(src, dst, keep_f32)
        else:
            _llama_quantize(src, dst, LLAMA_FTYPES[quant], threads)
    except BaseException:
        dst.unlink(missing_ok=True)
        raise


def _llama_quantize(src: Path, dst: Path, ftype: int, threads: int) -> None:
    from qwen3tts_cli.engine.llama import llama_lib, recent_llama_errors

    lib = llama_lib()  # also silences llama.cpp's per-tensor log lines
    params = lib.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = max(1, threads)
    status = lib.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if status != 0:
        raise Qwen3TTSError(
            f"llama.cpp could not quantize {src.name}: {recent_llama_errors() or f'status {status}'}",
            "check free disk space, or convert with --quant f16",
        )


def _copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter, file_type: int) -> None:
    for name, field in reader.fields.items():
        # the writer emits the header fields and the architecture itself
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            writer.add_file_type(file_type)
            continue
        main = field.types[0]
        sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), main, sub_type=sub)


def _f16_target(tensor: gguf.ReaderTensor, keep_f32: Sequence[re.Pattern[str]]) -> bool:
    if tensor.tensor_type != gguf.GGMLQuantizationType.F32 or len(tensor.data.shape) < 2:
        return False
    return not any(pattern.search(tensor.name) for pattern in keep_f32)


def write_f16_gguf(src: str | Path, dst: str | Path, keep_f32: Sequence[str] = ()) -> None:
    """Copy an f32 GGUF with its matrices as f16, except tensors matching `keep_f32` (streamed)."""
    reader = gguf.GGUFReader(str(src))
    arch_field = reader.get_field("general.architecture")
    arch = str(arch_field.contents()) if arch_field is not None else ARCH
    patterns = [re.compile(p) for p in keep_f32]
    writer = gguf.GGUFWriter(str(dst), arch=arch)
    _copy_metadata(reader, writer, gguf.LlamaFileType.MOSTLY_F16)
    narrow = [_f16_target(t, patterns) for t in reader.tensors]
    for tensor, to_f16 in zip(reader.tensors, narrow, strict=True):
        dtype = np.dtype(np.float16 if to_f16 else tensor.data.dtype)
        writer.add_tensor_info(tensor.name, tensor.data.shape, dtype, tensor.data.size * dtype.itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor, to_f16 in zip(reader.tensors, narrow, strict=True):
        data = tensor.data.astype(np.float16) if to_f16 else np.ascontiguousarray(tensor.data)
        writer.write_tensor_data(data)
        del data
        # the source's mapped pages would otherwise stay in RSS: the whole f32 file by the end
        release_pages(reader.data, tensor.data_offset, tensor.data_offset + tensor.n_bytes)
    writer.close()
