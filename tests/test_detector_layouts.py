"""Every object-detection layout Roboflow serves, on ONNX models whose outputs we set by hand.

Each model is built with onnx.helper and returns constant tensors, so the expected detections are
computed here from the numbers put in: the source image is 640x480, the model input 320x320 and the
resize a stretch (x / 0.5, y / (2/3)) unless a test says otherwise. Boxes must match within 0.5 px and
confidences within 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.models import get_model
from edge_agent.models.common.errors import ModelLayoutError
from edge_agent.models.maths.preprocessing import IMAGENET, letterbox_geometry, preprocess_batch
from edge_agent.models.maths.preprocessing import Preprocessing as Pre
from tests.onnx_factory import constant_detector, constant_outputs, letterbox_env, write_model_dir

IMAGE = np.zeros((480, 640, 3), np.uint8)
STRETCH = letterbox_env(320, 320, "Stretch to")
SX, SY = 640 / 320, 480 / 320  # input pixels -> source pixels under the stretch


def _load(tmp_path: Path, onnx_bytes: bytes, classes: list[str], model_type: str, **kwargs):  # type: ignore[no-untyped-def]
    directory = write_model_dir(
        tmp_path / model_type, onnx_bytes, classes, STRETCH, model_type=("object-detection", model_type), **kwargs
    )
    return get_model(str(directory))


def _source_box(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    return [x1 * SX, y1 * SY, x2 * SX, y2 * SY]


def _check(detections, boxes: list[list[float]], confidences: list[float], classes: list[int]) -> None:  # type: ignore[no-untyped-def]
    assert detections.class_ids.tolist() == classes
    np.testing.assert_allclose(detections.confidences, confidences, atol=1e-4)
    np.testing.assert_allclose(detections.boxes, np.array(boxes).reshape(-1, 4), atol=0.5)


# --- YOLOv5: (B, N, 5 + C), threshold on objectness, reported confidence = best class score ---------


def test_yolov5_thresholds_on_objectness_and_reports_class_score(model_env, tmp_path):
    rows = np.array(
        [
            # cx, cy, w, h, objectness, class scores (a, b)
            [100, 100, 40, 40, 0.90, 0.20, 0.70],  # kept: class b at 0.70
            [102, 100, 40, 40, 0.80, 0.10, 0.60],  # same class, IoU 0.90 with the first: suppressed
            [250, 250, 20, 20, 0.30, 0.95, 0.00],  # objectness 0.30 <= 0.4: dropped despite 0.95
            [200, 60, 30, 20, 0.50, 0.45, 0.10],  # kept: class a at 0.45
            [0, 0, 0, 0, 0.0, 0.0, 0.0],
        ],
        np.float32,
    )
    model = _load(
        tmp_path, constant_outputs({"output0": rows}), ["a", "b"], "yolov5v6s", weights_file="yolov5s_weights.onnx"
    )
    (det,) = model.predict(IMAGE)
    _check(det, [_source_box(80, 80, 120, 120), _source_box(185, 50, 215, 70)], [0.70, 0.45], [1, 0])
    # The same model in the weights.onnx name of a hand-made local directory loads too.
    plain = write_model_dir(
        tmp_path / "plain",
        constant_outputs({"output0": rows}),
        ["a", "b"],
        STRETCH,
        model_type=("object-detection", "yolov5"),
    )
    (again,) = get_model(str(plain)).predict(IMAGE)
    _check(again, det.boxes.tolist(), det.confidences.tolist(), det.class_ids.tolist())


# --- YOLOv8/v9/v11/v12: (B, 4 + C, N) -------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["yolov8s", "yolov9", "yolov11n", "yolov12x"])
def test_yolov8_family_layout(model_env, tmp_path, model_type):
    pred = np.zeros((6, 3), np.float32)
    pred[:, 0] = (160, 160, 64, 48, 0.10, 0.85)  # class b
    pred[:, 1] = (163, 160, 64, 48, 0.80, 0.10)  # class a: other class, not suppressed by b
    pred[:, 2] = (165, 160, 64, 48, 0.75, 0.00)  # class a, IoU 0.86 with the 0.80 box: suppressed
    model = _load(tmp_path, constant_detector(pred), ["a", "b"], model_type)
    (det,) = model.predict(IMAGE)
    _check(det, [_source_box(128, 136, 192, 184), _source_box(131, 136, 195, 184)], [0.85, 0.80], [1, 0])
    (agnostic,) = model.predict(IMAGE, class_agnostic_nms=True)
    _check(agnostic, [_source_box(128, 136, 192, 184)], [0.85], [1])


# --- YOLOv10 / YOLO26: (B, 300, 6), end to end, no NMS --------------------------------------------


@pytest.mark.parametrize("model_type", ["yolov10n", "yolo26s"])
def test_end_to_end_layout_is_not_nms_ed(model_env, tmp_path, model_type):
    out = np.zeros((300, 6), np.float32)
    out[0] = (100, 100, 140, 140, 0.90, 1)
    out[1] = (101, 100, 141, 140, 0.85, 1)  # a near copy of row 0: an end-to-end model meant both
    out[2] = (10, 20, 30, 40, 0.40, 0)  # exactly at the threshold: kept (>=, as the current stack)
    out[3] = (10, 20, 30, 40, 0.39, 0)  # below: dropped
    out[4] = (50, 50, 60, 60, 0.95, 7)  # class 7 of 2: dropped
    model = _load(tmp_path, constant_outputs({"output0": out}), ["a", "b"], model_type)
    (det,) = model.predict(IMAGE, confidence=0.4)
    boxes = [_source_box(100, 100, 140, 140), _source_box(101, 100, 141, 140), _source_box(10, 20, 30, 40)]
    _check(det, boxes, [0.90, 0.85, 0.40], [1, 1, 0])
    (capped,) = model.predict(IMAGE, confidence=0.4, max_detections=1)
    assert capped.confidences.tolist() == pytest.approx([0.90])


# --- YOLO-NAS: boxes (B, N, 4) xyxy + scores (B, N, C) --------------------------------------------


def test_yolo_nas_layout(model_env, tmp_path):
    boxes = np.array([[10, 10, 50, 50], [12, 10, 52, 50], [100, 100, 120, 140], [0, 0, 5, 5]], np.float32)
    scores = np.array([[0.9, 0.0], [0.7, 0.0], [0.1, 0.6], [0.2, 0.3]], np.float32)
    model = _load(tmp_path, constant_outputs({"boxes": boxes, "scores": scores}), ["a", "b"], "yolo_nas_s")
    (det,) = model.predict(IMAGE)
    # Box 1 overlaps box 0 (IoU 0.90, same class): suppressed. Box 3's best is 0.3 <= 0.4: dropped.
    _check(det, [_source_box(10, 10, 50, 50), _source_box(100, 100, 120, 140)], [0.9, 0.6], [0, 1])


# --- RF-DETR: normalised cxcywh queries + logits, sigmoid, top-k, background class ------------------


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


@pytest.mark.parametrize("model_type", ["rfdetr-base", "rfdetr-nano", "rfdetr-2xlarge", "rfdetr-nas"])
def test_rfdetr_layout_with_background_class(model_env, tmp_path, model_type):
    boxes = np.array(
        [[0.5, 0.5, 0.25, 0.5], [0.25, 0.25, 0.1, 0.1], [0.75, 0.75, 0.2, 0.2], [0.1, 0.9, 0.1, 0.1]], np.float32
    )
    logits = np.full((4, 3), -6.0, np.float32)
    logits[0, 2] = 2.0  # "dog" (label 2, after removing the background: 1) at sigmoid(2) = 0.8808
    logits[1, 1] = 0.0  # "cat" at 0.5
    logits[2, 0] = 4.0  # the background class: dropped however confident
    logits[3, 1] = -0.5  # 0.3775 <= 0.4: dropped
    classes = ["background_class83422", "cat", "dog"]
    model = _load(tmp_path, constant_outputs({"dets": boxes, "labels": logits}), classes, model_type)
    assert model.class_names == ("cat", "dog")
    (det,) = model.predict(IMAGE)
    # (0.5, 0.5, 0.25, 0.5) of 320x320 -> (120, 80, 200, 240) input px; (0.25, 0.25, 0.1, 0.1) -> (64, 64, 96, 96)
    _check(det, [_source_box(120, 80, 200, 240), _source_box(64, 64, 96, 96)], [_sigmoid(2.0), 0.5], [1, 0])
    response = det.to_response()
    assert [p["class"] for p in response["predictions"]] == ["dog", "cat"]
    # No NMS: two identical queries are both reported.
    twin = _load(
        tmp_path / "twin", constant_outputs({"dets": boxes[[0, 0]], "labels": logits[[0, 0]]}), classes, model_type
    )
    assert len(twin.predict(IMAGE)[0]) == 2


def test_rfdetr_input_is_imagenet_normalised_after_resize():
    image = np.zeros((2, 4, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 128, 250  # BGR
    tensor, _ = preprocess_batch([image], Pre(), (4, 2), norm=IMAGENET)
    r, g, b = 250 / 255, 128 / 255, 10 / 255
    expected = [(r - 0.485) / 0.229, (g - 0.456) / 0.224, (b - 0.406) / 0.225]
    np.testing.assert_allclose(tensor[0, :, 0, 0], expected, atol=1e-5)
    np.testing.assert_allclose(tensor[0, :, 1, 3], expected, atol=1e-5)


def test_letterboxed_rfdetr_boxes_come_back_through_the_pads(model_env, tmp_path):
    boxes = np.array([[0.5, 0.5, 0.5, 0.25]], np.float32)
    logits = np.array([[3.0]], np.float32)
    directory = write_model_dir(
        tmp_path / "lb",
        constant_outputs({"dets": boxes, "labels": logits}),
        ["thing"],
        letterbox_env(320, 320, "Fit (black edges) in"),
        model_type=("object-detection", "rfdetr-small"),
    )
    (det,) = get_model(str(directory)).predict(IMAGE)
    new_w, new_h, left, top = letterbox_geometry(640, 480, 320, 320)
    assert (new_w, new_h, left, top) == (320, 240, 0, 40)
    # (80, 120, 240, 200) input px; minus pads (0, 40); / 0.5 -> (160, 160, 480, 320)
    np.testing.assert_allclose(det.boxes, [[160, 160, 480, 320]], atol=0.5)


# --- mismatches are refused at load, naming the layout and the shapes ------------------------------


def test_end_to_end_output_loaded_as_yolov8_is_refused(model_env, tmp_path):
    out = np.zeros((300, 6), np.float32)
    out[:4] = [[10, 10, 50, 50, 249.44, 0]] * 4
    directory = write_model_dir(
        tmp_path / "v10", constant_outputs({"output0": out}), ["a", "b"], STRETCH, model_type=None
    )  # no model_type.json: assumed YOLOv8, as Roboflow does
    with pytest.raises(ModelLayoutError) as caught:
        get_model(str(directory))
    message = str(caught.value)
    assert str(directory) in message and "YOLOv8 (B, 4 + C, N)" in message and "['?', 300, 6]" in message
    assert "yolov10 or yolo26" in message
    assert caught.value.layout == "YOLOv8 (B, 4 + C, N)" and caught.value.got == [("output0", ["?", 300, 6])]


@pytest.mark.parametrize(
    ("model_type", "outputs"),
    [
        ("yolo_nas_m", {"output0": np.zeros((6, 100), np.float32)}),  # one output where two are needed
        ("rfdetr-medium", {"output0": np.zeros((6, 100), np.float32)}),
        ("yolov10s", {"output0": np.zeros((6, 100), np.float32)}),  # (B, 6, 100) is no (B, 300, 6)
        ("yolov5", {"output0": np.zeros((100, 9), np.float32)}),  # 9 = 5 + 4 classes, 2 listed
    ],
)
def test_layout_mismatches_are_refused_clearly(model_env, tmp_path, model_type, outputs):
    with pytest.raises(ModelLayoutError, match=r"is registered as the .* layout, which expects"):
        _load(tmp_path, constant_outputs(outputs), ["a", "b"], model_type)


def test_class_count_mismatch_names_the_class_list(model_env, tmp_path):
    pred = np.zeros((4 + 3, 50), np.float32)
    with pytest.raises(ModelLayoutError, match="3 class rows but 2 class names are listed"):
        _load(tmp_path, constant_detector(pred), ["a", "b"], "yolov8n")


# --- Roboflow's legacy cache layout, per family ----------------------------------------------------


def test_roboflow_filled_yolov5_cache_loads_offline(model_env, tmp_path):
    """A cache directory as Roboflow Inference writes it for YOLOv5: yolov5s_weights.onnx."""
    rows = np.zeros((3, 7), np.float32)
    rows[0] = (160, 160, 32, 32, 0.9, 0.1, 0.8)
    directory = model_env.cache_dir / "legacy-v5" / "4"
    directory.mkdir(parents=True)
    (directory / "yolov5s_weights.onnx").write_bytes(constant_outputs({"output0": rows}))
    (directory / "environment.json").write_text(json.dumps({"PREPROCESSING": json.dumps(STRETCH["PREPROCESSING"])}))
    (directory / "class_names.txt").write_text("a\nb\n")
    (directory / "model_type.json").write_text(
        json.dumps({"project_task_type": "object-detection", "model_type": "yolov5v2s"})
    )
    model_env.set(OFFLINE_MODE="true")
    (det,) = get_model("legacy-v5/4").predict(IMAGE)
    _check(det, [_source_box(144, 144, 176, 176)], [0.8], [1])
