"""Drawing typed predictions: boxes and labels in the model's colours, masks, keypoints; pure functions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_agent.models.maths.predictions import Detections
from edge_agent.pipelines.annotate import (
    DEFAULT_PALETTE,
    MASK_ALPHA,
    annotate,
    class_color,
    hex_to_bgr,
    line_width,
    render_jpeg,
    text_color,
)

GREY = 90


def grey(width: int = 320, height: int = 240) -> np.ndarray:
    return np.full((height, width, 3), GREY, np.uint8)


def detections(boxes, class_ids, names=("cat", "dog"), size=(320, 240), **extra) -> Detections:  # type: ignore[no-untyped-def]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return Detections(
        boxes=boxes,
        confidences=np.full(len(boxes), 0.9, np.float32),
        class_ids=np.asarray(class_ids, np.int64),
        class_names=names,
        image_size=size,
        **extra,
    )


def test_hex_colours_and_palette_fallback() -> None:
    assert hex_to_bgr("#FF4040") == (0x40, 0x40, 0xFF)
    assert hex_to_bgr("40c040") == (0x40, 0xC0, 0x40)
    assert hex_to_bgr("#12345") is None and hex_to_bgr("#zzzzzz") is None and hex_to_bgr("") is None
    assert class_color("cat", 0, {"cat": "#0000ff"}) == (255, 0, 0)
    # No colour from the model (or an unusable one): the palette by class id, stable across calls.
    assert class_color("dog", 1, {"cat": "#0000ff"}) == hex_to_bgr(DEFAULT_PALETTE[1])
    assert class_color("dog", 1, {"dog": "red"}) == hex_to_bgr(DEFAULT_PALETTE[1])
    assert class_color("x", len(DEFAULT_PALETTE) + 2, None) == hex_to_bgr(DEFAULT_PALETTE[2])
    assert text_color((255, 255, 255)) == (0, 0, 0) and text_color((0, 0, 0)) == (255, 255, 255)


def test_box_outline_in_the_model_colour_and_input_untouched() -> None:
    image = grey()
    before = image.copy()
    out = annotate(image, detections([[100, 120, 200, 200]], [0]), {"cat": "#00ff00"})
    assert np.array_equal(image, before), "annotate wrote into its input"
    t = line_width(320, 240)
    green = np.array([0, 255, 0])
    # Left, right and bottom edges are pure model colour; the middle of the box is untouched.
    for y, x in ((160, 100), (160, 200), (200, 150), (160, 100 + t // 2)):
        assert np.array_equal(out[y, x], green), (y, x, out[y, x])
    assert np.array_equal(out[160, 150], [GREY] * 3)
    # The label tab sits above the box, in the box colour, with dark text on green.
    tab = out[100:119, 100:140].reshape(-1, 3)
    assert (np.abs(tab.astype(int) - green).sum(axis=1) == 0).mean() > 0.5
    assert (tab.sum(axis=1) < 100).any(), "no dark label text on the tab"
    # Far from the box nothing changed.
    assert np.array_equal(out[10:60, 250:310], before[10:60, 250:310])


def test_classes_without_colour_use_the_palette_and_label_moves_inside_at_the_top() -> None:
    out = annotate(grey(), detections([[10, 0, 90, 80]], [1]), {"cat": "#00ff00"})
    expected = np.array(hex_to_bgr(DEFAULT_PALETTE[1]))
    assert np.array_equal(out[40, 10], expected)
    # Box touches the top edge: the tab is drawn inside the box instead of off the picture.
    assert np.array_equal(out[3, 20], expected)


def test_empty_and_boxless_predictions_give_an_equal_copy() -> None:
    image = grey()
    empty = Detections.empty(("cat",), (320, 240))
    for prediction in (empty, object()):
        out = annotate(image, prediction)
        assert out is not image and np.array_equal(out, image)


def test_non_finite_and_out_of_picture_boxes_are_clipped_not_fatal() -> None:
    boxes = [[-50, -50, 1000, 1000], [np.nan, 10, 50, np.inf], [200, 200, 100, 100]]
    out = annotate(grey(), detections(boxes, [0, 1, 0]))
    assert out.shape == (240, 320, 3)
    assert np.array_equal(out[120, 0], hex_to_bgr(DEFAULT_PALETTE[0]))  # clipped to the left edge


def test_masks_are_blended_with_the_class_colour() -> None:
    polygon = np.array([[40, 40], [140, 40], [140, 140], [40, 140]], np.float64)
    det = detections([[40, 40, 140, 140]], [0], polygons=(polygon,))
    out = annotate(grey(), det, {"cat": "#ff0000"})  # BGR (0, 0, 255)
    inside = out[90, 90].astype(float)
    expected = np.array([GREY * (1 - MASK_ALPHA), GREY * (1 - MASK_ALPHA), 255 * MASK_ALPHA + GREY * (1 - MASK_ALPHA)])
    assert np.allclose(inside, expected, atol=1.5), (inside, expected)
    assert np.array_equal(out[200, 250], [GREY] * 3)


def test_keypoints_drawn_only_when_confident() -> None:
    keypoints = np.array([[[60, 60, 0.9], [250, 60, 0.1], [np.nan, 5, 1.0]]], np.float64)  # (K=1, P=3, 3)
    det = detections([[20, 20, 300, 220]], [0], keypoints=keypoints)
    out = annotate(grey(), det, {"cat": "#0000ff"})  # BGR (255, 0, 0)
    assert np.array_equal(out[60, 60], [255, 0, 0])
    assert np.array_equal(out[60, 250], [GREY] * 3), "a keypoint under the confidence floor was drawn"


def test_track_ids_appear_in_the_label() -> None:
    base = annotate(grey(), detections([[100, 120, 200, 200]], [0]), {"cat": "#00ff00"})
    tracked = annotate(grey(), detections([[100, 120, 200, 200]], [0], track_ids=np.array([17])), {"cat": "#00ff00"})
    green = np.all(base[100:120] == [0, 255, 0], axis=2).sum()
    assert np.all(tracked[100:120] == [0, 255, 0], axis=2).sum() > green, "label tab did not grow for '#17'"


@pytest.mark.parametrize("quality", [50, 90])
def test_render_jpeg_decodes_to_the_annotated_picture(quality: int) -> None:
    det = detections([[100, 120, 200, 200]], [0])
    data = render_jpeg(grey(), det, {"cat": "#00ff00"}, quality)
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (240, 320, 3)
    assert abs(int(decoded[160, 100, 1]) - 255) < 40 and int(decoded[160, 100, 0]) < 60
