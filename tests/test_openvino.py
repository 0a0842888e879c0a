"""The OpenVINO execution provider: its place in the provider order, options, compiled-model cache.

The option and order tests run everywhere. The tests that run models need onnxruntime-openvino
(``pip install '.[openvino]'``, which replaces the onnxruntime package, see the README) and skip
without it: CI installs plain onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_agent.models.common.errors import ModelSettingsError
from edge_agent.models.common.settings import load_model_settings
from edge_agent.models.engines.providers import first_build_notice, provider_options, resolve_providers
from edge_agent.models.speed.openvino import openvino_cache_dir
from tests.agent_process import AgentProcess
from tools import synthworld as sw

OPENVINO, CUDA, CPU, TRT = (
    "OpenVINOExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
    "TensorrtExecutionProvider",
)
needs_openvino = pytest.mark.skipif(
    OPENVINO not in ort.get_available_providers(),
    reason="this onnxruntime has no OpenVINOExecutionProvider (pip install '.[openvino]'; it replaces onnxruntime, "
    "see the README)",
)


def test_openvino_sits_after_cuda_and_before_cpu() -> None:
    known = [TRT, CUDA, OPENVINO, CPU]
    assert resolve_providers(None, [OPENVINO, CPU], known, False) == [OPENVINO, CPU]
    assert resolve_providers(None, [CPU, CUDA, OPENVINO], known, False) == [CUDA, OPENVINO, CPU]
    assert resolve_providers(None, [TRT, CUDA, OPENVINO, CPU], known, True) == [TRT, CUDA, OPENVINO, CPU]
    assert resolve_providers([CPU], [OPENVINO, CPU], known, False) == [CPU]


def test_openvino_options_and_cache_under_the_model_cache(tmp_path: Path) -> None:
    settings = load_model_settings(model_cache_dir=tmp_path, openvino_device_type="gpu.1")
    options = provider_options([OPENVINO, CPU], settings, "coco/3", "", [], 1)
    cache = tmp_path / ".openvino"
    assert options[1] == CPU and options[0][0] == OPENVINO
    assert options[0][1] == {"device_type": "GPU.1", "cache_dir": str(openvino_cache_dir(settings, "coco/3"))}
    assert Path(options[0][1]["cache_dir"]).parent == cache and Path(options[0][1]["cache_dir"]).is_dir()
    assert openvino_cache_dir(settings, "coco/3@int8") != openvino_cache_dir(settings, "coco/3")

    notice = first_build_notice([OPENVINO, CPU], settings, "coco/3")
    assert notice is not None and notice[0].startswith("compiling coco/3 for OpenVINO GPU.1 (first start only")
    (openvino_cache_dir(settings, "coco/3") / "123.blob").write_bytes(b"x")
    assert first_build_notice([OPENVINO, CPU], settings, "coco/3") is None

    threads = load_model_settings(model_cache_dir=tmp_path, ort_intra_op_threads=1, openvino_cache_enabled=False)
    assert provider_options([OPENVINO], threads, "coco/3", "", [], 1) == [
        (OPENVINO, {"device_type": "CPU", "num_of_threads": "1"})
    ]
    assert first_build_notice([OPENVINO], threads, "coco/3") is None


@pytest.mark.parametrize("device", ["CPU", "gpu", "GPU.0", "NPU", "AUTO:GPU,CPU", "HETERO:GPU,CPU", "MULTI:GPU,NPU"])
def test_openvino_devices_accepted(device: str, tmp_path: Path) -> None:
    assert load_model_settings(model_cache_dir=tmp_path, openvino_device_type=device).openvino_device_type == (
        device.upper()
    )


@pytest.mark.parametrize("device", ["TPU", "AUTO:", "GPU,CPU", ""])
def test_openvino_bad_device_names_the_variable(device: str, tmp_path: Path) -> None:
    with pytest.raises(ModelSettingsError, match=r"OPENVINO_DEVICE_TYPE=.*must be an OpenVINO device such as CPU"):
        load_model_settings(model_cache_dir=tmp_path, openvino_device_type=device)


# --- with onnxruntime-openvino -------------------------------------------------------------------


def _detections(model, image: np.ndarray) -> list[tuple[int, tuple[float, ...]]]:  # type: ignore[no-untyped-def]
    p = model.predict(image)[0]
    return sorted((int(c), tuple(round(float(v), 1) for v in b)) for b, c in zip(p.boxes, p.class_ids, strict=True))


def _close(a: list, b: list, px: float) -> bool:
    if len(a) != len(b):
        return False
    pairs = zip(a, b, strict=True)
    return all(ca == cb and max(abs(x - y) for x, y in zip(ba, bb, strict=True)) <= px for (ca, ba), (cb, bb) in pairs)


@needs_openvino
def test_builtin_model_on_openvino_compiles_once_and_matches_cpu(model_env) -> None:
    from edge_agent.models import get_model

    image = sw.render_frame(np.random.default_rng(21), 1280, 720, n_objects=5)[0]
    model_env.set(ONNXRUNTIME_EXECUTION_PROVIDERS="cpu")
    on_cpu = _detections(get_model("builtin/shapes-v1@fp32"), image)
    assert len(on_cpu) >= 3

    model_env.set(ONNXRUNTIME_EXECUTION_PROVIDERS=None)  # the automatic order puts OpenVINO first
    first: list[str] = []
    model = get_model("builtin/shapes-v1@fp32", status=first.append)
    assert model.providers[0] == OPENVINO
    assert any(m.startswith("compiling builtin/shapes-v1 for OpenVINO CPU (first start only") for m in first), first
    assert any(m.startswith("OpenVINO CPU compile of builtin/shapes-v1 done in") for m in first), first
    compiled = model_env.cache_dir / ".openvino"
    assert any(p.is_file() for p in compiled.rglob("*")), "OpenVINO wrote no compiled model"
    assert _close(_detections(model, image), on_cpu, px=0.5)

    again: list[str] = []
    get_model("builtin/shapes-v1@fp32", status=again.append)
    assert not any("compil" in m for m in again), again

    int8 = get_model("builtin/shapes-v1", status=again.append)  # auto: OpenVINO runs INT8 with integer kernels
    assert int8.precision == "int8" and int8.providers[0] == OPENVINO
    assert "OpenVINOExecutionProvider runs INT8" in int8.engine.precision_reason
    assert _close(_detections(int8, image), on_cpu, px=4.0)


@needs_openvino
def test_agent_on_openvino_reports_provider_and_precision(
    tmp_path: Path,
    mosquitto,
    mqtt_subscriber_factory,  # type: ignore[no-untyped-def]
) -> None:
    clip = tmp_path / "scene.mp4"
    sw.write_clip(clip, seconds=2, width=640, height=360, seed=9, max_speed=0, n_objects=3)
    sub = mqtt_subscriber_factory(mosquitto, ["edge-agent/ov/#"], qos=1)
    env = {
        "STREAMS": f"cam={clip}",
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": "ov",
        "STATS_INTERVAL": "0.2",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "ONNXRUNTIME_EXECUTION_PROVIDERS": "openvino,cpu",
    }
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=120)
    assert rc == 0, agent.stderr()
    stats = [m.json() for m in sub.messages if m.topic.endswith("/stats")]
    assert stats, "no stats message"
    info = stats[-1]["models"]["builtin/shapes-v1"]
    assert info["precision"] == "int8" and info["providers"][0] == OPENVINO
    assert "compiling builtin/shapes-v1@int8 for OpenVINO CPU" in agent.stderr_path.read_text()
    predictions = [m.json() for m in sub.messages if m.topic.endswith("/predictions")]
    # Live pace: 60 frames in 2 s, a few may be dropped for freshness on a busy box.
    assert len(predictions) >= 45 and all(len(p["predictions"]) >= 2 for p in predictions)


def test_the_installed_onnxruntime_build_is_the_one_imported() -> None:
    from edge_agent.models.speed.openvino import installed_onnxruntime_builds

    builds = installed_onnxruntime_builds()
    assert len(builds) == 1, f"several onnxruntime builds installed: {builds} (see the README's OpenVINO section)"
    assert next(iter(builds.values())) == ort.__version__
