"""Artifact download and cache against a real HTTP server on 127.0.0.1 (tests/fixtures/model_server.py)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.models import clear_cache, get_model, get_model_type, list_cached_models
from edge_agent.models.artifacts.cache import class_map_names, model_lock
from edge_agent.models.common.errors import (
    ApiAuthError,
    CacheIntegrityError,
    CacheWriteError,
    ModelDownloadError,
    ModelNotCachedError,
    ModelNotFoundError,
    UnsupportedModelTypeError,
)
from edge_agent.models.identity.ids import parse_model_id
from tests.onnx_factory import constant_detector, letterbox_env, write_model_dir

PRED = np.zeros((7, 2), np.float32)
PRED[:4, 0] = (160, 160, 64, 48)
PRED[4, 0] = 0.9
WEIGHTS = constant_detector(PRED)
# Roboflow's API serves PREPROCESSING as a JSON string; keep it that way end to end.
ENVIRONMENT = {"PREPROCESSING": json.dumps(letterbox_env(320, 320, "Fit (black edges) in")["PREPROCESSING"])}
IMAGE = np.zeros((480, 640, 3), np.uint8)
WEIGHTS_PATH = "/artifacts/someproj/1/weights.onnx"


def _serve(server, env, project="someproj", version="1", weights=WEIGHTS, **kwargs):
    server.add_model(project, version, weights, environment=ENVIRONMENT, classes=["door", "window", "wall"], **kwargs)
    env.set(API_BASE_URL=server.base_url)


def _check_model(model):
    (response,) = model.infer(IMAGE)
    (pred,) = response.model_dump()["predictions"]
    assert (pred["class"], pred["x"], pred["y"], pred["width"], pred["height"]) == ("door", 320, 240, 128, 96)


# --- download and reuse --------------------------------------------------------------------------


def test_download_layout_and_reuse(model_server, model_env):
    _serve(model_server, model_env, colors={"door": "#FF0000"})
    model_env.set(DEVICE_ID="edge-7")
    seen, statuses = [], []
    model = get_model("someproj/1", progress=lambda done, total: seen.append((done, total)), status=statuses.append)
    assert statuses == ["downloading someproj/1", "loading someproj/1"]
    _check_model(model)
    directory = model_env.cache_dir / "someproj" / "1"
    assert sorted(p.name for p in directory.iterdir()) == [
        ".edge-agent.json",
        "class_names.txt",
        "environment.json",
        "model_type.json",
        "weights.onnx",
    ]
    assert (directory / "weights.onnx").read_bytes() == WEIGHTS
    assert seen and seen[-1] == (len(WEIGHTS), len(WEIGHTS))
    assert json.loads((directory / "model_type.json").read_text()) == {
        "project_task_type": "object-detection",
        "model_type": "yolov8n",
        "model_id": "someproj/1",
    }
    # one API call (type + artifacts share it), one environment, one weights download
    assert model_server.paths() == ["/ort/someproj/1", "/artifacts/someproj/1/environment.json", WEIGHTS_PATH]
    query = model_server.requests[0].query
    assert query == {"nocache": ["true"], "device": ["edge-7"], "dynamic": ["true"]}  # no api_key when absent
    # a second load, and a load through the workspace form of the id, reuse the cache
    _check_model(get_model("someproj/1"))
    _check_model(get_model("my-workspace/someproj/1"))
    assert model_server.count() == 3


def test_cache_is_readable_by_roboflow_inference(model_server, model_env):
    """What Roboflow Inference's loader reads (json.loads(PREPROCESSING), class lines, type keys)."""
    _serve(model_server, model_env, colors={"door": "#FF0000", "window": "#00FF00"})
    get_model("someproj/1")
    directory = model_env.cache_dir / "someproj" / "1"
    environment = json.loads((directory / "environment.json").read_text())
    assert json.loads(environment["PREPROCESSING"])["resize"]["format"] == "Fit (black edges) in"
    assert json.loads(environment["COLORS"]) == {"door": "#FF0000", "window": "#00FF00"}
    lines = [line.strip() for line in (directory / "class_names.txt").read_text().splitlines()]
    assert lines == ["door", "window", "wall"]
    metadata = json.loads((directory / "model_type.json").read_text())
    assert (metadata["project_task_type"], metadata["model_type"]) == ("object-detection", "yolov8n")


def test_roboflow_written_cache_loads_offline(model_env):
    """A directory as Roboflow Inference writes it: no manifest, PREPROCESSING and COLORS as strings,
    model_type.json with only its two keys."""
    directory = model_env.cache_dir / "someproj" / "1"
    directory.mkdir(parents=True)
    (directory / "weights.onnx").write_bytes(WEIGHTS)
    (directory / "environment.json").write_text(
        json.dumps({**ENVIRONMENT, "COLORS": json.dumps({"door": "#FF0000"}), "CLASS_MAP": {"0": "door"}}, indent=4)
    )
    (directory / "class_names.txt").write_text("door\nwindow\nwall\n")
    (directory / "model_type.json").write_text(
        json.dumps({"project_task_type": "object-detection", "model_type": "yolov8n"})
    )
    model_env.set(OFFLINE_MODE="true")
    _check_model(get_model("someproj/1"))
    assert get_model_type("someproj/1") == ("object-detection", "yolov8n")
    (entry,) = list_cached_models()
    assert (entry.model_id, entry.task_type, entry.model_type, entry.complete) == (
        "someproj/1",
        "object-detection",
        "yolov8n",
        True,
    )


# --- API answers ---------------------------------------------------------------------------------


def test_api_key_required(model_server, model_env):
    _serve(model_server, model_env)
    model_server.require_api_key = "s3cret-key"
    with pytest.raises(ApiAuthError, match=r"needs a Roboflow API key.*ROBOFLOW_API_KEY"):
        get_model("someproj/1")
    with pytest.raises(ApiAuthError, match="refused the API key") as info:
        get_model("someproj/1", api_key="wrong-key")
    assert "wrong-key" not in str(info.value)
    model_env.set(API_KEY="s3cret-key")  # Roboflow Inference's name for it works too
    _check_model(get_model("someproj/1"))
    assert model_server.requests[-3].query["api_key"] == ["s3cret-key"]
    assert model_server.count(WEIGHTS_PATH) == 1


def test_unknown_model_404(model_server, model_env):
    _serve(model_server, model_env)
    with pytest.raises(ModelNotFoundError, match="does not know otherproj/3"):
        get_model("otherproj/3")
    assert not (model_env.cache_dir / "otherproj" / "3" / "weights.onnx").exists()


def test_server_errors_then_success(model_server, model_env):
    _serve(model_server, model_env)
    model_server.fail("/ort/", times=2, status=500)
    model_server.fail(WEIGHTS_PATH, times=1, status=503, retry_after="0")
    model_server.fail("/artifacts/someproj/1/environment.json", times=1, status=429)
    _check_model(get_model("someproj/1"))
    assert model_server.count("/ort/") == 3
    assert model_server.count(WEIGHTS_PATH) == 2


def test_retries_exhausted_is_a_clear_error(model_server, model_env):
    _serve(model_server, model_env)
    model_server.fail("/ort/", times=10, status=502)
    with pytest.raises(ModelDownloadError, match="failed after 3 attempts: HTTP 502"):
        get_model("someproj/1")
    assert model_server.count("/ort/") == 3  # MODEL_DOWNLOAD_RETRIES=2 in the model_env fixture


@pytest.mark.parametrize("fault", ["truncate", "wrong_length", "corrupt"])
def test_bad_weights_transfer_is_retried(model_server, model_env, fault):
    _serve(model_server, model_env)
    getattr(model_server, fault)(WEIGHTS_PATH)
    _check_model(get_model("someproj/1"))
    assert model_server.count(WEIGHTS_PATH) == 2
    assert (model_env.cache_dir / "someproj" / "1" / "weights.onnx").read_bytes() == WEIGHTS
    assert not [p for p in (model_env.cache_dir / "someproj" / "1").iterdir() if p.name.endswith(".tmp")]


def test_stalled_server_times_out(model_server, model_env):
    _serve(model_server, model_env)
    model_env.set(MODEL_DOWNLOAD_TIMEOUT="0.5", MODEL_DOWNLOAD_RETRIES="1")
    model_server.stall("/ort/", times=5, mode="hang")
    start = time.monotonic()
    with pytest.raises(ModelDownloadError, match=r"no answer|stopped sending"):
        get_model("someproj/1")
    assert time.monotonic() - start < 5


def test_trickling_server_is_abandoned_and_retried(model_server, model_env):
    _serve(model_server, model_env)
    model_env.set(MODEL_DOWNLOAD_TIMEOUT="0.5")
    model_server.stall(WEIGHTS_PATH, mode="slow", delay_s=0.1)  # 10 bytes/s, never a 0.5 s silence
    model_server.stall("/ort/", mode="slow", delay_s=0.05)
    start = time.monotonic()
    _check_model(get_model("someproj/1"))
    assert time.monotonic() - start < 5
    assert model_server.count(WEIGHTS_PATH) == 2 and model_server.count("/ort/") == 2


def test_missing_model_type_uses_task_default_and_unsupported_is_clear(model_server, model_env):
    # No modelType: Roboflow's per-task default applies (yolov5v2s for detection).
    _serve(model_server, model_env, model_type=None)
    assert get_model_type("someproj/1") == ("object-detection", "yolov5v2s")
    _serve(model_server, model_env, project="seg", task_type="instance-segmentation", model_type=None)
    with pytest.raises(UnsupportedModelTypeError, match=r"type 'yolact'.*Supported: .*object-detection: yolov5"):
        get_model("seg/1")
    assert model_server.count("/artifacts/seg/1/") == 0  # nothing downloaded for a model we cannot run
    _serve(model_server, model_env, project="sem", task_type="semantic-segmentation", model_type="deeplabv3plus")
    with pytest.raises(
        UnsupportedModelTypeError, match="sem/1 is a model of task 'semantic-segmentation' and type 'deeplabv3plus'"
    ):
        get_model("sem/1")


# --- model_type.json -----------------------------------------------------------------------------


def test_model_type_is_asked_once_and_remembered(model_server, model_env):
    _serve(model_server, model_env)
    assert get_model_type("someproj/1") == ("object-detection", "yolov8n")
    assert get_model_type("someproj/1") == ("object-detection", "yolov8n")
    assert model_server.count("/ort/") == 1
    saved = json.loads((model_env.cache_dir / "someproj" / "1" / "model_type.json").read_text())
    assert saved["model_id"] == "someproj/1"


def test_model_type_json_in_cache_wins_over_api(model_server, model_env):
    model_env.set(API_BASE_URL=model_server.base_url)
    directory = model_env.cache_dir / "coco" / "3"
    directory.mkdir(parents=True)
    (directory / "model_type.json").write_text('{"project_task_type": "object-detection", "model_type": "yolov8n"}')
    assert get_model_type("yolov8n-640") == ("object-detection", "yolov8n")  # alias -> coco/3 -> cache
    assert model_server.count() == 0


def test_local_directory_types(model_env, tmp_path):
    typed = write_model_dir(tmp_path / "typed", WEIGHTS, ["a", "b", "c"], model_type=("object-detection", "yolov11s"))
    untyped = write_model_dir(tmp_path / "untyped", WEIGHTS, ["a", "b", "c"], model_type=None)
    assert get_model_type(str(typed)) == ("object-detection", "yolov11s")
    assert get_model_type("file://" + str(untyped)) == ("object-detection", "yolov8")
    assert get_model(str(untyped)).model_type == "yolov8"


# --- offline -------------------------------------------------------------------------------------


def test_offline_uses_cache_and_never_touches_network(model_server, model_env):
    _serve(model_server, model_env)
    get_model("someproj/1")
    before = model_server.count()
    model_env.set(OFFLINE_MODE="true")
    _check_model(get_model("someproj/1"))
    with pytest.raises(ModelNotCachedError, match=r"OFFLINE_MODE is on and otherproj/2 is not in the model cache"):
        get_model("otherproj/2")
    with pytest.raises(ModelNotCachedError):
        get_model_type("otherproj/2")
    assert model_server.count() == before


def test_offline_incomplete_cache_is_named(model_env):
    directory = model_env.cache_dir / "someproj" / "1"
    directory.mkdir(parents=True)
    (directory / "model_type.json").write_text('{"project_task_type": "object-detection", "model_type": "yolov8n"}')
    (directory / "weights.onnx").write_bytes(WEIGHTS)
    model_env.set(OFFLINE_MODE="true")
    with pytest.raises(ModelNotCachedError, match=r"incomplete.*environment.json"):
        get_model("someproj/1")


# --- damaged cache -------------------------------------------------------------------------------


def _cached_weights(env) -> Path:
    return env.cache_dir / "someproj" / "1" / "weights.onnx"


def test_truncated_cached_weights_are_fetched_again(model_server, model_env):
    _serve(model_server, model_env)
    get_model("someproj/1")
    path = _cached_weights(model_env)
    path.write_bytes(WEIGHTS[: len(WEIGHTS) // 2])  # size no longer matches the manifest
    _check_model(get_model("someproj/1"))
    assert path.read_bytes() == WEIGHTS
    assert model_server.count(WEIGHTS_PATH) == 2


@pytest.mark.parametrize("garbage", [b"\x08\x07" + b"\xff" * 200, b"<html>not onnx</html>"])
def test_unloadable_weights_without_manifest_are_fetched_again(model_server, model_env, garbage):
    _serve(model_server, model_env)
    get_model("someproj/1")
    (model_env.cache_dir / "someproj" / "1" / ".edge-agent.json").unlink()  # as if Roboflow wrote it
    _cached_weights(model_env).write_bytes(garbage)
    _check_model(get_model("someproj/1"))
    assert _cached_weights(model_env).read_bytes() == WEIGHTS
    assert model_server.count(WEIGHTS_PATH) == 2


def test_damaged_cache_is_never_deleted_offline_or_when_network_is_down(model_server, model_env):
    _serve(model_server, model_env)
    get_model("someproj/1")
    damaged = WEIGHTS[:100]
    _cached_weights(model_env).write_bytes(damaged)
    model_env.set(OFFLINE_MODE="true")
    with pytest.raises(CacheIntegrityError, match=r"OFFLINE_MODE is on.*nothing was deleted"):
        get_model("someproj/1")
    model_env.set(OFFLINE_MODE="false", API_BASE_URL="http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(CacheIntegrityError, match=r"fetching it again failed.*Nothing was deleted"):
        get_model("someproj/1")
    assert _cached_weights(model_env).read_bytes() == damaged
    assert (model_env.cache_dir / "someproj" / "1" / "environment.json").exists()


def test_server_with_broken_weights_gives_up_after_one_refetch(model_server, model_env):
    _serve(model_server, model_env, weights=b"\x08\x07" + b"\x00\xff" * 100)
    with pytest.raises(CacheIntegrityError, match="do not load even after fetching them again"):
        get_model("someproj/1")
    assert model_server.count(WEIGHTS_PATH) == 2


# --- locking, clearing, concurrency ---------------------------------------------------------------


def test_clear_cache_and_download_again(model_server, model_env):
    _serve(model_server, model_env)
    model = get_model("someproj/1")
    assert model.clear_cache() is True
    assert not (model_env.cache_dir / "someproj" / "1").exists()
    assert clear_cache("someproj/1") is False
    _check_model(get_model("someproj/1"))
    assert model_server.count(WEIGHTS_PATH) == 2
    assert not [p for p in model_env.cache_dir.iterdir() if p.name.startswith(".trash")]


def test_clear_waits_for_the_same_lock_as_download(model_server, model_env):
    _serve(model_server, model_env)
    get_model("someproj/1")
    done = threading.Event()
    with model_lock(parse_model_id("someproj/1")):
        # another id's lock is independent (Roboflow shares one lock per version number)
        with model_lock(parse_model_id("otherproj/1")):
            pass
        worker = threading.Thread(target=lambda: (clear_cache("someproj/1"), done.set()))
        worker.start()
        assert not done.wait(0.3)
        assert _cached_weights(model_env).exists()
    assert done.wait(5)
    worker.join(5)
    assert not _cached_weights(model_env).exists()


def _load_in_child(model_id: str, results) -> None:
    try:
        model = get_model(model_id)
        (response,) = model.infer(IMAGE)
        results.put(("ok", len(response.predictions)))
    except Exception as exc:
        results.put(("error", repr(exc)))


def test_two_processes_download_once(model_server, model_env):
    _serve(model_server, model_env)
    model_server.gate("/ort/", parties=2)  # both processes are past get_model_type before either downloads
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    children = [ctx.Process(target=_load_in_child, args=("someproj/1", results)) for _ in range(2)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(10)
    assert outcomes == [("ok", 1), ("ok", 1)]
    assert model_server.count("/ort/") == 2
    assert model_server.count(WEIGHTS_PATH) == 1
    assert model_server.count("/artifacts/someproj/1/environment.json") == 1
    assert hashlib.md5(_cached_weights(model_env).read_bytes()).hexdigest() == hashlib.md5(WEIGHTS).hexdigest()


def test_retry_after_header_parsing():
    from edge_agent.models.artifacts.api import parse_retry_after

    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("86400") == 60.0  # honoured within reason
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_unwritable_cache_is_a_clear_error(model_server, model_env, tmp_path):
    _serve(model_server, model_env)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    model_env.set(MODEL_CACHE_DIR=blocker / "cache")
    with pytest.raises(CacheWriteError, match="MODEL_CACHE_DIR to a writable directory"):
        get_model("someproj/1")


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"CLASS_MAP": {"1": "car", "0": "person", "10": "bus"}}, ["person", "car", "bus"]),  # numeric order
        ({"CLASS_MAP": '{"0": "door", "1": "gate"}'}, ["door", "gate"]),  # a JSON string, as Roboflow writes it
        ({"CLASS_MAP": "{not json"}, None),
        ({"CLASS_MAP": {"a": "door"}}, None),
        ({"CLASS_MAP": ["door"]}, None),
        ({}, None),
    ],
)
def test_class_names_from_class_map(environment: dict, expected: list[str] | None) -> None:
    assert class_map_names(environment) == expected
