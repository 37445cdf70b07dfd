"""Drive the OFFICIAL qwen-tts 0.1.1 code (PyTorch) and record what it computes.

Runs only in the reference venv (torch, transformers 4.57.3, qwen-tts 0.1.1). Nothing in the product
imports this module.
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402,F401  (must be imported before the torchaudio stub, see below)


def _stub_torchaudio() -> bool:
    """qwen_tts imports torchaudio.compliance.kaldi for its 25 Hz tokenizer only; no torchaudio wheel matches
    torch 2.13, so register empty modules. Must happen after importing transformers, whose import-time
    find_spec("torchaudio") fails on a module without a spec."""
    try:
        import torchaudio.compliance.kaldi  # noqa: F401

        return False
    except Exception:
        for name in [k for k in sys.modules if k.startswith("torchaudio")]:
            del sys.modules[name]
        root = types.ModuleType("torchaudio")
        compliance = types.ModuleType("torchaudio.compliance")
        kaldi = types.ModuleType("torchaudio.compliance.kaldi")
        root.compliance, compliance.kaldi = compliance, kaldi
        sys.modules.update(
            {"torchaudio": root, "torchaudio.compliance": compliance, "torchaudio.compliance.kaldi": kaldi}
        )
        return True


STUBBED_TORCHAUDIO = _stub_torchaudio()

from qwen_tts import Qwen3TTSModel  # noqa: E402
from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram  # noqa: E402


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "tokenizers": version("tokenizers"),
        "qwen-tts": version("qwen-tts"),
        "numpy": np.__version__,
        "librosa": version("librosa"),
        "torchaudio": "stub (not installed)" if STUBBED_TORCHAUDIO else version("torchaudio"),
    }


def load_official(folder: Path) -> tuple[Qwen3TTSModel, dict[str, list[str]]]:
    """Load a checkpoint folder through the official loader, eager attention everywhere, fp32.

    Returns the wrapper and the loader's missing/unexpected key report (must be empty)."""
    wrapper = Qwen3TTSModel.from_pretrained(str(folder), attn_implementation="eager", dtype=torch.float32)
    model = wrapper.model
    # the official from_pretrained pops attn_implementation before loading speech_tokenizer/, which then
    # comes up with the default (sdpa); use the same backend as the talker
    model.speech_tokenizer.model.config._attn_implementation = "eager"
    for sub in model.speech_tokenizer.model.modules():
        config = getattr(sub, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = "eager"
    model.eval()
    return wrapper, loading_report(folder, model)


def loading_report(folder: Path, model: torch.nn.Module) -> dict[str, list[str]]:
    """Keys of model.safetensors the model lacks, and persistent model tensors the file lacks."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        file_keys = set(f.keys())
    model_keys = {k for k in model.state_dict() if not k.startswith("speech_tokenizer.")}
    with safe_open(str(folder / "speech_tokenizer" / "model.safetensors"), "pt") as f:
        codec_file_keys = set(f.keys())
    codec_keys = set(model.speech_tokenizer.model.state_dict())
    return {
        "missing": sorted(model_keys - file_keys) + sorted(codec_keys - codec_file_keys),
        "unexpected": sorted(file_keys - model_keys) + sorted(codec_file_keys - codec_keys),
    }


def attention_backends(model: torch.nn.Module) -> list[str]:
    found = set()
    for sub in model.modules():
        config = getattr(sub, "config", None)
        impl = getattr(config, "_attn_implementation", None)
        if impl:
            found.add(impl)
    for sub in model.speech_tokenizer.model.modules():
        impl = getattr(getattr(sub, "config", None), "_attn_implementation", None)
        if impl:
            found.add(impl)
    return sorted(found)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()


@dataclass
class PredictorCall:
    """One code-predictor run (one frame): 16 input positions, 15 logits rows."""

    inputs: list[np.ndarray] = field(default_factory=list)  # before small_to_mtp_projection
    projected: list[np.ndarray] = field(default_factory=list)
    hidden: list[np.ndarray] = field(default_factory=list)
    logits: list[np.ndarray] = field(default_factory=list)


class Recorder:
    """Hooks around one official generate_* call: prompt, every talker / code-predictor forward, codes, wav.

    Forward hooks (not monkeypatched forwards) because HF generate validates kwargs against forward's
    signature; the model-level generate/decode entry points are wrapped to see their arguments."""

    def __init__(self, wrapper: Qwen3TTSModel) -> None:
        self.model = wrapper.model
        self.rec: dict[str, Any] = {}
        self.talker_inputs: list[np.ndarray] = []
        self.talker_hidden: list[np.ndarray] = []
        self.talker_logits: list[np.ndarray] = []
        self.predictor_calls: list[PredictorCall] = []
        self._hooks: list[Any] = []
        self._patched: list[tuple[Any, str, Any]] = []  # (owner, name, instance attribute or None)
        self._install()

    # ---- module hooks -------------------------------------------------------------------------------
    def _install(self) -> None:
        talker = self.model.talker
        predictor = talker.code_predictor
        self._hooks += [
            talker.model.register_forward_pre_hook(self._talker_pre, with_kwargs=True),
            talker.model.register_forward_hook(self._talker_post),
            talker.codec_head.register_forward_hook(self._talker_head),
            predictor.small_to_mtp_projection.register_forward_hook(self._predictor_projection),
            predictor.model.register_forward_hook(self._predictor_post),
        ]
        for head in predictor.lm_head:
            self._hooks.append(head.register_forward_hook(self._predictor_head))
        self._patch(self.model, "generate", self._wrap_generate)
        self._patch(talker, "generate", self._wrap_talker_generate)
        self._patch(self.model.speech_tokenizer, "decode", self._wrap_decode)

    def _talker_pre(self, module: Any, args: tuple, kwargs: dict) -> None:
        self.talker_inputs.append(_np(kwargs["inputs_embeds"][0]))

    def _talker_post(self, module: Any, args: tuple, output: Any) -> None:
        self.talker_hidden.append(_np(output.last_hidden_state[0]))

    def _talker_head(self, module: Any, args: tuple, output: torch.Tensor) -> None:
        self.talker_logits.append(_np(output[0]))

    def _predictor_projection(self, module: Any, args: tuple, output: torch.Tensor) -> None:
        embeds = args[0]
        if embeds.shape[1] > 1:  # a 2-position prefill starts a new frame
            self.predictor_calls.append(PredictorCall())
        call = self.predictor_calls[-1]
        call.inputs.append(_np(embeds[0]))
        call.projected.append(_np(output[0]))

    def _predictor_post(self, module: Any, args: tuple, output: Any) -> None:
        self.predictor_calls[-1].hidden.append(_np(output.last_hidden_state[0]))

    def _predictor_head(self, module: Any, args: tuple, output: torch.Tensor) -> None:
        self.predictor_calls[-1].logits.append(_np(output[0, -1]))  # generation reads the last position

    # ---- wrapped entry points -----------------------------------------------------------------------
    def _patch(self, owner: Any, name: str, make: Any) -> None:
        original = getattr(owner, name)
        own = vars(owner).get(name)  # an instance attribute to restore, else None (class method)
        self._patched.append((owner, name, own))
        setattr(owner, name, make(original))

    def _wrap_generate(self, original: Any) -> Any:
        def generate(*args: Any, **kwargs: Any) -> Any:
            codes, hidden = original(*args, **kwargs)
            self.rec["codes"] = _np(codes[0])
            self.rec["input_ids"] = _np(kwargs["input_ids"][0][0])
            for key in ("instruct_ids", "ref_ids"):
                value = kwargs.get(key)
                if value is not None and value[0] is not None:
                    self.rec[key] = _np(value[0][0])
            return codes, hidden

        return generate

    def _wrap_talker_generate(self, original: Any) -> Any:
        def talker_generate(*args: Any, **kwargs: Any) -> Any:
            self.rec["prefill_inputs_embeds"] = _np(kwargs["inputs_embeds"][0])
            self.rec["trailing_text_hidden"] = _np(kwargs["trailing_text_hidden"][0])
            self.rec["tts_pad_embed"] = _np(kwargs["tts_pad_embed"].reshape(-1))
            self.rec["talker_kwargs"] = {k: v for k, v in kwargs.items() if not torch.is_tensor(v)}
            out = original(*args, **kwargs)
            self.rec["talker_sequences"] = _np(out.sequences[0])
            return out

        return talker_generate

    def _wrap_decode(self, original: Any) -> Any:
        def decode(encoded: Any) -> Any:
            self.rec["decode_input_codes"] = _np(torch.as_tensor(encoded[0]["audio_codes"]))
            return original(encoded)

        return decode

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        for owner, name, own in reversed(self._patched):
            if own is None:
                delattr(owner, name)  # exposes the class method again
            else:
                setattr(owner, name, own)
        self._patched.clear()
        self._hooks.clear()

    # ---- results ------------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """Everything recorded, as the golden case arrays (see tests/golden/README.md)."""
        out = {k: v for k, v in self.rec.items() if isinstance(v, np.ndarray)}
        out["talker_inputs_embeds"] = np.concatenate(self.talker_inputs)
        out["talker_hidden"] = np.concatenate(self.talker_hidden)
        out["talker_logits"] = np.concatenate(self.talker_logits)
        calls = self.predictor_calls
        out["predictor_inputs_embeds"] = np.stack([np.concatenate(c.inputs) for c in calls])
        out["predictor_projected"] = np.stack([np.concatenate(c.projected) for c in calls])
        out["predictor_hidden"] = np.stack([np.concatenate(c.hidden) for c in calls])
        out["predictor_logits"] = np.stack([np.stack(c.logits) for c in calls])
        return out


def speaker_mel(wav: np.ndarray) -> np.ndarray:
    """The log-mel the official extract_speaker_embedding feeds its encoder, [T, 128]."""
    mels = mel_spectrogram(
        torch.from_numpy(wav).unsqueeze(0),
        n_fft=1024,
        num_mels=128,
        sampling_rate=24000,
        hop_size=256,
        win_size=1024,
        fmin=0,
        fmax=12000,
    ).transpose(1, 2)
    return _np(mels[0])
