"""Shaping through the library, `qwen3tts say` and the server, on tiny fixture models: Request.pause and the
per-piece filter of TTS.stream, `say --speed/--pause/--normalize/--trim-silence`, and OpenAI `speed`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from server_process import ServerProcess
from test_cli import FAST, assert_clean_error, cli_env, read_pcm16, run_cli
from test_cli import converted as converted  # noqa: F401  (the session fixture, shared)

from qwen3tts_cli import audio, spec
from qwen3tts_cli.convert.converter import convert_checkpoint
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.model import LoadedModel
from qwen3tts_cli.shaping import change_speed
from qwen3tts_cli.tts import TTS, SamplingOptions

TWO = "The first sentence is long enough to stand alone. A second sentence follows it right after."
SR = spec.SAMPLE_RATE
GAP = round(audio.DEFAULT_GAP_MS * SR / 1000)


# ---- library: Request.pause and TTS.stream(piece_filter=...) ------------------------------------------
@pytest.fixture(scope="module")
def tts(tmp_path_factory: pytest.TempPathFactory, checkpoint_factory) -> Iterator[TTS]:
    root = tmp_path_factory.mktemp("shaping-tts")
    folder = convert_checkpoint(checkpoint_factory("custom_voice", "tiny", 0), root / "model", "f32")
    loaded = TTS(LoadedModel(folder, threads=1, exact=True))
    yield loaded
    loaded.close()


def _speak(tts: TTS, **options: object):
    return tts.synthesize(
        TWO,
        speaker="vivian",
        language="english",
        max_frames=5,
        sampling=SamplingOptions(greedy=True),
        **options,
    )


def test_pause_sets_the_silence_between_pieces(tts: TTS) -> None:
    default = _speak(tts)
    assert len(default.pieces) == 2
    piece = 5 * spec.SAMPLES_PER_FRAME
    assert len(default.samples) == 2 * piece + GAP
    assert np.array_equal(_speak(tts, pause=None).samples, default.samples)
    assert np.array_equal(_speak(tts, pause=audio.DEFAULT_GAP_MS / 1000).samples, default.samples)
    longer = _speak(tts, pause=0.5).samples
    assert len(longer) == len(default.samples) + round(0.4 * SR)
    assert np.array_equal(longer[:piece], default.samples[:piece])  # the pieces themselves are the same
    assert np.array_equal(longer[-piece:], default.samples[-piece:])
    assert not np.any(longer[piece : piece + round(0.5 * SR)])  # the gap is silence
    none = _speak(tts, pause=0).samples
    assert len(none) == 2 * piece


@pytest.mark.parametrize("pause", [-0.1, 10.5, float("nan"), True])
def test_pause_out_of_range_is_a_clear_error(tts: TTS, pause: object) -> None:
    with pytest.raises(Qwen3TTSError, match="pause must be between 0 and 10 seconds"):
        tts.synthesize(TWO, speaker="vivian", max_frames=2, pause=pause)


def test_piece_filter_gets_each_whole_piece_and_its_output_is_streamed(tts: TTS) -> None:
    plain = _speak(tts).samples
    seen: list[np.ndarray] = []

    def record(samples: np.ndarray) -> np.ndarray:
        seen.append(samples.copy())
        return samples

    assert np.array_equal(_speak(tts, piece_filter=record).samples, plain)  # pass-through: bit-identical
    assert [len(p) for p in seen] == [5 * spec.SAMPLES_PER_FRAME] * 2

    fast = _speak(tts, piece_filter=lambda x: change_speed(x, SR, 2.0)).samples
    expected = audio.join_chunks([change_speed(p, SR, 2.0) for p in seen])
    assert np.array_equal(fast, expected)
    assert len(fast) == 2 * round(5 * spec.SAMPLES_PER_FRAME / 2) + GAP

    chunks = list(
        tts.stream(
            TWO,
            speaker="vivian",
            max_frames=5,
            sampling=SamplingOptions(greedy=True),
            piece_filter=lambda x: change_speed(x, SR, 2.0),
        )
    )
    assert chunks[0].piece == 0 and chunks[-1].piece == 1  # piece 0 leaves before piece 1 is done


# ---- CLI ------------------------------------------------------------------------------------------------
@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


def _say(
    model: Path, env: dict[str, str], out: Path, *extra: str, text: str = "Hello world.", frames: int = 12
):
    result = run_cli(
        ["say", text, "--model-dir", model, *FAST, "--max-frames", str(frames), "-o", out, "--json", *extra],
        env,
    )
    assert result.code == 0, result.stderr
    return result.json(), read_pcm16(out)


def test_say_speed_shortens_by_the_factor_and_reports_it(
    converted: Callable[..., Path], env: dict[str, str], tmp_path: Path
) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    plain_facts, plain = _say(model, env, tmp_path / "plain.wav")
    assert plain_facts["shaping"] is None and plain_facts["pause"] is None
    same_facts, same = _say(model, env, tmp_path / "same.wav", "--speed", "1.0")
    assert np.array_equal(same, plain) and same_facts["shaping"] is None  # identity: today's path
    facts, fast = _say(model, env, tmp_path / "fast.wav", "--speed", "1.5")
    assert len(plain) == 12 * spec.SAMPLES_PER_FRAME
    assert len(fast) == round(len(plain) / 1.5)
    assert facts["samples"] == len(fast) and facts["seconds"] == round(len(fast) / SR, 3)
    assert facts["shaping"] == {
        "speed": 1.5,
        "trim_silence": False,
        "max_pause": None,
        "normalize": None,
        "seconds_before": round(len(plain) / SR, 3),
    }
    assert facts["frames"] == plain_facts["frames"] and facts["seed"] == plain_facts["seed"]


def test_say_pause_changes_the_gap_by_the_expected_samples(
    converted: Callable[..., Path], env: dict[str, str], tmp_path: Path
) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    default_facts, default = _say(model, env, tmp_path / "a.wav", text=TWO, frames=3)
    facts, paused = _say(model, env, tmp_path / "b.wav", "--pause", "0.6", text=TWO, frames=3)
    assert default_facts["pieces"] == facts["pieces"] == 2 and facts["pause"] == 0.6
    assert len(paused) - len(default) == round(0.6 * SR) - GAP
    piece = 3 * spec.SAMPLES_PER_FRAME
    assert not np.any(paused[piece : piece + round(0.6 * SR)])
    assert np.array_equal(paused[-piece:], default[-piece:])


def test_say_normalize_and_trim(converted: Callable[..., Path], env: dict[str, str], tmp_path: Path) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    facts, peaked = _say(model, env, tmp_path / "p.wav", "--normalize", "peak", "--trim-silence")
    assert facts["shaping"]["normalize"] == "peak" and facts["shaping"]["trim_silence"] is True
    assert math.isclose(np.abs(peaked.astype(np.float64)).max() / 32767, 10 ** (-1 / 20), rel_tol=2e-3)
    assert facts["samples"] == len(peaked) <= 12 * spec.SAMPLES_PER_FRAME


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--speed", "3"], "--speed: speed must be between 0.5 and 2.0"),
        (["--speed", "0.2"], "between 0.5 and 2.0"),
        (["--max-pause", "0.01"], "--max-pause: max pause must be between 0.1 and 10.0"),
        (["--normalize", "rms"], "--normalize: unknown normalization 'rms'"),
        (["--pause", "11"], "--pause must be between 0 and 10 seconds"),
        (["--pause", "-1"], "--pause must be between 0 and 10 seconds"),
    ],
)
def test_say_shaping_out_of_range_is_a_usage_error(
    env: dict[str, str], tmp_path: Path, args: list[str], fragment: str
) -> None:
    # no model exists at this path: the option check must come first
    result = run_cli(
        ["say", "Hi.", "--model-dir", tmp_path / "missing", "-o", tmp_path / "x.wav", *args], env
    )
    assert result.code == 2
    assert_clean_error(result, fragment)
    assert not (tmp_path / "x.wav").exists()


def test_say_help_shows_the_shaping_panel(env: dict[str, str]) -> None:
    result = run_cli(["say", "--help"], {**env, "COLUMNS": "200"})
    assert result.code == 0
    for flag in ("--speed", "--trim-silence", "--max-pause", "--pause", "--normalize", "Shaping"):
        assert flag in result.out, flag
    assert "buffers" in result.out


# ---- server ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, checkpoint_factory) -> Iterator[ServerProcess]:
    model = convert_checkpoint(
        checkpoint_factory("custom_voice", "tiny", 0), tmp_path_factory.mktemp("srv-shaping") / "cv", "q8_0"
    )
    process = ServerProcess(model, "--threads", "1", "--max-batch", "2", "--quiet")
    yield process
    process.kill()


def _pcm(server: ServerProcess, **fields: object) -> httpx.Response:
    body = {"model": "tts-1", "input": TWO, "voice": "vivian", "seed": 3, "max_frames": 6}
    body.update(response_format="pcm", **fields)
    return httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=120)


def test_server_speed_two_is_half_as_long(server: ServerProcess) -> None:
    plain = _pcm(server)
    assert plain.status_code == 200, plain.text
    assert _pcm(server, speed=1.0).content == plain.content  # 1.0 is the unchanged path
    fast = _pcm(server, speed=2.0)
    assert fast.status_code == 200, fast.text
    piece = 6 * spec.SAMPLES_PER_FRAME
    assert len(plain.content) // 2 == 2 * piece + GAP
    assert len(fast.content) // 2 == 2 * round(piece / 2) + GAP  # each piece stretched, the gap kept
    slow = _pcm(server, speed=0.5)
    assert len(slow.content) // 2 == 2 * piece * 2 + GAP


@pytest.mark.parametrize("speed", [0.25, 2.5, 4.0])
def test_server_speed_out_of_range_is_a_400(server: ServerProcess, speed: float) -> None:
    response = _pcm(server, speed=speed)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "speed" and "0.5..2.0" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
