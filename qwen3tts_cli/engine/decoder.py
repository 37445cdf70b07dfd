"""Streaming codec decoder: codes [N, 16] -> 24 kHz audio [N * 1920], one call per chunk of frames.

Runs `codec_decoder.onnx` (built by `qwen3tts_cli.convert.codec_decoder`) with onnxruntime on the CPU.
The graph carries the causal decoder's past as `past.*` inputs / `present.*` outputs; this class keeps
them between calls, so pushing a sequence in chunks of any size gives the same audio as decoding it at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qwen3tts_cli import spec
from qwen3tts_cli.convert.codec_decoder import AUDIO_OUTPUT, CODES_INPUT, PAST_PREFIX, PRESENT_PREFIX
from qwen3tts_cli.engine.onnx_session import cpu_session
from qwen3tts_cli.errors import Qwen3TTSError

DEFAULT_CHUNK_FRAMES = 25  # 2 s of audio per call: few calls, little waiting for the first sound
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64}


class StreamingDecoder:
    """Stateful decoder. `push` advances the stream; `reset` starts a new one; `decode` is one-shot."""

    def __init__(
        self, model_path: str | Path, threads: int = 1, chunk_frames: int = DEFAULT_CHUNK_FRAMES
    ) -> None:
        self.session = cpu_session(model_path, threads, "codec decoder")
        self.chunk_frames = int(chunk_frames)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.num_quantizers = int(meta.get("qwen3tts.num_quantizers", spec.NUM_CODE_GROUPS))
        self.codebook_size = int(meta.get("qwen3tts.codebook_size", spec.CODEBOOK_SIZE))
        self.samples_per_frame = int(meta.get("qwen3tts.samples_per_frame", spec.SAMPLES_PER_FRAME))
        self.sample_rate = spec.SAMPLE_RATE
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if CODES_INPUT not in inputs or AUDIO_OUTPUT not in outputs:
            raise Qwen3TTSError(
                f"{model_path} is not a qwen3tts codec decoder graph", "convert the model again"
            )
        self._state_specs = {
            name[len(PAST_PREFIX) :]: (list(info.shape), _ORT_TYPES[info.type])
            for name, info in inputs.items()
            if name.startswith(PAST_PREFIX)
        }
        missing = [n for n in self._state_specs if PRESENT_PREFIX + n not in outputs]
        if missing:
            raise Qwen3TTSError(f"{model_path} lacks outputs for state {missing}", "convert the model again")
        self._output_names = [AUDIO_OUTPUT] + [PRESENT_PREFIX + n for n in self._state_specs]
        self._state: dict[str, np.ndarray] = {}
        self.frames_decoded = 0
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next push starts a new utterance (all-zero state == causal zero padding)."""
        self._state = {
            PAST_PREFIX + name: np.zeros(shape, dtype) for name, (shape, dtype) in self._state_specs.items()
        }
        self.frames_decoded = 0

    def push(self, codes: np.ndarray) -> np.ndarray:
        """Decode the next N frames (codes [N, 16]); returns float32 audio [N * 1920] in [-1, 1]."""
        frames = self._validated(codes)
        if frames.shape[0] == 0:
            return np.zeros(0, np.float32)
        feed = dict(self._state)
        feed[CODES_INPUT] = frames[None]
        audio, *present = self.session.run(self._output_names, feed)
        self._state = {
            PAST_PREFIX + name[len(PRESENT_PREFIX) :]: value
            for name, value in zip(self._output_names[1:], present, strict=True)
        }
        self.frames_decoded += frames.shape[0]
        return audio.reshape(-1)

    def decode(self, codes: np.ndarray, chunk_frames: int | None = None) -> np.ndarray:
        """Decode a whole sequence [F, 16] from a fresh state, `chunk_frames` frames per call."""
        frames = self._validated(codes)
        step = int(chunk_frames or self.chunk_frames)
        if step < 1:
            raise Qwen3TTSError(
                f"chunk size must be at least 1 frame, got {step}", "pass a positive chunk size"
            )
        self.reset()
        pieces = [self.push(frames[start : start + step]) for start in range(0, frames.shape[0], step)]
        self.reset()
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def _validated(self, codes: np.ndarray) -> np.ndarray:
        array = np.asarray(codes)
        if array.ndim != 2 or array.shape[1] != self.num_quantizers:
            raise Qwen3TTSError(
                f"codec codes must have shape [frames, {self.num_quantizers}], got {list(array.shape)}",
                "pass one row of 16 codebook ids per frame",
            )
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise Qwen3TTSError(
                f"codec codes must be integers, got {array.dtype}", "pass integer codebook ids"
            )
        if array.size and (array.min() < 0 or array.max() >= self.codebook_size):
            raise Qwen3TTSError(
                f"codec codes must lie in [0, {self.codebook_size}), got values {array.min()}..{array.max()}",
                "the codes are corrupt or come from another codec",
            )
        return np.ascontiguousarray(array, dtype=np.int64)
