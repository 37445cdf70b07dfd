"""Which device runs what: llama.cpp's devices for the language models, ONNX Runtime's providers for the
codec graphs, and how the CPU cores are split between them.

llama-cpp-python 0.3.36 binds `llama_supports_gpu_offload` but not ggml's device list, so the list is read
through ctypes from the ggml library llama.cpp already loaded (`ggml_backend_dev_count/get/name/
description/memory/type`, `ggml_backend_reg_name`). Everything that decides is a pure function of a device
list (`choose_device`, `gpu_layers_for`, `choose_codec_provider`, `thread_split`), so tests inject
simulated lists; `llama_devices()` and `onnx_providers()` are the only probes.
"""

from __future__ import annotations

import ctypes
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qwen3tts_cli.errors import Qwen3TTSError

# --device values -> the ggml backend (registry) names that provide them
LM_DEVICES: dict[str, tuple[str, ...]] = {
    "cuda": ("CUDA", "ROCm", "MUSA"),
    "vulkan": ("Vulkan",),
    "metal": ("MTL", "Metal"),
}
DEVICE_CHOICES = ("auto", "cpu", *LM_DEVICES)
# ggml_backend_dev_type
_KINDS = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}
_OFFLOAD_KINDS = ("gpu", "igpu")
# auto prefers dedicated memory, then the fastest API for it
_AUTO_ORDER = ("cuda", "metal", "vulkan")

# --codec-device values -> ONNX Runtime execution providers
CODEC_PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
CODEC_DEVICE_CHOICES = ("auto", *CODEC_PROVIDERS)
_CODEC_PACKAGES = {
    "cuda": "onnxruntime-gpu",
    "dml": "onnxruntime-directml",
    "coreml": "onnxruntime (the macOS build)",
}


@dataclass(frozen=True)
class Device:
    """One ggml backend device. `memory_*` in bytes (0 when the backend does not say)."""

    name: str  # e.g. "Vulkan0", "CUDA0", "MTL0", "CPU"
    backend: str  # the ggml backend registry: "Vulkan", "CUDA", "MTL", "CPU", "BLAS"
    kind: str  # cpu | gpu | igpu | accel
    description: str = ""
    memory_total: int = 0
    memory_free: int = 0

    @property
    def family(self) -> str:
        """The --device value this device answers to: cpu, cuda, vulkan, metal (or the backend, lowered)."""
        if self.kind not in _OFFLOAD_KINDS:
            return "cpu"
        for family, backends in LM_DEVICES.items():
            if self.backend in backends:
                return family
        return self.backend.lower()

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "family": self.family}


CPU_DEVICE = Device(name="CPU", backend="CPU", kind="cpu", description="the CPU")


# ---- llama.cpp: discovery --------------------------------------------------------------------------------
def _ggml_libraries() -> list[ctypes.CDLL]:
    """The ggml libraries next to libllama (already loaded by llama_cpp, so dlopen returns the same copy)."""
    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    found = []
    for stem in ("ggml", "ggml-base"):
        for file_name in (f"lib{stem}.so", f"lib{stem}.dylib", f"{stem}.dll"):
            if (lib_dir / file_name).is_file():
                found.append(ctypes.CDLL(str(lib_dir / file_name)))
                break
    return found


def _symbol(libraries: list[ctypes.CDLL], name: str, restype: Any, argtypes: list[Any]) -> Any:
    for library in libraries:
        function = getattr(library, name, None)
        if function is not None:
            function.restype = restype
            function.argtypes = argtypes
            return function
    raise AttributeError(name)


def _read_ggml_devices() -> list[Device]:
    from qwen3tts_cli.engine.llama import llama_lib

    llama_lib()  # the backend is initialised (and, in dynamic-backend builds, loaded) first
    libs = _ggml_libraries()
    ptr, size = ctypes.c_void_p, ctypes.c_size_t
    count = _symbol(libs, "ggml_backend_dev_count", size, [])
    get = _symbol(libs, "ggml_backend_dev_get", ptr, [size])
    name = _symbol(libs, "ggml_backend_dev_name", ctypes.c_char_p, [ptr])
    description = _symbol(libs, "ggml_backend_dev_description", ctypes.c_char_p, [ptr])
    memory = _symbol(libs, "ggml_backend_dev_memory", None, [ptr, ctypes.POINTER(size), ctypes.POINTER(size)])
    kind = _symbol(libs, "ggml_backend_dev_type", ctypes.c_int, [ptr])
    registry = _symbol(libs, "ggml_backend_dev_backend_reg", ptr, [ptr])
    registry_name = _symbol(libs, "ggml_backend_reg_name", ctypes.c_char_p, [ptr])
    devices = []
    for index in range(int(count())):
        dev = get(index)
        free, total = size(0), size(0)
        memory(dev, ctypes.byref(free), ctypes.byref(total))
        devices.append(
            Device(
                name=(name(dev) or b"").decode("utf-8", "replace"),
                backend=(registry_name(registry(dev)) or b"").decode("utf-8", "replace"),
                kind=_KINDS.get(int(kind(dev)), "unknown"),
                description=(description(dev) or b"").decode("utf-8", "replace"),
                memory_total=int(total.value),
                memory_free=int(free.value),
            )
        )
    return devices


def llama_devices() -> list[Device]:
    """The devices the installed llama.cpp build has (CPU included). When ggml's device list cannot be
    read, `llama_supports_gpu_offload()` decides between [CPU] and an unnamed GPU entry."""
    try:
        devices = _read_ggml_devices()
    except (AttributeError, OSError):
        from qwen3tts_cli.engine.llama import llama_lib

        if not llama_lib().llama_supports_gpu_offload():
            return [CPU_DEVICE]
        devices = [CPU_DEVICE, Device(name="GPU", backend="GPU", kind="gpu", description="unnamed")]
    return devices or [CPU_DEVICE]


def llama_backends() -> list[str]:
    """The ggml backends the build registered ("CPU", "Vulkan", ...), devices or not; [] when unreadable."""
    try:
        libs = _ggml_libraries()
        count = _symbol(libs, "ggml_backend_reg_count", ctypes.c_size_t, [])
        get = _symbol(libs, "ggml_backend_reg_get", ctypes.c_void_p, [ctypes.c_size_t])
        name = _symbol(libs, "ggml_backend_reg_name", ctypes.c_char_p, [ctypes.c_void_p])
        return [(name(get(i)) or b"").decode("utf-8", "replace") for i in range(int(count()))]
    except (AttributeError, OSError):
        return []


def describe_devices(devices: list[Device]) -> str:
    """'CPU, Vulkan0 (llvmpipe)': what a build has, for error messages."""
    return ", ".join(f"{d.name} ({d.description})" if d.description else d.name for d in devices)


# ---- llama.cpp: choice -----------------------------------------------------------------------------------
def choose_device(requested: str, devices: list[Device]) -> Device | None:
    """The device for the language models; None when `requested` is not in `devices`.

    auto: the first offload device by CUDA > Metal > Vulkan, then any other GPU, else the CPU."""
    requested = requested.lower()
    if requested not in DEVICE_CHOICES:
        raise Qwen3TTSError(f"unknown device {requested!r}", f"use one of: {', '.join(DEVICE_CHOICES)}")
    gpus = [d for d in devices if d.kind in _OFFLOAD_KINDS]
    if requested == "cpu":
        return next((d for d in devices if d.kind == "cpu"), CPU_DEVICE)
    if requested == "auto":
        for family in _AUTO_ORDER:
            for kind in _OFFLOAD_KINDS:  # dedicated memory before shared
                match = next((d for d in gpus if d.family == family and d.kind == kind), None)
                if match is not None:
                    return match
        return gpus[0] if gpus else next((d for d in devices if d.kind == "cpu"), CPU_DEVICE)
    return next((d for d in gpus if d.family == requested), None)


def require_device(requested: str, devices: list[Device], backends: list[str] | None = None) -> Device:
    """`choose_device`, or the one-line error naming the device, what the wheel has and how to get it.

    `backends` (the registered ggml backends) tells a build without the backend from a build whose backend
    found no device: llama.cpp's Vulkan backend hides CPU-type devices (lavapipe) unless they are named."""
    device = choose_device(requested, devices)
    if device is None and backends and set(backends) & set(LM_DEVICES.get(requested.lower(), ())):
        hint = "check the driver (vulkaninfo / nvidia-smi)"
        if requested.lower() == "vulkan":
            hint = "for a software Vulkan device such as lavapipe set GGML_VK_VISIBLE_DEVICES=0; " + hint
        raise Qwen3TTSError(
            f"--device {requested}: the installed llama.cpp build has the {requested} backend but it found "
            f"no device (it has: {describe_devices(devices)})",
            hint,
        )
    if device is None:
        raise Qwen3TTSError(
            f"--device {requested}: the installed llama.cpp build has no {requested} device "
            f"(it has: {describe_devices(devices)})",
            f'build and install the {requested} wheel: pip install "$(runtime/build_llama.sh {requested})"',
        )
    return device


def parse_gpu_layers(value: str | int | None) -> int | None:
    """--gpu-layers N|all -> N, -1 for all, None for the default (all on a GPU)."""
    if value is None or isinstance(value, int):
        if isinstance(value, int) and value < -1:
            raise Qwen3TTSError(f"--gpu-layers must be >= 0 or 'all' (got {value})", "e.g. --gpu-layers all")
        return value
    text = value.strip().lower()
    if text == "all":
        return -1
    try:
        layers = int(text)
    except ValueError:
        raise Qwen3TTSError(f"--gpu-layers {value!r} is not a number", "use a layer count or 'all'") from None
    return parse_gpu_layers(layers)


def gpu_layers_for(device: Device, gpu_layers: int | None) -> int:
    """llama.cpp's n_gpu_layers: 0 on the CPU (exactly today's CPU path), else the count (-1 = all)."""
    if device.kind not in _OFFLOAD_KINDS:
        return 0
    return -1 if gpu_layers is None else gpu_layers


@dataclass(frozen=True)
class LmPlacement:
    """Where the language models run: the device and llama.cpp's n_gpu_layers (-1 = all)."""

    device: Device
    n_gpu_layers: int

    @property
    def offloaded(self) -> bool:
        return self.n_gpu_layers != 0 and self.device.kind in _OFFLOAD_KINDS

    @property
    def fully_offloaded(self) -> bool:
        return self.offloaded and self.n_gpu_layers < 0


def place_language_models(
    requested: str = "auto", gpu_layers: int | str | None = None, devices: list[Device] | None = None
) -> LmPlacement:
    """Resolve --device/--gpu-layers against the installed build (or `devices`, for tests)."""
    layers = parse_gpu_layers(gpu_layers)
    found = llama_devices() if devices is None else devices
    device = require_device(requested, found, llama_backends() if devices is None else None)
    if requested.lower() == "cpu" and layers not in (None, 0):
        raise Qwen3TTSError("--gpu-layers needs a GPU device", "drop --gpu-layers or pick --device")
    return LmPlacement(device, gpu_layers_for(device, layers))


def ggml_device_handle(name: str) -> int | None:
    """The ggml_backend_dev_t of the device called `name` (for llama_model_params.devices)."""
    try:
        by_name = _symbol(_ggml_libraries(), "ggml_backend_dev_by_name", ctypes.c_void_p, [ctypes.c_char_p])
    except (AttributeError, OSError):
        return None
    return by_name(name.encode()) or None


def device_memory(device: Device) -> tuple[int, int] | None:
    """(free, total) bytes of `device` now, read from llama.cpp; None when it cannot be read."""
    try:
        for current in _read_ggml_devices():
            if current.name == device.name:
                return current.memory_free, current.memory_total
    except (AttributeError, OSError):
        pass
    return None


# ---- ONNX Runtime ----------------------------------------------------------------------------------------
def onnx_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def _auto_codec_order() -> tuple[str, ...]:
    # CoreML converts only part of the graph and is worth it on Apple hardware only
    return ("cuda", "dml", "coreml") if platform.system() == "Darwin" else ("cuda", "dml")


def choose_codec_provider(requested: str, providers: list[str]) -> str:
    """--codec-device -> the ONNX Runtime provider name; an absent provider is a clear error."""
    requested = requested.lower()
    if requested not in CODEC_DEVICE_CHOICES:
        raise Qwen3TTSError(
            f"unknown codec device {requested!r}", f"use one of: {', '.join(CODEC_DEVICE_CHOICES)}"
        )
    if requested == "auto":
        for name in _auto_codec_order():
            if CODEC_PROVIDERS[name] in providers:
                return CODEC_PROVIDERS[name]
        return CODEC_PROVIDERS["cpu"]
    provider = CODEC_PROVIDERS[requested]
    if requested != "cpu" and provider not in providers:
        raise Qwen3TTSError(
            f"--codec-device {requested}: the installed onnxruntime has no {provider} "
            f"(it has: {', '.join(providers) or 'none'})",
            f"install {_CODEC_PACKAGES[requested]} in place of onnxruntime",
        )
    return provider


# ---- threads ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThreadSplit:
    """Threads per side. `lm_threads`: llama.cpp's n_threads; `decoder_threads`: the codec decoder's while
    llama.cpp runs beside it (llama.cpp then drops to `total - decoder_threads`, at most lm_threads)."""

    total: int
    lm_threads: int
    decoder_threads: int

    @property
    def busy_at_most(self) -> int:
        """Busy threads while both sides run: never more than the cores."""
        if self.total <= 1:
            return 1
        return min(self.lm_threads, self.total - self.decoder_threads) + self.decoder_threads


def thread_split(total: int, lm_on_gpu: bool = False, codec_on_gpu: bool = False) -> ThreadSplit:
    """CPU both sides: a third of the cores for the decoder (the measured split, `CoreShare.split`).
    LMs fully on a GPU: llama.cpp needs one host thread to drive it, the decoder gets the other cores.
    Codec on a GPU: its session needs one host thread, llama.cpp keeps the rest."""
    total = max(1, total)
    if total == 1:
        return ThreadSplit(1, 1, 1)
    if lm_on_gpu:
        return ThreadSplit(total, 1, 1 if codec_on_gpu else total - 1)
    if codec_on_gpu:
        return ThreadSplit(total, total, 1)
    return ThreadSplit(total, total, max(1, total // 3))
