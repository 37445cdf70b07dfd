"""Time the OFFICIAL qwen-tts 0.1.1 (PyTorch, fp32, CPU) on a checkpoint folder, for `qwen3tts bench`.

Runs in an interpreter that has torch + transformers 4.57.3 + qwen-tts 0.1.1 (e.g. /work/refenv/bin/python),
with the repository root on PYTHONPATH (for the stdlib-only probes in qwen3tts_cli.bench). Writes one JSON
record to --result in the shape of `qwen3tts_cli.bench.stream_summary`.

The official API has no streaming output: the audio of a request arrives all at once, so its "first
audio" is the whole request. Frames are fixed by max_new_tokens = frames + 1 (the token after the last
frame never becomes a frame); random weights may still emit EOS earlier, so the frames actually produced
are recorded and every per-frame number uses them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

# tests/parity/official.py drives the official code for the parity tests; importing it sets the offline
# flags and stands in for torchaudio (imported in main, after torch's thread count is set)
PARITY_DIR = Path(__file__).resolve().parents[1] / "tests" / "parity"

from qwen3tts_cli.bench import (  # noqa: E402
    add_driver_arguments,
    cpu_load,
    repeat_quietly,
    run_record,
    write_driver_result,
)


class StageTimer:
    """Talker steps (forward hooks), the code predictor (its generate, once per frame), the codec decode."""

    def __init__(self, model: Any) -> None:
        self.seconds: dict[str, float] = {}
        self._talker_start = 0.0
        self._talker_rows = 0
        talker = model.talker
        talker.model.register_forward_pre_hook(self._talker_pre, with_kwargs=True)
        talker.model.register_forward_hook(self._talker_post)
        self._wrap(talker.code_predictor, "generate", "predictor")
        self._wrap(model.speech_tokenizer, "decode", "decoder")

    def reset(self) -> None:
        self.seconds = {"prefill": 0.0, "talker": 0.0, "predictor": 0.0, "decoder": 0.0}

    def _talker_pre(self, _module: Any, _args: tuple, kwargs: dict) -> None:
        embeds = kwargs.get("inputs_embeds")
        self._talker_rows = int(embeds.shape[1]) if embeds is not None else 1
        self._talker_start = time.perf_counter()

    def _talker_post(self, _module: Any, _args: tuple, _output: Any) -> None:
        key = "prefill" if self._talker_rows > 1 else "talker"
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - self._talker_start

    def _wrap(self, owner: Any, name: str, stage: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)


def _one_run(wrapper: Any, timer: StageTimer, args: argparse.Namespace, frames: int) -> dict[str, Any]:
    import torch

    torch.manual_seed(args.seed)
    timer.reset()
    record: dict[str, Any] = {}
    sample = not args.greedy
    with cpu_load(record):
        start = time.perf_counter()
        wavs, rate = wrapper.generate_custom_voice(
            args.text,
            speaker=args.speaker,
            language=args.language,
            max_new_tokens=frames + 1,
            do_sample=sample,
            subtalker_dosample=sample,
        )
        wall = time.perf_counter() - start
    audio = len(wavs[0]) / rate
    stages = dict(timer.seconds)  # the predictor runs before the talker stack, not inside its hooks
    frames = round(audio * rate / 1920)
    # no streaming: the first audio is the whole request
    return run_record(
        record, wall=wall, first=wall, audio=audio, frames=frames, pieces=1, stage_seconds=stages
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_driver_arguments(parser)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(PARITY_DIR))
    from importlib.metadata import version

    from official import Qwen3TTSModel

    start = time.perf_counter()
    wrapper = Qwen3TTSModel.from_pretrained(str(args.checkpoint), dtype=torch.float32)
    load_seconds = time.perf_counter() - start
    timer = StageTimer(wrapper.model)
    with torch.inference_mode():
        _one_run(wrapper, timer, args, min(args.frames, 4))  # warm-up
        runs = repeat_quietly(lambda: _one_run(wrapper, timer, args, args.frames), args.repeats)
    write_driver_result(
        args.result,
        runs,
        precision="fp32",
        threads=args.threads,
        load_seconds=load_seconds,
        streaming=False,
        versions={"torch": torch.__version__, "qwen-tts": version("qwen-tts")},
        attention=getattr(wrapper.model.config, "_attn_implementation", None),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
