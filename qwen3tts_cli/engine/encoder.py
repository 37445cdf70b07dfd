"""Reference-audio encoders for voice cloning: codec codes and the speaker embedding, via onnxruntime.

`CodecEncoder` runs `codec_encoder.onnx` (24 kHz waveform -> codes [ceil(samples / 1920), 16]);
`SpeakerEncoder` computes the log-mel front end in numpy and runs `speaker_encoder.onnx` (-> [enc_dim]).
Both take mono float audio already resampled to 24 kHz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from qwen3tts_cli import spec
from qwen3tts_cli.engine.mel import log_mel, min_samples_for_frames
from qwen3tts_cli.engine.onnx_session import CPU_PROVIDER, session
from qwen3tts_cli.errors import Qwen3TTSError

_META = "qwen3tts."


def _metadata(session: ort.InferenceSession, key: str, default: int) -> int:
    return int(session.get_modelmeta().custom_metadata_map.get(_META + key, default))


def _mono_audio(wav24k: np.ndarray, min_samples: int) -> np.ndarray:
    """The waveform as contiguous float32 [samples], or a Qwen3TTSError saying what is wrong with it."""
    wav = np.asarray(wav24k)
    if wav.ndim != 1:
        raise Qwen3TTSError(
            f"expected mono audio (1-D samples), got shape {wav.shape}", "mix it down to mono"
        )
    if not np.issubdtype(wav.dtype, np.floating):
        raise Qwen3TTSError(f"expected float audio samples, got {wav.dtype}", "scale integer PCM to [-1, 1]")
    if wav.size == 0:
        raise Qwen3TTSError("the reference audio is empty", "pass a recording of a few seconds of speech")
    if wav.size < min_samples:
        raise Qwen3TTSError(
            f"the reference audio is too short ({wav.size} samples, {wav.size / spec.SAMPLE_RATE:.3f} s)",
            f"use at least {min_samples} samples at 24 kHz; a few seconds of speech work best",
        )
    if not np.isfinite(wav).all():
        raise Qwen3TTSError("the reference audio contains NaN or infinite samples", "check the audio file")
    return np.ascontiguousarray(wav, dtype=np.float32)


class CodecEncoder:
    """Waveform -> codec codes, as the official `Qwen3TTSTokenizer.encode` (first 16 code groups)."""

    def __init__(self, model_path: str | Path, threads: int = 1, provider: str = CPU_PROVIDER) -> None:
        self.session = session(model_path, threads, "codec encoder", provider=provider)
        self.sample_rate = _metadata(self.session, "sample_rate", spec.SAMPLE_RATE)
        self.samples_per_frame = _metadata(self.session, "samples_per_frame", spec.SAMPLES_PER_FRAME)
        self.num_quantizers = _metadata(self.session, "num_quantizers", spec.NUM_CODE_GROUPS)
        self.min_samples = 1

    def num_frames(self, num_samples: int) -> int:
        return -(-int(num_samples) // self.samples_per_frame)

    def encode(self, wav24k: np.ndarray) -> np.ndarray:
        """Codes [ceil(samples / 1920), 16] int64 of mono 24 kHz float audio."""
        wav = _mono_audio(wav24k, self.min_samples)
        (codes,) = self.session.run(["codes"], {"waveform": wav[None, :]})
        return codes.astype(np.int64, copy=False)


class SpeakerEncoder:
    """Waveform -> speaker embedding (x-vector) placed in the talker's speaker slot when cloning."""

    def __init__(self, model_path: str | Path, threads: int = 1, provider: str = CPU_PROVIDER) -> None:
        self.session = session(model_path, threads, "speaker encoder", provider=provider)
        self.min_frames = _metadata(self.session, "min_frames", 5)
        self.embedding_dim = _metadata(self.session, "embedding_dim", 0)
        self.min_samples = min_samples_for_frames(self.min_frames)

    def embed_mel(self, mel: np.ndarray) -> np.ndarray:
        """Embedding [enc_dim] float32 of a time-major log-mel [frames, 128]."""
        mel = np.asarray(mel, dtype=np.float32)
        if mel.ndim != 2 or mel.shape[0] < self.min_frames:
            raise Qwen3TTSError(
                f"the speaker encoder needs a [frames >= {self.min_frames}, 128] log-mel, got {mel.shape}",
                "pass longer audio",
            )
        (embedding,) = self.session.run(["embedding"], {"mel": np.ascontiguousarray(mel[None])})
        return embedding

    def embed(self, wav24k: np.ndarray) -> np.ndarray:
        """Embedding [enc_dim] float32 of mono 24 kHz float audio."""
        return self.embed_mel(log_mel(_mono_audio(wav24k, self.min_samples)))
