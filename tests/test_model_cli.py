"""``edge-agent infer`` and ``edge-agent models pull|list|clear`` run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np

from tests.onnx_factory import constant_detector, letterbox_env, write_model_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.agent.cli", *args],
        cwd=ROOT,
        env=dict(os.environ),  # the model_env fixture's MODEL_CACHE_DIR, API_BASE_URL, ...
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_infer_prints_one_json_line_per_image(model_env, tmp_path):
    pred = np.zeros((7, 2), np.float32)
    pred[:, 0] = (160, 160, 64, 48, 0.9, 0, 0)
    pred[:, 1] = (100, 100, 20, 20, 0, 0.5, 0)
    model_dir = write_model_dir(tmp_path / "m", constant_detector(pred), ["door", "window", "wall"])
    images = []
    for i, (h, w) in enumerate([(480, 640), (320, 320)]):
        images.append(str(tmp_path / f"img{i}.jpg"))
        cv2.imwrite(images[-1], np.zeros((h, w, 3), np.uint8))
    result = _cli("infer", *images, "--model", str(model_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["image"] == {"width": 640, "height": 480}
    assert [(p["class"], p["x"], p["y"]) for p in first["predictions"]] == [("door", 320, 240), ("window", 200, 120)]
    assert second["image"] == {"width": 320, "height": 320}
    filtered = _cli("infer", images[0], "--model", str(model_dir), "--confidence", "0.6")
    assert [p["class"] for p in json.loads(filtered.stdout)["predictions"]] == ["door"]


def test_errors_are_one_line_and_permanent_ones_exit_2(model_env, tmp_path):
    result = _cli("infer", str(tmp_path / "x.jpg"), "--model", "../../etc/passwd")
    assert result.returncode == 2  # a bad id: no retry can fix it
    assert result.stderr.startswith("error: invalid model id '../../etc/passwd'")
    assert "Traceback" not in result.stderr


def test_pull_list_clear(model_server, model_env):
    big = np.zeros((7, 40000), np.float32)  # ~1.1 MB of weights: big enough for a progress bar
    big[:4, 0] = (10, 10, 4, 4)
    big[4, 0] = 0.9
    model_server.add_model(
        "someproj", "1", constant_detector(big), environment=letterbox_env(), classes=["a", "b", "c"]
    )
    model_env.set(API_BASE_URL=model_server.base_url)

    pulled = _cli("models", "pull", "someproj/1")
    assert pulled.returncode == 0, pulled.stderr
    assert "downloading someproj/1: 100%" in pulled.stderr
    where = model_env.cache_dir / "someproj" / "1"
    assert f"someproj/1: object-detection/yolov8n ready in {where}\n" in pulled.stderr  # where it is (issue 20.10)

    listed = _cli("models", "list")
    assert listed.returncode == 0
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "SIZE", "TASK", "TYPE"]
    assert row.split()[0] == "someproj/1" and row.split()[-2:] == ["object-detection", "yolov8n"]
    as_json = json.loads(_cli("models", "list", "--json").stdout)
    assert as_json["model_id"] == "someproj/1" and as_json["size_bytes"] > 1_000_000 and as_json["complete"]

    cleared = _cli("models", "clear", "my-ws/someproj/1")
    assert cleared.returncode == 0 and "cleared someproj/1" in cleared.stderr
    assert _cli("models", "list", "--json").stdout == ""
    assert model_server.count("/artifacts/someproj/1/weights.onnx") == 1

    model_env.set(OFFLINE_MODE="true")
    offline = _cli("models", "pull", "someproj/1")
    assert offline.returncode == 2 and "OFFLINE_MODE is on" in offline.stderr


def test_infer_prints_each_tasks_response(model_env, tmp_path):
    from tests.onnx_factory import constant_outputs

    image = str(tmp_path / "img.png")
    cv2.imwrite(image, np.zeros((480, 640, 3), np.uint8))
    stretch = letterbox_env(320, 320, "Stretch to")
    protos = np.full((32, 80, 80), -10.0, np.float32)
    protos[0, 15:45, 5:35] = 10.0
    seg = np.zeros((4 + 1 + 32, 1), np.float32)
    seg[:6, 0] = (80, 120, 80, 80, 0.9, 1.0)  # source 80..240 x 120..240, mask = the box
    seg_dir = write_model_dir(
        tmp_path / "seg",
        constant_outputs({"output0": seg, "output1": protos}),
        ["shape"],
        stretch,
        model_type=("instance-segmentation", "yolov8n-seg"),
    )
    pose = np.zeros((4 + 1 + 3, 1), np.float32)
    pose[:, 0] = (100, 100, 40, 40, 0.9, 90, 95, 0.8)
    pose_dir = write_model_dir(
        tmp_path / "pose",
        constant_outputs({"output0": pose}),
        ["person"],
        stretch,
        model_type=("keypoint-detection", "yolov8n-pose"),
    )
    (pose_dir / "keypoints_metadata.json").write_text(json.dumps([{"object_class_id": 0, "keypoints": {"0": "nose"}}]))
    cls_dir = write_model_dir(
        tmp_path / "cls",
        constant_outputs({"output0": np.array([0.0, 2.0], np.float32)}),
        ["cat", "dog"],
        stretch,
        model_type=("classification", "vit"),
        weights_file="best.onnx",
    )

    out = _cli("infer", image, "--model", str(seg_dir))
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)["predictions"]
    assert row["mask_format"] == "polygon"
    assert {(p["x"], p["y"]) for p in row["points"]} == {(80.5, 120.5), (80.5, 239.5), (239.5, 239.5), (239.5, 120.5)}

    out = _cli("infer", image, "--model", str(pose_dir), "--keypoint-confidence", "0.5")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)["predictions"]
    assert row["keypoints"] == [
        {"x": 180.0, "y": 142.5, "confidence": row["keypoints"][0]["confidence"], "class_id": 0, "class": "nose"}
    ]
    assert abs(row["keypoints"][0]["confidence"] - 0.8) < 1e-6

    out = _cli("infer", image, "--model", str(cls_dir))
    assert out.returncode == 0, out.stderr
    response = json.loads(out.stdout)
    assert response["top"] == "dog" and response["confidence"] == round(float(np.exp(2) / (1 + np.exp(2))), 4)
    assert [p["class"] for p in response["predictions"]] == ["dog"]  # cat 0.119 < 0.4

    wrong = _cli("infer", image, "--model", str(cls_dir), "--iou-threshold", "0.5")
    assert wrong.returncode == 2  # a bad option: no retry helps
    assert wrong.stderr.strip() == "error: --iou-threshold does not apply to classification models"
