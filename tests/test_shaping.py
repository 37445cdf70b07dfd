"""qwen3tts_cli.shaping on synthetic audio: tempo (duration, pitch), silence trim and pause limits with known
gaps, peak/loudness normalization, and a property test over every in-range Shaping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen3tts_cli import shaping as sh
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.shaping import Shaping, loudness_gain, normalization_gain, shape

SR = 24000


def tone(freq: float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def burst(seconds: float, kind: str, seed: int = 0, fade: float = 0.03) -> np.ndarray:
    """A tone or noise burst with soft (raised-cosine) edges, like a word fading in and out."""
    n = round(seconds * SR)
    if kind == "tone":
        x = tone(330.0, seconds, 0.4)
    else:
        x = (np.random.default_rng(seed).standard_normal(n) * 0.15).astype(np.float32)
    edge = round(fade * SR)
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, edge))).astype(np.float32)
    x[:edge] *= ramp
    x[-edge:] *= ramp[::-1]
    return x


def silence(seconds: float, noise_db: float | None = -75.0, seed: int = 1) -> np.ndarray:
    """Near silence: a faint noise floor (as real recordings have), or exact zeros."""
    n = round(seconds * SR)
    if noise_db is None:
        return np.zeros(n, np.float32)
    return (np.random.default_rng(seed).standard_normal(n) * 10 ** (noise_db / 20)).astype(np.float32)


def dominant_frequency(x: np.ndarray) -> float:
    """FFT peak (Hann window, parabolic interpolation) over the whole signal."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spectrum[1:])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-30)
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return (k + offset) * SR / len(x)


def energy(x: np.ndarray) -> float:
    return float(np.sum(np.asarray(x, np.float64) ** 2))


# ---- speed -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("speed", [0.5, 0.75, 1.5, 2.0])
def test_speed_changes_the_duration_by_the_factor(speed: float) -> None:
    x = np.concatenate([burst(0.6, "noise"), silence(0.3), burst(0.8, "tone"), silence(0.3)])
    y = shape(x, SR, Shaping(speed=speed))
    assert y.dtype == np.float32
    assert abs(len(y) / len(x) - 1 / speed) <= 0.02 / speed
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
    assert energy(y) > 0.2 * energy(x) / speed  # audio, not silence padding


@pytest.mark.parametrize("speed", [0.5, 0.75, 1.5, 2.0])
@pytest.mark.parametrize("freq", [220.0, 1000.0])
def test_speed_keeps_the_pitch(speed: float, freq: float) -> None:
    x = tone(freq, 4.0)
    y = shape(x, SR, Shaping(speed=speed))
    # a long window in the steady middle (Rubber Band's start-up and tail excluded)
    middle = y[len(y) // 8 : len(y) - len(y) // 8]
    assert abs(dominant_frequency(middle) / freq - 1) < 0.01
    assert abs(dominant_frequency(x) / freq - 1) < 0.001  # the estimator itself is exact on the input


def test_identity_is_a_no_op_and_needs_no_library() -> None:
    x = np.random.default_rng(3).standard_normal(5000).astype(np.float32) * 0.1
    assert Shaping().is_identity
    assert not Shaping(speed=1.5).is_identity and not Shaping(normalize="peak").is_identity
    assert np.array_equal(shape(x, SR, Shaping()), x)


# ---- silence -----------------------------------------------------------------------------------------------
BURSTS = [(0.35, "tone"), (0.5, "noise"), (0.25, "tone"), (0.4, "noise")]


def gapped(lead: float, gaps: list[float], tail: float, noise_db: float | None = -75.0) -> tuple:
    """Bursts separated by known silences; returns (audio, [(start, end) of each burst])."""
    parts, spans, position = [silence(lead, noise_db, seed=10)], [], round(lead * SR)
    for i, (seconds, kind) in enumerate(BURSTS):
        b = burst(seconds, kind, seed=i)
        spans.append((position, position + len(b)))
        parts.append(b)
        position += len(b)
        pause = gaps[i] if i < len(gaps) else tail
        parts.append(silence(pause, noise_db, seed=20 + i))
        position += round(pause * SR)
    return np.concatenate(parts), spans


def assert_bursts_intact(original: np.ndarray, spans: list[tuple[int, int]], shaped: np.ndarray) -> None:
    """Each burst appears in the output in order, sample for sample (so its energy is all there)."""
    position = 0
    for start, end in spans:
        b = original[start:end]
        # find the burst by its loudest sample, then compare the whole span
        anchor = int(np.argmax(np.abs(b)))
        candidates = np.flatnonzero(shaped[position:] == b[anchor]) + position - anchor
        match = [c for c in candidates if c >= 0 and np.array_equal(shaped[c : c + len(b)], b)]
        assert match, f"burst at {start / SR:.2f} s was altered"
        assert math.isclose(energy(shaped[match[0] : match[0] + len(b)]), energy(b), rel_tol=1e-9)
        position = match[0] + len(b)


@pytest.mark.parametrize("noise_db", [None, -75.0, -55.0])
def test_trim_silence_removes_the_edges_and_keeps_every_burst(noise_db: float | None) -> None:
    x, spans = gapped(lead=0.8, gaps=[0.3, 0.6, 0.2], tail=1.1, noise_db=noise_db)
    y = shape(x, SR, Shaping(trim_silence=True))
    assert_bursts_intact(x, spans, y)
    removed = (len(x) - len(y)) / SR
    expected = 0.8 + 1.1 - 2 * sh.HANGOVER  # the hangover stays next to the first and last burst
    assert abs(removed - expected) <= 0.03  # the bursts' faded edges fall within a frame or two
    assert len(y) < len(x)


@pytest.mark.parametrize("max_pause", [0.1, 0.25, 0.5])
def test_max_pause_shortens_only_the_long_pauses_to_the_limit(max_pause: float) -> None:
    gaps = [0.3, 1.2, 0.12]
    x, spans = gapped(lead=0.4, gaps=gaps, tail=0.6)
    y = shape(x, SR, Shaping(max_pause=max_pause))
    assert_bursts_intact(x, spans, y)
    removed = (len(x) - len(y)) / SR
    expected = sum(max(0.0, g - max_pause) for g in gaps)  # edges untouched without trim_silence
    assert abs(removed - expected) <= 0.03 * len(gaps)
    assert y[: round(0.4 * SR)].tolist() == x[: round(0.4 * SR)].tolist()  # the leading silence is kept


def test_shortened_pause_keeps_max_pause_seconds() -> None:
    a, b = burst(0.3, "tone"), burst(0.3, "noise")
    x = np.concatenate([a, silence(2.0), b])
    y = shape(x, SR, Shaping(max_pause=0.4))
    _, hop = sh.sound_mask(y, SR)
    runs = sh.silent_runs(y, SR)
    interior = [(s, e) for s, e in runs if s > 0 and e < len(y)]
    assert len(interior) == 1
    kept = (interior[0][1] - interior[0][0]) / SR
    assert 0.4 - 0.01 <= kept <= 0.4 + 0.07  # plus the bursts' faded edges below the threshold
    assert abs(len(y) - (len(x) - round(1.6 * SR))) <= 2 * hop


def test_trim_and_pauses_together_with_speed_and_normalize() -> None:
    x, spans = gapped(lead=0.5, gaps=[1.0, 0.3, 0.8], tail=0.7)
    bursts = sum(e - s for s, e in spans) / SR
    y = shape(x, SR, Shaping(speed=1.25, trim_silence=True, max_pause=0.3, normalize="peak"))
    silence_left = 2 * sh.HANGOVER + 0.3 + 0.3 + 0.3
    assert abs(len(y) / SR - (bursts + silence_left) / 1.25) <= 0.05
    assert math.isclose(float(np.max(np.abs(y))), 10 ** (-1 / 20), rel_tol=1e-5)


def test_quiet_sounds_and_noisy_pauses_are_never_cut() -> None:
    loud = burst(0.4, "tone")
    # a soft consonant 38 dB under the vowel, 30 ms after it, then a whispered word 42 dB under it
    consonant = burst(0.08, "noise", seed=4, fade=0.01) * 10 ** (-38 / 20) / 0.15 * 0.28
    whisper = burst(0.3, "noise", seed=5) * 10 ** (-42 / 20) / 0.15 * 0.28
    x = np.concatenate([silence(0.5), loud, silence(0.03), consonant, silence(0.6), whisper, silence(0.5)])
    y = shape(x, SR, Shaping(trim_silence=True, max_pause=0.2))
    spans, position = [], 0.5
    for part, gap in ((loud, 0.03), (consonant, 0.6), (whisper, 0.5)):
        start = round(position * SR)
        spans.append((start, start + len(part)))
        position += len(part) / SR + gap
    assert_bursts_intact(x, spans, y)
    # the whisper is 3 dB over the threshold, so most of its 30 ms fades count as pause (kept whole above)
    assert abs((len(x) - len(y)) / SR - (0.5 - sh.HANGOVER + 0.4 + 0.5 - sh.HANGOVER)) <= 0.07
    # pauses filled with noise only 30 dB under the speech: nothing can be told apart, nothing is removed
    noisy = np.concatenate([burst(0.4, "tone"), silence(0.8, noise_db=-41.0), burst(0.4, "noise")])
    assert len(shape(noisy, SR, Shaping(trim_silence=True, max_pause=0.2))) == len(noisy)


def test_silent_audio_is_left_alone() -> None:
    zeros = np.zeros(SR, np.float32)
    for shaping in (Shaping(trim_silence=True), Shaping(max_pause=0.1), Shaping(normalize="loudness")):
        assert np.array_equal(shape(zeros, SR, shaping), zeros)


# ---- normalization -----------------------------------------------------------------------------------------
def test_peak_normalization_hits_minus_one_dbfs() -> None:
    for amplitude in (0.05, 0.9, 1.0):
        x = np.concatenate([burst(0.5, "noise") * amplitude, tone(440, 0.5, amplitude)])
        y = shape(x, SR, Shaping(normalize="peak"))
        assert math.isclose(20 * math.log10(float(np.max(np.abs(y)))), -1.0, abs_tol=1e-4)


@pytest.mark.parametrize("level", [0.01, 0.05, 0.2])
def test_loudness_normalization_hits_the_target(level: float) -> None:
    import pyloudnorm

    rng = np.random.default_rng(5)
    # speech-like: noise bursts with pauses, crest factor low enough that the -1 dBFS cap does not bind
    x = np.concatenate([np.tanh(rng.standard_normal(SR) * level * 3) / 3 * (i % 2) for i in range(6)])
    x = x.astype(np.float32)
    y = shape(x, SR, Shaping(normalize="loudness"))
    measured = pyloudnorm.Meter(SR).integrated_loudness(y.astype(np.float64))
    assert abs(measured - sh.LOUDNESS_TARGET_LUFS) <= 0.5
    assert float(np.max(np.abs(y))) <= 10 ** (-1 / 20) + 1e-6


def test_loudness_gain_is_capped_at_the_peak_ceiling() -> None:
    # a sparse click train: very low loudness but a high peak, so the full gain would clip
    x = np.zeros(2 * SR, np.float32)
    x[:: SR // 4] = 0.5
    gain = normalization_gain(x, SR, Shaping(normalize="loudness"))
    assert math.isclose(gain * 0.5, 10 ** (-1 / 20), rel_tol=1e-6)
    assert loudness_gain(x, SR, sh.LOUDNESS_TARGET_LUFS) > gain


def test_loudness_gain_of_short_and_silent_audio_is_finite() -> None:
    short = tone(1000, 0.1, 0.1)
    gain = loudness_gain(short, SR, -16.0)
    assert math.isfinite(gain) and gain > 1.0
    # the RMS estimate of a 1 kHz sine matches BS.1770 on a long one within a fraction of a dB
    long_gain = loudness_gain(tone(1000, 2.0, 0.1), SR, -16.0)
    assert abs(20 * math.log10(gain / long_gain)) < 0.3
    for quiet in (np.zeros(2400, np.float32), np.zeros(SR, np.float32), np.zeros(0, np.float32)):
        assert loudness_gain(quiet, SR, -16.0) == 1.0
    assert normalization_gain(np.zeros(10, np.float32), SR, Shaping(normalize="peak")) == 1.0
    assert normalization_gain(short, SR, Shaping()) == 1.0


# ---- checks ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shaping", "fragment"),
    [
        (Shaping(speed=0.4), "speed must be between 0.5 and 2.0"),
        (Shaping(speed=2.5), "speed must be between 0.5 and 2.0"),
        (Shaping(speed=float("nan")), "speed"),
        (Shaping(max_pause=0.05), "max pause must be between 0.1 and 10.0"),
        (Shaping(max_pause=11), "max pause"),
        (Shaping(normalize="rms"), "unknown normalization 'rms'"),
    ],
)
def test_out_of_range_values_raise_a_clear_error(shaping: Shaping, fragment: str) -> None:
    with pytest.raises(Qwen3TTSError) as caught:
        shaping.check()
    assert fragment in caught.value.message and caught.value.hint
    with pytest.raises(Qwen3TTSError):
        shape(np.zeros(100, np.float32), SR, shaping)


def test_a_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    for name in ("pedalboard", "pyloudnorm"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    for shaping in (Shaping(speed=1.5), Shaping(normalize="loudness")):
        with pytest.raises(Qwen3TTSError) as caught:
            shape(tone(440, 0.5), SR, shaping)
        assert 'pip install "qwen3tts-cli[shaping]"' in str(caught.value)
        with pytest.raises(Qwen3TTSError):
            sh.require_libraries(shaping)
    assert shape(tone(440, 0.5), SR, Shaping(trim_silence=True, normalize="peak")).dtype == np.float32


# ---- property ----------------------------------------------------------------------------------------------
shapings = st.builds(
    Shaping,
    speed=st.floats(0.5, 2.0),
    trim_silence=st.booleans(),
    max_pause=st.none() | st.floats(0.1, 10.0),
    normalize=st.sampled_from([None, "peak", "loudness"]),
)


@st.composite
def random_audio(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(0, 3 * SR))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    style = draw(st.sampled_from(["noise", "bursts", "zeros", "tiny", "loud"]))
    if style == "zeros":
        return np.zeros(n, np.float32)
    x = rng.standard_normal(n)
    if style == "bursts":
        x *= rng.random(n) < 0.3
    scale = {"noise": 0.2, "bursts": 0.3, "tiny": 1e-6, "loud": 3.0}[style]
    return np.clip(x * scale, -1, 1).astype(np.float32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(audio=random_audio(), shaping=shapings)
def test_any_in_range_shaping_gives_finite_float32(audio: np.ndarray, shaping: Shaping) -> None:
    y = shape(audio, SR, shaping)
    assert y.dtype == np.float32 and y.ndim == 1
    assert np.all(np.isfinite(y))
    if shaping.normalize is not None:
        assert float(np.max(np.abs(y), initial=0.0)) <= 10 ** (-1 / 20) + 1e-5
    if not shaping.trim_silence and shaping.max_pause is None:
        assert len(y) == round(len(audio) / shaping.speed)
    else:
        assert len(y) <= round(len(audio) / shaping.speed)
