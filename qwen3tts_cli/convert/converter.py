"""Official checkpoint folder -> converted model folder (GGUF + ONNX + tables + tokenizer + manifest).

Everything is written into a temporary sibling folder and renamed into place only when complete, so an
interrupted conversion never leaves a folder that looks usable; the next run removes the leftovers.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from qwen3tts_cli import spec
from qwen3tts_cli.convert.checkpoint import Checkpoint
from qwen3tts_cli.convert.codec_decoder import write_decoder_onnx
from qwen3tts_cli.convert.codec_encoder import write_encoder_onnx
from qwen3tts_cli.convert.lm import write_predictor_gguf, write_tables, write_talker_gguf
from qwen3tts_cli.convert.manifest import Manifest
from qwen3tts_cli.convert.quantize import LLAMA_FTYPES, QUANT_TYPES, quantize_gguf
from qwen3tts_cli.convert.space import check_free_space, estimate_bytes
from qwen3tts_cli.convert.speaker import write_speaker_onnx
from qwen3tts_cli.convert.tokenizer import write_tokenizer_json
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.platform_compat import pid_alive, replace_file

DEFAULT_QUANT = "q8_0"
CODEC_PRECISIONS = ("fp32",)
_TMP_MARK = ".tmp-"

Progress = Callable[[str], None]
TensorProgress = Callable[[int, int], None]


class _TensorCount:
    """Counts the distinct checkpoint tensors read so far against all the conversion may read.

    A few codec tensors are bookkeeping the graphs never use, so the count ends a little short of the total
    until `finish` reports it complete.
    """

    def __init__(self, ckpt: Checkpoint, report: TensorProgress) -> None:
        unused = () if ckpt.kind == spec.KIND_BASE else ("speaker_encoder.",)
        self.total = sum(not name.startswith(unused) for name in ckpt.weights) + len(ckpt.codec_weights)
        self.seen: set[str] = set()
        self.report = report

    def __call__(self, key: str) -> None:
        if key not in self.seen:
            self.seen.add(key)
            self.report(min(len(self.seen), self.total), self.total)

    def finish(self) -> None:
        self.report(self.total, self.total)


def _remove_stale_temp_folders(dst: Path) -> None:
    """Drop temp folders of conversions that were killed (their process is gone)."""
    for leftover in dst.parent.glob(f".{dst.name}{_TMP_MARK}*"):
        pid_text = leftover.name.rsplit(_TMP_MARK, 1)[-1]
        if not pid_text.isdigit() or not pid_alive(int(pid_text)):
            shutil.rmtree(leftover, ignore_errors=True)


def _write_lm(
    writer: Callable[[Checkpoint, Path], None], ckpt: Checkpoint, out: Path, quant: str, threads: int
) -> None:
    """Write the f32 GGUF, then quantize it in place of itself when a narrower type is asked for."""
    if quant == "f32":
        writer(ckpt, out)
        return
    wide = out.with_suffix(".f32.gguf")
    writer(ckpt, wide)
    try:
        quantize_gguf(wide, out, quant, threads=threads)
    finally:
        wide.unlink(missing_ok=True)


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    quant: str = DEFAULT_QUANT,
    *,
    codec_precision: str = "fp32",
    source_repo: str | None = None,
    source_revision: str | None = None,
    threads: int = 2,
    overwrite: bool = False,
    progress: Progress | None = None,
    tensor_progress: TensorProgress | None = None,
) -> Path:
    """Convert the official checkpoint in `src` into a model folder at `dst`; returns `dst`.

    `progress` gets a line per step; `tensor_progress(n, m)` is called as checkpoint tensor n of m is read.
    """
    say = progress or (lambda _msg: None)
    if quant not in QUANT_TYPES:
        raise Qwen3TTSError(f"unknown quantization {quant!r}", f"use one of {', '.join(QUANT_TYPES)}")
    if codec_precision not in CODEC_PRECISIONS:
        raise Qwen3TTSError(
            f"unknown codec precision {codec_precision!r}", f"use one of {', '.join(CODEC_PRECISIONS)}"
        )
    ckpt = Checkpoint(src)
    dst = Path(dst).absolute()
    if dst.exists() and not overwrite:
        raise Qwen3TTSError(
            f"{dst} already exists", "choose another output folder or pass --force to replace it"
        )
    if not dst.parent.is_dir():
        raise Qwen3TTSError(f"the folder {dst.parent} does not exist", "create it first")
    _remove_stale_temp_folders(dst)
    # everything is written in the temporary folder beside `dst` (the ONNX spools too): one disk to check;
    # a folder being replaced is only removed at the end, so its space is not counted as free
    check_free_space([(dst.parent, estimate_bytes(ckpt, quant))])
    tmp = dst.parent / f".{dst.name}{_TMP_MARK}{os.getpid()}"
    tmp.mkdir()
    count = _TensorCount(ckpt, tensor_progress) if tensor_progress is not None else None
    ckpt.on_read = count
    try:
        _write_all(ckpt, tmp, quant, threads, say)
        if count is not None:
            count.finish()
        manifest = Manifest(
            kind=ckpt.kind,
            size_tag=ckpt.size_tag,
            quant=quant,
            codec_precision=codec_precision,
            source_repo=source_repo,
            source_revision=source_revision,
            talker_hidden=ckpt.talker_shape.hidden,
            predictor_hidden=ckpt.predictor_shape.hidden,
        )
        say("checksums")
        manifest.record_files(tmp)
        manifest.write(tmp)
        _publish(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _write_all(ckpt: Checkpoint, out: Path, quant: str, threads: int, say: Progress) -> None:
    say("configs")
    shutil.copyfile(ckpt.folder / "config.json", out / "config.json")
    shutil.copyfile(ckpt.folder / "speech_tokenizer" / "config.json", out / "codec_config.json")
    generation = ckpt.folder / "generation_config.json"
    if generation.is_file():
        shutil.copyfile(generation, out / "generation_config.json")
    say("tokenizer")
    write_tokenizer_json(ckpt.folder, out / "tokenizer.json")
    say("lookup tables")
    # the integer types get 8-bit predictor heads too; f16/f32 models keep f32 heads only
    write_tables(ckpt, out / "tables.safetensors", int8_heads=quant in LLAMA_FTYPES)
    say(f"talker ({quant})")
    _write_lm(write_talker_gguf, ckpt, out / "talker.gguf", quant, threads)
    say(f"code predictor ({quant})")
    _write_lm(write_predictor_gguf, ckpt, out / "predictor.gguf", quant, threads)
    say("codec decoder")
    write_decoder_onnx(ckpt, out / "codec_decoder.onnx")
    say("codec encoder")
    write_encoder_onnx(ckpt, out / "codec_encoder.onnx")
    if ckpt.kind == spec.KIND_BASE:
        say("speaker encoder")
        write_speaker_onnx(ckpt, out / "speaker_encoder.onnx")


def _publish(tmp: Path, dst: Path) -> None:
    """Move the finished folder into place; an existing one is replaced only after the new one is whole."""
    if not dst.exists():
        replace_file(tmp, dst)
        return
    old = dst.parent / f".{dst.name}.old-{os.getpid()}"
    replace_file(dst, old)
    replace_file(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)
