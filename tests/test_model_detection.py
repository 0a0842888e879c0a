"""YOLOv8-layout detection checked against hand-computed values, using real ONNX models.

The models come from tests/onnx_factory.py: a constant detector (the output tensor is what we
wrote) and a colour detector (scores are per-channel means of the RGB input times fixed weights).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_agent.models import get_model
from edge_agent.models.common.errors import InvalidInputError, ModelError
from edge_agent.models.maths.nms import non_max_suppression
from edge_agent.models.maths.preprocessing import (
    Preprocessing,
    _percentiles_u8,
    letterbox_geometry,
    parse_preprocessing,
    preprocess_batch,
    static_crop_box,
)
from edge_agent.models.tasks.decoders import YOLOv8Decoder
from edge_agent.models.tasks.params import DetectionParams
from tests.onnx_factory import colour_detector, constant_detector, letterbox_env, write_model_dir

CLASSES = ["a", "b", "c"]
PREDICTION_KEYS = {"x", "y", "width", "height", "confidence", "class", "class_id", "detection_id"}


def _pred(*boxes: tuple[float, float, float, float, int, float], nc: int = 3) -> np.ndarray:
    """(4 + nc, N) output: each box is (cx, cy, w, h, class, score); other scores 0."""
    out = np.zeros((4 + nc, len(boxes)), np.float32)
    for j, (cx, cy, w, h, cls, score) in enumerate(boxes):
        out[:4, j] = (cx, cy, w, h)
        out[4 + cls, j] = score
    return out


def _load(tmp_path, onnx_bytes, environment=None, name="m", **kwargs):
    directory = write_model_dir(tmp_path / name, onnx_bytes, CLASSES, environment, **kwargs)
    return get_model(str(directory))


def _boxes(response) -> list[tuple]:
    return [
        (p["class"], round(p["x"], 3), round(p["y"], 3), round(p["width"], 3), round(p["height"], 3))
        for p in response.model_dump()["predictions"]
    ]


def _strip_ids(responses) -> list[dict]:
    out = []
    for r in responses:
        d = r.model_dump()
        for p in d["predictions"]:
            p.pop("detection_id")
        del d["inference_id"], d["time"]  # unique per inference, as detection_id per detection
        out.append(d)
    return out


# --- box mapping through resize modes and static crop ---------------------------------------------


def test_letterbox_maps_boxes_back_and_clips(model_env, tmp_path):
    # 640x480 into 320x320: scale 0.5, image occupies rows 40..280 (top pad 40).
    pred = _pred((160, 160, 64, 48, 0, 0.9), (100, 45, 40, 20, 1, 0.8))
    model = _load(tmp_path, constant_detector(pred), letterbox_env(320, 320, "Fit (grey edges) in"))
    (response,) = model.infer(np.zeros((480, 640, 3), np.uint8))
    dumped = response.model_dump()
    assert dumped["image"] == {"width": 640, "height": 480}
    assert set(dumped) == {"predictions", "image", "inference_id", "time"}  # Roboflow's, as model.infer gives them
    assert all(set(p) == PREDICTION_KEYS for p in dumped["predictions"])
    # box 2 spans input y 35..55 -> source -10..30 -> clipped to 0..30
    assert _boxes(response) == [("a", 320.0, 240.0, 128.0, 96.0), ("b", 200.0, 15.0, 80.0, 30.0)]
    assert dumped["predictions"][0]["class_id"] == 0
    assert dumped["predictions"][0]["confidence"] == pytest.approx(0.9)


def test_stretch_maps_each_axis_separately(model_env, tmp_path):
    # 640x480 stretched into 320 wide x 256 high.
    pred = _pred((160, 128, 32, 32, 2, 0.7))
    model = _load(tmp_path, constant_detector(pred, height=256, width=320), letterbox_env(320, 256, "Stretch to"))
    assert model.input_size == (320, 256)
    (response,) = model.infer(np.zeros((480, 640, 3), np.uint8))
    assert _boxes(response) == [("c", 320.0, 240.0, 64.0, 60.0)]


def test_static_crop_and_letterbox(model_env, tmp_path):
    # Crop 25..75 % x, 10..90 % y of 640x480 -> pixels (160, 48)-(480, 432), a 320x384 region.
    # Letterboxed into 320x320: new size 266x320, left pad 27; x scale 266/320, y scale 320/384.
    env = letterbox_env(
        320,
        320,
        "Fit (black edges) in",
        static_crop={"enabled": True, "x_min": 25, "y_min": 10, "x_max": 75, "y_max": 90},
    )
    pred = _pred((160, 160, 26.6, 40, 0, 0.9), (300, 160, 60, 40, 1, 0.8))
    model = _load(tmp_path, constant_detector(pred), env)
    (response,) = model.infer(np.zeros((480, 640, 3), np.uint8))
    (a, b) = response.model_dump()["predictions"]
    # (160-27)*320/266 + 160 = 320; width 26.6*320/266 = 32; y: 160*1.2 + 48 = 240, h 48
    assert (a["x"], a["y"], a["width"], a["height"]) == pytest.approx((320, 240, 32, 48), abs=1e-3)
    # box 2 runs past the crop's right edge (x=480 in source): clipped there
    x1 = (270 - 27) * 320 / 266 + 160
    assert b["x"] - b["width"] / 2 == pytest.approx(x1, abs=1e-3)
    assert b["x"] + b["width"] / 2 == pytest.approx(480, abs=1e-3)


def test_static_crop_box_truncates_like_roboflow():
    assert static_crop_box(641, 481, (25, 10, 75, 90)) == (160, 48, 480, 432)
    assert letterbox_geometry(320, 384, 320, 320) == (266, 320, 27, 0)
    assert letterbox_geometry(640, 480, 320, 320) == (320, 240, 0, 40)


# --- PREPROCESSING options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "fill"),
    [("Fit (black edges) in", 0), ("Fit (white edges) in", 255), ("Fit (grey edges) in", 114), ("Stretch to", None)],
)
@pytest.mark.parametrize("as_string", [False, True])
def test_resize_formats_and_fills(fmt, fill, as_string):
    raw = letterbox_env(32, 32, fmt)["PREPROCESSING"]
    pre = parse_preprocessing(__import__("json").dumps(raw) if as_string else raw)
    image = np.full((16, 32, 3), (10, 20, 30), np.uint8)  # BGR
    tensor, (meta,) = preprocess_batch([image], pre, (32, 32))
    assert tensor.shape == (1, 3, 32, 32) and tensor.dtype == np.float32
    centre = tensor[0, :, 16, 16]
    assert centre == pytest.approx(np.array([30, 20, 10]) / 255)  # RGB order, scaled to [0, 1]
    if fill is None:
        assert (meta.pad_x, meta.pad_y, meta.scale_y) == (0, 0, 2.0)
        assert tensor[0, :, 0, 0] == pytest.approx(np.array([30, 20, 10]) / 255)
    else:
        assert (meta.pad_x, meta.pad_y, meta.scale_y) == (0, 8, 1.0)
        assert tensor[0, :, 0, 0] == pytest.approx(np.full(3, fill / 255))
        assert tensor[0, :, 31, 31] == pytest.approx(np.full(3, fill / 255))


def test_unknown_resize_format_falls_back_to_stretch():
    pre = parse_preprocessing(
        {"resize": {"enabled": True, "width": 8, "height": 8, "format": "Fill (with center crop) in"}}
    )
    assert not pre.letterbox and pre.resize_size == (8, 8)


def test_grayscale_uses_luma_weights():
    pre = parse_preprocessing({"grayscale": {"enabled": True}})
    red = np.zeros((4, 4, 3), np.uint8)
    red[...] = (0, 0, 255)  # BGR red -> luma 0.299 * 255 = 76.2 -> 76
    tensor, _ = preprocess_batch([red], pre, (4, 4))
    assert tensor[0, :, 0, 0] == pytest.approx(np.full(3, 76 / 255))


def test_disabled_steps_are_ignored():
    pre = parse_preprocessing(
        {
            "grayscale": {"enabled": False},
            "contrast": {"enabled": False, "type": "X"},
            "static-crop": {"enabled": False},
        }
    )
    assert pre == Preprocessing()


def test_contrast_stretching_maps_2nd_and_98th_percentiles_to_0_and_255():
    # 100 distinct values 100..199, each once: p2 = 101.98, p98 = 197.02 (linear interpolation)
    image = np.arange(100, 200, dtype=np.uint8).reshape(10, 10, 1).repeat(3, axis=2)
    assert _percentiles_u8(image, (2.0, 98.0)) == pytest.approx(list(np.percentile(image, (2, 98))))
    pre = parse_preprocessing({"contrast": {"enabled": True, "type": "Contrast Stretching"}})
    tensor, _ = preprocess_batch([image], pre, (10, 10))
    values = np.rint(tensor[0, 0] * 255).astype(int).ravel()
    assert values[0] == 0 and values[1] == 0  # 100, 101 below p2
    assert values[-1] == 255 and values[-2] == 255  # 199, 198 above p98
    # 150 -> (150 - 101.98) / (197.02 - 101.98) * 255 = 128.84 -> 128 (truncated like skimage's astype)
    assert values[50] == 128


def test_histogram_equalization_spreads_a_narrow_histogram():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :4] = 100
    image[:, 4:] = 110
    pre = parse_preprocessing({"contrast": {"enabled": True, "type": "Histogram Equalization"}})
    tensor, _ = preprocess_batch([image], pre, (8, 8))
    # two equally common levels -> the darker to 0, the brighter to 255 (OpenCV's equalizeHist)
    assert np.rint(tensor[0, 0, 0, 0] * 255) == 0 and np.rint(tensor[0, 0, 0, 7] * 255) == 255


def test_adaptive_equalization_is_grey_and_changes_low_contrast_input():
    rng = np.random.default_rng(1)
    image = rng.integers(120, 136, (64, 64, 3), dtype=np.uint8)
    pre = parse_preprocessing({"contrast": {"enabled": True, "type": "Adaptive Equalization"}})
    tensor, _ = preprocess_batch([image], pre, (64, 64))
    assert np.array_equal(tensor[0, 0], tensor[0, 1]) and np.array_equal(tensor[0, 1], tensor[0, 2])
    assert np.ptp(tensor[0, 0]) * 255 > np.ptp(image) + 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"contrast": {"enabled": True, "type": "Sharpen"}}, "contrast type"),
        ({"static-crop": {"enabled": True, "x_min": 80, "y_min": 0, "x_max": 20, "y_max": 100}}, "static-crop"),
        ("{not json", "not JSON"),
    ],
)
def test_bad_preprocessing_is_a_clear_error(raw, message):
    with pytest.raises(ModelError, match=message):
        parse_preprocessing(raw)


# --- NMS ------------------------------------------------------------------------------------------


def test_nms_per_class_vs_agnostic():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 1, 0])
    # box 1 overlaps box 0 (IoU 90/110 = 0.82) in the same class; box 2 is the same box in class 1
    assert non_max_suppression(boxes, scores, classes, 0.3, 300).tolist() == [0, 2, 3]
    assert non_max_suppression(boxes, scores, None, 0.3, 300).tolist() == [0, 3]
    assert non_max_suppression(boxes, scores, None, 0.3, 1).tolist() == [0]
    assert non_max_suppression(boxes, scores, None, 0.9, 300).tolist() == [0, 1, 3]  # 2 is a copy of 1


def test_nms_keeps_iou_equal_to_threshold():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)  # IoU exactly 0.5
    scores = np.array([0.9, 0.8], np.float32)
    assert non_max_suppression(boxes, scores, None, 0.5, 10).tolist() == [0, 1]
    assert non_max_suppression(boxes, scores, None, 0.49, 10).tolist() == [0]


def test_decode_filters_strictly_and_caps_candidates():
    pred = _pred(*[(10 * i + 5, 5, 4, 4, 0, s) for i, s in enumerate([0.5, 0.9, 0.4, 0.7, 0.8])])
    decoder = YOLOv8Decoder(3, (320, 320))
    raw = decoder.decode([pred[None]], 0, DetectionParams(0.4, 0.5, 300, 3000, False))
    assert raw.scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.5])  # 0.4 is not above 0.4
    assert raw.boxes[0].tolist() == [13, 3, 17, 7]
    raw = decoder.decode([pred[None]], 0, DetectionParams(0.1, 0.5, 300, 2, False))
    assert raw.scores.tolist() == pytest.approx([0.9, 0.8])


def test_nms_options_through_infer_and_env(model_env, tmp_path):
    pred = _pred((100, 100, 20, 20, 0, 0.9), (101, 100, 20, 20, 1, 0.8), (200, 200, 20, 20, 2, 0.5))
    model = _load(tmp_path, constant_detector(pred), letterbox_env(320, 320, "Stretch to"))
    image = np.zeros((320, 320, 3), np.uint8)
    assert [p.class_name for p in model.infer(image)[0].predictions] == ["a", "b", "c"]
    assert [p.class_name for p in model.infer(image, class_agnostic_nms=True)[0].predictions] == ["a", "c"]
    assert [p.class_name for p in model.infer(image, confidence=0.6)[0].predictions] == ["a", "b"]
    assert len(model.infer(image, max_detections=1)[0].predictions) == 1
    assert len(model.infer(image, max_candidates=2)[0].predictions) == 2
    assert len(model.infer(image, iou_threshold=0.0, class_agnostic_nms=True)[0].predictions) == 2
    model_env.set(CLASS_AGNOSTIC_NMS="true", CONFIDENCE="0.55", MAX_DETECTIONS="5")
    model = _load(tmp_path, constant_detector(pred), letterbox_env(320, 320, "Stretch to"), name="m2")
    assert [p.class_name for p in model.infer(image)[0].predictions] == ["a"]
    assert [p.class_name for p in model.infer(image, confidence=0.1)[0].predictions] == ["a", "c"]


@pytest.mark.parametrize(
    "kwargs", [{"confidence": 1.5}, {"iou_threshold": -0.1}, {"max_detections": 0}, {"max_candidates": 2.5}]
)
def test_bad_infer_options(model_env, tmp_path, kwargs):
    model = _load(tmp_path, constant_detector(_pred((1, 1, 1, 1, 0, 0.9))))
    with pytest.raises(InvalidInputError):
        model.infer(np.zeros((8, 8, 3), np.uint8), **kwargs)


# --- inputs and batching ---------------------------------------------------------------------------

_W = np.full((3, 2), 0.9, np.float32)  # colour weights: class c scores mean(channel c) * 0.9
_BOXES = np.array([[80, 240], [80, 240], [40, 40], [40, 40]], np.float32)


def _solid(bgr, h=320, w=320):
    image = np.zeros((h, w, 3), np.uint8)
    image[...] = bgr
    return image


def test_colour_detector_sees_rgb_in_unit_range(model_env, tmp_path):
    model = _load(tmp_path, colour_detector(_BOXES, _W), letterbox_env(320, 320, "Fit (grey edges) in"))
    red, green = _solid((0, 0, 255)), _solid((0, 255, 0))
    assert {p.class_name for p in model.infer(red)[0].predictions} == {"a"}
    assert model.infer(red)[0].predictions[0].confidence == pytest.approx(0.9, abs=1e-6)
    assert {p.class_name for p in model.infer(green)[0].predictions} == {"b"}
    # 640x480 red letterboxed: a quarter of the input is grey pad (114): mean R = 0.75 + 0.25 * 114/255
    wide = _solid((0, 0, 255), 480, 640)
    conf = model.infer(wide)[0].predictions[0].confidence
    # (float32 reduction over 102400 pixels in onnxruntime: ~3e-5 relative error)
    assert conf == pytest.approx(0.9 * (0.75 + 0.25 * 114 / 255), abs=3e-4)
    assert abs(conf - 0.9 * 0.75) > 0.05 and abs(conf - 0.9) > 0.05  # not a black or white fill


def test_batch_equals_one_by_one_dynamic_and_static(model_env, tmp_path):
    images = [_solid((0, 0, 255)), _solid((0, 255, 0), 240, 400), _solid((255, 0, 0), 500, 300), _solid((0, 128, 255))]
    env = letterbox_env(320, 320, "Fit (grey edges) in")
    dynamic = _load(tmp_path, colour_detector(_BOXES, _W), env, name="dyn")
    static1 = _load(tmp_path, colour_detector(_BOXES, _W, batch=1), env, name="s1")
    static2 = _load(tmp_path, colour_detector(_BOXES, _W, batch=2), env, name="s2")
    assert dynamic.engine.dynamic_batch and dynamic.max_batch_size == 16
    assert (static1.engine.dynamic_batch, static1.max_batch_size, static2.max_batch_size) == (False, 1, 2)
    one_by_one = _strip_ids([dynamic.infer(image)[0] for image in images])
    # one label per box (the best class): each image gives two boxes of its dominant colour
    assert [[p["class"] for p in r["predictions"]] for r in one_by_one] == [
        ["a", "a"],
        ["b", "b"],
        ["c", "c"],
        ["a", "a"],
    ]
    assert _strip_ids(dynamic.infer(images)) == one_by_one
    assert _strip_ids(static1.infer(images)) == one_by_one
    assert _strip_ids(static2.infer(images[:3])) == one_by_one[:3]  # last chunk padded
    model_env.set(MAX_BATCH_SIZE="3")
    chunked = _load(tmp_path, colour_detector(_BOXES, _W), env, name="chunked")
    assert chunked.max_batch_size == 3
    assert _strip_ids(chunked.infer(images)) == one_by_one
    assert dynamic.infer([]) == []


def test_input_types_path_bytes_array_grey(model_env, tmp_path):
    model = _load(tmp_path, colour_detector(_BOXES, _W), letterbox_env(320, 320, "Stretch to"))
    image = _solid((0, 0, 255), 100, 120)
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), image)
    _, encoded = cv2.imencode(".png", image)
    expected = _strip_ids(model.infer(image))
    assert _strip_ids(model.infer(str(path))) == expected
    assert _strip_ids(model.infer(path)) == expected
    assert _strip_ids(model.infer(encoded.tobytes())) == expected
    grey = model.infer(np.full((50, 50), 200, np.uint8))[0]
    assert [p.confidence for p in grey.predictions] == pytest.approx([0.9 * 200 / 255] * 2, abs=3e-4)
    with pytest.raises(InvalidInputError, match="cannot read image file"):
        model.infer(str(tmp_path / "missing.png"))
    with pytest.raises(InvalidInputError, match="not an image"):
        model.infer(b"definitely not an image")
    with pytest.raises(InvalidInputError, match="uint8"):
        model.infer(np.zeros((4, 4, 3), np.float32))


def test_input_size_falls_back_to_environment(model_env, tmp_path):
    model = _load(tmp_path, colour_detector(_BOXES, _W, height=None, width=None), letterbox_env(256, 192, "Stretch to"))
    assert model.input_size == (256, 192)
    assert len(model.infer(_solid((0, 0, 255), 50, 50))[0].predictions) == 2


def test_class_rows_must_cover_class_names(model_env, tmp_path):
    directory = write_model_dir(tmp_path / "bad", constant_detector(_pred((1, 1, 1, 1, 0, 0.9), nc=2)), CLASSES)
    with pytest.raises(ModelError, match="2 class rows but 3 class names"):
        get_model(str(directory))


def test_nhwc_stack_is_a_batch(model_env, tmp_path):
    model = _load(tmp_path, colour_detector(_BOXES, _W), letterbox_env(320, 320, "Stretch to"))
    stack = np.stack([_solid((0, 0, 255), 64, 64), _solid((0, 255, 0), 64, 64)])
    assert [r.predictions[0].class_name for r in model.infer(stack)] == ["a", "b"]
