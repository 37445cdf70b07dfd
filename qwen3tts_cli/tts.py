"""The library API: load a model once, then synthesize, stream and clone.

    tts = TTS.load("0.6b-custom")                      # downloads + converts on first use
    audio = tts.synthesize("Hello!", speaker="ryan")   # whole utterance
    for chunk in tts.stream(long_text, speaker="ryan"): ...   # audio as it is decoded
    voice = TTS.load("0.6b-base").clone("me.wav", "what I said")

A request's text is split at sentence ends into pieces; each piece is generated with the same voice
(its own talker sequence and decoder stream), and the pieces are joined with short fades. Frames go to the
streaming decoder every few frames, so the first audio arrives after a handful of frames.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from qwen3tts_cli import audio as audio_io
from qwen3tts_cli import catalog, hub, spec
from qwen3tts_cli.engine.decoder import DecoderStream
from qwen3tts_cli.engine.pipeline import BackgroundDecoder
from qwen3tts_cli.engine.prompt import (
    Prompt,
    VoiceClone,
    custom_voice_prompt,
    voice_clone_prompt,
    voice_design_prompt,
)
from qwen3tts_cli.engine.sampling import GenerationSettings
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.model import DEFAULT_TALKER_CONTEXT, LoadedModel
from qwen3tts_cli.text import parse_control, split_text
from qwen3tts_cli.voices import MODE_ICL, MODE_XVECTOR, VoiceLibrary, VoicePack

T = TypeVar("T")
DEFAULT_SPEAKER = "ryan"
# Decoder chunk schedule: the first frame is decoded alone (first audio one frame after the prompt), then
# chunks double up to CHUNK_FRAMES, so playback gets audio early while later calls stay efficient. The
# decoder's activation memory grows with the chunk (0.6B: peak RSS 1.47 GB at 4 frames, 1.56 at 8, 1.65 at
# 12) while its cost per frame barely moves from 4 frames up (1 thread: 71-76 ms at 4, 68-70 at 8 and 12;
# 85 at 2). One stream uses 4; batched pieces, which already pay for several KV caches, use 8.
FIRST_CHUNK_FRAMES = 1
CHUNK_FRAMES = 4
BATCHED_CHUNK_FRAMES = 8


@dataclass(frozen=True)
class SamplingOptions:
    """Overrides of generation_config.json; None keeps the model's value. `greedy` turns sampling off."""

    greedy: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    subtalker_temperature: float | None = None
    subtalker_top_k: int | None = None
    subtalker_top_p: float | None = None

    def overrides(self) -> dict[str, float | int | bool | None]:
        values: dict[str, float | int | bool | None] = {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "subtalker_temperature": self.subtalker_temperature,
            "subtalker_top_k": self.subtalker_top_k,
            "subtalker_top_p": self.subtalker_top_p,
        }
        if self.greedy:
            values.update(do_sample=False, subtalker_dosample=False)
        return values


@dataclass(frozen=True)
class Request:
    """What to say and how. Only the fields that fit the model's kind may be set (checked in `plan`)."""

    text: str
    speaker: str | None = None  # CustomVoice preset
    language: str = "auto"
    instruct: str | None = None  # style (CustomVoice 1.7B) or the voice description (VoiceDesign)
    attributes: Mapping[str, str | None] | None = None  # gender/age/emotion/pace/pitch -> an instruct
    voice: VoicePack | None = None  # Base clone
    non_streaming_text: bool | None = None  # None: the official default of the mode
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    seed: int | None = None
    max_frames: int | None = None  # per piece; None: the model's max_new_tokens, bounded by the context
    split: bool = True  # split long text at sentence ends
    batch: int = 1  # pieces generated together in one llama.cpp batch (needs a model loaded with max_batch)


@dataclass(frozen=True)
class AudioChunk:
    """Decoded audio, as it becomes available."""

    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    piece: int  # index of the text piece being spoken


CodesCallback = Callable[[int, np.ndarray], None]


@dataclass(frozen=True)
class Synthesis:
    """A whole utterance: the joined audio and, per text piece, its codes."""

    samples: np.ndarray
    sample_rate: int
    codes: list[np.ndarray]
    pieces: list[str]
    instruct: str | None

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class _Plan:
    """A request resolved against the model: pieces of text and one prompt recipe for all of them."""

    pieces: list[str]
    instruct: str | None
    request: Request


class TTS:
    """A loaded Qwen3-TTS model. Not thread-safe: one request at a time (llama.cpp contexts are stateful)."""

    def __init__(self, model: LoadedModel, voices: VoiceLibrary | None = None) -> None:
        self.model = model
        self.voices = voices or VoiceLibrary()

    # ---- loading ------------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        model: str | Path | None = None,
        *,
        mode: str = catalog.MODE_PRESETS,
        quant: str | None = None,
        threads: int | None = None,
        exact: bool = False,
        cache: str | Path | None = None,
        voices_dir: str | Path | None = None,
        talker_context: int = DEFAULT_TALKER_CONTEXT,
        max_batch: int = 1,
        progress: hub.Progress | None = None,
    ) -> TTS:
        """Open a model by catalog name, official checkpoint folder or converted folder.

        Without a name, the default model of `mode` ("presets", "design" or "clone"). A catalog model is
        downloaded and converted on first use, then loaded from the cache.
        """
        name = model if model is not None else catalog.default_model(mode).name
        resolved = hub.resolve_model(name, quant, cache=cache, progress=progress)
        loaded = LoadedModel(
            resolved.path, threads=threads, exact=exact, talker_context=talker_context, max_batch=max_batch
        )
        return cls(loaded, VoiceLibrary(voices_dir) if voices_dir else None)

    def close(self) -> None:
        self.model.close()

    def __enter__(self) -> TTS:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- facts --------------------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def speakers(self) -> list[str]:
        return self.model.speakers

    @property
    def languages(self) -> list[str]:
        return self.model.languages

    @property
    def sample_rate(self) -> int:
        return spec.SAMPLE_RATE

    # ---- synthesis ----------------------------------------------------------------------------------------
    def synthesize(self, text: str, **options: object) -> Synthesis:
        """Speak `text` and return the whole utterance; options are the fields of `Request`.

        The same code path as `stream` (collected), so both give the same samples.
        """
        codes: dict[int, list[np.ndarray]] = {}
        plan = self.plan(self._request(text, options))
        chunks = [c.samples for c in self._stream_plan(plan, lambda i, c: codes.setdefault(i, []).append(c))]
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        per_piece = [
            np.concatenate(codes[i]) if i in codes else np.zeros((0, spec.NUM_CODE_GROUPS), np.int64)
            for i in range(len(plan.pieces))
        ]
        return Synthesis(samples, self.sample_rate, per_piece, plan.pieces, plan.instruct)

    def stream(
        self, text: str, on_codes: CodesCallback | None = None, **options: object
    ) -> Iterator[AudioChunk]:
        """Yield audio as it is decoded; pieces are joined with short fades, in bounded memory.

        `on_codes(piece_index, codes[frames, 16])` receives the generated frames as they are decoded.
        """
        plan = self.plan(self._request(text, options))  # checked now, not at the first next()
        return self._stream_plan(plan, on_codes)

    def _stream_plan(self, plan: _Plan, on_codes: CodesCallback | None) -> Iterator[AudioChunk]:
        pieces = _PieceAudio(self, plan)
        current = [0]

        def piece_samples(index: int) -> Iterator[np.ndarray]:
            current[0] = index
            for codes, samples in pieces.audio(index):
                if on_codes is not None:
                    on_codes(index, codes)
                yield samples

        try:
            for samples in audio_io.join_pieces(piece_samples(i) for i in range(len(plan.pieces))):
                yield AudioChunk(samples, self.sample_rate, current[0])
        finally:
            pieces.abandon()

    def _batch_size(self, plan: _Plan) -> int:
        return min(plan.request.batch, self.model.max_batch, len(plan.pieces))

    def _frame_events(self, plan: _Plan) -> Iterator[tuple[int, np.ndarray | None]]:
        """(piece index, frame) as generated, and (piece index, None) once a piece has no more frames.

        Solo: one piece after another. Batched: the pieces share every llama.cpp decode, so frames of
        different pieces interleave."""
        batch = self._batch_size(plan)
        if batch > 1:
            yield from _BatchedPieces(self, plan, batch).events()
            return
        for index in range(len(plan.pieces)):
            yield from ((index, frame) for frame in self._solo_frames(plan, index))
            yield index, None

    def _solo_frames(self, plan: _Plan, index: int) -> Iterator[np.ndarray]:
        prompt = self._prompt(plan, plan.pieces[index])
        settings = self._settings(plan.request, prompt, index)
        yield from self.model.frame_generator(settings.repetition_penalty).frames(prompt, settings)

    # ---- requests -----------------------------------------------------------------------------------------
    def _request(self, text: str, options: Mapping[str, object]) -> Request:
        # None means "the default" for every option (what a caller forwarding optional values passes)
        fields = {name: value for name, value in options.items() if value is not None}
        voice = fields.get("voice")
        if voice is not None and not isinstance(voice, VoicePack):
            fields["voice"] = self.voices.resolve(str(voice), talker_hidden_size=self.model.talker_hidden)
        sampling = fields.get("sampling")
        if sampling is not None and not isinstance(sampling, SamplingOptions):
            raise TypeError("sampling must be a SamplingOptions")
        try:
            return Request(text=text, **fields)  # type: ignore[arg-type]
        except TypeError as exc:
            raise TypeError(f"unknown synthesis option: {exc}") from None

    def plan(self, request: Request) -> _Plan:
        """Check the request against the model and split the text. Raises Qwen3TTSError on misuse."""
        kind = self.kind
        caps = self.model.capabilities
        if request.speaker is not None and kind != spec.KIND_CUSTOM_VOICE:
            raise Qwen3TTSError(
                f"this {kind} model has no preset speakers (asked for {request.speaker!r})",
                "use a CustomVoice model (e.g. --model 0.6b-custom) or drop --speaker",
            )
        if request.voice is not None and kind != spec.KIND_BASE:
            raise Qwen3TTSError(
                f"this {kind} model cannot use a cloned voice", "use a Base model (e.g. --model 0.6b-base)"
            )
        if kind == spec.KIND_BASE and request.voice is None:
            raise Qwen3TTSError(
                "a Base model speaks only with a cloned voice", "pass --voice NAME (see `qwen3tts clone`)"
            )
        if request.voice is not None:
            request.voice.check_compatible(self.model.talker_hidden)
        self._check_language(request.language)
        if not isinstance(request.batch, int) or request.batch < 1:
            raise Qwen3TTSError(
                f"batch must be an integer >= 1 (got {request.batch!r})", "pass a positive batch size"
            )
        if request.seed is not None and not (isinstance(request.seed, int) and 0 <= request.seed < 2**63):
            raise Qwen3TTSError(
                f"seed must be a non-negative integer (got {request.seed!r})", "pass e.g. --seed 7"
            )
        if request.speaker is not None:
            self._check_speaker(request.speaker)
        controlled = parse_control(
            request.text, request.instruct, request.attributes, accepts_instruct=caps.instruct
        )
        if kind == spec.KIND_VOICE_DESIGN and not controlled.instruct:
            raise Qwen3TTSError(
                "VoiceDesign needs a description of the voice",
                'pass --instruct "A warm, low female voice" (or a leading [tag] / --gender/--age/--emotion)',
            )
        pieces = list(split_text(controlled.text)) if request.split else [controlled.text.strip()]
        return _Plan(pieces, controlled.instruct, request)

    def _check_language(self, language: str) -> None:
        if language.lower() not in self.languages:
            raise Qwen3TTSError(f"unknown language {language!r}", f"use one of: {', '.join(self.languages)}")

    def _check_speaker(self, speaker: str) -> None:
        if speaker.lower() not in self.speakers:
            raise Qwen3TTSError(f"unknown speaker {speaker!r}", f"use one of: {', '.join(self.speakers)}")

    # ---- one piece ----------------------------------------------------------------------------------------
    def _prompt(self, plan: _Plan, piece: str) -> Prompt:
        request, model = plan.request, self.model
        ids = model.tokenizer.assistant_ids(piece)
        instruct_ids = model.tokenizer.instruct_ids(plan.instruct) if plan.instruct else None
        config, tables = model.prompt_config, model.tables
        if self.kind == spec.KIND_CUSTOM_VOICE:
            return custom_voice_prompt(
                config,
                tables,
                ids,
                request.speaker or DEFAULT_SPEAKER,
                request.language,
                instruct_ids,
                non_streaming_mode=_default(request.non_streaming_text, True),
            )
        if self.kind == spec.KIND_VOICE_DESIGN:
            return voice_design_prompt(
                config,
                tables,
                ids,
                instruct_ids,
                request.language,
                non_streaming_mode=_default(request.non_streaming_text, True),
            )
        voice = request.voice
        assert voice is not None  # checked in plan()
        clone = VoiceClone(
            voice.speaker_embedding,
            voice.reference_codes if voice.mode == MODE_ICL else None,
            model.tokenizer.ref_ids(voice.reference_text or "") if voice.mode == MODE_ICL else None,
        )
        return voice_clone_prompt(
            config,
            tables,
            ids,
            clone,
            request.language,
            non_streaming_mode=_default(request.non_streaming_text, False),
        )

    def _settings(self, request: Request, prompt: Prompt, index: int) -> GenerationSettings:
        room = self.model.talker.n_ctx - len(prompt.prefill)
        if room < 2:
            raise Qwen3TTSError(
                f"the prompt ({len(prompt.prefill)} positions) fills the talker context"
                f" ({self.model.talker.n_ctx})",
                "shorten the instruction or the reference transcript, or load with a larger talker_context",
            )
        limit = int(
            self.model.generation_config.get("max_new_tokens", spec.GENERATION_DEFAULTS["max_new_tokens"])
        )
        if request.max_frames is not None:
            if request.max_frames < 1:
                raise Qwen3TTSError(
                    f"max frames must be >= 1 (got {request.max_frames})", "pass a positive number"
                )
            limit = request.max_frames + 1  # the token after the last frame never becomes a frame
        seed = None if request.seed is None else request.seed + index
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "little")
        return GenerationSettings.from_generation_config(
            self.model.generation_config,
            seed=seed,
            max_new_tokens=min(limit, room),
            **request.sampling.overrides(),
        )

    # ---- cloning ------------------------------------------------------------------------------------------
    def clone(
        self,
        reference: str | Path | audio_io.ReferenceAudio,
        transcript: str | None = None,
        *,
        name: str = "voice",
        language: str = "auto",
        x_vector_only: bool = False,
        description: str = "",
    ) -> VoicePack:
        """A voice pack from reference audio: speaker embedding, plus reference codes + transcript (ICL).

        Without a transcript the pack is x-vector only (speaker embedding alone), as the official
        `x_vector_only_mode`; a warning says so because ICL clones are closer to the reference.
        """
        if self.kind != spec.KIND_BASE:
            raise Qwen3TTSError(
                f"this {self.kind} model cannot clone voices", "use a Base model (e.g. --model 0.6b-base)"
            )
        self._check_language(language)
        ref = (
            reference
            if isinstance(reference, audio_io.ReferenceAudio)
            else audio_io.load_reference_audio(reference)
        )
        transcript = (transcript or "").strip() or None
        if transcript is None and not x_vector_only:
            audio_io.warn("no transcript given: cloning from the speaker embedding only (x-vector mode)")
            x_vector_only = True
        embedding = self.model.speaker_encoder.embed(ref.samples)
        codes = None if x_vector_only else self.model.codec_encoder.encode(ref.samples)
        return VoicePack(
            name=name,
            mode=MODE_XVECTOR if x_vector_only else MODE_ICL,
            talker_hidden_size=self.model.talker_hidden,
            speaker_embedding=embedding,
            reference_codes=codes,
            reference_text=None if x_vector_only else transcript,
            reference_language=language.lower(),
            audio_sha256=ref.sha256,
            description=description,
        )


class _PieceAudio:
    """Generates the plan's frames and decodes them in chunks on the background decoder; hands out each
    piece's (codes, audio) chunks in order, piece after piece.

    The caller pulls audio; while the next chunk is still decoding, another frame is generated, so the
    language models and the codec decoder work at the same time. The chunk boundaries depend only on the
    frame counts (the first piece: 1, 2, 4, ... up to the chunk size; later pieces: the chunk size), never
    on timing, so the audio is the same whatever the machine's speed.
    """

    def __init__(self, tts: TTS, plan: _Plan) -> None:
        model = tts.model
        self.background = model.background_decoder
        self.events = tts._frame_events(plan)
        self.chunk_frames = BATCHED_CHUNK_FRAMES if tts._batch_size(plan) > 1 else CHUNK_FRAMES
        self.exhausted = False
        self.started = False
        self.pieces: dict[int, _PieceChunks] = {}
        self.background.set_lm_busy(True)
        self.primed = model.decoder.stream()
        self.priming: Future[np.ndarray] | None = None
        voice = plan.request.voice
        if voice is not None and voice.mode == MODE_ICL and voice.reference_codes is not None:
            # the official decode runs reference codes + generated codes and cuts the reference part: the
            # decoder is primed with the reference once (queued first, while the prompt is prefilled), and
            # every piece continues from that state
            self.priming = self.background.submit(self.primed, voice.reference_codes)

    def _piece(self, index: int) -> _PieceChunks:
        if index not in self.pieces:
            first = FIRST_CHUNK_FRAMES if index == 0 else self.chunk_frames
            self.pieces[index] = _PieceChunks(self.primed.fork(), first, self.chunk_frames)
        return self.pieces[index]

    def _step(self) -> None:
        """Generate one more frame (or learn that a piece or everything has ended)."""
        event = next(self.events, None)
        if event is None:
            self.exhausted = True
            self.background.set_lm_busy(False)  # the rest is decoding: every core may take a chunk
            for piece in self.pieces.values():
                piece.finish(self.background)
            return
        index, frame = event
        piece = self._piece(index)
        if frame is None:
            piece.finish(self.background)
        else:
            piece.add(frame, self.background)

    def audio(self, index: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        piece = self._piece(index)
        while True:
            if piece.chunks:
                codes, future = piece.chunks[0]
                # the very first chunk is waited for: first audio should not wait for another frame too
                if future.done() or self.exhausted or not self.started:
                    if self.priming is not None:  # its failure would leave every piece unprimed
                        self.priming.result()
                        self.priming = None
                    piece.chunks.popleft()
                    self.started = True
                    if not future.done():
                        with self.background.lm_idle():
                            future.result()
                    yield codes, future.result()
                    continue
            elif piece.finished or self.exhausted:
                self.pieces.pop(index, None)
                return
            self._step()

    def abandon(self) -> None:
        """The caller stopped listening: drop the chunks not yet decoded."""
        self.background.cancel([f for piece in self.pieces.values() for _, f in piece.chunks])
        self.pieces.clear()
        self.background.set_lm_busy(False)


class _PieceChunks:
    """One piece's frames, cut into decoder chunks; the chunks' audio arrives through futures."""

    def __init__(self, stream: DecoderStream, first_chunk: int, chunk: int) -> None:
        self.stream = stream
        self.target = first_chunk
        self.chunk = chunk
        self.buffer: list[np.ndarray] = []
        self.chunks: deque[tuple[np.ndarray, Future[np.ndarray]]] = deque()
        self.finished = False

    def add(self, frame: np.ndarray, background: BackgroundDecoder) -> None:
        self.buffer.append(frame)
        if len(self.buffer) >= self.target:
            self._submit(background)
            self.target = min(self.chunk, self.target * 2)

    def finish(self, background: BackgroundDecoder) -> None:
        if self.buffer:
            self._submit(background)
        self.finished = True

    def _submit(self, background: BackgroundDecoder) -> None:
        codes = np.stack(self.buffer).astype(np.int64)
        self.buffer = []
        self.chunks.append((codes, background.submit(self.stream, codes)))


class _BatchedPieces:
    """The frame events of one BatchedFrameGenerator over all pieces.

    Prompts are built when their piece enters the batch (not all up front: a 100 kB text has thousands of
    pieces).
    """

    def __init__(self, tts: TTS, plan: _Plan, batch: int) -> None:
        self.tts = tts
        self.plan = plan
        self.count = len(plan.pieces)
        self._prompts: dict[int, Prompt] = {}
        self._settings: dict[int, GenerationSettings] = {}
        self._finished: deque[int] = deque()
        self.generator = tts.model.batched_generator(batch, self._setting(0).repetition_penalty)

    def _prompt(self, index: int) -> Prompt:
        if index not in self._prompts:
            self._prompts[index] = self.tts._prompt(self.plan, self.plan.pieces[index])
        return self._prompts[index]

    def _setting(self, index: int) -> GenerationSettings:
        if index not in self._settings:
            self._settings[index] = self.tts._settings(self.plan.request, self._prompt(index), index)
        return self._settings[index]

    def _finish(self, index: int) -> None:
        self._finished.append(index)
        self._prompts.pop(index, None)
        self._settings.pop(index, None)

    def events(self) -> Iterator[tuple[int, np.ndarray | None]]:
        frames = self.generator.frames(
            _Lazy(self.count, self._prompt),
            _Lazy(self.count, self._setting),
            lead_frames=1,
            on_finish=self._finish,
        )
        for index, frame in frames:
            # a piece is reported finished after its last frame (at the step that sampled its EOS)
            while self._finished:
                yield self._finished.popleft(), None
            yield index, frame
        while self._finished:
            yield self._finished.popleft(), None


class _Lazy(Sequence[T]):
    """A read-only sequence whose items are computed on access."""

    def __init__(self, length: int, item: Callable[[int], T]) -> None:
        self._length = length
        self._item = item

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> T:  # type: ignore[override]
        if not 0 <= index < self._length:
            raise IndexError(index)
        return self._item(index)


def _default(value: bool | None, official: bool) -> bool:
    return official if value is None else value


__all__ = ["TTS", "AudioChunk", "Request", "SamplingOptions", "Synthesis"]
