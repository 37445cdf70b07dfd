"""The shared-batch scheduler: many requests from many threads, each with exactly its solo output.

Requests join a running batch and leave it (EOS, limit, cancel, error) between frame steps; the waiting
queue is bounded; a cancelled request frees its slot within one step; a new request starts at the next
step even while a long text holds the batch; decoder chunks go earliest deadline first.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qwen3tts_cli.convert.converter import convert_checkpoint
from qwen3tts_cli.errors import Busy, Qwen3TTSError
from qwen3tts_cli.fixtures.checkpoint import build_checkpoint
from qwen3tts_cli.model import LoadedModel
from qwen3tts_cli.tts import TTS, SamplingOptions
from qwen3tts_cli.voices import VoiceLibrary

LONG_TEXT = " ".join(f"Sentence number {i} has a handful of words in it." for i in range(6))


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scheduler")
    custom = build_checkpoint(root / "ckpt-custom", "custom_voice", "tiny", seed=0)
    base = build_checkpoint(root / "ckpt-base", "base", "tiny", seed=0)
    return {
        "f32": convert_checkpoint(custom, root / "custom-f32", "f32"),
        "q8_0": convert_checkpoint(custom, root / "custom-q8", "q8_0"),
        "base": convert_checkpoint(base, root / "base-f32", "f32"),
    }


def _open(folder: Path, max_batch: int, **options: object) -> TTS:
    exact = "f32" in folder.name
    return TTS(LoadedModel(folder, threads=2, exact=exact, max_batch=max_batch), **options)  # type: ignore[arg-type]


REQUESTS: list[dict[str, object]] = [
    {"text": "Hello there, this is the first voice.", "speaker": "vivian", "seed": 1, "max_frames": 9},
    {"text": "A second request with another speaker.", "speaker": "ryan", "seed": 2, "max_frames": 6},
    {"text": LONG_TEXT, "speaker": "ryan", "seed": 3, "max_frames": 4, "batch": 3},
    {
        "text": "Greedy and short.",
        "speaker": "vivian",
        "max_frames": 7,
        "sampling": SamplingOptions(greedy=True),
    },
    {
        "text": "Hot sampling with a penalty.",
        "speaker": "ryan",
        "seed": 5,
        "max_frames": 8,
        "sampling": SamplingOptions(temperature=1.3, top_k=20, repetition_penalty=1.3),
    },
    {
        "text": "Yet another one, in English.",
        "speaker": "vivian",
        "language": "english",
        "seed": 6,
        "max_frames": 5,
    },
]


def _say(tts: TTS, request: dict[str, object]) -> tuple[np.ndarray, list[np.ndarray]]:
    options = dict(request)
    result = tts.synthesize(str(options.pop("text")), **options)
    return result.samples, result.codes


@pytest.mark.parametrize("precision", ["f32", "q8_0"])
def test_concurrent_requests_equal_their_solo_runs(precision: str, model_folders: dict[str, Path]) -> None:
    with _open(model_folders[precision], max_batch=1) as solo_tts:
        solo = [_say(solo_tts, request) for request in REQUESTS]
    results: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}
    errors: list[BaseException] = []
    with _open(model_folders[precision], max_batch=4) as tts:

        def run(index: int, delay: float) -> None:
            time.sleep(delay)  # staggered: later requests join a batch that is already running
            try:
                results[index] = _say(tts, REQUESTS[index])
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i, 0.05 * (i % 3))) for i in range(len(REQUESTS))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not errors, errors
        assert tts.stats().sequences_in_flight == 0
    for index, (samples, codes) in enumerate(solo):
        got_samples, got_codes = results[index]
        assert len(got_codes) == len(codes)
        for expected, got in zip(codes, got_codes, strict=True):
            assert np.array_equal(expected, got), f"request {index}: codes differ"
        assert np.array_equal(samples, got_samples), f"request {index}: audio differs"


def test_cancel_frees_the_slot_within_one_step(model_folders: dict[str, Path]) -> None:
    with _open(model_folders["q8_0"], max_batch=2) as tts:
        steps = _count_steps(tts)
        stream = tts.stream(
            "A request that would run for a long time.", speaker="ryan", seed=1, max_frames=400
        )
        next(stream)  # generating
        assert tts.stats().sequences_in_flight == 1
        cancelled_at = steps[0]
        stream.cancel()
        assert list(stream) == []  # iteration ends at once
        deadline = time.monotonic() + 10
        while tts.stats().sequences_in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tts.stats().sequences_in_flight == 0
        assert steps[0] - cancelled_at <= 1  # it left the batch before the next frame step
        assert tts.stats().requests_running == 0
        # the slot is free: another request runs to its end
        result = tts.synthesize("Next one.", speaker="vivian", seed=2, max_frames=3)
        assert result.codes[0].shape == (3, 16)


def _count_steps(tts: TTS) -> list[int]:
    """Count the scheduler's frame steps (wraps the batch's step method)."""
    counter = [0]
    batch = tts.scheduler.batch
    original = batch.step

    def counted() -> object:
        counter[0] += 1
        return original()

    batch.step = counted  # type: ignore[method-assign]
    return counter


def test_leaving_a_with_block_cancels(model_folders: dict[str, Path]) -> None:
    with _open(model_folders["q8_0"], max_batch=1) as tts:
        with tts.stream("Leave early.", speaker="ryan", seed=1, max_frames=400) as stream:
            next(stream)
        _wait_idle(tts)
        assert tts.synthesize("Then this.", speaker="ryan", seed=1, max_frames=2).codes[0].shape == (2, 16)


def _wait_idle(tts: TTS, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while (tts.stats().sequences_in_flight or tts.stats().requests_running) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tts.stats().sequences_in_flight == 0


def test_cancel_from_another_thread_wakes_a_waiting_reader(model_folders: dict[str, Path]) -> None:
    with _open(model_folders["q8_0"], max_batch=1) as tts:
        blocker = tts.stream("Holds the only slot.", speaker="ryan", seed=1, max_frames=400)
        next(blocker)
        waiting = tts.stream("Waits for the slot.", speaker="vivian", seed=2, max_frames=3)
        got: list[object] = []
        reader = threading.Thread(target=lambda: got.extend(waiting))
        reader.start()
        time.sleep(0.2)
        assert reader.is_alive()  # blocked: no slot yet
        waiting.cancel()
        reader.join(timeout=5)
        assert not reader.is_alive() and got == []
        blocker.cancel()
        _wait_idle(tts)


def test_a_full_waiting_queue_refuses_at_once(model_folders: dict[str, Path]) -> None:
    with _open(model_folders["q8_0"], max_batch=1, max_waiting=1) as tts:
        running = tts.stream("Runs.", speaker="ryan", seed=1, max_frames=400)
        next(running)
        queued = tts.stream("Waits.", speaker="ryan", seed=2, max_frames=2)
        started = time.monotonic()
        with pytest.raises(Busy, match="busy"):
            tts.stream("Refused.", speaker="ryan", seed=3, max_frames=2)
        assert time.monotonic() - started < 0.5
        assert tts.stats().requests_waiting == 1 and tts.stats().max_waiting == 1
        running.cancel()
        assert sum(len(c.samples) for c in queued) == 2 * 1920  # the waiting one ran once a slot freed


def test_a_failing_piece_fails_only_its_request(model_folders: dict[str, Path]) -> None:
    with _open(model_folders["q8_0"], max_batch=2) as tts:
        other = tts.stream("An innocent bystander.", speaker="ryan", seed=4, max_frames=6)
        original = tts._prompt

        def exploding(plan: object, piece: str) -> object:
            if "Explode" in piece:  # raised on the worker thread, when the last piece gets a slot
                raise Qwen3TTSError("this piece cannot be spoken", "test")
            return original(plan, piece)  # type: ignore[arg-type]

        tts._prompt = exploding  # type: ignore[method-assign]
        text = "Piece one of the doomed request is fine here. " + LONG_TEXT + " Explode in the last one."
        doomed = tts.stream(text, speaker="ryan", seed=1, max_frames=3)
        assert len(doomed.pieces) > 2
        with pytest.raises(Qwen3TTSError, match="cannot be spoken"):
            list(doomed)
        tts._prompt = original  # type: ignore[method-assign]
        assert sum(len(c.samples) for c in other) == 6 * 1920
        _wait_idle(tts)


def test_a_new_request_starts_at_the_next_step_beside_a_long_text(model_folders: dict[str, Path]) -> None:
    # 3 slots, one reserved for newcomers: the long text runs 2 pieces at once, the newcomer gets the third
    with _open(model_folders["q8_0"], max_batch=3, reserved_slots=1) as tts:
        steps = _count_steps(tts)
        long_text = " ".join(f"Piece {i} of a very long text goes on and on here." for i in range(8))
        long_stream = tts.stream(long_text, speaker="ryan", seed=1, max_frames=60, batch=3)
        next(long_stream)
        time.sleep(0.1)
        assert tts.stats().sequences_in_flight == 2  # the reserved slot stays free
        asked_at = steps[0]
        codes: list[np.ndarray] = []
        newcomer = tts.stream(
            "I just arrived.", speaker="vivian", seed=2, max_frames=3, on_codes=lambda i, c: codes.append(c)
        )
        next(newcomer)
        assert steps[0] - asked_at <= 3  # admitted at the next step, first frame from that step on
        long_stream.cancel()
        list(newcomer)
        assert sum(len(c) for c in codes) == 3


def test_fewest_pieces_in_flight_first(model_folders: dict[str, Path]) -> None:
    with _open(model_folders["q8_0"], max_batch=4) as tts:
        long_text = " ".join(f"Piece {i} of a very long text goes on and on here." for i in range(8))
        first = tts.stream(long_text, speaker="ryan", seed=1, max_frames=60, batch=4)
        next(first)
        time.sleep(0.2)
        assert tts.stats().sequences_in_flight == 4  # nobody else: the long text uses every slot
        second = tts.stream(long_text, speaker="vivian", seed=2, max_frames=60, batch=4)
        deadline = time.monotonic() + 30
        while tts.stats().requests_running < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tts.stats().requests_running == 2  # the second got the first slot that freed
        first.cancel()
        second.cancel()
        _wait_idle(tts)


def test_many_threads_share_one_tts(model_folders: dict[str, Path]) -> None:
    request = {"text": "Same words from eight threads.", "speaker": "ryan", "max_frames": 4}
    with _open(model_folders["q8_0"], max_batch=4, max_waiting=8) as tts:
        expected = {seed: _say(tts, {**request, "seed": seed})[0] for seed in range(8)}
        got: dict[int, np.ndarray] = {}

        def run(seed: int) -> None:
            got[seed] = _say(tts, {**request, "seed": seed})[0]

        threads = [threading.Thread(target=run, args=(seed,)) for seed in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert all(np.array_equal(expected[seed], got[seed]) for seed in range(8))


def test_clone_voices_in_one_batch_equal_their_solo_runs(
    model_folders: dict[str, Path], tmp_path: Path
) -> None:
    library = VoiceLibrary(tmp_path / "voices")
    rng = np.random.default_rng(0)
    reference = tmp_path / "ref.wav"
    import soundfile as sf

    sf.write(reference, (0.1 * rng.standard_normal(24000 * 4)).astype(np.float32), 24000)
    with _open(model_folders["base"], max_batch=1, voices=library) as tts:
        icl = tts.clone(reference, "The words of the reference.", name="icl")
        xvec = tts.clone(reference, None, name="xvec", x_vector_only=True)
        requests: list[dict[str, object]] = [
            {"text": "Spoken with the ICL voice.", "voice": icl, "seed": 1, "max_frames": 5},
            {"text": "Spoken with the x-vector voice.", "voice": xvec, "seed": 2, "max_frames": 6},
        ]
        solo = [_say(tts, r)[0] for r in requests]
    with _open(model_folders["base"], max_batch=2, voices=library) as tts:
        streams = [
            tts.stream(str(r["text"]), **{k: v for k, v in r.items() if k != "text"}) for r in requests
        ]
        together = [np.concatenate([c.samples for c in s]) for s in streams]
    assert all(np.array_equal(a, b) for a, b in zip(solo, together, strict=True))


def test_closing_the_model_stops_waiting_readers(model_folders: dict[str, Path]) -> None:
    tts = _open(model_folders["q8_0"], max_batch=1)
    stream = tts.stream("Runs until the model closes.", speaker="ryan", seed=1, max_frames=400)
    next(stream)
    tts.close()
    assert list(stream) == []
    with pytest.raises(Qwen3TTSError, match="closed"):
        tts.stream("Too late.", speaker="ryan", max_frames=2)
