"""Streaming codec decoder: codes [N, 16] -> 24 kHz audio [N * 1920], one call per chunk of frames.

Runs `codec_decoder.onnx` (built by `qwen3tts_cli.convert.codec_decoder`) with onnxruntime (CPU unless a
provider is given: engine/devices.py).
The graph carries the causal decoder's past as `past.*` inputs / `present.*` outputs; this class keeps
them between calls, so pushing a sequence in chunks of any size gives the same audio as decoding it at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qwen3tts_cli import spec
from qwen3tts_cli.convert.codec_decoder import AUDIO_OUTPUT, CODES_INPUT, PAST_PREFIX, PRESENT_PREFIX
from qwen3tts_cli.engine.onnx_session import CPU_PROVIDER, session
from qwen3tts_cli.errors import Qwen3TTSError

DEFAULT_CHUNK_FRAMES = 25  # 2 s of audio per call: few calls, little waiting for the first sound
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
DecoderState = dict[str, np.ndarray]  # past.* inputs; never modified in place, so states can be shared


class StreamingDecoder:
    """Stateful decoder. `push` advances the stream; `reset` starts a new one; `decode` is one-shot.

    `stream()` gives independent streams over the same session (one per text piece), so several pieces
    can be decoded alternately, e.g. from a background thread while later pieces are still generated.
    """

    def __init__(
        self,
        model_path: str | Path,
        threads: int = 1,
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        provider: str = CPU_PROVIDER,
    ) -> None:
        self.session = session(model_path, threads, "codec decoder", provider=provider, prepack_weights=False)
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
        self._state: DecoderState = {}
        self.frames_decoded = 0
        self.reset()

    def initial_state(self) -> DecoderState:
        """The state of a new utterance (all zeros == the causal convolutions' zero padding)."""
        return {
            PAST_PREFIX + name: np.zeros(shape, dtype) for name, (shape, dtype) in self._state_specs.items()
        }

    def stream(self, state: DecoderState | None = None) -> DecoderStream:
        """An independent stream starting from `state` (default: a new utterance)."""
        return DecoderStream(self, self.initial_state() if state is None else state)

    def reset(self) -> None:
        """Forget the past: the next push starts a new utterance."""
        self._state = self.initial_state()
        self.frames_decoded = 0

    def push(self, codes: np.ndarray) -> np.ndarray:
        """Decode the next N frames (codes [N, 16]); returns float32 audio [N * 1920] in [-1, 1]."""
        audio, self._state = self.run(codes, self._state)
        self.frames_decoded += len(audio) // self.samples_per_frame
        return audio

    def run(self, codes: np.ndarray, state: DecoderState) -> tuple[np.ndarray, DecoderState]:
        """Decode N frames continuing `state`: (audio [N * 1920], the state after them)."""
        frames = self._validated(codes)
        if frames.shape[0] == 0:
            return np.zeros(0, np.float32), state
        feed = dict(state)
        feed[CODES_INPUT] = frames[None]
        audio, *present = self.session.run(self._output_names, feed)
        after = {
            PAST_PREFIX + name[len(PRESENT_PREFIX) :]: value
            for name, value in zip(self._output_names[1:], present, strict=True)
        }
        return audio.reshape(-1), after

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


class DecoderStream:
    """One utterance's decoding position over a shared `StreamingDecoder` session.

    A forked stream takes its parent's state at its first push, not when forked: pushes queued on one
    worker thread in order (engine/pipeline.py) thus see the parent's state after the parent's queued
    pushes, e.g. every text piece starts from the reference audio the parent was primed with.
    """

    def __init__(
        self, decoder: StreamingDecoder, state: DecoderState | None, parent: DecoderStream | None = None
    ) -> None:
        if state is None and parent is None:
            raise ValueError("a stream needs a state or a parent")
        self.decoder = decoder
        self._state = state
        self._parent = parent

    @property
    def parent_id(self) -> int | None:
        """Identity of the stream whose state this one still has to take (None once taken)."""
        return None if self._parent is None else id(self._parent)

    @property
    def state(self) -> DecoderState:
        if self._state is None:
            assert self._parent is not None
            self._state, self._parent = self._parent.state, None
        return self._state

    def push(self, codes: np.ndarray) -> np.ndarray:
        """Decode the next frames of this stream; returns their audio."""
        audio, self._state = self.decoder.run(codes, self.state)
        return audio

    def fork(self) -> DecoderStream:
        """A stream that continues from this one's state as it is at the new stream's first push."""
        return DecoderStream(self.decoder, None, parent=self)
