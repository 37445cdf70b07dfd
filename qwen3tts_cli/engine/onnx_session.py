"""One way to open an ONNX Runtime session for the codec graphs: CPU threads that never spin, on the
execution provider chosen in engine/devices.py (CPU unless told otherwise). A provider that rejects a graph
costs one warning and that graph runs on the CPU; ONNX Runtime itself puts the nodes a provider does not
support on the CPU provider listed after it."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from qwen3tts_cli.errors import Qwen3TTSError


def cpu_options(threads: int) -> ort.SessionOptions:
    """`threads` intra-op threads that sleep when idle (no spinning: llama.cpp shares the cores), one
    operator at a time."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


CPU_PROVIDER = "CPUExecutionProvider"


def cpu_session(
    model_path: str | Path, threads: int, what: str, *, prepack_weights: bool = True
) -> ort.InferenceSession:
    """A CPU session whose idle threads sleep instead of spinning: llama.cpp shares the same cores.

    `prepack_weights=False` keeps one copy of the weights instead of also a repacked one: for the codec
    decoder (0.6B shapes) that is 110 MB less RSS at the same speed (measured: 478 vs 587 MB loaded).
    """
    return session(model_path, threads, what, prepack_weights=prepack_weights)


def session(
    model_path: str | Path,
    threads: int,
    what: str,
    *,
    provider: str = CPU_PROVIDER,
    prepack_weights: bool = True,
) -> ort.InferenceSession:
    """A session on `provider` (with the CPU provider behind it for unsupported nodes); when the provider
    refuses the graph, one warning and a CPU session instead of a crash."""
    path = Path(model_path)
    if not path.is_file():
        raise Qwen3TTSError(f"{what} model {path} does not exist", "convert the model again")
    options = cpu_options(threads)
    if not prepack_weights:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if provider != CPU_PROVIDER:
        try:
            opened = ort.InferenceSession(str(path), options, providers=[provider, CPU_PROVIDER])
        except Exception as exc:  # the provider refused the graph or failed to start
            first_line = (str(exc).splitlines() or [""])[0]
            _fall_back(what, provider, f"{type(exc).__name__}: {first_line}")
        else:
            if provider in opened.get_providers():
                return opened
            _fall_back(what, provider, "ONNX Runtime did not enable it")
    try:
        return ort.InferenceSession(str(path), options, providers=[CPU_PROVIDER])
    except Exception as exc:  # onnxruntime raises several unrelated exception types for a bad file
        raise Qwen3TTSError(f"cannot load {what} {path}: {exc}", "convert the model again") from exc


def _fall_back(what: str, provider: str, reason: str) -> None:
    from qwen3tts_cli.audio import warn

    warn(f"{provider} cannot run the {what} ({reason}); it runs on the CPU")


def provider_of(opened: ort.InferenceSession) -> str:
    """The provider a session runs on first (what --json reports)."""
    return opened.get_providers()[0]
