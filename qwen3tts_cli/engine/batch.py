"""The frame loop for several independent texts at once: B sequences share every llama.cpp decode.

On a CPU, one frame of one sequence is bandwidth-bound: the talker's weights are streamed once and the
code predictor's 15 times, for a single position each. Sequences that live side by side in one context
(seq ids = slots) reuse each weight read: per step, one talker decode holds one position of every active
sequence, and one predictor frame is a 2-positions-per-sequence prefill plus 14 decodes of one position
per sequence. The 15 heads run per row, exactly as in the solo loop (see `_residual_codes`).

Per sequence the semantics are exactly those of `engine.generate.FrameGenerator` (same prompt, settings
and seed -> the same frames): its own sampler (talker repetition history, seeded stream shared by code 0
and the residual codes, in the same order), its own limit, EOS / the last allowed token never emitted.
When a sequence finishes its slot is freed and the next waiting prompt is admitted into it: its prefill
rides along in the next talker decode (llama.cpp splits the mixed batch into equal micro-batches), so more
prompts than slots stream through the batch without waiting for the slowest one.

`SequenceBatch` is the step-wise core (sequences join and leave between steps: the scheduler of
`engine.scheduler` drives it for many requests); `BatchedFrameGenerator` runs a fixed list of prompts through
it and yields `(prompt_index, frame)` as soon as frames are complete: per step, in slot order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from qwen3tts_cli.engine.generate import CodecTables
from qwen3tts_cli.engine.prompt import Prompt
from qwen3tts_cli.engine.sampling import (
    GenerationSettings,
    PredictorSampler,
    Sampler,
    TalkerRules,
    TalkerSampler,
)


class MultiSequenceModel(Protocol):
    """A decoder stack holding several sequences (the real one is `engine.llama.LlamaModel`)."""

    @property
    def n_seq_max(self) -> int:
        """How many sequences (seq ids 0..n_seq_max-1) the context holds."""
        ...

    def clear(self) -> None:
        """Forget every sequence."""
        ...

    def clear_sequence(self, seq: int) -> None:
        """Forget one sequence."""
        ...

    def decode_sequences(
        self, embeds: np.ndarray, seq_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Append row i to sequence seq_ids[i]; (hidden [n, E], logits [n, V] or None) in row order."""
        ...


def slot_count(talker: MultiSequenceModel, predictor: MultiSequenceModel, cap: int | None) -> int:
    """Sequence slots both contexts hold, at most `cap`."""
    slots = min(talker.n_seq_max, predictor.n_seq_max, cap or talker.n_seq_max)
    if slots < 1:
        raise ValueError("the batch needs at least one sequence slot")
    return slots


@dataclass
class _Sequence:
    """One prompt in flight: where it lives, how it picks tokens, and the talker output to pick from."""

    key: Hashable  # the caller's name for it
    slot: int  # seq id in both contexts
    prompt: Prompt
    settings: GenerationSettings
    pick_code0: TalkerSampler
    pick_residual: PredictorSampler
    eos_id: int
    previous: list[int] = field(default_factory=list)  # code-0 tokens so far (repetition penalty)
    step: int = 0
    hidden: np.ndarray | None = None  # talker hidden of the last position
    logits: np.ndarray | None = None  # talker logits of the last position
    frame: np.ndarray | None = None  # the frame to feed the talker at the next step
    prefilled: bool = False

    def limit_reached(self) -> bool:
        return self.step == self.settings.max_new_tokens - 1


class SequenceBatch:
    """Sequences side by side in the two contexts: `add` one into a free slot at any time, `step` advances
    every one of them by a frame, `remove` drops one (its slot is free at once).

    A sequence added between steps is prefilled inside the next step's talker decode (`joint_prefill`), so
    it joins a running batch without stalling the others; what it generates does not depend on when it
    joined or on what else is in the batch (each row is computed on its own: batched == solo).
    """

    def __init__(
        self,
        talker: MultiSequenceModel,
        predictor: MultiSequenceModel,
        tables: CodecTables,
        num_code_groups: int = 16,
        *,
        max_sequences: int | None = None,
        joint_prefill: bool = True,
    ) -> None:
        self.talker = talker
        self.predictor = predictor
        self.tables = tables
        self.num_code_groups = num_code_groups
        self.slots = slot_count(talker, predictor, max_sequences)
        self.joint_prefill = joint_prefill
        self._free: deque[int] = deque(range(self.slots))
        self._sequences: dict[Hashable, _Sequence] = {}
        self.talker.clear()

    # ---- membership ------------------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        return len(self._free)

    def __len__(self) -> int:
        return len(self._sequences)

    def __contains__(self, key: object) -> bool:
        return key in self._sequences

    def add(self, key: Hashable, prompt: Prompt, settings: GenerationSettings, rules: TalkerRules) -> None:
        """Admit a prompt into the lowest free slot, with its own seeded sampler; it is prefilled
        at the next step."""
        if not self._free:
            raise RuntimeError("no free sequence slot")
        if key in self._sequences:
            raise ValueError(f"sequence {key!r} is already in the batch")
        sampler = Sampler(settings.seed)
        self._sequences[key] = _Sequence(
            key=key,
            slot=self._free.popleft(),
            prompt=prompt,
            settings=settings,
            pick_code0=TalkerSampler(rules, settings.talker, sampler),
            pick_residual=PredictorSampler(settings.predictor, sampler),
            eos_id=rules.eos_id,
        )

    def remove(self, key: Hashable) -> None:
        """Drop a sequence (cancelled): its KV cache is cleared and its slot is free for the next `add`."""
        seq = self._sequences.pop(key, None)
        if seq is not None:
            self._release(seq)

    def reset(self) -> None:
        """Forget every sequence (after a failed step, whose contexts are in an unknown state)."""
        self._sequences.clear()
        self._free = deque(range(self.slots))
        self.talker.clear()

    def _release(self, seq: _Sequence) -> None:
        if self._sequences:
            self.talker.clear_sequence(seq.slot)
        else:
            self.talker.clear()  # the last one out resets the whole cache (metadata only), as a new start
        # lowest slots first, so the sequences of a step keep contiguous seq ids: measured on the long text
        # (7 pieces, 0.6B q8_0), requests that found the slots in release order ran ~10% slower (RTF 0.92
        # vs 0.84) than the first, which got slots 0..6
        self._free = deque(sorted([*self._free, seq.slot]))

    # ---- one frame for everyone --------------------------------------------------------------------------
    def step(self) -> list[tuple[Hashable, np.ndarray | None]]:
        """One talker decode (every running sequence's last frame plus the newcomers' prompts), then code 0
        and the residual codes of every sequence.

        Returns `(key, frame)` per sequence that produced a frame, and `(key, None)` for each that ended
        (EOS or its limit; it has left the batch) - the ended ones first, then frames in slot order.
        """
        if not self._sequences:
            return []
        active = sorted(self._sequences.values(), key=lambda seq: seq.slot)
        stepping = [seq for seq in active if seq.prefilled]
        newcomers = [seq for seq in active if not seq.prefilled]
        self._talk(stepping, newcomers)
        ended: list[tuple[Hashable, np.ndarray | None]] = []
        still_running: list[_Sequence] = []
        codes0: list[int] = []
        for seq in active:
            code0 = seq.pick_code0(seq.logits, seq.previous)
            seq.previous.append(code0)
            # as in the solo loop: EOS and the last allowed token never get residual codes
            if code0 == seq.eos_id or seq.limit_reached():
                del self._sequences[seq.key]
                self._release(seq)
                ended.append((seq.key, None))
            else:
                still_running.append(seq)
                codes0.append(code0)
        frames = self._residual_codes(still_running, codes0)
        for seq, frame in zip(still_running, frames, strict=True):
            seq.frame = frame
        return ended + [(seq.key, frame) for seq, frame in zip(still_running, frames, strict=True)]

    # ---- talker ----------------------------------------------------------------------------------------
    def _talk(self, stepping: list[_Sequence], newcomers: list[_Sequence]) -> None:
        """One talker step for every running sequence (fed its last frame) plus the prefill of the
        newcomers; each gets its last hidden state and logits."""
        parts: list[tuple[_Sequence, np.ndarray]] = []
        if stepping:
            rows = self._frame_embeddings(np.stack([seq.frame for seq in stepping]))
            rows += np.stack([seq.prompt.text_for_step(seq.step) for seq in stepping])
            for seq in stepping:
                seq.step += 1
            parts.extend((seq, row[None]) for seq, row in zip(stepping, rows, strict=True))
        prefills = [(seq, seq.prompt.prefill) for seq in newcomers]
        for seq in newcomers:
            seq.prefilled = True
        if self.joint_prefill:
            self._decode_talker(parts + prefills)
        else:
            for part in prefills:
                self._decode_talker([part])
            if parts:
                self._decode_talker(parts)

    def _decode_talker(self, parts: list[tuple[_Sequence, np.ndarray]]) -> None:
        """Decode all rows in one call; keep each sequence's last hidden state and logits."""
        if not parts:  # every sequence finished and nothing is waiting
            return
        embeds = np.concatenate([rows for _, rows in parts]).astype(np.float32, copy=False)
        seq_ids = np.concatenate([np.full(len(rows), seq.slot, dtype=np.int64) for seq, rows in parts])
        hidden, logits = self.talker.decode_sequences(embeds, seq_ids)
        if logits is None:
            raise RuntimeError("the talker model must return logits (open it with want_logits=True)")
        last_rows = np.cumsum([len(rows) for _, rows in parts]) - 1
        for (seq, _), row in zip(parts, last_rows, strict=True):
            seq.hidden, seq.logits = hidden[row], logits[row]

    def _frame_embeddings(self, frames: np.ndarray) -> np.ndarray:
        """[n, H] sums of each frame's code embeddings, added group by group as the solo loop does."""
        total = self.tables.codec_embed(0, frames[:, 0]).astype(np.float32)
        for group in range(1, self.num_code_groups):
            total = total + self.tables.codec_embed(group, frames[:, group])
        return total

    # ---- code predictor --------------------------------------------------------------------------------
    def _head_rows(self, group: int, hidden: np.ndarray) -> Sequence[np.ndarray]:
        """Each row's logits exactly as the solo loop computes them: `Tables.predictor_head_rows` does all
        rows in one call where that is bit-identical (8-bit heads); other tables go one row at a time."""
        rows = getattr(self.tables, "predictor_head_rows", None)
        if rows is not None:
            return rows(group, hidden)
        return [self.tables.predictor_head(group, row) for row in hidden]

    def _residual_codes(self, sequences: list[_Sequence], codes0: list[int]) -> list[np.ndarray]:
        """Codes 1..15 of every running sequence's frame: one fresh predictor sequence per slot, decoded
        together (2 positions each, then 14 calls of one position each)."""
        if not sequences:
            return []
        frames = np.zeros((len(sequences), self.num_code_groups), dtype=np.int64)
        frames[:, 0] = codes0
        slots = np.array([seq.slot for seq in sequences], dtype=np.int64)
        talker_hidden = np.stack([seq.hidden for seq in sequences]).astype(np.float32)
        pairs = np.stack([talker_hidden, self.tables.codec_embed(0, frames[:, 0])], axis=1)
        self.predictor.clear()  # every slot starts a fresh 16-position sequence this frame
        hidden_rows, _ = self.predictor.decode_sequences(
            self.tables.project(pairs.reshape(2 * len(sequences), -1)), np.repeat(slots, 2)
        )
        hidden = hidden_rows[1::2]
        for group in range(1, self.num_code_groups):
            logits = self._head_rows(group, hidden)
            for row, seq in enumerate(sequences):
                frames[row, group] = seq.pick_residual(logits[row])
            if group == self.num_code_groups - 1:
                break
            embedding = self.tables.codec_embed(group, frames[:, group])
            hidden, _ = self.predictor.decode_sequences(self.tables.project(embedding), slots)
        return list(frames)


class BatchedFrameGenerator:
    """Runs the official frame loop for a list of prompts at once on two multi-sequence models."""

    def __init__(
        self,
        talker: MultiSequenceModel,
        predictor: MultiSequenceModel,
        tables: CodecTables,
        rules: TalkerRules,
        num_code_groups: int = 16,
        *,
        max_sequences: int | None = None,
        joint_prefill: bool = True,
    ) -> None:
        """`max_sequences` caps the slots (default: what both contexts hold); `joint_prefill=False`
        prefills each admitted prompt in its own decode instead of inside the next batched step."""
        self.talker = talker
        self.predictor = predictor
        self.tables = tables
        self.rules = rules
        self.num_code_groups = num_code_groups
        self.max_sequences = max_sequences
        self.joint_prefill = joint_prefill
        self.slots = slot_count(talker, predictor, max_sequences)

    def frames(
        self,
        prompts: Sequence[Prompt],
        settings: Sequence[GenerationSettings],
        *,
        lead_frames: int = 0,
        on_finish: Callable[[int], None] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (prompt index, int64 [16] frame) until every prompt hit EOS or its limit.

        Frames of one prompt come in order; prompts are admitted in list order as slots free up.
        `lead_frames > 0` runs the first prompt alone for that many frames before the others join, so a
        streaming caller's first audio waits neither for their prefills nor for slower batched steps.
        `on_finish(index)` is called when a prompt has produced its last frame (EOS or limit).
        """
        if len(prompts) != len(settings):
            raise ValueError(f"{len(prompts)} prompts but {len(settings)} settings")
        batch = SequenceBatch(
            self.talker,
            self.predictor,
            self.tables,
            self.num_code_groups,
            max_sequences=self.max_sequences,
            joint_prefill=self.joint_prefill,
        )
        waiting = deque(range(len(prompts)))
        lead_emitted, lead_running = 0, bool(prompts)

        def admit() -> None:
            held = lead_frames > 0 and lead_running and lead_emitted < lead_frames
            while waiting and batch.free_slots and not (held and waiting[0] != 0):
                index = waiting.popleft()
                batch.add(index, prompts[index], settings[index], self.rules)

        admit()
        while len(batch):
            for index, frame in batch.step():
                if frame is None:
                    lead_running = lead_running and index != 0
                    if on_finish is not None:
                        on_finish(index)
                    continue
                lead_emitted += index == 0
                yield index, frame
            admit()

    def generate(self, prompts: Sequence[Prompt], settings: Sequence[GenerationSettings]) -> list[np.ndarray]:
        """All frames of every prompt: one int64 [F_i, 16] array per prompt."""
        collected: list[list[np.ndarray]] = [[] for _ in prompts]
        for index, frame in self.frames(prompts, settings):
            collected[index].append(frame)
        return [
            np.stack(frames) if frames else np.zeros((0, self.num_code_groups), dtype=np.int64)
            for frames in collected
        ]
