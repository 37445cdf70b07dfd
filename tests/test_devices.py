"""Device choice with simulated llama.cpp device lists and ONNX Runtime provider lists, plus the real
CPU-only build: `auto` must be exactly the CPU path (n_gpu_layers 0, the CPU thread split)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from test_cli import FAST, assert_clean_error, cli_env, run_cli
from test_cli import converted as converted  # noqa: F401  (the session fixture, shared)

from qwen3tts_cli import spec
from qwen3tts_cli.audio import Qwen3TTSWarning
from qwen3tts_cli.engine import devices, onnx_session
from qwen3tts_cli.engine.devices import Device
from qwen3tts_cli.errors import Qwen3TTSError

GiB = 1 << 30
CPU = Device("CPU", "CPU", "cpu", "Xeon", 32 * GiB, 30 * GiB)
LAVAPIPE = Device("Vulkan0", "Vulkan", "igpu", "llvmpipe (LLVM 19.1.7, 256 bits)", 32 * GiB, 30 * GiB)
RADEON = Device("Vulkan1", "Vulkan", "gpu", "AMD Radeon RX 7600", 8 * GiB, 7 * GiB)
CUDA = Device("CUDA0", "CUDA", "gpu", "NVIDIA GeForce RTX 4070", 12 * GiB, 11 * GiB)
METAL = Device("MTL0", "MTL", "gpu", "Apple M2", 16 * GiB, 12 * GiB)
BLAS = Device("BLAS", "BLAS", "accel", "OpenBLAS")


# ---- llama.cpp device choice -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("found", "auto"),
    [
        ([CPU], "CPU"),
        ([CPU, BLAS], "CPU"),  # an accelerator beside the CPU is not an offload device
        ([CPU, LAVAPIPE], "Vulkan0"),
        ([CPU, LAVAPIPE, RADEON], "Vulkan1"),  # dedicated memory before shared
        ([CPU, RADEON, CUDA], "CUDA0"),  # CUDA before Vulkan for the same card
        ([CPU, METAL], "MTL0"),
    ],
)
def test_auto_picks_the_best_offload_device_else_the_cpu(found: list[Device], auto: str) -> None:
    assert devices.choose_device("auto", found).name == auto
    assert devices.choose_device("cpu", found).name == "CPU"


def test_a_named_device_is_found_by_family_or_reported_missing() -> None:
    found = [CPU, LAVAPIPE, CUDA]
    assert devices.choose_device("vulkan", found) == LAVAPIPE
    assert devices.choose_device("CUDA", found) == CUDA
    assert devices.choose_device("metal", found) is None
    assert [d.family for d in (CPU, LAVAPIPE, CUDA, METAL, BLAS)] == ["cpu", "vulkan", "cuda", "metal", "cpu"]


def test_a_missing_device_is_one_line_naming_it_the_build_and_the_fix() -> None:
    with pytest.raises(Qwen3TTSError) as caught:
        devices.require_device("vulkan", [CPU])
    text = str(caught.value)
    assert "\n" not in text
    assert "--device vulkan" in text and "CPU (Xeon)" in text
    assert "runtime/build_llama.sh vulkan" in caught.value.hint
    with pytest.raises(Qwen3TTSError, match="unknown device 'gpu'"):
        devices.choose_device("gpu", [CPU])


@pytest.mark.parametrize(("given", "layers"), [(None, None), ("all", -1), ("ALL", -1), ("12", 12), (0, 0)])
def test_gpu_layers_parse(given: str | int | None, layers: int | None) -> None:
    assert devices.parse_gpu_layers(given) == layers


@pytest.mark.parametrize("bad", ["many", "-3", -2, "1.5"])
def test_bad_gpu_layers_are_refused(bad: str | int) -> None:
    with pytest.raises(Qwen3TTSError, match="--gpu-layers"):
        devices.parse_gpu_layers(bad)


def test_placement_offloads_all_layers_by_default_and_none_on_the_cpu() -> None:
    on_gpu = devices.place_language_models("auto", None, [CPU, LAVAPIPE])
    assert (on_gpu.device, on_gpu.n_gpu_layers, on_gpu.fully_offloaded) == (LAVAPIPE, -1, True)
    partial = devices.place_language_models("vulkan", "10", [CPU, LAVAPIPE])
    assert (partial.n_gpu_layers, partial.offloaded, partial.fully_offloaded) == (10, True, False)
    on_cpu = devices.place_language_models("auto", "all", [CPU])  # --gpu-layers means nothing without a GPU
    assert (on_cpu.device, on_cpu.n_gpu_layers, on_cpu.offloaded) == (CPU, 0, False)
    with pytest.raises(Qwen3TTSError, match="--gpu-layers needs a GPU"):
        devices.place_language_models("cpu", 4, [CPU, LAVAPIPE])


def test_this_cpu_build_lists_its_cpu_and_auto_is_the_unchanged_cpu_path() -> None:
    found = devices.llama_devices()
    assert found and any(d.kind == "cpu" for d in found)
    assert all(d.memory_total >= d.memory_free >= 0 for d in found)
    placement = devices.place_language_models("auto", None)
    if placement.offloaded:
        pytest.skip("this llama.cpp build has a GPU device")  # the CPU-only claim below is about CPU builds
    assert placement.n_gpu_layers == 0 and placement.device.kind == "cpu"


# ---- ONNX Runtime providers --------------------------------------------------------------------------------
def test_codec_provider_auto_prefers_a_gpu_provider() -> None:
    cpu_only = ["AzureExecutionProvider", "CPUExecutionProvider"]
    choose = devices.choose_codec_provider
    assert choose("auto", cpu_only) == "CPUExecutionProvider"
    assert choose("auto", ["CUDAExecutionProvider", *cpu_only]) == "CUDAExecutionProvider"
    assert choose("auto", ["DmlExecutionProvider", *cpu_only]) == "DmlExecutionProvider"
    assert choose("cpu", ["CUDAExecutionProvider", *cpu_only]) == "CPUExecutionProvider"


def test_an_absent_codec_provider_is_a_clear_error() -> None:
    with pytest.raises(Qwen3TTSError) as caught:
        devices.choose_codec_provider("cuda", ["CPUExecutionProvider"])
    assert "CUDAExecutionProvider" in caught.value.message and "CPUExecutionProvider" in caught.value.message
    assert "onnxruntime-gpu" in caught.value.hint
    with pytest.raises(Qwen3TTSError, match="unknown codec device"):
        devices.choose_codec_provider("tpu", ["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("onnx") / "relu.onnx"
    onnx.save(model, str(path))
    return path


def _run(opened: ort.InferenceSession) -> np.ndarray:
    return opened.run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0]


def test_a_provider_that_rejects_the_graph_falls_back_to_cpu_with_one_warning(
    tiny_graph: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ort.InferenceSession
    tried: list[list[str]] = []

    def session(path: str, options: object, providers: list[str]) -> ort.InferenceSession:
        tried.append(list(providers))
        if providers[0] == "CUDAExecutionProvider":
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected\nmore detail")
        return real(path, options, providers=providers)

    monkeypatch.setattr(onnx_session.ort, "InferenceSession", session)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opened = onnx_session.session(tiny_graph, 1, "codec decoder", provider="CUDAExecutionProvider")
    ours = [w for w in caught if issubclass(w.category, Qwen3TTSWarning)]
    assert len(ours) == 1
    assert "CUDAExecutionProvider cannot run the codec decoder" in str(ours[0].message)
    assert "no CUDA-capable device" in str(ours[0].message) and "more detail" not in str(ours[0].message)
    assert tried == [["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]]
    assert onnx_session.provider_of(opened) == "CPUExecutionProvider"
    assert _run(opened).tolist() == [0.0, 2.0]


def test_a_provider_onnxruntime_silently_drops_also_warns_once(tiny_graph: Path) -> None:
    # the real CPU onnxruntime accepts an unavailable provider name and runs on the CPU without it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opened = onnx_session.session(tiny_graph, 1, "speaker encoder", provider="DmlExecutionProvider")
    ours = [w for w in caught if issubclass(w.category, Qwen3TTSWarning)]
    assert len(ours) == 1 and "DmlExecutionProvider cannot run the speaker encoder" in str(ours[0].message)
    assert onnx_session.provider_of(opened) == "CPUExecutionProvider"
    assert _run(opened).tolist() == [0.0, 2.0]


def test_a_missing_graph_is_still_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Qwen3TTSError, match="does not exist"):
        onnx_session.session(tmp_path / "none.onnx", 1, "codec decoder", provider="CUDAExecutionProvider")


# ---- threads -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("total", range(1, 17))
@pytest.mark.parametrize("lm_on_gpu", [False, True])
@pytest.mark.parametrize("codec_on_gpu", [False, True])
def test_never_more_busy_threads_than_cores(total: int, lm_on_gpu: bool, codec_on_gpu: bool) -> None:
    split = devices.thread_split(total, lm_on_gpu, codec_on_gpu)
    assert split.busy_at_most <= total
    assert split.lm_threads >= 1 and split.decoder_threads >= 1


def test_the_cores_go_to_the_side_left_on_the_cpu() -> None:
    from qwen3tts_cli.engine.pipeline import CoreShare

    both_cpu = devices.thread_split(8)
    assert (both_cpu.lm_threads, both_cpu.decoder_threads) == (8, CoreShare.split(8).decoder_threads)
    lm_gpu = devices.thread_split(8, lm_on_gpu=True)
    assert (lm_gpu.lm_threads, lm_gpu.decoder_threads) == (1, 7)
    codec_gpu = devices.thread_split(8, codec_on_gpu=True)
    assert (codec_gpu.lm_threads, codec_gpu.decoder_threads) == (8, 1)
    both_gpu = devices.thread_split(8, lm_on_gpu=True, codec_on_gpu=True)
    assert (both_gpu.lm_threads, both_gpu.decoder_threads) == (1, 1)
    assert devices.thread_split(1, lm_on_gpu=True) == devices.ThreadSplit(1, 1, 1)


# ---- the model and the CLI ---------------------------------------------------------------------------------
def test_a_simulated_gpu_reaches_both_llama_models_and_the_thread_split(
    converted: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from qwen3tts_cli.model import LoadedModel

    # llama.cpp on this CPU build has no Vulkan0: it loads the layers on the CPU, so the model still runs
    monkeypatch.setattr(devices, "llama_devices", lambda: [CPU, LAVAPIPE])
    with LoadedModel(converted(spec.KIND_CUSTOM_VOICE), threads=4, exact=True) as model:
        assert model.placement == devices.LmPlacement(LAVAPIPE, -1)
        for lm in (model.talker, model.predictor):
            assert (lm.options.n_gpu_layers, lm.options.device, lm.n_threads) == (-1, "Vulkan0", 1)
        assert model.cores.decoder_threads == 3  # the cores go to the decoder
        used = model.devices_used()
        assert (used["lm_device"], used["gpu_layers"], used["codec_provider"]) == (
            "Vulkan0",
            "all",
            "CPUExecutionProvider",
        )
    with LoadedModel(converted(spec.KIND_CUSTOM_VOICE), threads=4, exact=True, gpu_layers="3") as model:
        assert model.talker.options.n_gpu_layers == 3
        assert model.talker.n_threads == 4  # part of each model stays on the CPU: the CPU split
        assert model.cores.decoder_threads == 1


def test_llama_cpp_is_given_only_the_chosen_device(
    converted: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the CPU llama.cpp gets an empty device list and no op offload: a GPU build would otherwise copy
    prompt batches to its GPU (measured on lavapipe: `--device cpu` prefill 35 s instead of 0.4 s)."""
    import ctypes

    from qwen3tts_cli.engine.llama import llama_lib
    from qwen3tts_cli.model import LoadedModel

    lib = llama_lib()
    seen: list[tuple[str, object]] = []
    load, init = lib.llama_model_load_from_file, lib.llama_init_from_model

    def spy_load(path: bytes, params: object) -> object:
        listed = ctypes.cast(params.devices, ctypes.POINTER(ctypes.c_void_p))  # type: ignore[attr-defined]
        first = None if not listed else listed[0]
        seen.append(("devices", first))
        return load(path, params) if first is None else None  # a made-up device: "load failed", no call

    def spy_init(model: object, params: object) -> object:
        seen.append(("op_offload", bool(params.op_offload)))  # type: ignore[attr-defined]
        return init(model, params)

    monkeypatch.setattr(lib, "llama_model_load_from_file", spy_load)
    monkeypatch.setattr(lib, "llama_init_from_model", spy_init)
    with LoadedModel(converted(spec.KIND_CUSTOM_VOICE), threads=1, exact=True, device="cpu"):
        pass
    # talker and predictor: a NULL-terminated list whose first entry is the terminator, no op offload
    assert seen == [("devices", None), ("op_offload", False)] * 2
    seen.clear()
    monkeypatch.setattr(devices, "llama_devices", lambda: [CPU, LAVAPIPE])
    monkeypatch.setattr(devices, "ggml_device_handle", lambda name: 0x1234 if name == "Vulkan0" else None)
    with pytest.raises(Qwen3TTSError, match="cannot load"):  # the made-up handle never reaches llama.cpp
        LoadedModel(converted(spec.KIND_CUSTOM_VOICE), threads=1, exact=True, device="vulkan")
    assert seen == [("devices", 0x1234)]  # only the device asked for


def test_the_default_on_this_build_is_the_cpu_path(converted: Callable[..., Path]) -> None:
    from qwen3tts_cli.model import LoadedModel

    if devices.place_language_models().offloaded:
        pytest.skip("this llama.cpp build has a GPU device")
    with LoadedModel(converted(spec.KIND_CUSTOM_VOICE), threads=3, exact=True) as model:
        assert (model.talker.options.n_gpu_layers, model.predictor.options.n_gpu_layers) == (0, 0)
        assert (model.talker.n_threads, model.cores.decoder_threads) == (3, 1)  # CoreShare.split(3)
        assert model.devices_used()["lm_device"] == "CPU"


def test_say_json_reports_the_devices_used(converted: Callable[..., Path], tmp_path: Path) -> None:
    model = converted(spec.KIND_CUSTOM_VOICE)
    out = tmp_path / "a.wav"
    result = run_cli(
        ["say", "Hello.", "--model-dir", model, *FAST, "--max-frames", "3", "-o", out, "--json"],
        cli_env(tmp_path),
    )
    assert result.code == 0, result.stderr
    used = json.loads(result.stdout)["devices"]
    assert used["codec_provider"] == "CPUExecutionProvider"
    assert used["lm_device"] and used["lm_backend"]
    assert used["lm_threads"] >= 1 and used["decoder_threads"] >= 1


@pytest.mark.parametrize("command", ["say", "batch", "dialogue", "clone", "serve", "bench"])
def test_every_loading_command_takes_the_device_options(command: str) -> None:
    result = run_cli([command, "--help"], cli_env(Path("/nonexistent")), timeout=60)
    assert result.code == 0, result.stderr
    for option in ("--device", "--gpu-layers", "--codec-device"):
        assert option in result.stdout.decode(), (command, option)


def test_a_missing_device_is_one_error_line_before_any_download(tmp_path: Path) -> None:
    if devices.choose_device("vulkan", devices.llama_devices()) is not None:
        pytest.skip("this llama.cpp build has a Vulkan device")
    # a catalog model that is not cached and offline: the device error must come first
    result = run_cli(["say", "Hello.", "--device", "vulkan", "-o", tmp_path / "a.wav"], cli_env(tmp_path))
    assert_clean_error(result, "--device vulkan", "has no vulkan device", "runtime/build_llama.sh vulkan")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.gguf"))


def test_misspelt_device_options_are_usage_errors(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    for args, fragment in (
        (["--device", "gpu"], "unknown --device 'gpu'"),
        (["--codec-device", "tpu"], "unknown --codec-device 'tpu'"),
        (["--gpu-layers", "lots"], "--gpu-layers"),
        (["--device", "cpu", "--gpu-layers", "4"], "--gpu-layers needs a GPU"),
    ):
        result = run_cli(["say", "Hello.", *args, "-o", tmp_path / "a.wav"], env)
        assert result.code == 2, result.stderr
        assert_clean_error(result, fragment)


def test_doctor_lists_simulated_devices_and_what_auto_picks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from qwen3tts_cli.cli import doctor

    monkeypatch.setattr(devices, "llama_devices", lambda: [CPU, LAVAPIPE])
    monkeypatch.setattr(devices, "onnx_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    facts = doctor.report()["devices"]
    assert [d["name"] for d in facts["llama_cpp"]] == ["CPU", "Vulkan0"]
    assert facts["llama_cpp"][1]["memory_total"] == 32 * GiB and facts["llama_cpp"][1]["family"] == "vulkan"
    assert facts["auto"]["lm_device"] == "Vulkan0" and facts["auto"]["gpu_layers"] == "all"
    assert facts["auto"]["codec_provider"] == "CUDAExecutionProvider"
    assert facts["auto"]["lm_threads"] == 1 and facts["auto"]["decoder_threads"] == 1  # both sides on devices
    assert [line.split(":")[0] for line in facts["missing"]] == ["cuda", "metal"]
    doctor.doctor(json_out=False)
    text = capsys.readouterr().out
    assert "Vulkan0:" in text and "llvmpipe" in text and "auto picks:" in text
    assert "language models on Vulkan0" in text


def test_a_backend_without_devices_says_so_and_how_to_show_lavapipe() -> None:
    with pytest.raises(Qwen3TTSError) as caught:
        devices.require_device("vulkan", [CPU], backends=["CPU", "Vulkan"])
    assert "has the vulkan backend but it found no device" in caught.value.message
    assert "GGML_VK_VISIBLE_DEVICES=0" in caught.value.hint


def test_this_build_registers_its_backends() -> None:
    assert "CPU" in devices.llama_backends()


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads the Linux memory map")
def test_discovery_uses_the_ggml_llama_cpp_loaded_not_a_second_copy() -> None:
    # wheels hold libggml.so / .so.0 / .so.0.x as copies: opening another one maps a second, empty registry
    devices.llama_devices()
    devices.llama_backends()
    lines = Path("/proc/self/maps").read_text().splitlines()
    mapped = {line.split()[-1] for line in lines if "libggml" in line}
    names = [Path(path).name.split(".so")[0] for path in mapped]
    assert sorted(names) == sorted(set(names)), mapped
