"""`qwen3tts doctor`: what this machine runs with, in one screen (or JSON for bug reports).

Every probe is independent and reports its own failure, so a broken llama.cpp build still shows the
versions, paths and models (that is when people run doctor).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

from qwen3tts_cli import __version__, catalog
from qwen3tts_cli.cli.common import JsonOption, print_json

# Distributions whose versions matter for bug reports (pip names).
PACKAGES = (
    "llama-cpp-python",
    "onnxruntime",
    "onnx",
    "numpy",
    "tokenizers",
    "gguf",
    "soundfile",
    "soxr",
    "huggingface-hub",
    "typer",
    "platformdirs",
    "filelock",
    "sounddevice",
)


def _probe(function: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return function()
    except Exception as exc:  # a doctor reports problems instead of failing on them
        return {"error": f"{type(exc).__name__}: {exc}"}


def _versions() -> dict[str, Any]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    try:
        import soundfile

        found["libsndfile"] = soundfile.__libsndfile_version__
    except (ImportError, OSError):
        found["libsndfile"] = None
    return found


def parse_system_info(info: str) -> dict[str, str]:
    """'CPU : SSE3 = 1 | AVX2 = 1 | ...' -> {'SSE3': '1', 'AVX2': '1', ...} (llama_print_system_info)."""
    features: dict[str, str] = {}
    for part in info.replace("\n", "|").split("|"):
        if "=" not in part:
            continue
        key, value = part.rsplit("=", 1)
        key = key.split(":")[-1].strip()
        if key:
            features[key] = value.strip()
    return features


def _llama() -> dict[str, Any]:
    from qwen3tts_cli.engine.llama import llama_lib

    lib = llama_lib()
    raw = lib.llama_print_system_info()
    info = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return {
        "version": getattr(lib, "__version__", None),
        "system_info": info.strip(),
        "features": parse_system_info(info),
        "gpu_offload": bool(lib.llama_supports_gpu_offload()),
    }


def _onnxruntime() -> dict[str, Any]:
    import onnxruntime

    return {"version": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}


def _devices() -> dict[str, Any]:
    """llama.cpp's devices, ONNX Runtime's providers, and what --device/--codec-device auto pick."""
    from qwen3tts_cli.engine import devices
    from qwen3tts_cli.engine.llama import free_cores

    found = devices.llama_devices()
    placement = devices.place_language_models("auto", None, found)
    providers = devices.onnx_providers()
    codec = devices.choose_codec_provider("auto", providers)
    split = devices.thread_split(free_cores(), placement.fully_offloaded, codec != "CPUExecutionProvider")
    return {
        "llama_cpp": [d.as_dict() for d in found],
        "onnx_providers": providers,
        "auto": {
            "lm_device": placement.device.name,
            "lm_backend": placement.device.backend,
            "gpu_layers": "all" if placement.n_gpu_layers < 0 else placement.n_gpu_layers,
            "codec_provider": codec,
            "lm_threads": split.lm_threads,
            "decoder_threads": split.decoder_threads,
        },
        "missing": [
            f'{name}: pip install "$(runtime/build_llama.sh {name})"'
            for name in devices.LM_DEVICES
            if devices.choose_device(name, found) is None
        ],
    }


def _threads() -> dict[str, Any]:
    from qwen3tts_cli.engine.llama import free_cores, usable_cores

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "free_cores": free_cores(),
        "default_threads": free_cores(),
        "load_average": load,
    }


def _paths() -> dict[str, Any]:
    from qwen3tts_cli import hub, hub_repos
    from qwen3tts_cli.voices import default_voices_dir

    return {
        "cache": str(hub.cache_root()),
        "hf_cache": str(hub.hf_cache_dir()),
        "voices": str(default_voices_dir()),
        "offline": hub.offline_mode(),
        "hf_endpoint": hub_repos.endpoint_url(),
    }


def _models() -> dict[str, Any]:
    from qwen3tts_cli import hub

    cached = hub.list_models()
    return {
        "converted": [
            {
                "name": m.name,
                "quant": m.quant,
                "path": str(m.path),
                "size_bytes": m.size_bytes,
                "complete": m.complete,
            }
            for m in cached
        ],
        "catalog": {
            name: sorted(m.quant for m in cached if m.name == name and m.complete) for name in catalog.names()
        },
    }


def _playback() -> dict[str, Any]:
    try:
        import sounddevice

        device = sounddevice.query_devices(kind="output")
        return {"available": True, "device": device.get("name") if isinstance(device, dict) else str(device)}
    except ImportError:
        return {"available": False, "detail": "sounddevice is not installed (pip install sounddevice)"}
    except Exception as exc:  # PortAudio missing or no device
        return {"available": False, "detail": f"{type(exc).__name__}: {exc}"}


def report() -> dict[str, Any]:
    return {
        "qwen3tts": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "executable": sys.executable,
        "versions": _probe(_versions),
        "llama_cpp": _probe(_llama),
        "onnxruntime": _probe(_onnxruntime),
        "devices": _probe(_devices),
        "threads": _probe(_threads),
        "paths": _probe(_paths),
        "models": _probe(_models),
        "playback": _probe(_playback),
    }


def _print_text(facts: dict[str, Any]) -> None:
    print(f"qwen3tts {facts['qwen3tts']}  python {facts['python']}  {facts['platform']}")
    for section in ("versions", "onnxruntime", "threads", "paths", "playback"):
        print(f"\n{section}:")
        for key, value in facts[section].items():
            print(f"  {key + ':':18} {value}")
    llama = facts["llama_cpp"]
    print("\nllama.cpp:")
    if "error" in llama:
        print(f"  error: {llama['error']}")
    else:
        enabled = [name for name, value in llama["features"].items() if value not in ("0", "")]
        print(f"  {'version:':18} {llama['version']}")
        print(f"  {'features:':18} {' '.join(enabled)}")
        print(f"  {'gpu offload:':18} {llama['gpu_offload']}")
    _print_devices(facts["devices"])
    print("\nmodels:")
    models = facts["models"]
    if "error" in models:
        print(f"  error: {models['error']}")
        return
    for name, quants in models["catalog"].items():
        print(f"  {name + ':':18} {', '.join(quants) or '-'}")
    for m in models["converted"]:
        if m["name"].startswith("local/"):
            print(f"  {m['name']} ({m['quant']}): {m['path']}")


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB" if size else "-"


def _print_devices(found: dict[str, Any]) -> None:
    print("\ndevices:")
    if "error" in found:
        print(f"  error: {found['error']}")
        return
    for d in found["llama_cpp"]:
        memory = f"{_gib(d['memory_free'])} free of {_gib(d['memory_total'])}"
        print(f"  {d['name'] + ':':18} {d['backend']} {d['kind']}, {d['description'] or '-'}, {memory}")
    print(f"  {'onnx providers:':18} {', '.join(found['onnx_providers'])}")
    auto = found["auto"]
    print(
        f"  {'auto picks:':18} language models on {auto['lm_device']} ({auto['gpu_layers']} GPU layers), "
        f"codec on {auto['codec_provider']}; threads {auto['lm_threads']} LM, "
        f"{auto['decoder_threads']} decoder"
    )
    for line in found["missing"]:
        print(f"  {'not in this build:':18} {line}")


def doctor(json_out: JsonOption = False) -> None:
    """Versions, llama.cpp backend and CPU features, devices and providers, threads, paths and models."""
    facts = report()
    if json_out:
        print_json(facts)
    else:
        _print_text(facts)
