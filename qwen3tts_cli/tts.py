"""The library API: load a model once, then synthesize, stream and clone.

    tts = TTS.load("0.6b-custom")                      # downloads + converts on first use
    audio = tts.synthesize("Hello!", speaker="ryan")   # whole utterance
    for chunk in tts.stream(long_text, speaker="ryan"): ...   # audio as it is decoded
    voice = TTS.load("0.6b-base").clone("me.wav", "what I said")

A request's text is split at sentence ends into pieces; each piece is generated with the same voice
(its own talker sequence and decoder stream), and the pieces are joined with short fades. Frames go to the
streaming decoder every few frames, so the first audio arrives after a handful of frames. Requests from any
number of threads share the model through `engine.scheduler`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qwen3tts_cli import audio as audio_io
from qwen3tts_cli import catalog, hub, spec
from qwen3tts_cli.engine.prompt import (
    Prompt,
    VoiceClone,
    custom_voice_prompt,
    voice_clone_prompt,
    voice_design_prompt,
)
from qwen3tts_cli.engine.sampling import GenerationSettings
from qwen3tts_cli.engine.scheduler import JobSpec, ScheduledRequest, Scheduler, SchedulerStats
from qwen3tts_cli.errors import Qwen3TTSError
from qwen3tts_cli.lexicon import Lexicon, Replacement, for_voice
from qwen3tts_cli.model import DEFAULT_TALKER_CONTEXT, LoadedModel
from qwen3tts_cli.text import plan_text
from qwen3tts_cli.voices import MODE_ICL, MODE_XVECTOR, VoiceLibrary, VoicePack

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
    pause: float | None = None  # seconds of silence between text pieces (0..10); None: audio.DEFAULT_GAP_MS
    lexicon: Lexicon | None = None  # respellings; a voice pack's own lexicon applies too (this one wins)


@dataclass(frozen=True)
class AudioChunk:
    """Decoded audio, as it becomes available."""

    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    piece: int  # index of the text piece being spoken


CodesCallback = Callable[[int, np.ndarray], None]
PieceFilter = Callable[[np.ndarray], np.ndarray]  # one whole piece's samples in, the samples to play out
MAX_PAUSE_SECONDS = 10.0


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
    text: str = ""  # the text the pieces were split from (after tags and lexicon)
    replacements: list[Replacement] = field(default_factory=list)


class TTS:
    """A loaded Qwen3-TTS model, safe to use from several threads at once.

    Every request joins one shared llama.cpp batch (`engine.scheduler`): up to the model's `max_batch`
    sequences are generated together, and each request's audio equals what it gives alone with the same
    seed. `max_waiting` requests may wait for a slot; more raise `Busy`. `reserved_slots` are kept from a
    long text's extra pieces so that a new request starts at the next frame step (a server sets 1).
    """

    def __init__(
        self,
        model: LoadedModel,
        voices: VoiceLibrary | None = None,
        *,
        max_waiting: int = 32,
        reserved_slots: int = 0,
    ) -> None:
        self.model = model
        self.voices = voices or VoiceLibrary()
        self.scheduler = Scheduler(
            model.sequence_batch(),
            model.decoder,
            model.background_decoder,
            max_waiting=max_waiting,
            reserved_slots=reserved_slots,
        )

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
        max_waiting: int = 32,
        reserved_slots: int = 0,
        progress: hub.Progress | None = None,
        device: str = "auto",
        gpu_layers: int | str | None = None,
        codec_device: str = "auto",
    ) -> TTS:
        """Open a model by catalog name, official checkpoint folder, converted folder or converted repo
        (`hf:OWNER/NAME[@REVISION][:QUANT]`: that quant is downloaded and verified once).

        Without a name, the default model of `mode` ("presets", "design" or "clone"). A catalog model is
        downloaded and converted on first use, then loaded from the cache.

        `device` auto|cpu|cuda|vulkan|metal and `gpu_layers` (None = all, or a count) place the language
        models; `codec_device` auto|cpu|cuda|dml|coreml the ONNX graphs (engine/devices.py). A device the
        installed build lacks raises Qwen3TTSError before anything is downloaded.
        """
        from qwen3tts_cli.engine.devices import choose_codec_provider, onnx_providers, place_language_models

        place_language_models(device, gpu_layers)  # a missing device fails before any download
        choose_codec_provider(codec_device, onnx_providers())
        name = model if model is not None else catalog.default_model(mode).name
        resolved = hub.resolve_model(name, quant, cache=cache, progress=progress)
        loaded = LoadedModel(
            resolved.path,
            threads=threads,
            exact=exact,
            talker_context=talker_context,
            max_batch=max_batch,
            device=device,
            gpu_layers=gpu_layers,
            codec_device=codec_device,
        )
        voices = VoiceLibrary(voices_dir) if voices_dir else None
        return cls(loaded, voices, max_waiting=max_waiting, reserved_slots=reserved_slots)

    def close(self) -> None:
        """Cancel what is running and free the model."""
        self.scheduler.close()
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
        with self.stream(text, lambda i, c: codes.setdefault(i, []).append(c), **options) as stream:
            chunks = [c.samples for c in stream]
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        per_piece = [
            np.concatenate(codes[i]) if i in codes else np.zeros((0, spec.NUM_CODE_GROUPS), np.int64)
            for i in range(len(stream.pieces))
        ]
        return Synthesis(samples, self.sample_rate, per_piece, stream.pieces, stream.instruct)

    def stream(
        self,
        text: str,
        on_codes: CodesCallback | None = None,
        *,
        piece_filter: PieceFilter | None = None,
        **options: object,
    ) -> AudioStream:
        """Audio as it is decoded; pieces are joined with short fades, in bounded memory.

        The request joins the model's shared batch at once (options are checked now; `Busy` when too many
        requests wait). `on_codes(piece_index, codes[frames, 16])` receives the generated frames as they
        are decoded. `cancel()` (or leaving a `with` block) stops the request from any thread.
        `piece_filter` (e.g. a tempo change) gets each text piece's audio once the piece is complete and
        returns what is joined and streamed instead: the first audio then waits for the first piece.
        """
        plan = self.plan(self._request(text, options))
        return AudioStream(self._submit(plan), plan, on_codes, piece_filter)

    def stats(self) -> SchedulerStats:
        """How full the shared batch and its waiting queue are."""
        return self.scheduler.stats()

    def _submit(self, plan: _Plan) -> ScheduledRequest:
        request = plan.request
        parallel = min(request.batch, self.model.max_batch, len(plan.pieces))
        voice = request.voice
        priming = None
        if voice is not None and voice.mode == MODE_ICL and voice.reference_codes is not None:
            priming = voice.reference_codes
        first_prompt = self._prompt(plan, plan.pieces[0])  # a prompt too long for the context fails now
        first_settings = self._settings(request, first_prompt, 0)

        def prepare(index: int) -> tuple[Prompt, GenerationSettings]:
            if index == 0:
                return first_prompt, first_settings
            prompt = self._prompt(plan, plan.pieces[index])
            return prompt, self._settings(request, prompt, index)

        return self.scheduler.submit(
            JobSpec(
                pieces=len(plan.pieces),
                prepare=prepare,
                rules=self.model.talker_rules(first_settings.repetition_penalty),
                parallel=parallel,
                first_chunk_frames=FIRST_CHUNK_FRAMES,
                chunk_frames=BATCHED_CHUNK_FRAMES if parallel > 1 else CHUNK_FRAMES,
                priming_codes=priming,
            )
        )

    # ---- requests -----------------------------------------------------------------------------------------
    def _request(self, text: str, options: Mapping[str, object]) -> Request:
        # None means "the default" for every option (what a caller forwarding optional values passes)
        fields = {name: value for name, value in options.items() if value is not None}
        voice = fields.get("voice")
        if voice is not None and not isinstance(voice, VoicePack):
            fields["voice"] = self.voices.resolve(str(voice), talker_hidden_size=self.model.talker_hidden)
        lexicon = fields.get("lexicon")
        if lexicon is not None and not isinstance(lexicon, Lexicon):
            fields["lexicon"] = Lexicon.load(lexicon)  # type: ignore[arg-type]  # a TSV path
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
        if request.pause is not None and not (
            isinstance(request.pause, int | float)
            and not isinstance(request.pause, bool)
            and 0.0 <= request.pause <= MAX_PAUSE_SECONDS
        ):
            raise Qwen3TTSError(
                f"pause must be between 0 and {MAX_PAUSE_SECONDS:g} seconds (got {request.pause!r})",
                "pass e.g. --pause 0.4",
            )
        if request.speaker is not None:
            self._check_speaker(request.speaker)
        planned = plan_text(
            request.text,
            request.instruct,
            request.attributes,
            accepts_instruct=caps.instruct,
            lexicon=for_voice(request.voice, request.lexicon),
            split=request.split,
        )
        if kind == spec.KIND_VOICE_DESIGN and not planned.instruct:
            raise Qwen3TTSError(
                "VoiceDesign needs a description of the voice",
                'pass --instruct "A warm, low female voice" (or a leading [tag] / --gender/--age/--emotion)',
            )
        return _Plan(planned.pieces, planned.instruct, request, planned.text, planned.replacements)

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
        start: float | None = None,
        end: float | None = None,
    ) -> VoicePack:
        """A voice pack from reference audio: speaker embedding, plus reference codes + transcript (ICL).

        Without a transcript the pack is x-vector only (speaker embedding alone), as the official
        `x_vector_only_mode`; a warning says so because ICL clones are closer to the reference.
        `start`/`end` (seconds) clone from that segment of a recording file only (`load_reference_audio`
        cuts it); the pack's provenance records a segment, since its audio_sha256 names the whole file.
        """
        if self.kind != spec.KIND_BASE:
            raise Qwen3TTSError(
                f"this {self.kind} model cannot clone voices", "use a Base model (e.g. --model 0.6b-base)"
            )
        self._check_language(language)
        if isinstance(reference, audio_io.ReferenceAudio):
            if start is not None or end is not None:
                raise ValueError(
                    "start/end cut a recording file: pass its path, or load_reference_audio(path, start, end)"
                )
            ref = reference
        else:
            ref = audio_io.load_reference_audio(reference, start=start, end=end)
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
            provenance=None if ref.segment is None else {"method": "clone", "segment": list(ref.segment)},
        )


class AudioStream:
    """One request's audio as it is decoded: iterate for `AudioChunk`s; `cancel()` from any thread.

    Pieces come out in order, joined with short fades; `on_codes` sees each chunk's codes as it plays."""

    def __init__(
        self,
        request: ScheduledRequest,
        plan: _Plan,
        on_codes: CodesCallback | None,
        piece_filter: PieceFilter | None = None,
    ) -> None:
        self._request = request
        self.pieces = plan.pieces
        self.instruct = plan.instruct
        self.replacements = plan.replacements  # what the lexicon changed
        self._on_codes = on_codes
        self._piece_filter = piece_filter
        pause = plan.request.pause
        self._gap_ms = audio_io.DEFAULT_GAP_MS if pause is None else float(pause) * 1000.0
        self._piece = 0
        self._chunks = self._joined()

    def _joined(self) -> Iterator[AudioChunk]:
        pieces = (self._piece_samples(i) for i in range(len(self.pieces)))
        if self._piece_filter is not None:
            pieces = (self._filtered(piece) for piece in pieces)
        for samples in audio_io.join_pieces(pieces, gap_ms=self._gap_ms):
            yield AudioChunk(samples, spec.SAMPLE_RATE, self._piece)

    def _filtered(self, chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        whole = [np.asarray(c, dtype=np.float32) for c in chunks]
        if whole and self._piece_filter is not None and not self._request.cancelled:
            yield self._piece_filter(np.concatenate(whole))

    def _piece_samples(self, index: int) -> Iterator[np.ndarray]:
        self._piece = index
        for codes, samples in self._request.piece_audio(index):
            if self._on_codes is not None:
                self._on_codes(index, codes)
            yield samples

    def __iter__(self) -> AudioStream:
        return self

    def __next__(self) -> AudioChunk:
        if self._request.cancelled:  # not even the faded tail the joiner still holds
            raise StopIteration
        try:
            return next(self._chunks)
        except StopIteration:
            raise
        except BaseException:
            self._request.cancel()  # an error (or Ctrl-C) in this thread: the request leaves the batch
            raise

    @property
    def cancelled(self) -> bool:
        return self._request.cancelled

    def cancel(self) -> None:
        """Stop the request: it leaves the batch within one frame step; iteration then ends."""
        self._request.cancel()

    close = cancel

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cancel()


def _default(value: bool | None, official: bool) -> bool:
    return official if value is None else value


__all__ = ["TTS", "AudioChunk", "AudioStream", "Request", "SamplingOptions", "Synthesis"]
