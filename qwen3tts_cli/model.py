"""A converted model folder, opened: configs, tokenizer, tables, both language models and the codec.

One object per loaded model; `TTS` (tts.py) turns requests into audio with it. The encoders (voice
cloning only) are opened on first use.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from qwen3tts_cli import spec
from qwen3tts_cli.catalog import Capabilities
from qwen3tts_cli.convert.checkpoint import read_json
from qwen3tts_cli.convert.manifest import Manifest, verify
from qwen3tts_cli.engine.batch import SequenceBatch
from qwen3tts_cli.engine.decoder import StreamingDecoder
from qwen3tts_cli.engine.devices import device_memory, thread_split
from qwen3tts_cli.engine.encoder import CodecEncoder, SpeakerEncoder
from qwen3tts_cli.engine.llama import LlamaModel, LlamaOptions, free_cores
from qwen3tts_cli.engine.onnx_session import CPU_PROVIDER, provider_of
from qwen3tts_cli.engine.pipeline import BackgroundDecoder, CoreShare
from qwen3tts_cli.engine.prompt import PromptConfig
from qwen3tts_cli.engine.sampling import TalkerRules
from qwen3tts_cli.engine.tables import Tables
from qwen3tts_cli.engine.text_tokenizer import TextTokenizer
from qwen3tts_cli.errors import Qwen3TTSError

# Talker context: the longest prompt plus the most frames one text piece may take. Pieces are split at
# ~20 s of speech (250 frames); a 20 s ICL reference adds ~250 more positions, so 1024 leaves room while the
# KV cache (touched at load: ~115 MB at 0.6B with an f16 cache) stays small. Measured: 2048 cost +115 MB RSS.
DEFAULT_TALKER_CONTEXT = 1024
TALKER_BATCH = 64  # prompt positions per llama_decode: same prefill speed as 256, smaller compute buffers
PREDICTOR_CONTEXT = 32  # 16 positions per frame, fresh every frame


class LoadedModel:
    """Everything of one converted model that generation needs, loaded once."""

    def __init__(
        self,
        folder: str | Path,
        *,
        threads: int | None = None,
        exact: bool = False,
        talker_context: int = DEFAULT_TALKER_CONTEXT,
        max_batch: int = 1,
        check_files: bool = True,
        device: str = "auto",
        gpu_layers: int | str | None = None,
        codec_device: str = "auto",
    ) -> None:
        """`max_batch` > 1 gives both contexts that many sequence slots (text pieces generated together);
        each slot has its own KV cache of `talker_context` positions.

        `device` (auto|cpu|cuda|vulkan|metal) and `gpu_layers` (None/"all"/-1: every layer, or a count)
        place both language models; the predictor's tables and int8 heads stay in numpy on the CPU (small,
        and read per step on the host anyway). `codec_device` (auto|cpu|cuda|dml|coreml) places the codec
        decoder, codec encoder and speaker encoder. On a CPU-only build `auto` is exactly the CPU path."""
        from qwen3tts_cli.engine.devices import choose_codec_provider, onnx_providers, place_language_models

        self.placement = place_language_models(device, gpu_layers)
        self.codec_provider = choose_codec_provider(codec_device, onnx_providers())
        self.folder = Path(folder)
        self.manifest: Manifest = (
            verify(self.folder, checksums=False) if check_files else Manifest.read(self.folder)
        )
        self.threads = threads or free_cores()
        codec_on_gpu = self.codec_provider != CPU_PROVIDER
        # with a side on a GPU, its CPU threads only drive the device: the cores go to the other side
        self.split = thread_split(self.threads, self.placement.fully_offloaded, codec_on_gpu)
        self.exact = exact
        if max_batch < 1:
            raise Qwen3TTSError(f"batch must be >= 1 (got {max_batch})", "pass a positive batch size")
        self.max_batch = max_batch
        self.config = read_json(self.folder / "config.json")
        generation = self.folder / "generation_config.json"
        self.generation_config = (
            read_json(generation) if generation.is_file() else dict(spec.GENERATION_DEFAULTS)
        )
        self.prompt_config = PromptConfig.from_config(self.config)
        self.tokenizer = TextTokenizer(self.folder / "tokenizer.json")
        # exact = f32 everywhere: the 8-bit predictor heads only in the default (fast) mode
        self.tables = Tables(self.folder / "tables.safetensors", int8_heads=not exact)
        free_before = device_memory(self.placement.device) if self.placement.offloaded else None
        self.talker = LlamaModel(
            self.folder / "talker.gguf",
            LlamaOptions(
                n_ctx=talker_context,
                n_batch=TALKER_BATCH,
                n_threads=self.split.lm_threads,
                exact=exact,
                want_logits=True,
                n_gpu_layers=self.placement.n_gpu_layers,
                device=self.placement.device.name,
                n_seq_max=max_batch,
                # quantized models keep a q8_0 KV cache too: half the memory (-58 MB at 0.6B), same speed
                kv_type="q8_0" if self._q8_kv else "f16",
                flash_attn="on" if self._q8_kv else "auto",
            ),
        )
        try:
            self.predictor = LlamaModel(
                self.folder / "predictor.gguf",
                LlamaOptions(
                    n_ctx=PREDICTOR_CONTEXT,
                    n_batch=max(16, 2 * max_batch),  # a frame starts with 2 positions per sequence
                    n_threads=self.split.lm_threads,
                    exact=exact,
                    want_logits=False,
                    n_gpu_layers=self.placement.n_gpu_layers,
                    device=self.placement.device.name,
                    n_seq_max=max_batch,
                ),
            )
        except BaseException:
            self.talker.close()
            raise
        free_after = device_memory(self.placement.device) if free_before is not None else None
        # what llama.cpp took on the device (weights, KV caches, compute buffers), as the device reports it
        self.device_memory_used: int | None = None
        if free_before is not None and free_after is not None:
            self.device_memory_used = max(0, free_before[0] - free_after[0])
        # the codec decoder runs on a worker thread beside the LMs, which yield it its cores meanwhile
        self.cores = CoreShare(self.threads, self.split.decoder_threads)
        if self.cores.overlaps:
            self.talker.threads_source = self.predictor.threads_source = self.cores.lm_threads
        self.decoder = StreamingDecoder(
            self.folder / "codec_decoder.onnx",
            threads=self.cores.decoder_threads if self.cores.overlaps else self.threads,
            provider=self.codec_provider,
        )
        self.background_decoder = BackgroundDecoder(self.cores)

    # ---- facts ------------------------------------------------------------------------------------------
    def devices_used(self) -> dict[str, object]:
        """Where each part runs (for --json, doctor and bench records)."""
        device = self.placement.device
        return {
            "lm_device": device.name,
            "lm_backend": device.backend,
            "lm_description": device.description,
            "gpu_layers": "all" if self.placement.n_gpu_layers < 0 else self.placement.n_gpu_layers,
            "lm_device_memory_used": self.device_memory_used,
            "codec_provider": provider_of(self.decoder.session),
            "lm_threads": self.split.lm_threads,
            "decoder_threads": self.cores.decoder_threads,
        }

    @property
    def quantized(self) -> bool:
        """LMs in an 8-bit or narrower type (the fast path: 8-bit heads and KV cache too)."""
        return self.manifest.quant not in ("f32", "f16")

    @property
    def _q8_kv(self) -> bool:
        """A q8_0 KV cache: for quantized models whose attention heads fill whole q8_0 blocks (32 values)."""
        talker = self.config.get("talker_config", {})
        head_dim = talker.get("head_dim") or talker.get("hidden_size", 0) // max(
            1, talker.get("num_attention_heads", 1)
        )
        return self.quantized and int(head_dim) % 32 == 0

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def size_tag(self) -> str:
        return self.manifest.size_tag

    @property
    def talker_hidden(self) -> int:
        return self.manifest.talker_hidden

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities.of(self.kind, self.size_tag)

    @property
    def speakers(self) -> list[str]:
        return list(self.prompt_config.speaker_ids)

    @property
    def languages(self) -> list[str]:
        return self.prompt_config.supported_languages

    def talker_rules(self, repetition_penalty: float) -> TalkerRules:
        return TalkerRules.from_talker_config(self.config.get("talker_config", {}), repetition_penalty)

    def sequence_batch(self) -> SequenceBatch:
        """The step-wise batch over both contexts' `max_batch` slots (what the scheduler drives)."""
        return SequenceBatch(self.talker, self.predictor, self.tables, self.prompt_config.num_code_groups)

    # ---- cloning (Base models only) ----------------------------------------------------------------------
    @cached_property
    def codec_encoder(self) -> CodecEncoder:
        path = self.folder / "codec_encoder.onnx"
        return CodecEncoder(path, threads=self.threads, provider=self.codec_provider)

    @cached_property
    def speaker_encoder(self) -> SpeakerEncoder:
        path = self.folder / "speaker_encoder.onnx"
        if not path.is_file():
            raise Qwen3TTSError(
                f"the {self.kind} model in {self.folder} has no speaker encoder, so it cannot clone voices",
                "use a Base model (e.g. --model 0.6b-base)",
            )
        return SpeakerEncoder(path, threads=self.threads, provider=self.codec_provider)

    def close(self) -> None:
        self.background_decoder.close()
        self.talker.close()
        self.predictor.close()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
