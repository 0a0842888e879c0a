"""Instance segmentation, keypoints and classification on ONNX models whose outputs we set by hand.

As in test_detector_layouts.py: the source image is 640x480, the model input 320x320 and the resize
a stretch (source = input x (2, 1.5)). Segmentation prototypes are 32 x 80 x 80 (one cell = 4 input
pixels = 8 x 6 source pixels) and each prototype is +10 on a block of cells and -10 elsewhere, so a
mask is 1 where its coefficient's prototype block is, cropped to its box: for a box inside its
block the mask is exactly the source pixels whose centres lie in the box, and its polygon is the
four corner pixel centres.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from edge_agent.models import get_model
from edge_agent.models.common.errors import ModelLayoutError
from edge_agent.models.maths.polygons import MaskOutput
from edge_agent.models.maths.predictions import ClassificationPrediction, InstanceSegmentation, KeypointDetections
from tests.onnx_factory import IR_VERSION, OPSET, constant_outputs, letterbox_env, write_model_dir

IMAGE = np.zeros((480, 640, 3), np.uint8)
STRETCH = letterbox_env(320, 320, "Stretch to")


def _load(tmp_path: Path, onnx_bytes: bytes, classes: list[str], task: str, model_type: str, **kwargs):  # type: ignore[no-untyped-def]
    env = kwargs.pop("environment", STRETCH)
    keypoints = kwargs.pop("keypoints", None)
    directory = write_model_dir(
        tmp_path / f"{task}-{model_type}", onnx_bytes, classes, env, model_type=(task, model_type), **kwargs
    )
    if keypoints is not None:
        (directory / "keypoints_metadata.json").write_text(json.dumps(keypoints))
    return get_model(str(directory))


def _rect(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((480, 640), bool)
    m[y0:y1, x0:x1] = True
    return m


def _corners(x0: int, y0: int, x1: int, y1: int) -> set[tuple[float, float]]:
    return {(x0 + 0.5, y0 + 0.5), (x0 + 0.5, y1 - 0.5), (x1 - 0.5, y1 - 0.5), (x1 - 0.5, y0 + 0.5)}


# --- instance segmentation ------------------------------------------------------------------------

# Prototype blocks in cells (x0, y0, x1, y1); in source pixels x8, x6.
BLOCKS = {0: (5, 15, 35, 45), 1: (60, 0, 80, 10), 2: (40, 50, 60, 70)}


def _prototypes() -> np.ndarray:
    protos = np.full((32, 80, 80), -10.0, np.float32)
    for k, (x0, y0, x1, y1) in BLOCKS.items():
        protos[k, y0:y1, x0:x1] = 10.0
    return protos


def _coef(k: int) -> list[float]:
    c = [0.0] * 32
    c[k] = 1.0
    return c


# Candidates in input pixels: (cx, cy, w, h), class scores (a, b), prototype.
# 0: input 40..120 x 80..160 -> source 80..240 x 120..240 (inside block 0: 40..280 x 90..270)
# 1: a near copy of 0 with prototype 1 (far away): suppressed by NMS, its coefficients must not leak
# 2: input 180..220 x 220..260 -> source 360..440 x 330..390 (inside block 2: 320..480 x 300..420)
CANDIDATES = [
    ((80, 120, 80, 80), (0.9, 0.0), 0),
    ((82, 120, 80, 80), (0.8, 0.0), 1),
    ((200, 240, 40, 40), (0.0, 0.7), 2),
]
SEG_BOXES = [(80, 120, 240, 240), (360, 330, 440, 390)]


def _check_segmentation(seg: InstanceSegmentation, boxes=SEG_BOXES, classes=(0, 1), confidences=(0.9, 0.7)) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(seg, InstanceSegmentation) and seg.task_type == "instance-segmentation"
    assert seg.class_ids.tolist() == list(classes)
    np.testing.assert_allclose(seg.confidences, confidences, atol=1e-5)
    np.testing.assert_allclose(seg.boxes, np.array(boxes, float), atol=1e-3)
    assert seg.masks is not None and seg.masks.shape == (len(boxes), 480, 640)
    for mask, box in zip(seg.masks, boxes, strict=True):
        np.testing.assert_array_equal(mask, _rect(*box))
    response = seg.to_response()
    for row, box in zip(response["predictions"], boxes, strict=True):
        assert row["mask_format"] == "polygon"
        assert {(p["x"], p["y"]) for p in row["points"]} == _corners(*box)


def test_yolov8_seg_masks_are_prototypes_times_coefficients_cropped_to_the_box(model_env, tmp_path) -> None:
    out0 = np.zeros((4 + 2 + 32, 3), np.float32)
    for j, (box, scores, proto) in enumerate(CANDIDATES):
        out0[:, j] = [*box, *scores, *_coef(proto)]
    onnx_bytes = constant_outputs({"output0": out0, "output1": _prototypes()})
    env = dict(STRETCH, COLORS={"a": "#FF0000", "b": "#00ff00"})
    model = _load(tmp_path, onnx_bytes, ["a", "b"], "instance-segmentation", "yolov8n-seg", environment=env)
    (seg,) = model.predict(IMAGE)
    _check_segmentation(seg)
    assert seg.class_colors == {"a": "#ff0000", "b": "#00ff00"}  # from environment.json, for drawing
    response = model.infer(IMAGE)[0].model_dump()
    assert [p["class"] for p in response["predictions"]] == ["a", "b"]
    assert response["image"] == {"width": 640, "height": 480}
    assert set(response["predictions"][0]) == {
        "x",
        "y",
        "width",
        "height",
        "confidence",
        "class",
        "class_id",
        "detection_id",
        "points",
        "mask_format",
    }


def _v5_rows() -> np.ndarray:
    rows = np.zeros((3, 5 + 2 + 32), np.float32)
    for j, (box, scores, proto) in enumerate(CANDIDATES):
        rows[j] = [*box, max(scores), *scores, *_coef(proto)]
    return rows


def test_yolov5_seg_reads_objectness_then_coefficients(model_env, tmp_path) -> None:
    onnx_bytes = constant_outputs({"output0": _v5_rows(), "output1": _prototypes()})
    model = _load(
        tmp_path, onnx_bytes, ["a", "b"], "instance-segmentation", "yolov5s-seg", weights_file="yolov5s_weights.onnx"
    )
    (seg,) = model.predict(IMAGE)
    _check_segmentation(seg)


def test_yolov7_seg_takes_prototypes_from_output_4(model_env, tmp_path) -> None:
    dummy = np.full((3, 4), 7.0, np.float32)
    onnx_bytes = constant_outputs(
        {"output0": _v5_rows(), "aux1": dummy, "aux2": dummy, "aux3": dummy, "protos": _prototypes()}
    )
    (seg,) = _load(tmp_path, onnx_bytes, ["a", "b"], "instance-segmentation", "yolov7-seg").predict(IMAGE)
    _check_segmentation(seg)


def test_yolo26_seg_is_not_nmsed_and_each_row_keeps_its_mask(model_env, tmp_path) -> None:
    rows = np.zeros((300, 6 + 32), np.float32)
    rows[0] = [40, 80, 120, 160, 0.9, 0, *_coef(0)]
    rows[1] = [180, 220, 220, 260, 0.7, 1, *_coef(2)]
    rows[2] = [41, 80, 121, 160, 0.3, 0, *_coef(0)]  # below the 0.4 default: dropped
    onnx_bytes = constant_outputs({"output0": rows, "output1": _prototypes()})
    (seg,) = _load(tmp_path, onnx_bytes, ["a", "b"], "instance-segmentation", "yolo26n-seg").predict(IMAGE)
    _check_segmentation(seg)


def test_rfdetr_seg_masks_come_from_the_query_and_are_not_cropped_to_the_box(model_env, tmp_path) -> None:
    # normalised cx, cy, w, h: query 0 is input 60..100 x 80..160 = source 120..200 x 120..240
    boxes = np.array([[0.25, 0.375, 0.125, 0.25], [0.5, 0.5, 0.1, 0.1]], np.float32)
    logits = np.array([[-9.0, 3.0], [-9.0, -9.0]], np.float32)  # query 0 is class 1 (b)
    masks = np.full((2, 80, 80), -5.0, np.float32)
    masks[0, 20:40, 10:40] = 5.0  # source x 80..320, y 120..240: wider than the box
    onnx_bytes = constant_outputs({"dets": boxes, "labels": logits, "masks": masks})
    model = _load(tmp_path, onnx_bytes, ["a", "b"], "instance-segmentation", "rfdetr-seg-small")
    (seg,) = model.predict(IMAGE)
    assert seg.class_ids.tolist() == [1]
    np.testing.assert_allclose(seg.boxes, [[120, 120, 200, 240]], atol=1e-3)
    mask = seg.masks[0]
    # Along its middle row and column the mask spans the logit block exactly, past the box.
    assert np.flatnonzero(mask[180]).tolist() == list(range(80, 320))
    assert np.flatnonzero(mask[:, 200]).tolist() == list(range(120, 240))


def test_letterboxed_segmentation_maps_masks_like_boxes(model_env, tmp_path) -> None:
    # 640x480 letterboxed into 320x320: scale 0.5, 40 px of padding on top and bottom.
    out0 = np.zeros((4 + 1 + 32, 1), np.float32)
    out0[:, 0] = [100, 140, 40, 40, 0.9, *_coef(0)]  # input 80..120 x 120..160 -> source 160..240 x 160..240
    onnx_bytes = constant_outputs({"output0": out0, "output1": _prototypes()})
    model = _load(
        tmp_path, onnx_bytes, ["a"], "instance-segmentation", "yolov8n-seg", environment=letterbox_env(320, 320)
    )
    (seg,) = model.predict(IMAGE)
    np.testing.assert_allclose(seg.boxes, [[160, 160, 240, 240]], atol=1e-3)
    np.testing.assert_array_equal(seg.masks[0], _rect(160, 160, 240, 240))


def test_mask_outputs_and_confidence_filtering_keep_masks_in_step(model_env, tmp_path) -> None:
    out0 = np.zeros((4 + 2 + 32, 3), np.float32)
    for j, (box, scores, proto) in enumerate(CANDIDATES):
        out0[:, j] = [*box, *scores, *_coef(proto)]
    model = _load(
        tmp_path,
        constant_outputs({"output0": out0, "output1": _prototypes()}),
        ["a", "b"],
        "instance-segmentation",
        "yolov8n-seg",
    )
    (seg,) = model.predict(IMAGE)
    high = seg.filter_confidence(0.8)
    assert len(high) == 1 and high.masks.shape == (1, 480, 640)
    np.testing.assert_array_equal(high.masks[0], _rect(*SEG_BOXES[0]))
    none = seg.with_mask_output(MaskOutput("none")).to_response()
    assert all("points" not in p and "mask_format" not in p for p in none["predictions"])
    simple = seg.with_mask_output(MaskOutput("simplified", 1.0))
    assert {tuple(p) for p in simple.polygons[1].tolist()} == _corners(*SEG_BOXES[1])


def test_segmentation_model_types_refuse_plain_detector_exports(model_env, tmp_path) -> None:
    out0 = np.zeros((4 + 2 + 32, 3), np.float32)
    with pytest.raises(ModelLayoutError, match="prototypes"):
        _load(tmp_path, constant_outputs({"output0": out0}), ["a", "b"], "instance-segmentation", "yolov8n-seg")
    bad_protos = np.zeros((16, 80, 80), np.float32)
    with pytest.raises(ModelLayoutError, match="32"):
        _load(
            tmp_path,
            constant_outputs({"output0": out0, "output1": bad_protos}),
            ["a", "b"],
            "instance-segmentation",
            "yolov8s-seg",
        )
    detector_rows = np.zeros((4 + 2, 3), np.float32)  # no coefficients
    with pytest.raises(ModelLayoutError):
        _load(
            tmp_path,
            constant_outputs({"output0": detector_rows, "output1": _prototypes()}),
            ["a", "b"],
            "instance-segmentation",
            "yolov8m-seg",
        )
    with pytest.raises(ModelLayoutError, match="mask logits"):
        _load(
            tmp_path,
            constant_outputs({"dets": np.zeros((2, 4)), "labels": np.zeros((2, 2))}),
            ["a", "b"],
            "instance-segmentation",
            "rfdetr-seg-nano",
        )


# --- keypoints ------------------------------------------------------------------------------------

METADATA = [{"object_class_id": 0, "keypoints": {"0": "nose", "1": "tail"}}]


def test_yolov8_pose_keypoints_in_source_pixels_with_names_and_threshold(model_env, tmp_path) -> None:
    out0 = np.zeros((4 + 1 + 3 * 3, 2), np.float32)
    # box input 80..120 x 80..120; keypoints (x, y, conf): nose, tail, and a third the metadata lacks
    out0[:, 0] = [100, 100, 40, 40, 0.9, 90, 95, 0.8, 110, 130, 0.2, 100, 100, 0.9]
    out0[:, 1] = [101, 100, 40, 40, 0.8, 0, 0, 0.9, 0, 0, 0.9, 0, 0, 0.9]  # suppressed by NMS
    model = _load(
        tmp_path,
        constant_outputs({"output0": out0}),
        ["person"],
        "keypoint-detection",
        "yolov8n-pose",
        keypoints=METADATA,
    )
    (kp,) = model.predict(IMAGE)
    assert isinstance(kp, KeypointDetections) and kp.keypoints.shape == (1, 3, 3)
    np.testing.assert_allclose(kp.boxes, [[160, 120, 240, 180]], atol=1e-3)
    np.testing.assert_allclose(kp.keypoints[0], [[180, 142.5, 0.8], [220, 195, 0.2], [200, 150, 0.9]], atol=1e-4)
    row = model.infer(IMAGE)[0].model_dump()["predictions"][0]
    assert [(k["class"], k["class_id"]) for k in row["keypoints"]] == [("nose", 0), ("tail", 1)]  # 3rd: no name
    assert row["keypoints"][0]["x"] == pytest.approx(180) and row["keypoints"][1]["y"] == pytest.approx(195)
    strict = model.infer(IMAGE, keypoint_confidence=0.5)[0].model_dump()["predictions"][0]
    assert [k["class"] for k in strict["keypoints"]] == ["nose"]


def test_yolo26_pose_defaults_to_a_keypoint_threshold_of_0_3(model_env, tmp_path) -> None:
    rows = np.zeros((300, 6 + 3 * 2), np.float32)
    rows[0] = [80, 80, 120, 120, 0.9, 0, 90, 95, 0.8, 110, 130, 0.2]
    model = _load(
        tmp_path,
        constant_outputs({"output0": rows}),
        ["person"],
        "keypoint-detection",
        "yolo26n-pose",
        keypoints=METADATA,
    )
    (kp,) = model.predict(IMAGE)
    np.testing.assert_allclose(kp.keypoints[0, :, :2], [[180, 142.5], [220, 195]], atol=1e-4)
    names = [k["class"] for k in kp.to_response()["predictions"][0]["keypoints"]]
    assert names == ["nose"]  # tail at 0.2 < 0.3


def test_keypoint_values_that_are_not_triples_are_refused(model_env, tmp_path) -> None:
    out0 = np.zeros((4 + 1 + 4, 2), np.float32)
    with pytest.raises(ModelLayoutError, match="multiple of 3"):
        _load(tmp_path, constant_outputs({"output0": out0}), ["person"], "keypoint-detection", "yolov8s-pose")


# --- classification -------------------------------------------------------------------------------
def _scores(values) -> bytes:  # type: ignore[no-untyped-def]
    """A classifier whose output for every image is ``values``: (B, C)."""
    return constant_outputs({"output0": np.asarray(values, np.float32)})


def _channel_means_model(classes: int = 3) -> bytes:
    """Output (B, 3): the mean of each input channel, i.e. what the normalisation made of the pixels."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["output0"], axes=[2, 3], keepdims=0)],
        "channel_means",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", classes])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model.SerializeToString()


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


BGR = (10, 100, 200)  # the test image colour, blue, green, red
RGB01 = np.array([200, 100, 10]) / 255


@pytest.mark.parametrize(
    ("model_type", "mean", "std", "weights"),
    [
        ("vit", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "best.onnx"),
        ("resnet50", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "best.onnx"),
        ("dinov3", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "best.onnx"),
        ("yolov8n", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "weights.onnx"),
    ],
)
def test_classifiers_normalise_per_family_and_softmax(model_env, tmp_path, model_type, mean, std, weights) -> None:
    model = _load(
        tmp_path,
        _channel_means_model(),
        ["r", "g", "b"],
        "classification",
        model_type,
        environment=letterbox_env(64, 64, "Stretch to"),
        weights_file=weights,
    )
    image = np.empty((48, 80, 3), np.uint8)
    image[:] = BGR
    (pred,) = model.predict(image, confidence=0.0)
    assert isinstance(pred, ClassificationPrediction)
    expected = _softmax((RGB01 - np.array(mean)) / np.array(std))
    np.testing.assert_allclose(pred.confidences, expected, atol=1e-5)
    response = model.infer(image, confidence=0.0)[0].model_dump()
    assert response["top"] == "r" and response["confidence"] == round(float(expected[0]), 4)
    assert [p["class"] for p in response["predictions"]] == [["r", "g", "b"][i] for i in np.argsort(-expected)]
    assert response["image"] == {"width": 80, "height": 48}


def test_single_label_threshold_drops_classes_and_a_softmax_output_is_not_softmaxed_twice(model_env, tmp_path) -> None:
    probs = np.array([0.2, 0.7, 0.1], np.float32)
    model = _load(tmp_path, _scores(probs), ["a", "b", "c"], "classification", "resnet18", weights_file="best.onnx")
    response = model.infer(IMAGE, confidence=0.15)[0].model_dump()
    assert [(p["class"], p["confidence"]) for p in response["predictions"]] == [("b", 0.7), ("a", 0.2)]
    assert response["top"] == "b" and response["confidence"] == 0.7
    nothing = model.infer(IMAGE, confidence=0.9)[0].model_dump()
    assert nothing["predictions"] == [] and nothing["top"] == "" and nothing["confidence"] == 0.0


@pytest.mark.parametrize("how", ["environment", "task"])
def test_multi_label_sigmoid_threshold_and_true_image_size(model_env, tmp_path, how) -> None:
    logits = np.array([2.0, -1.0, 0.0], np.float32)
    env = dict(STRETCH, MULTICLASS=True) if how == "environment" else STRETCH
    task = "classification" if how == "environment" else "multi-label-classification"
    model = _load(tmp_path, _scores(logits), ["a", "b", "c"], task, "vit", environment=env, weights_file="best.onnx")
    response = model.infer(IMAGE, confidence=0.4)[0].model_dump()
    sig = 1 / (1 + np.exp(-logits))
    assert response["predictions"] == {
        "a": {"confidence": round(float(sig[0]), 4), "class_id": 0},
        "b": {"confidence": round(float(sig[1]), 4), "class_id": 1},
        "c": {"confidence": 0.5, "class_id": 2},
    }
    assert response["predicted_classes"] == ["a", "c"]
    assert response["image"] == {"width": 640, "height": 480}  # Roboflow's legacy stack swaps these


def test_multi_label_probabilities_are_used_as_they_are(model_env, tmp_path) -> None:
    probs = np.array([0.9, 0.05, 0.6], np.float32)
    model = _load(
        tmp_path, _scores(probs), ["a", "b", "c"], "multi-label-classification", "resnet34", weights_file="best.onnx"
    )
    (pred,) = model.predict(IMAGE, confidence=0.5)
    np.testing.assert_allclose(pred.confidences, probs)
    assert pred.to_response()["predicted_classes"] == ["a", "c"]
    assert len(pred) == 2 and len(pred.filter_confidence(0.95)) == 0


def test_classification_layout_mismatches_are_refused(model_env, tmp_path) -> None:
    with pytest.raises(ModelLayoutError, match="5 class scores but 3"):
        _load(tmp_path, _scores(np.zeros(5)), ["a", "b", "c"], "classification", "vit", weights_file="best.onnx")
    with pytest.raises(ModelLayoutError, match="detector"):
        _load(tmp_path, constant_outputs({"output0": np.zeros((7, 100))}), ["a", "b", "c"], "classification", "yolov8s")
