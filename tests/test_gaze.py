"""Gaze (L2CS-Net): the bin decoding and pre-processing by hand, then random L2CS networks
(tests/gaze_factory.py) in both of Roboflow's layouts, with a real ONNX face detector.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.models.foundation.gaze import decode_bins, face_box, face_input, gaze_vector

torch = pytest.importorskip("torch")

FACES = [(40.0, 30.0, 120.0, 130.0), (200.0, 60.0, 260.0, 140.0)]  # xyxy in a 320x240 frame


def test_bin_decoding_is_the_softmax_expectation_in_radians():
    logits = np.full((4, 90), -1e4, np.float32)
    logits[0, 45] = 0  # all mass on bin 45: 4 * 45 - 180 = 0 degrees
    logits[1, 0] = 0  # bin 0: -180 degrees
    logits[2, [10, 11]] = 0  # half on 10, half on 11: 4 * 10.5 - 180 = -138 degrees
    logits[3] = 0  # uniform: 4 * 44.5 - 180 = -2 degrees
    assert decode_bins(logits) == pytest.approx([0.0, -math.pi, math.radians(-138), math.radians(-2)], abs=1e-6)
    # softmax, not a plain weighting: logits 0 and ln 3 on bins 20 and 21 weigh 1/4 and 3/4
    two = np.full((1, 90), -1e4, np.float32)
    two[0, 20], two[0, 21] = 0.0, math.log(3)
    assert decode_bins(two)[0] == pytest.approx(math.radians(4 * 20.75 - 180), abs=1e-6)


def test_face_input_is_rgb_448_with_imagenet_normalisation():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :] = (10, 20, 30)  # BGR
    image[:, 100:] = (250, 250, 250)
    out = face_input(image, (0, 0, 100, 100))  # the left half only
    assert out.shape == (3, 448, 448) and out.dtype == np.float32
    expected = [(30 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (10 / 255 - 0.406) / 0.225]
    assert np.allclose(out.reshape(3, -1).T, expected, atol=1e-5)
    assert face_box(np.array([-5.0, 10.2, 50.5, 300.0]), 200, 100) == (0, 10, 51, 100)
    assert face_box(np.array([250.0, 10.0, 260.0, 20.0]), 200, 100) is None


def test_gaze_vector_points_where_the_angles_say():
    assert gaze_vector(0.0, 0.0, 10) == pytest.approx((0.0, 0.0))
    assert gaze_vector(math.pi / 2, 0.0, 10) == pytest.approx((-10.0, 0.0))  # yaw: sideways
    assert gaze_vector(0.0, math.pi / 2, 10) == pytest.approx((0.0, -10.0))  # pitch: up


def _face_detector(directory: Path) -> Path:
    from tests.onnx_factory import constant_detector, letterbox_env, write_model_dir

    preds = np.zeros((5, 2), np.float32)  # 320x320 input stretched to 320x240: y scaled by 4/3
    for j, (x1, y1, x2, y2) in enumerate(FACES):
        preds[:, j] = [(x1 + x2) / 2, (y1 + y2) / 2 * 4 / 3, x2 - x1, (y2 - y1) * 4 / 3, 0.9 - 0.1 * j]
    return write_model_dir(directory, constant_detector(preds), ["face"], letterbox_env(fmt="Stretch to"))


def _frame() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)


def _reference(net, image: np.ndarray, boxes) -> tuple[np.ndarray, np.ndarray]:
    """Angles computed by torch (the network and Roboflow's decoding wrapper)."""
    from tests.gaze_factory import Decoded

    batch = np.stack([face_input(image, face_box(np.array(b), image.shape[1], image.shape[0])) for b in boxes])
    with torch.no_grad():
        yaw, pitch = Decoded(net).eval()(torch.from_numpy(batch))
    return yaw.numpy(), pitch.numpy()


def test_legacy_layout_with_a_face_detector(model_server, model_env, tmp_path):
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import InvalidInputError
    from edge_agent.models.common.settings import ModelSettings
    from edge_agent.models.foundation.gaze import GazeModel
    from tests.gaze_factory import network, onnx_bytes

    net = network()
    model_server.add_core_model(
        "gaze",
        "L2CS",
        {"L2CSNet_gaze360_resnet50_90bins.onnx": onnx_bytes(net), "mediapipe_face_detector.tflite": b"x"},
    )
    model_env.set(API_BASE_URL=model_server.base_url)
    default = get_model("gaze/L2CS")
    (nobody,) = default.predict(_frame())  # the built-in Haar cascade: no face in noise
    assert len(nobody) == 0 and nobody.to_response()["predictions"] == []
    bare = GazeModel("x", default.directory / "L2CSNet_gaze360_resnet50_90bins.onnx", ModelSettings())
    with pytest.raises(InvalidInputError, match="GAZE_FACE_DETECTOR_MODEL_ID"):  # no face finder at all
        bare.predict(_frame())
    model_env.set(GAZE_FACE_DETECTOR_MODEL_ID=str(_face_detector(tmp_path / "faces")))
    model = get_model("gaze/L2CS")
    assert model.directory.name.startswith("~gaze-L2CS-")  # Roboflow's slug directory for ids with capitals
    image = _frame()
    (prediction,) = model.predict(image)
    yaw, pitch = _reference(net, image, FACES)
    assert np.allclose(prediction.boxes, FACES, atol=1e-3)
    assert np.allclose(prediction.yaw, yaw, atol=1e-4) and np.allclose(prediction.pitch, pitch, atol=1e-4)
    assert np.ptp(yaw) > 1e-3  # the two faces differ: each got its own crop
    (response,) = model.infer(image)
    body = response.model_dump()
    first = body["predictions"][0]
    assert first["face"]["class"] == "face" and first["face"]["confidence"] == pytest.approx(0.9)
    assert (first["face"]["x"], first["face"]["y"], first["face"]["width"]) == pytest.approx((80.0, 80.0, 80.0))
    assert first["yaw"] == pytest.approx(float(yaw[0]), abs=1e-4) and first["face"]["landmarks"] == []
    assert body["time_face_det"] is not None and body["time_gaze_det"] is not None  # Roboflow: always null
    assert body["time"] == pytest.approx(body["time_face_det"] + body["time_gaze_det"])
    # a plain legacy directory gaze/L2CS/ (Roboflow before 2026-06) is read offline too
    plain = model_env.cache_dir / "gaze" / "L2CS"
    plain.mkdir(parents=True)
    (plain / "L2CSNet_gaze360_resnet50_90bins.onnx").write_bytes(onnx_bytes(net))
    model_env.set(OFFLINE_MODE="true", API_BASE_URL="http://127.0.0.1:9")
    import shutil

    shutil.rmtree(model.directory)
    assert get_model("gaze/L2CS").directory == plain


def test_package_layout_raw_bins_and_the_infer_cli(model_server, model_env, tmp_path):
    from edge_agent.models import get_model
    from tests.agent_cli import run_cli
    from tests.fixtures.model_server import onnx_package
    from tests.gaze_factory import drawn_face, network, onnx_bytes

    net = network(seed=1)
    # the current stack's id and package; this graph outputs the raw bins, decoded outside it
    model_server.add_package_model(
        "l2cs-net/rn50", [onnx_package("g1", {"weights.onnx": onnx_bytes(net, raw_bins=True)})], "l2cs-net", None
    )
    model_env.set(API_BASE_URL=model_server.base_url)
    model = get_model("l2cs-net/rn50")
    image = _frame()
    (prediction,) = model.predict(image, face_detection=False)  # the whole image is the face
    yaw, pitch = _reference(net, image, [(0, 0, 320, 240)])
    assert np.allclose(prediction.yaw, yaw, atol=1e-4) and np.allclose(prediction.pitch, pitch, atol=1e-4)
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), image)
    env = {"MODEL_CACHE_DIR": str(model_env.cache_dir), "OFFLINE_MODE": "true"}
    result = run_cli("infer", "--model", "l2cs-net/rn50", "--no-face-detection", str(path), env=env)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    (face,) = body["predictions"]
    assert (face["face"]["x"], face["face"]["y"], face["face"]["width"], face["face"]["height"]) == (
        160.0,
        120.0,
        320.0,
        240.0,
    )
    assert face["face"]["confidence"] == 1.0 and body["time_face_det"] is None
    assert face["yaw"] == pytest.approx(float(yaw[0]), abs=1e-4) and face["pitch"] == pytest.approx(
        float(pitch[0]), abs=1e-4
    )
    # without --no-face-detection: the built-in cascade's faces (a drawn face here), eyes as landmarks
    drawn, eyes = drawn_face()
    cv2.imwrite(str(path), drawn)
    result = run_cli("infer", "--model", "l2cs-net/rn50", str(path), env=env)
    assert result.returncode == 0, result.stderr
    (face,) = json.loads(result.stdout)["predictions"]
    assert face["face"]["x"] == pytest.approx(160, abs=10) and face["face"]["y"] == pytest.approx(120, abs=16)
    assert [(p["x"], p["y"]) for p in face["face"]["landmarks"]] == [
        pytest.approx(tuple(e), abs=4) for e in eyes.tolist()
    ]


def test_live_view_draws_the_face_box_and_a_gaze_arrow():
    from edge_agent.models.foundation.gaze import GazeDetections
    from edge_agent.pipelines.annotate import annotate

    faces = GazeDetections(
        boxes=np.array([[100.0, 100.0, 140.0, 140.0]]),
        confidences=np.ones(1, np.float32),
        yaw=np.array([math.pi / 2], np.float32),  # looking sideways: the arrow points left by the face's width
        pitch=np.zeros(1, np.float32),
        image_size=(320, 240),
    )
    out = annotate(np.zeros((240, 320, 3), np.uint8), faces)
    red = (out[:, :, 2] > 200) & (out[:, :, 1] < 60) & (out[:, :, 0] < 60)
    ys, xs = np.nonzero(red)
    assert xs.min() <= 82 and xs.max() >= 118 and abs(np.median(ys) - 120) <= 2  # from (120,120) to (80,120)
    assert out[100, 130].any()  # the box outline


def test_landmarks_are_int_pixels_clipped_to_the_image():
    from edge_agent.models.foundation.gaze import GazeDetections

    faces = GazeDetections(
        boxes=np.array([[10.0, 10.0, 50.0, 60.0]]),
        confidences=np.array([0.8], np.float32),
        yaw=np.array([0.1], np.float32),
        pitch=np.array([-0.2], np.float32),
        image_size=(100, 80),
        landmarks=np.array([[[20.7, 30.2], [-3.0, 40.0], [120.0, 95.5]]]),
    )
    (row,) = faces.to_response()["predictions"]
    assert row["face"]["landmarks"] == [{"x": 20, "y": 30}, {"x": 0, "y": 40}, {"x": 99, "y": 79}]
    assert (row["face"]["x"], row["face"]["y"], row["face"]["width"], row["face"]["height"]) == (30, 35, 40, 50)
    assert row["yaw"] == pytest.approx(0.1) and row["pitch"] == pytest.approx(-0.2)


def test_a_non_detector_as_face_detector_and_gaze_flags_on_other_models_are_refused(model_server, model_env, tmp_path):
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelSettingsError
    from tests.agent_cli import run_cli
    from tests.gaze_factory import network, onnx_bytes

    model_server.add_core_model("gaze", "L2CS", {"L2CSNet_gaze360_resnet50_90bins.onnx": onnx_bytes(network())})
    model_env.set(API_BASE_URL=model_server.base_url, GAZE_FACE_DETECTOR_MODEL_ID="gaze/L2CS")
    with pytest.raises(ModelSettingsError, match="GAZE_FACE_DETECTOR_MODEL_ID=gaze/L2CS is a foundation model"):
        get_model("gaze/L2CS")
    from tests.onnx_factory import constant_outputs, letterbox_env, write_model_dir

    classifier = write_model_dir(  # a classification model: no boxes
        tmp_path / "cls",
        constant_outputs({"output0": np.array([0.3, 0.7], np.float32)}),
        ["a", "b"],
        letterbox_env(64, 64, "Stretch to"),
        model_type=("classification", "resnet18"),
        weights_file="best.onnx",
    )
    model_env.set(GAZE_FACE_DETECTOR_MODEL_ID=str(classifier))
    with pytest.raises(ModelSettingsError, match="is a classification model; it must give boxes"):
        get_model("gaze/L2CS")
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), np.zeros((32, 32, 3), np.uint8))
    bad = run_cli("infer", "--model", "builtin/shapes-v1", "--no-face-detection", str(path))
    assert bad.returncode == 2 and "--no-face-detection does not apply to object-detection models" in bad.stderr


def test_the_built_in_face_finder_feeds_l2cs_its_faces_and_eyes(model_server, model_env):
    """No GAZE_FACE_DETECTOR_MODEL_ID: OpenCV's frontal-face cascade finds the drawn face; its box
    is the crop L2CS reads, the eye cascade's two eyes are the landmarks (right, left), and the
    confidence is n / (n + 3) of the n windows merged."""
    from edge_agent.models import get_model
    from edge_agent.models.foundation.haar_cascade import HaarFaceFinder
    from tests.gaze_factory import drawn_face, network, onnx_bytes

    net = network(seed=2)
    model_server.add_core_model("gaze", "L2CS", {"L2CSNet_gaze360_resnet50_90bins.onnx": onnx_bytes(net)})
    model_env.set(API_BASE_URL=model_server.base_url)
    model = get_model("gaze/L2CS")
    image, eyes = drawn_face((320, 240), (140, 120), 0.9)
    faces = HaarFaceFinder().find(image)
    assert len(faces.boxes) == 1
    (prediction,) = model.predict(image)
    assert np.array_equal(prediction.boxes, faces.boxes)
    yaw, pitch = _reference(net, image, faces.boxes.tolist())
    assert np.allclose(prediction.yaw, yaw, atol=1e-4) and np.allclose(prediction.pitch, pitch, atol=1e-4)
    n = int(faces.neighbours[0])
    (row,) = prediction.to_response()["predictions"]
    assert row["face"]["confidence"] == pytest.approx(n / (n + 3))
    assert [(p["x"], p["y"]) for p in row["face"]["landmarks"]] == [(int(x), int(y)) for x, y in faces.eyes[0].tolist()]
    assert np.abs(faces.eyes[0] - eyes).max() < 4
    (none,) = model.predict(image, confidence=0.999)  # n / (n + 3) < 0.999: filtered out
    assert len(none) == 0
