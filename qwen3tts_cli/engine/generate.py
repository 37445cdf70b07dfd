"""The frame loop: talker (code 0) and code predictor (codes 1..15), one 16-code frame per step.

As in the official model (qwen_tts `Qwen3TTSTalkerForConditionalGeneration.forward` and the code predictor):

* the talker is prefilled with the prompt; its last logits give code 0 of frame 0;
* each frame's residual codes come from a fresh code-predictor sequence: a 2-position prefill
  [talker hidden that produced code 0, codec embedding of code 0] (projected to predictor width), then 14
  single positions fed with the embedding of the code just picked; head g predicts group g;
* the next talker input is the sum of the frame's 16 code embeddings plus the trailing text vector of
  this step (or tts_pad once the text is used up);
* generation stops at EOS or after `max_new_tokens` code-0 tokens; that last token never gets residual
  codes and is not emitted, so at most `max_new_tokens - 1` frames come out.

Frames are yielded as soon as they are complete, so a streaming decoder can consume them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from qwen3tts_cli.engine.prompt import Prompt
from qwen3tts_cli.engine.sampling import (
    GenerationSettings,
    PredictorSampler,
    Sampler,
    TalkerRules,
    TalkerSampler,
)


class LanguageModel(Protocol):
    """A decoder stack fed with embeddings (the real one is `engine.llama.LlamaModel`)."""

    def clear(self) -> None:
        """Forget every position."""
        ...

    def decode(self, embeds: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Append `embeds` [n, E]; return (final-norm hidden [n, E], logits [n, V] or None)."""
        ...


class CodecTables(Protocol):
    """Embeddings and heads used around the two stacks (the real one is `engine.tables.Tables`)."""

    def codec_embed(self, group: int, ids: np.ndarray) -> np.ndarray:
        """[n, H] embeddings of code group `group` (0 = the talker's codec embedding)."""
        ...

    def project(self, x: np.ndarray) -> np.ndarray:
        """Talker width -> predictor width (`small_to_mtp_projection` or identity)."""
        ...

    def predictor_head(self, group: int, hidden: np.ndarray) -> np.ndarray:
        """Logits of residual group `group` (1..15) from predictor hidden states."""
        ...


@dataclass
class GenerationTrace:
    """What the loop computed, for parity tests (rows in the order the official model computes them)."""

    talker_inputs: list[np.ndarray] = field(default_factory=list)  # [n, H] per talker call
    talker_hidden: list[np.ndarray] = field(default_factory=list)  # [n, H] per talker call
    talker_logits: list[np.ndarray] = field(default_factory=list)  # [n, V] per talker call
    talker_codes: list[int] = field(default_factory=list)  # every code 0, incl. EOS / the last one
    predictor_inputs: list[np.ndarray] = field(default_factory=list)  # [16, H] per frame, before projection
    predictor_hidden: list[np.ndarray] = field(default_factory=list)  # [16, Hp] per frame
    predictor_logits: list[np.ndarray] = field(default_factory=list)  # [15, 2048] per frame

    def stacked(self) -> dict[str, np.ndarray]:
        """The trace as arrays named like the golden files."""

        def rows(items: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(items) if items else np.zeros((0, 0), np.float32)

        def frames(items: list[np.ndarray]) -> np.ndarray:
            return np.stack(items) if items else np.zeros((0, 0, 0), np.float32)

        return {
            "talker_inputs_embeds": rows(self.talker_inputs),
            "talker_hidden": rows(self.talker_hidden),
            "talker_logits": rows(self.talker_logits),
            "talker_sequences": np.asarray(self.talker_codes, dtype=np.int64),
            "predictor_inputs_embeds": frames(self.predictor_inputs),
            "predictor_hidden": frames(self.predictor_hidden),
            "predictor_logits": frames(self.predictor_logits),
        }


class FrameGenerator:
    """Runs the official frame loop on two language models and the codec tables."""

    def __init__(
        self,
        talker: LanguageModel,
        predictor: LanguageModel,
        tables: CodecTables,
        rules: TalkerRules,
        num_code_groups: int = 16,
    ) -> None:
        self.talker = talker
        self.predictor = predictor
        self.tables = tables
        self.rules = rules
        self.num_code_groups = num_code_groups

    def frames(
        self, prompt: Prompt, settings: GenerationSettings, trace: GenerationTrace | None = None
    ) -> Iterator[np.ndarray]:
        """Yield int64 [16] frames until EOS or the token limit. Same settings and seed -> same frames."""
        sampler = Sampler(settings.seed)
        pick_code0 = TalkerSampler(self.rules, settings.talker, sampler)
        pick_residual = PredictorSampler(settings.predictor, sampler)
        self.talker.clear()
        hidden, logits = self._talk(prompt.prefill, trace)
        previous: list[int] = []
        for step in range(settings.max_new_tokens):
            code0 = pick_code0(logits, previous)
            previous.append(code0)
            if trace is not None:
                trace.talker_codes.append(code0)
            # The official loop computes residuals inside the NEXT talker step, which never runs after
            # EOS or the last allowed token: that token is dropped.
            if code0 == self.rules.eos_id or step == settings.max_new_tokens - 1:
                return
            frame = self._residual_codes(hidden, code0, pick_residual, trace)
            yield frame
            hidden, logits = self._talk(
                (self._frame_embedding(frame) + prompt.text_for_step(step))[None], trace
            )

    def generate(
        self, prompt: Prompt, settings: GenerationSettings, trace: GenerationTrace | None = None
    ) -> np.ndarray:
        """All frames at once: int64 [F, 16]."""
        frames = list(self.frames(prompt, settings, trace))
        if not frames:
            return np.zeros((0, self.num_code_groups), dtype=np.int64)
        return np.stack(frames)

    # ---- talker ----------------------------------------------------------------------------------------
    def _talk(self, embeds: np.ndarray, trace: GenerationTrace | None) -> tuple[np.ndarray, np.ndarray]:
        """Feed positions to the talker; return the last position's hidden state and logits."""
        embeds = np.ascontiguousarray(embeds, dtype=np.float32)
        hidden, logits = self.talker.decode(embeds)
        if logits is None:
            raise RuntimeError("the talker model must return logits (open it with want_logits=True)")
        if trace is not None:
            trace.talker_inputs.append(embeds)
            trace.talker_hidden.append(hidden)
            trace.talker_logits.append(logits)
        return hidden[-1], logits[-1]

    def _frame_embedding(self, frame: np.ndarray) -> np.ndarray:
        """Sum of the frame's code embeddings over all groups: the codec track of the next talker input."""
        total = self.tables.codec_embed(0, frame[:1])[0].astype(np.float32)
        for group in range(1, self.num_code_groups):
            total = total + self.tables.codec_embed(group, frame[group : group + 1])[0]
        return total

    # ---- code predictor --------------------------------------------------------------------------------
    def _residual_codes(
        self,
        talker_hidden: np.ndarray,
        code0: int,
        pick: PredictorSampler,
        trace: GenerationTrace | None,
    ) -> np.ndarray:
        """Codes 1..15 of a frame from a fresh predictor sequence (2-position prefill + 14 single steps)."""
        frame = np.zeros(self.num_code_groups, dtype=np.int64)
        frame[0] = code0
        inputs = [np.asarray(talker_hidden, dtype=np.float32), self.tables.codec_embed(0, frame[:1])[0]]
        self.predictor.clear()
        hidden_rows, _ = self.predictor.decode(self.tables.project(np.stack(inputs)))
        hidden_seen = [hidden_rows]
        logits_seen = []
        hidden = hidden_rows[-1]
        for group in range(1, self.num_code_groups):
            logits = self.tables.predictor_head(group, hidden)
            logits_seen.append(logits)
            frame[group] = pick(logits)
            if group == self.num_code_groups - 1:
                break
            embedding = self.tables.codec_embed(group, frame[group : group + 1])
            inputs.append(embedding[0])
            hidden_rows, _ = self.predictor.decode(self.tables.project(embedding))
            hidden_seen.append(hidden_rows)
            hidden = hidden_rows[-1]
        if trace is not None:
            trace.predictor_inputs.append(np.stack(inputs))
            trace.predictor_hidden.append(np.concatenate(hidden_seen))
            trace.predictor_logits.append(np.stack(logits_seen))
        return frame
