"""Log-mel front end of the speaker encoder, in numpy, matching the official `mel_spectrogram`.

Official call (qwen-tts 0.1.1, `extract_speaker_embedding`): n_fft 1024, 128 mels, 24 kHz, hop 256,
window 1024, fmin 0, fmax 12000. Steps: reflect-pad (n_fft - hop) / 2 samples on each side, STFT without
centering and with a periodic Hann window, magnitude sqrt(re^2 + im^2 + 1e-9), librosa's default (Slaney)
mel filterbank, log(clamp(x, 1e-5)). No mean/variance normalisation.

We compute in float64 and return float32; the filterbank is rounded to float32 first because librosa builds it
in float32 and the official code multiplies with that rounded matrix.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from qwen3tts_cli import spec
from qwen3tts_cli.errors import Qwen3TTSError

N_FFT = 1024
HOP = 256
WIN = 1024
N_MELS = 128
FMIN = 0.0
FMAX = 12_000.0
_MAGNITUDE_FLOOR = 1e-9  # added under the square root, as the official code does
_LOG_FLOOR = 1e-5  # clamp before log (official dynamic_range_compression)
PAD = (N_FFT - HOP) // 2  # 384 samples of reflect padding on each side

# Slaney mel scale: linear below 1 kHz, logarithmic above
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_LOG_START_HZ = 1000.0
_SLANEY_LOG_START_MEL = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _SLANEY_HZ_PER_MEL
    above = hz >= _SLANEY_LOG_START_HZ
    logarithmic = (
        _SLANEY_LOG_START_MEL + np.log(np.maximum(hz, 1e-300) / _SLANEY_LOG_START_HZ) / _SLANEY_LOG_STEP
    )
    return np.where(above, logarithmic, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _SLANEY_HZ_PER_MEL
    above = mel >= _SLANEY_LOG_START_MEL
    logarithmic = _SLANEY_LOG_START_HZ * np.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_LOG_START_MEL))
    return np.where(above, logarithmic, linear)


@lru_cache(maxsize=4)
def mel_filterbank(
    sample_rate: int = spec.SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = FMIN,
    fmax: float = FMAX,
) -> np.ndarray:
    """Triangular Slaney-normalised mel filters [n_mels, n_fft // 2 + 1], as librosa.filters.mel defaults."""
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - fft_freqs[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    # Slaney area normalisation: every filter has unit area in Hz
    filters *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    filters = filters.astype(np.float32).astype(np.float64)
    filters.setflags(write=False)
    return filters


@lru_cache(maxsize=2)
def periodic_hann(size: int = WIN) -> np.ndarray:
    """torch.hann_window default (periodic=True): the symmetric window of size+1 without its last sample."""
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(size) / size)
    window.setflags(write=False)
    return window


def num_mel_frames(num_samples: int) -> int:
    """Frames of the official front end for `num_samples` samples (0 if too short)."""
    padded = num_samples + 2 * PAD
    return 0 if padded < N_FFT else (padded - N_FFT) // HOP + 1


def min_samples_for_frames(frames: int) -> int:
    """Fewest samples that give `frames` mel frames and allow the reflect padding."""
    return max(PAD + 1, (frames - 1) * HOP + N_FFT - 2 * PAD)


def log_mel(wav24k: np.ndarray) -> np.ndarray:
    """Log-mel [frames, 128] float32 of mono 24 kHz audio (time-major, as the speaker encoder takes it)."""
    wav = np.asarray(wav24k, dtype=np.float64)
    if wav.ndim != 1:
        raise Qwen3TTSError(f"expected mono audio (1-D), got shape {wav.shape}", "mix the audio down to mono")
    if wav.size <= PAD:
        raise Qwen3TTSError(
            f"audio of {wav.size} samples is too short for the mel front end",
            f"use at least {min_samples_for_frames(1)} samples at 24 kHz",
        )
    padded = np.pad(wav, (PAD, PAD), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    spectrum = np.fft.rfft(frames * periodic_hann(WIN), n=N_FFT, axis=-1)
    magnitude = np.sqrt(spectrum.real**2 + spectrum.imag**2 + _MAGNITUDE_FLOOR)
    mel = magnitude @ mel_filterbank().T
    return np.log(np.maximum(mel, _LOG_FLOOR)).astype(np.float32)
