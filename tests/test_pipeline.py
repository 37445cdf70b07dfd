"""The codec decoder on a worker thread beside the LMs: same audio as decoding inline, cores shared."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qwen3tts_cli import audio as audio_io
from qwen3tts_cli.convert.converter import convert_checkpoint
from qwen3tts_cli.engine.pipeline import BackgroundDecoder, CoreShare
from qwen3tts_cli.model import LoadedModel
from qwen3tts_cli.tts import TTS
from qwen3tts_cli.voices import MODE_ICL

TEXT = (
    "The first sentence is here and it is long enough. A second one follows it, a little longer than that. "
    "Then a third sentence arrives with several more words in it."
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, checkpoint_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    return {
        "custom_voice": convert_checkpoint(checkpoint_factory("custom_voice"), root / "cv", "q8_0"),
        "base": convert_checkpoint(checkpoint_factory("base"), root / "base", "f32"),
    }


def _open(folder: Path, threads: int, max_batch: int = 1) -> TTS:
    return TTS(LoadedModel(folder, threads=threads, max_batch=max_batch))


def _speak(tts: TTS, **options: object):
    return tts.synthesize(TEXT, language="english", max_frames=11, seed=3, **options)


@pytest.mark.parametrize("batch", [1, 3])
def test_overlapped_decoding_equals_inline_decoding(folders: dict[str, Path], batch: int) -> None:
    """Two threads (decoder beside the LMs, LM thread count switching with it) vs one (all inline):
    the same codes and bit-identical audio, twice in a row."""
    inline = _open(folders["custom_voice"], threads=1, max_batch=batch)
    overlapped = _open(folders["custom_voice"], threads=2, max_batch=batch)
    try:
        assert not inline.model.cores.overlaps and overlapped.model.cores.overlaps
        assert overlapped.model.talker.threads_source is not None
        expected = _speak(inline, speaker="vivian", batch=batch)
        assert len(expected.pieces) == 3
        for _ in range(2):
            got = _speak(overlapped, speaker="vivian", batch=batch)
            assert all(np.array_equal(a, b) for a, b in zip(expected.codes, got.codes, strict=True))
            assert np.array_equal(expected.samples, got.samples)
    finally:
        inline.close()
        overlapped.close()


def test_cloned_voice_primes_the_decoder_once_for_all_pieces(folders: dict[str, Path], golden) -> None:
    """Every piece continues from the reference frames, as the official decode of reference + codes with
    the reference part cut: the joined pieces equal one-shot decodes of reference + each piece's codes."""
    tts = _open(folders["base"], threads=2)
    try:
        reference = audio_io.ReferenceAudio(golden.ref_audio("tiny"), 24000, 1, "0" * 64)
        voice = tts.clone(reference, "A short reference transcript.")
        assert voice.mode == MODE_ICL and voice.reference_codes is not None
        result = tts.synthesize(TEXT, voice=voice, language="english", max_frames=6, seed=2)
        assert len(result.pieces) == 3
        decoder = tts.model.decoder
        cut = len(voice.reference_codes) * decoder.samples_per_frame
        expected, unprimed = [], []
        for codes in result.codes:
            expected.append(decoder.decode(np.concatenate([voice.reference_codes, codes]), 64)[cut:])
            unprimed.append(decoder.decode(codes, 64))
        joined = np.concatenate(list(audio_io.join_pieces([p] for p in expected)))
        assert joined.shape == result.samples.shape
        assert np.abs(joined - result.samples).max() < 1e-5
        assert np.abs(unprimed[1] - expected[1]).max() > 1e-4  # the priming really matters
    finally:
        tts.close()


class _GatedStream:
    """A fake decoder stream whose push blocks until released; records how many run at once."""

    live = 0
    most = 0
    lock = threading.Lock()

    def __init__(self, parent: _GatedStream | None = None) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.parent = parent
        self.order: list[str] = []

    @property
    def parent_id(self) -> int | None:
        return None if self.parent is None else id(self.parent)

    def push(self, codes: np.ndarray) -> np.ndarray:
        with _GatedStream.lock:
            _GatedStream.live += 1
            _GatedStream.most = max(_GatedStream.most, _GatedStream.live)
        self.started.set()
        try:
            assert self.release.wait(10)
            return codes.astype(np.float32).ravel()
        finally:
            with _GatedStream.lock:
                _GatedStream.live -= 1
            self.parent = None


class _FailingStream:
    parent_id = None

    def push(self, codes: np.ndarray) -> np.ndarray:
        raise RuntimeError("decoder broke")


def test_lm_threads_drop_while_a_chunk_decodes() -> None:
    cores = CoreShare.split(2)
    assert (cores.total, cores.decoder_threads, cores.lm_threads()) == (2, 1, 2)
    background = BackgroundDecoder(cores)
    background.set_lm_busy(True)
    first, second = _GatedStream(), _GatedStream()
    try:
        future = background.submit(first, np.arange(4).reshape(2, 2))  # type: ignore[arg-type]
        assert cores.lm_threads() == 1  # counted from the submission on, before a worker starts
        assert first.started.wait(10)
        queued = background.submit(second, np.zeros((1, 2)))  # type: ignore[arg-type]
        assert not second.started.wait(0.3)  # beside a busy LM only one chunk runs
        background.cancel([queued])  # not started yet: dropped, and no longer counted
        first.release.set()
        assert np.array_equal(future.result(10), [0, 1, 2, 3])
        assert queued.cancelled() and cores.lm_threads() == 2
        failed = background.submit(_FailingStream(), np.zeros((1, 2)))  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="decoder broke"):
            failed.result(10)
        assert cores.lm_threads() == 2
    finally:
        first.release.set()
        background.close()


def test_idle_lm_lets_every_core_decode_but_a_stream_stays_in_order() -> None:
    cores = CoreShare.split(2)
    background = BackgroundDecoder(cores)
    _GatedStream.most = 0
    a, b = _GatedStream(), _GatedStream()
    child = _GatedStream(parent=a)  # must not start before a's queued chunks are done
    try:
        background.set_lm_busy(False)
        a1 = background.submit(a, np.zeros((1, 2)))  # type: ignore[arg-type]
        a2 = background.submit(a, np.ones((1, 2)))  # type: ignore[arg-type]
        c1 = background.submit(child, np.ones((1, 2)))  # type: ignore[arg-type]
        b1 = background.submit(b, np.ones((1, 2)))  # type: ignore[arg-type]
        assert a.started.wait(10) and b.started.wait(10)  # two streams at once on two cores
        assert _GatedStream.most == 2
        assert not child.started.is_set() and not a2.running()
        b.release.set()
        a.release.set()
        for future in (a1, a2, b1):
            future.result(10)
        assert child.started.wait(10)  # only after both of its parent's chunks
        child.release.set()
        c1.result(10)
        assert cores.lm_threads() == 2
    finally:
        for stream in (a, b, child):
            stream.release.set()
        background.close()


def test_lowest_priority_first_but_each_stream_in_order() -> None:
    """Deadline order across streams (the scheduler's fairness), submission order within a stream."""
    background = BackgroundDecoder(CoreShare.split(2))
    background.set_lm_busy(True)  # one chunk at a time, so the order is observable
    gate, late, early = _GatedStream(), _GatedStream(), _GatedStream()
    started: list[str] = []
    try:
        blocker = background.submit(gate, np.zeros((1, 2)), priority=0.0)  # type: ignore[arg-type]
        assert gate.started.wait(10)
        futures = [
            background.submit(late, np.zeros((1, 2)), priority=5.0),  # type: ignore[arg-type]
            background.submit(late, np.zeros((1, 2)), priority=1.0),  # type: ignore[arg-type]
            background.submit(early, np.zeros((1, 2)), priority=2.0),  # type: ignore[arg-type]
        ]
        for stream, name in ((late, "late"), (early, "early")):
            stream.release.set()
            original = stream.push
            stream.push = lambda codes, _o=original, _n=name: started.append(_n) or _o(codes)  # type: ignore[method-assign]
        gate.release.set()
        blocker.result(10)
        for future in futures:
            future.result(10)
        # early (2.0) beats late's first chunk (5.0); late's second chunk (1.0) waits for its first
        assert started == ["early", "late", "late"]
    finally:
        for stream in (gate, late, early):
            stream.release.set()
        background.close()


def test_one_core_decodes_inline_and_big_machines_split() -> None:
    one = CoreShare.split(1)
    assert not one.overlaps and one.lm_threads() == 1
    future = BackgroundDecoder(one).submit(_Echo(), np.ones((1, 3)))  # type: ignore[arg-type]
    assert future.done() and one.lm_threads() == 1
    assert BackgroundDecoder(CoreShare.split(2)).max_workers == 2
    assert (CoreShare.split(4).decoder_threads, CoreShare.split(8).decoder_threads) == (1, 2)
    assert CoreShare.split(8).lm_threads() == 8 and BackgroundDecoder(CoreShare.split(8)).max_workers == 4


class _Echo:
    parent_id = None

    def push(self, codes: np.ndarray) -> np.ndarray:
        return codes.ravel()


def test_abandoned_stream_leaves_the_model_usable(folders: dict[str, Path]) -> None:
    tts = _open(folders["custom_voice"], threads=2)
    try:
        expected = _speak(tts, speaker="vivian")
        chunks: Iterator = tts.stream(TEXT, speaker="vivian", language="english", max_frames=11, seed=3)
        next(chunks)
        chunks.close()  # the listener went away after the first chunk
        again = _speak(tts, speaker="vivian")
        assert np.array_equal(expected.samples, again.samples)
        assert tts.model.cores.lm_threads() == 2  # nothing left counted as in flight
    finally:
        tts.close()


def test_thread_count_switch_does_not_change_llama_results(folders: dict[str, Path]) -> None:
    """The overlapped mode changes llama.cpp's thread count between decodes; results must not move."""
    model = LoadedModel(folders["custom_voice"], threads=2)
    try:
        rng = np.random.default_rng(0)
        embeds = rng.standard_normal((6, model.talker.n_embd)).astype(np.float32)
        outputs = []
        for threads in (2, 1, 2):
            model.talker.threads_source = lambda n=threads: n
            model.talker.clear()
            hidden, logits = model.talker.decode(embeds)
            assert model.talker._threads_now == threads
            outputs.append((hidden, logits))
        for hidden, logits in outputs[1:]:
            assert np.array_equal(hidden, outputs[0][0]) and np.array_equal(logits, outputs[0][1])
    finally:
        model.close()
