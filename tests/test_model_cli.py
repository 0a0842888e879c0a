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
        [sys.executable, "-m", "agent.cli", *args],
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
    assert "someproj/1: object-detection/yolov8n ready" in pulled.stderr

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
