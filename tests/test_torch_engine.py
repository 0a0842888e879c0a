"""The torch engine: TorchScript next to ONNX Runtime on the same network, device pre-processing, extras."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.models import get_model
from edge_agent.models.engines.torch import TorchEngine
from edge_agent.models.maths.preprocessing import HALF, IMAGENET, PLAIN, Preprocessing, preprocess_batch
from tests.fixtures.model_server import onnx_package, torchscript_package
from tests.onnx_factory import letterbox_env
from tests.torch_factory import export_both

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parent.parent


def _frames(count: int = 4) -> list[np.ndarray]:
    """Camera-like frames: flat background, shapes, blur and a little sensor noise."""
    rng = np.random.default_rng(7)
    frames = []
    for i in range(count):
        frame = np.full((480, 640, 3), 80 + 10 * i, np.uint8)
        cv2.circle(frame, (150 + 60 * i, 200), 70, (20, 200, 240), -1)
        cv2.rectangle(frame, (380, 250 - 20 * i), (560, 420), (240, 60, 30), -1)
        frame = cv2.GaussianBlur(frame, (0, 0), 1.5)
        frames.append(np.clip(frame.astype(np.int16) + rng.integers(-6, 7, frame.shape), 0, 255).astype(np.uint8))
    return frames


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One TinyDetector as a local ONNX directory and a local TorchScript directory."""
    base = tmp_path_factory.mktemp("tiny")
    onnx_path, script_path = export_both(base / "export")
    out = {}
    for kind, source, name in (("onnx", onnx_path, "weights.onnx"), ("torch", script_path, "weights.torchscript")):
        directory = base / kind
        directory.mkdir()
        shutil.copy(source, directory / name)
        (directory / "class_names.txt").write_text("a\nb\n")
        (directory / "environment.json").write_text(json.dumps(letterbox_env(160, 160, "Fit (grey edges) in")))
        out[kind] = directory
    out["export"] = base / "export"
    return out


def _match(ours, theirs) -> None:
    assert len(ours) == len(theirs) and len(ours) > 5
    a, b = np.argsort(-ours.confidences, kind="stable"), np.argsort(-theirs.confidences, kind="stable")
    assert np.abs(ours.confidences[a] - theirs.confidences[b]).max() <= 1e-3
    assert (ours.class_ids[a] == theirs.class_ids[b]).all()
    assert np.abs(ours.boxes[a] - theirs.boxes[b]).max() <= 0.5


def test_torchscript_and_onnx_exports_give_the_same_detections(model_env, exported):
    onnx_model, torch_model = get_model(str(exported["onnx"])), get_model(str(exported["torch"]))
    assert isinstance(torch_model.engine, TorchEngine) and torch_model.providers == ["torch:cpu"]
    assert onnx_model.providers == ["CPUExecutionProvider"]
    assert torch_model.engine.outputs[0].shape == (None, 6, 100)  # read from a probe forward at load
    frames = _frames()
    for ours, theirs in zip(torch_model.predict(frames), onnx_model.predict(frames), strict=True):
        _match(ours, theirs)
    # a batch of one and a batch of four give the same boxes (no batch coupling on either engine)
    _match(torch_model.predict(frames[2])[0], onnx_model.predict(frames)[2])


@pytest.mark.parametrize(
    "pre, norm",
    [
        (Preprocessing(letterbox=True, pad_value=114), PLAIN),
        (Preprocessing(), IMAGENET),
        (Preprocessing(center_crop=True), HALF),
        (Preprocessing(letterbox=True, static_crop=(10.0, 5.0, 90.0, 80.0), grayscale=True), PLAIN),
    ],
    ids=["letterbox", "stretch-imagenet", "center-crop", "crop-grayscale"],
)
def test_device_preprocessing_matches_the_numpy_path(exported, model_env, pre, norm):
    from edge_agent.models.engines.torch_preprocessing import TorchPreprocessor

    images = [_frames(1)[0], np.ascontiguousarray(_frames(2)[1][:300, :200])]
    size = (160, 128)
    expected, expected_metas = preprocess_batch(images, pre, size, norm=norm)
    got, metas = TorchPreprocessor(torch, torch.device("cpu"), pre, size, norm, torch.float32)(images)
    assert metas == expected_metas
    assert got.shape == expected.shape and got.dtype == torch.float32
    # OpenCV's integer INTER_LINEAR, reproduced: the same pixel levels, up to float rounding
    assert np.abs(got.numpy() - expected).max() <= 1e-5


def test_torchscript_package_from_the_registry_and_its_static_batch(model_server, model_env, exported):
    config = {
        "network_input": {
            "training_input_size": {"height": 160, "width": 160},
            "resize_mode": "letterbox",
            "padding_value": 114,
            "color_mode": "rgb",
            "scaling_factor": 255,
            "dynamic_spatial_size_supported": False,
        },
        "forward_pass": {"static_batch_size": 2},
    }
    common = {"class_names.txt": b"a\nb\n", "inference_config.json": json.dumps(config).encode()}
    script = torchscript_package(
        "script1",
        {"weights.torchscript": (exported["export"] / "weights.torchscript").read_bytes(), **common},
        static_batch=2,
    )
    onnx = onnx_package("onnx1", {"weights.onnx": (exported["export"] / "weights.onnx").read_bytes(), **common})
    model_server.add_package_model("tiny/1", [onnx, script])
    model_env.set(API_BASE_URL=model_server.base_url, MODEL_REGISTRY="packages", MODEL_PACKAGE_BACKENDS="torch-script")
    model = get_model("tiny/1")
    assert isinstance(model.engine, TorchEngine) and model.engine.static_batch == 2 and model.max_batch_size == 2
    reference = get_model(str(exported["onnx"]))
    frames = _frames(3)
    for ours, theirs in zip(model.predict(frames), reference.predict(frames), strict=True):  # 2 + (1 padded)
        _match(ours, theirs)


def test_torch_is_imported_only_for_torchscript_models(model_env, exported):
    code = (
        "import sys; from models import get_model; "
        f"m = get_model({str(exported['onnx'])!r}); m.predict(__import__('numpy').zeros((64, 64, 3), 'uint8')); "
        "assert 'torch' not in sys.modules, 'torch was imported'; "
        "sys.modules['torch'] = None; "  # as if the extra were not installed
        f"get_model({str(exported['torch'])!r})"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert (
        "needs the optional 'torch' package, which is not installed; install it with pip install 'edge-agent[torch]'"
        in result.stderr
    )
