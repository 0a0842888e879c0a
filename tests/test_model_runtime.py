"""Registry table, execution providers, session settings, ModelManager LRU and model settings."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from edge_agent.models import MODEL_REGISTRY, ModelManager, get_model
from edge_agent.models.common.errors import (
    ExecutionProviderError,
    ModelNotFoundError,
    ModelSettingsError,
    UnsupportedModelTypeError,
)
from edge_agent.models.common.settings import ModelSettings, describe_settings, load_model_settings, parse_provider_list
from edge_agent.models.engines.providers import CPU, CUDA, TENSORRT, provider_options, resolve_providers
from edge_agent.models.identity.ids import BUILTIN_ROOT
from edge_agent.models.resolution.registry import get_family
from tests.onnx_factory import constant_detector, write_model_dir

PRED = np.zeros((7, 1), np.float32)
PRED[:4, 0] = (10, 10, 4, 4)
PRED[4, 0] = 0.9
ALL = [TENSORRT, CUDA, "OpenVINOExecutionProvider", "CoreMLExecutionProvider", "DmlExecutionProvider", CPU]


def _local(tmp_path: Path, name: str) -> str:
    return str(write_model_dir(tmp_path / name, constant_detector(PRED), ["a", "b", "c"]))


# --- registry ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["yolov8", "yolov8n", "yolov8x", "yolov11", "yolov11m", "yolo11", "yolo11n"])
def test_yolov8_layout_types_map_to_the_detector(model_type):
    assert MODEL_REGISTRY[("object-detection", model_type)].name == "yolov8"


def test_unsupported_type_lists_what_is_supported():
    with pytest.raises(
        UnsupportedModelTypeError, match=r"task 'depth-estimation' and type 'yolov8n'.*Supported: object-detection"
    ):
        get_family("depth-estimation", "yolov8n")


# --- execution providers -------------------------------------------------------------------------


def test_automatic_order_follows_priority_and_availability():
    assert resolve_providers(None, [CPU, CUDA, TENSORRT], ALL, tensorrt_enabled=False) == [CUDA, CPU]
    assert resolve_providers(None, [CPU, CUDA, TENSORRT], ALL, tensorrt_enabled=True) == [TENSORRT, CUDA, CPU]
    assert resolve_providers(None, ["AzureExecutionProvider", CPU], ALL, False) == [CPU]
    assert resolve_providers(None, [CPU, "CoreMLExecutionProvider"], ALL, False) == ["CoreMLExecutionProvider", CPU]


def test_override_keeps_order_and_skips_known_but_missing(caplog):
    requested = parse_provider_list("cuda, cpu")
    assert requested == [CUDA, CPU]
    with caplog.at_level(logging.WARNING):
        assert resolve_providers(requested, [CPU], ALL, False) == [CPU]
    assert "CUDAExecutionProvider" in caplog.text and "not available" in caplog.text
    assert resolve_providers([CPU, CUDA], [CUDA, CPU], ALL, False) == [CPU, CUDA]


def test_unknown_provider_lists_available():
    with pytest.raises(
        ExecutionProviderError, match=r"unknown provider\(s\) FooExecutionProvider.*offers .*CPUExecutionProvider"
    ):
        resolve_providers(["FooExecutionProvider", CPU], [CPU], ALL, False)
    with pytest.raises(ExecutionProviderError, match="none of the providers"):
        resolve_providers([CUDA], [CPU], ALL, False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CPUExecutionProvider", [CPU]),
        ('["CUDAExecutionProvider", "CPUExecutionProvider"]', [CUDA, CPU]),
        ("[TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider]", [TENSORRT, CUDA, CPU]),
        ("trt,cpu", [TENSORRT, CPU]),
    ],
)
def test_provider_list_syntaxes(text, expected):
    assert parse_provider_list(text) == expected


def test_providers_from_env_reach_the_session(model_env, tmp_path, caplog):
    model_env.set(ONNXRUNTIME_EXECUTION_PROVIDERS='["cpu"]', ORT_INTRA_OP_THREADS="1", ORT_INTER_OP_THREADS="1")
    with caplog.at_level(logging.INFO, logger="edge_agent.models.engines.providers"):
        model = get_model(_local(tmp_path, "m"))
    assert model.providers == [CPU]
    assert model.engine.session.get_session_options().intra_op_num_threads == 1
    assert model.engine.session.get_session_options().inter_op_num_threads == 1
    logged = [r for r in caplog.records if "execution providers" in r.getMessage()]
    assert len(logged) == 1 and "CPUExecutionProvider" in logged[0].getMessage()
    model_env.set(ONNXRUNTIME_EXECUTION_PROVIDERS="NoSuchExecutionProvider")
    with pytest.raises(ExecutionProviderError, match="offers"):
        get_model(_local(tmp_path, "m2"))


def test_the_run_plan_reaches_the_session_and_the_model(model_env, tmp_path):
    from edge_agent.models.speed.concurrency import usable_cores

    cores = usable_cores()
    model_env.set(ONNXRUNTIME_EXECUTION_PROVIDERS="cpu", MODEL_CONCURRENCY="2")
    model = get_model(_local(tmp_path, "m"))
    assert model.concurrency == 2
    assert model.engine.session.get_session_options().intra_op_num_threads == max(1, cores // 2)
    assert "MODEL_CONCURRENCY=2" in model.engine.concurrency_reason
    model_env.set(ONNXRUNTIME_EXECUTION_PROVIDERS="cpu", MODEL_CONCURRENCY="1")
    model = get_model(_local(tmp_path, "m1"))
    assert model.concurrency == 1
    assert model.engine.session.get_session_options().intra_op_num_threads == 0  # onnxruntime's own default


def test_tensorrt_options_cache_engines_under_the_model_cache(model_env):
    settings = model_env.set(TENSORRT_FP16="false")
    specs = provider_options([TENSORRT, CUDA, CPU], settings, "someproj/1", "images", ["batch", 3, 640, 640], 8)
    (name, options), cuda, cpu = specs
    assert (name, cuda, cpu) == (TENSORRT, CUDA, CPU)
    assert options["trt_engine_cache_enable"] is True
    assert options["trt_fp16_enable"] is False
    engines = Path(options["trt_engine_cache_path"])
    assert engines.is_dir() and engines.is_relative_to(model_env.cache_dir / ".tensorrt")
    assert options["trt_profile_max_shapes"] == "images:8x3x640x640"
    assert options["trt_profile_min_shapes"] == "images:1x3x640x640"


# --- model manager -------------------------------------------------------------------------------


def test_manager_keeps_the_most_recently_used(model_env, tmp_path):
    a, b, c = (_local(tmp_path, n) for n in "abc")
    manager = ModelManager(max_active=2)
    model_a = manager.get(a)
    assert manager.get(a) is model_a
    manager.get(b)
    manager.get(a)  # a is now the most recent
    manager.get(c)  # evicts b
    assert manager.model_ids() == [str(Path(a).resolve()), str(Path(c).resolve())]
    assert b not in manager and a in manager and len(manager) == 2
    assert manager.get(a) is model_a
    assert manager.remove(a) and a not in manager


def test_manager_default_size_and_concurrent_loads(model_env, tmp_path):
    model_env.set(MAX_ACTIVE_MODELS="3")
    manager = ModelManager()
    assert manager.max_active == 3
    path = _local(tmp_path, "shared")
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(manager.get(path))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 4 and all(m is got[0] for m in got)


def test_manager_shares_alias_and_canonical_entries(model_env):
    directory = model_env.cache_dir / "coco" / "3"
    write_model_dir(directory, constant_detector(PRED), ["a", "b", "c"])
    model_env.set(OFFLINE_MODE="true")
    manager = ModelManager(max_active=1)
    assert manager.get("yolov8n-640") is manager.get("coco/3")
    assert manager.model_ids() == ["coco/3"]


# --- built-in models -----------------------------------------------------------------------------


def test_unknown_builtin_lists_available(model_env):
    with pytest.raises(ModelNotFoundError, match="no built-in model builtin/nope"):
        get_model("builtin/nope")


@pytest.mark.skipif(not (BUILTIN_ROOT / "shapes-v1" / "weights.onnx").is_file(), reason="shapes-v1 not built yet")
def test_builtin_shapes_loads_without_network(model_env):
    model_env.set(OFFLINE_MODE="true")
    model = get_model("builtin/shapes-v1")
    assert model.class_names == ("circle", "square", "triangle")
    assert model.task_type == "object-detection"
    (response,) = model.infer(np.zeros((360, 640, 3), np.uint8))
    assert response.model_dump()["image"] == {"width": 640, "height": 360}


# --- settings ------------------------------------------------------------------------------------


def test_every_setting_is_described():
    rows = describe_settings()
    assert all(description for _, _, description in rows)
    names = {name for name, _, _ in rows}
    for expected in (
        "MODEL_CACHE_DIR",
        "API_BASE_URL",
        "ROBOFLOW_API_KEY",
        "OFFLINE_MODE",
        "ONNXRUNTIME_EXECUTION_PROVIDERS",
        "TENSORRT_ENABLED",
        "CONFIDENCE",
        "MAX_ACTIVE_MODELS",
        "CORE_MODEL_CLIP_ENABLED",
        "LMM_ENABLED",
        "MODEL_DOWNLOAD_TIMEOUT",
    ):
        assert expected in names


def test_settings_defaults_and_aliases(monkeypatch):
    for name in ("MODEL_CACHE_DIR", "ROBOFLOW_API_KEY", "API_KEY", "CONFIDENCE", "IOU_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/home/edge")
    settings = ModelSettings()
    assert settings.model_cache_dir == Path("/home/edge/.cache/edge-agent/models")
    assert (settings.confidence, settings.iou_threshold, settings.max_detections, settings.max_candidates) == (
        0.4,
        0.3,
        300,
        3000,
    )
    assert (settings.max_active_models, settings.tensorrt_enabled, settings.api_base_url) == (
        8,
        False,
        "https://api.roboflow.com",
    )
    monkeypatch.setenv("API_KEY", "k1")
    assert ModelSettings().api_key == "k1"
    monkeypatch.setenv("ROBOFLOW_API_KEY", "k2")
    assert ModelSettings().api_key == "k2"
    assert "k2" not in repr(ModelSettings())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONFIDENCE": "1.5"}, "CONFIDENCE='1.5': must be a number between 0 and 1"),
        ({"OFFLINE_MODE": "maybe"}, "OFFLINE_MODE='maybe'.*accepted: true/false"),
        ({"API_BASE_URL": "api.roboflow.com"}, "must start with http:// or https://"),
        ({"ONNXRUNTIME_EXECUTION_PROVIDERS": "[]"}, "no provider named"),
        ({"MAX_ACTIVE_MODELS": "0"}, "MAX_ACTIVE_MODELS='0'"),
    ],
)
def test_bad_settings_name_the_variable(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ModelSettingsError, match=message):
        load_model_settings()


def test_installed_settings_win_until_reload(model_env):
    from edge_agent.models.common.settings import get_model_settings, reload_model_settings, set_model_settings

    custom = load_model_settings(confidence=0.9, model_cache_dir=model_env.cache_dir)
    set_model_settings(custom)
    assert get_model_settings() is custom
    assert reload_model_settings().confidence == 0.4
