"""Long text with batched pieces: the same audio and codes as one piece after another."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3tts_cli.convert.converter import convert_checkpoint
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.fixtures.checkpoint import build_checkpoint
from qwen3tts_cli.model import LoadedModel
from qwen3tts_cli.tts import TTS, SamplingOptions

TEXT = (
    "The first sentence is here and it is long enough. A second one follows it, a little longer than that. "
    "Then a third sentence arrives with several more words in it. And a fourth closes the paragraph today."
)


@pytest.fixture(scope="module")
def batched_tts(tmp_path_factory: pytest.TempPathFactory) -> TTS:
    root = tmp_path_factory.mktemp("batch")
    checkpoint = build_checkpoint(root / "ckpt", "custom_voice", "tiny", seed=0)
    folder = convert_checkpoint(checkpoint, root / "model", "f32")
    tts = TTS(LoadedModel(folder, threads=1, exact=True, max_batch=3))
    yield tts
    tts.close()


def _speak(tts: TTS, batch: int, **options: object) -> tuple[np.ndarray, list[np.ndarray]]:
    result = tts.synthesize(TEXT, speaker="vivian", language="english", max_frames=5, batch=batch, **options)
    assert len(result.pieces) >= 3, result.pieces  # the text really is split
    return result.samples, result.codes


def test_batched_pieces_equal_solo_pieces_greedy(batched_tts: TTS) -> None:
    solo_audio, solo_codes = _speak(batched_tts, 1, sampling=SamplingOptions(greedy=True))
    batch_audio, batch_codes = _speak(batched_tts, 3, sampling=SamplingOptions(greedy=True))
    assert len(batch_codes) == len(solo_codes)
    for solo, batched in zip(solo_codes, batch_codes, strict=True):
        assert solo.shape == (5, 16)
        assert np.array_equal(solo, batched)
    assert len(batch_audio) == len(solo_audio)
    assert np.abs(batch_audio - solo_audio).max() <= 1e-5


def test_batched_sampling_is_seeded_like_solo(batched_tts: TTS) -> None:
    _, solo = _speak(batched_tts, 1, seed=11)
    _, batched = _speak(batched_tts, 2, seed=11)
    assert all(np.array_equal(a, b) for a, b in zip(solo, batched, strict=True))


def test_batched_stream_equals_batched_synthesis(batched_tts: TTS) -> None:
    whole, _ = _speak(batched_tts, 3, seed=5)
    streamed = np.concatenate(
        [
            chunk.samples
            for chunk in batched_tts.stream(
                TEXT, speaker="vivian", language="english", max_frames=5, batch=3, seed=5
            )
        ]
    )
    assert np.array_equal(whole, streamed)


def test_batch_larger_than_the_model_slots_is_capped(batched_tts: TTS) -> None:
    solo_audio, _ = _speak(batched_tts, 1, seed=2)
    capped_audio, _ = _speak(batched_tts, 8, seed=2)
    assert np.array_equal(solo_audio, capped_audio) or np.abs(solo_audio - capped_audio).max() <= 1e-5


def test_many_pieces_stream_through_few_slots(batched_tts: TTS) -> None:
    # 40 sentences through 3 slots: pieces enter the batch as earlier ones finish
    text = " ".join(f"Sentence number {i} has a few words to say here." for i in range(40))
    result = batched_tts.synthesize(
        text, speaker="vivian", max_frames=2, batch=3, sampling=SamplingOptions(greedy=True)
    )
    assert len(result.pieces) >= 10
    assert all(codes.shape == (2, 16) for codes in result.codes)


def test_batch_below_one_is_refused(batched_tts: TTS) -> None:
    with pytest.raises(Qwen3TTSError, match="batch must be an integer >= 1"):
        batched_tts.synthesize("Hello there.", speaker="vivian", max_frames=2, batch=0)


def test_bad_options_are_refused_when_the_call_is_made(batched_tts: TTS) -> None:
    with pytest.raises(Qwen3TTSError, match="seed must be a non-negative integer"):
        batched_tts.synthesize("Hello there.", speaker="vivian", max_frames=2, seed=-1)
    with pytest.raises(Qwen3TTSError, match="unknown speaker"):
        batched_tts.stream("Hello there.", speaker="nobody")  # before the first chunk is asked for
    # None means the default, as a caller forwarding optional values would pass it
    result = batched_tts.synthesize("Hello there.", speaker="vivian", max_frames=2, sampling=None, seed=None)
    assert result.codes[0].shape == (2, 16)


def test_a_closed_model_refuses_work_instead_of_crashing(batched_tts: TTS) -> None:
    tts = TTS(LoadedModel(batched_tts.model.folder, threads=1))
    tts.close()
    with pytest.raises(Qwen3TTSError, match="is closed"):
        tts.synthesize("Hello there.", speaker="vivian", max_frames=2)


def test_cli_batch_size_counts_the_spoken_pieces_not_the_tags() -> None:
    from qwen3tts_cli.cli.voice import batch_size

    long_tag = "[" + " ".join(["A long description sentence of a voice that goes on and on here."] * 4) + "]"
    assert batch_size(None, long_tag + " Hello there, my friend.", split=True, play=False) == 1
    text = " ".join(f"Sentence number {i} has a few more words to say here." for i in range(12))
    assert batch_size(None, text, split=True, play=False) == 8
    assert batch_size(None, text, split=True, play=True) == 1
    assert batch_size(3, text, split=False, play=False) == 1
