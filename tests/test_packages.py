"""The package registry end to end against the test server: choice, download, md5, cache layouts, offline."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_agent.models import clear_cache, get_model, get_model_type, list_cached_models
from edge_agent.models.artifacts.packages.layout import slug
from edge_agent.models.common.errors import (
    ApiAuthError,
    CacheIntegrityError,
    ChecksumMismatchError,
    ModelNotCachedError,
    ModelNotFoundError,
)
from tests.fixtures.model_server import ServedPackage, onnx_package, torchscript_package
from tests.onnx_factory import constant_detector

PRED = np.zeros((7, 2), np.float32)
PRED[:4, 0] = (160, 160, 64, 48)
PRED[4, 0] = 0.9
WEIGHTS = constant_detector(PRED)
CLASSES = b"door\nwindow\nwall\n"
CONFIG = {
    "network_input": {
        "training_input_size": {"height": 320, "width": 320},
        "dynamic_spatial_size_supported": False,
        "resize_mode": "letterbox",
        "padding_value": 114,
        "color_mode": "rgb",
        "scaling_factor": 255,
        "input_channels": 3,
    },
    "post_processing": {"type": "nms", "fused": False},
}
FILES = {"weights.onnx": WEIGHTS, "class_names.txt": CLASSES, "inference_config.json": json.dumps(CONFIG).encode()}
IMAGE = np.zeros((480, 640, 3), np.uint8)
MODEL = "pkgproj/1"
SLUG = slug(MODEL)


def _check(model) -> None:
    (response,) = model.infer(IMAGE)
    (pred,) = response.model_dump()["predictions"]
    assert (pred["class"], pred["x"], pred["y"], pred["width"], pred["height"]) == ("door", 320, 240, 128, 96)


def _serve(server, env, packages: list[ServedPackage] | None = None, **kwargs) -> None:
    server.add_package_model(MODEL, packages or [onnx_package("onnxpkg1", FILES)], **kwargs)
    env.set(API_BASE_URL=server.base_url)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_download_through_the_registry_writes_the_inference_models_layout(model_server, model_env, caplog):
    _serve(model_server, model_env, variant="yolov8n")
    model_server.require_api_key = "k1"
    model_env.set(ROBOFLOW_API_KEY="k1")
    with caplog.at_level(logging.INFO, logger="edge_agent.models.resolution.package_loader"):
        model = get_model(MODEL)
    _check(model)
    # /ort has no answer for it (auto), then the registry: key as Bearer only, never in a URL
    assert model_server.paths()[:2] == ["/ort/pkgproj/1", "/models/v1/external/weights"]
    weights_calls = [r for r in model_server.requests if r.path == "/models/v1/external/weights"]
    assert weights_calls[0].headers == {"Authorization": "Bearer k1"} and weights_calls[0].query == {"modelId": [MODEL]}
    file_calls = [r for r in model_server.requests if r.path.startswith("/package-files/")]
    assert len(file_calls) == 3 and all(r.headers == {} and "api_key" not in r.query for r in file_calls)
    assert "model pkgproj/1: package onnxpkg1 (onnx, fp32, dynamic batch)" in caplog.text  # the choice is logged
    root = model_env.cache_dir
    package_dir = root / "models-cache" / SLUG / "onnxpkg1"
    for name, data in FILES.items():
        link = package_dir / name
        assert link.is_symlink() and os.readlink(link) == str(root / "shared-blobs" / _md5(data))
        assert link.read_bytes() == data
    config = json.loads((package_dir / "model_config.json").read_text())
    assert config["offline_manifest_version"] == 4 and config["backend_type"] == "onnx"
    assert config["model_id"] == config["canonical_model_id"] == MODEL and config["model_architecture"] == "yolov8"
    assert [a["file_handle"] for a in config["package_artifacts"]] == sorted(FILES, key=str.casefold)
    record = json.loads((root / "offline-weights-registry" / f"{SLUG}.json").read_text())
    assert record["canonical_model_id"] == MODEL and record["model"]["model_variant"] == "yolov8n"
    assert record["packages"][0]["artifacts"][0] == {"file_handle": "weights.onnx", "md5_hash": _md5(WEIGHTS)}
    assert not (root / "pkgproj").exists()  # nothing in the legacy layout
    assert get_model_type(MODEL) == ("object-detection", "yolov8n")


def test_pages_are_merged_and_the_best_package_wins(model_server, model_env):
    fp16 = onnx_package("fp16pkg", FILES, quantization="fp16")
    script = torchscript_package("scriptpkg", {"weights.torchscript": b"x", **FILES})
    best = onnx_package("fp32pkg", FILES)
    _serve(model_server, model_env, [fp16, script, best], page_size=1)
    model_env.set(MODEL_REGISTRY="packages")
    _check(get_model(MODEL))
    pages = [r.query for r in model_server.requests if r.path == "/models/v1/external/weights"]
    assert pages == [
        {"modelId": [MODEL]},
        {"modelId": [MODEL], "startAfter": ["1"]},
        {"modelId": [MODEL], "startAfter": ["2"]},
    ]
    assert "/ort/pkgproj/1" not in model_server.paths()  # MODEL_REGISTRY=packages never asks /ort
    assert sorted(
        p.name for p in (model_env.cache_dir / "models-cache" / SLUG).iterdir() if not p.name.startswith(".")
    ) == ["fp32pkg"]


def test_a_wrong_md5_is_refused_and_nothing_of_it_is_kept(model_server, model_env):
    bad = onnx_package("badpkg", FILES)
    bad.wrong_md5 = frozenset({"weights.onnx"})
    _serve(model_server, model_env, [bad])
    with pytest.raises(
        ChecksumMismatchError, match=r"weights.onnx of pkgproj/1: md5 .* does not match the registry's .* refused"
    ):
        get_model(MODEL)
    root = model_env.cache_dir
    leftovers = [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert leftovers == [], leftovers  # no blob, no temp file, no link, no manifest
    assert not (root / "models-cache" / SLUG / "badpkg").exists()
    assert not (root / "shared-blobs" / _md5(WEIGHTS)).exists()


def test_a_cache_filled_through_the_registry_loads_offline(model_server, model_env):
    _serve(model_server, model_env)
    get_model(MODEL)
    served = len(model_server.requests)
    model_env.set(OFFLINE_MODE="true", API_BASE_URL="http://127.0.0.1:9")
    _check(get_model(MODEL))
    assert len(model_server.requests) == served
    assert get_model_type(MODEL) == ("object-detection", "yolov8")


def _hand_made(root: Path, symlinks: bool) -> Path:
    """A cache as Roboflow's inference-models leaves it: a package directory and a registry record."""
    package_dir = root / "models-cache" / SLUG / "handmade1"
    package_dir.mkdir(parents=True)
    for name, data in FILES.items():
        if symlinks:
            blob = root / "shared-blobs" / _md5(data)
            blob.parent.mkdir(exist_ok=True)
            blob.write_bytes(data)
            (package_dir / name).symlink_to(blob)
        else:
            (package_dir / name).write_bytes(data)
    record = {
        "canonical_model_id": MODEL,
        "format_version": 1,
        "source": "warmup",
        "requested_aliases": [],
        "recorded_at": "2026-12-01T08:42:25+00:00",
        "model": {"model_architecture": "yolov8", "model_variant": "yolov8n", "task_type": "object-detection"},
        "packages": [
            {
                "package_id": "handmade1",
                "backend": "onnx",
                "quantization": "fp32",
                "dynamic_batch_size_supported": True,
                "static_batch_size": None,
                "trusted_source": True,
                "onnx_package_details": {"opset": 17, "incompatible_providers": None},
                "artifacts": [{"file_handle": n, "md5_hash": _md5(d)} for n, d in FILES.items()],
            }
        ],
        "proven": {},
    }
    (root / "offline-weights-registry").mkdir()
    (root / "offline-weights-registry" / f"{SLUG}.json").write_text(json.dumps(record, indent=2))
    return package_dir


@pytest.mark.parametrize("symlinks", [False, True], ids=["plain-files", "shared-blobs"])
def test_a_hand_made_inference_models_cache_loads_offline(model_env, symlinks):
    _hand_made(model_env.cache_dir, symlinks)
    model_env.set(OFFLINE_MODE="true")
    _check(get_model(MODEL))
    assert get_model_type(MODEL) == ("object-detection", "yolov8n")
    (entry,) = [e for e in list_cached_models() if e.model_id == MODEL]
    assert entry.layout == "inference-models" and entry.complete and entry.model_type == "yolov8n"


def test_damaged_blob_offline_is_reported_and_kept_online_it_is_fetched_again(model_server, model_env):
    _serve(model_server, model_env)
    get_model(MODEL)
    blob = model_env.cache_dir / "shared-blobs" / _md5(WEIGHTS)
    blob.write_bytes(b"\x08" + b"\x00" * (len(WEIGHTS) - 1))
    model_env.set(OFFLINE_MODE="true")
    with pytest.raises(CacheIntegrityError, match=r"md5 differs.*nothing was deleted"):
        get_model(MODEL)
    assert blob.exists()
    model_env.set(OFFLINE_MODE="false")
    _check(get_model(MODEL))
    assert blob.read_bytes() == WEIGHTS


def test_registry_errors(model_server, model_env):
    _serve(model_server, model_env)
    model_env.set(MODEL_REGISTRY="packages")
    model_server.fail("/models/v1/external/weights", times=2, status=503)
    _check(get_model(MODEL))  # two transient failures, retried
    model_env.set(MODEL_REGISTRY="packages", MODEL_CACHE_DIR=model_env.cache_dir / "other")
    with pytest.raises(ModelNotFoundError):
        get_model("nosuch/1")
    model_server.require_api_key = "right"
    model_env.set(ROBOFLOW_API_KEY="wrong")
    with pytest.raises(ApiAuthError) as info:
        get_model(MODEL)
    assert "wrong" not in str(info.value)
    model_env.set(OFFLINE_MODE="true", MODEL_CACHE_DIR=model_env.cache_dir / "empty")
    with pytest.raises(ModelNotCachedError, match="neither cache layout"):
        get_model(MODEL)


def test_untrusted_packages_need_the_setting(model_server, model_env):
    untrusted = onnx_package("untrusted1", FILES, trusted=False)
    _serve(model_server, model_env, [untrusted])
    model_env.set(MODEL_REGISTRY="packages")
    with pytest.raises(Exception, match="not from a trusted source"):
        get_model(MODEL)
    model_env.set(MODEL_REGISTRY="packages", ALLOW_UNTRUSTED_PACKAGES="true")
    _check(get_model(MODEL))


def test_roboflow_host_is_separate_from_the_api_base(model_server, model_env):
    _serve(model_server, model_env)
    model_env.set(MODEL_REGISTRY="packages", API_BASE_URL="http://127.0.0.1:9", ROBOFLOW_API_HOST=model_server.base_url)
    _check(get_model(MODEL))


def test_clear_and_list_cover_both_layouts_and_keep_shared_blobs(model_server, model_env):
    _serve(model_server, model_env)
    model_server.add_package_model("twin/1", [onnx_package("twinpkg", FILES)])
    get_model(MODEL)
    get_model("twin/1")  # same files: same blobs
    legacy = model_env.cache_dir / "legacyproj" / "1"
    legacy.mkdir(parents=True)
    (legacy / "weights.onnx").write_bytes(WEIGHTS)
    (legacy / "environment.json").write_text("{}")
    (legacy / "class_names.txt").write_text("a\n")
    ids = {e.model_id: e.layout for e in list_cached_models()}
    assert ids == {MODEL: "inference-models", "twin/1": "inference-models", "legacyproj/1": "legacy"}
    assert clear_cache(MODEL)
    blob = model_env.cache_dir / "shared-blobs" / _md5(WEIGHTS)
    assert blob.exists()  # twin/1 still uses it
    assert not (model_env.cache_dir / "models-cache" / SLUG).exists()
    assert not (model_env.cache_dir / "offline-weights-registry" / f"{SLUG}.json").exists()
    assert clear_cache("twin/1") and not blob.exists()
    assert [e.model_id for e in list_cached_models()] == ["legacyproj/1"]
    assert not clear_cache(MODEL)
    shutil.rmtree(legacy)


def test_model_type_comes_from_stat_without_fetching_weights(model_server, model_env):
    _serve(model_server, model_env, variant="yolov8s")
    model_server.require_api_key = "k2"
    model_env.set(MODEL_REGISTRY="packages", ROBOFLOW_API_KEY="k2")
    assert get_model_type(MODEL) == ("object-detection", "yolov8s")
    (stat,) = model_server.requests
    assert stat.path == "/models/v1/external/stat" and stat.headers == {"Authorization": "Bearer k2"}


def test_cli_pull_list_clear_a_package_model(model_server, model_env):
    from tests.test_model_cli import _cli

    _serve(model_server, model_env)
    pulled = _cli("models", "pull", MODEL)
    assert pulled.returncode == 0, pulled.stderr
    assert f"{MODEL}: object-detection/yolov8 ready in {model_env.cache_dir / 'models-cache' / SLUG}" in pulled.stderr
    listed = _cli("models", "list")
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].split()[0] == MODEL
    assert listed.stdout.splitlines()[1].split()[-1] == "inference-models"
    row = json.loads(_cli("models", "list", "--json").stdout)
    assert (row["layout"], row["complete"], row["size_bytes"]) == (
        "inference-models",
        True,
        sum(map(len, FILES.values())),
    )
    cleared = _cli("models", "clear", MODEL)
    assert cleared.returncode == 0 and f"cleared {MODEL}" in cleared.stderr
    assert _cli("models", "list", "--json").stdout == ""
    assert [p for p in (model_env.cache_dir / "shared-blobs").iterdir() if not p.name.endswith(".lock")] == []


def test_a_link_out_of_the_cache_is_refused_offline(model_env, tmp_path):
    package_dir = _hand_made(model_env.cache_dir, symlinks=False)
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(WEIGHTS)
    (package_dir / "weights.onnx").unlink()
    (package_dir / "weights.onnx").symlink_to(outside)
    model_env.set(OFFLINE_MODE="true")
    with pytest.raises(CacheIntegrityError, match=r"weights\.onnx: points outside the cache"):
        get_model(MODEL)
    assert outside.exists() and (package_dir / "weights.onnx").is_symlink()  # nothing deleted


@pytest.mark.parametrize("offline", [True, False], ids=["offline", "online"])
def test_auto_uses_the_package_layout_beside_a_legacy_model_type_file(model_server, model_env, offline):
    """Roboflow's current stack also writes <project>/<version>/model_type.json (no weights there):
    MODEL_REGISTRY=auto must still find the packages it keeps in its own layout, with or without
    the network, and never ask /ort for a model a cache holds."""
    _hand_made(model_env.cache_dir, symlinks=True)
    legacy = model_env.cache_dir / "pkgproj" / "1"
    legacy.mkdir(parents=True)
    (legacy / "model_type.json").write_text(
        json.dumps(
            {
                "project_task_type": "object-detection",
                "model_type": "yolov8",
                "model_id": MODEL,
                "model_variant": "yolov8n",
            }
        )
    )
    model_env.set(API_BASE_URL=model_server.base_url, OFFLINE_MODE="true" if offline else "false")
    assert get_model_type(MODEL) == ("object-detection", "yolov8n")
    _check(get_model(MODEL))
    assert model_server.requests == []
