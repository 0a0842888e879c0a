"""YOLO-World's pre- and post-processing as Roboflow runs it (pure functions, numpy).

* :func:`letterbox`: Ultralytics' ``LetterBox`` for a PyTorch model's predict: scale to fit 640
  (rounded half-to-even, as Python's ``round``), then pad each side only up to the next multiple of
  the network stride (``auto``: a 640x480 frame runs at 640x480), centred, grey 114.
* :func:`ultralytics_nms`: Ultralytics' ``non_max_suppression``: best prompt per box, scores above
  the request's confidence, per-class NMS at IoU 0.7, at most 300 boxes.
* :func:`to_source`: Ultralytics' ``scale_boxes`` + ``clip_boxes`` back to source pixels.
* :func:`roboflow_nms`: Roboflow's second pass (class-aware, IoU 0.3, 300 boxes).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_agent.models.maths.nms import non_max_suppression

PAD_VALUE = 114
INPUT_SIZE = 640
ULTRALYTICS_IOU = 0.7
ROBOFLOW_IOU = 0.3
MAX_DETECTIONS = 300
MAX_CANDIDATES = 30000  # Ultralytics' max_nms: boxes fed to NMS at most


@dataclass(frozen=True)
class Placement:
    """Where a source image went in the network input: input (height, width) and source (height, width)."""

    input_shape: tuple[int, int]
    source_shape: tuple[int, int]


def letterbox(image: np.ndarray, size: int = INPUT_SIZE, stride: int = 32, auto: bool = True) -> np.ndarray:
    """An HxWx3 uint8 image fitted into ``size`` and padded with 114 (see the module docstring)."""
    height, width = image.shape[:2]
    ratio = min(size / height, size / width)
    new_w, new_h = round(width * ratio), round(height * ratio)
    dw, dh = size - new_w, size - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    half_w, half_h = dw / 2, dh / 2
    if (width, height) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(half_h - 0.1), round(half_h + 0.1)
    left, right = round(half_w - 0.1), round(half_w + 0.1)
    return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)


def network_input(image: np.ndarray, stride: int = 32) -> np.ndarray:
    """One BGR uint8 frame -> (3, H, W) float32 RGB in 0..1, letterboxed (what Roboflow hands
    Ultralytics is RGB: it reverses its RGB image to BGR, and Ultralytics' predict flips it back)."""
    placed = letterbox(image, INPUT_SIZE, stride)
    return np.ascontiguousarray(placed[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    out = np.empty_like(boxes)
    out[:, :2] = boxes[:, :2] - boxes[:, 2:4] / 2
    out[:, 2:4] = boxes[:, :2] + boxes[:, 2:4] / 2
    return out


def ultralytics_nms(
    output: np.ndarray, confidence: float, iou: float = ULTRALYTICS_IOU, max_det: int = MAX_DETECTIONS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's (4 + N, A) network output -> (boxes xyxy in input pixels, scores, class ids)."""
    scores_all = output[4:].T  # (A, N)
    if scores_all.shape[1] == 0:
        return np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int64)
    class_ids = scores_all.argmax(1)
    scores = scores_all[np.arange(scores_all.shape[0]), class_ids]
    keep = scores > confidence
    boxes = xywh_to_xyxy(output[:4].T[keep].astype(np.float64))
    scores, class_ids = scores[keep], class_ids[keep]
    if scores.shape[0] > MAX_CANDIDATES:
        top = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
        boxes, scores, class_ids = boxes[top], scores[top], class_ids[top]
    kept = non_max_suppression(boxes, scores, class_ids, iou, max_det)
    return boxes[kept], scores[kept].astype(np.float32), class_ids[kept].astype(np.int64)


def to_source(boxes: np.ndarray, placement: Placement) -> np.ndarray:
    """Boxes (K, 4) xyxy in input pixels -> source pixels, clipped to the image."""
    (in_h, in_w), (src_h, src_w) = placement.input_shape, placement.source_shape
    gain = min(in_h / src_h, in_w / src_w)
    pad_x = round((in_w - src_w * gain) / 2 - 0.1)
    pad_y = round((in_h - src_h * gain) / 2 - 0.1)
    out = boxes.astype(np.float64).copy()
    out[:, [0, 2]] = ((out[:, [0, 2]] - pad_x) / gain).clip(0, src_w)
    out[:, [1, 3]] = ((out[:, [1, 3]] - pad_y) / gain).clip(0, src_h)
    return out


def roboflow_nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, confidence: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Roboflow's pass over Ultralytics' results: scores above ``confidence``, class-aware NMS at
    IoU 0.3, at most 300 boxes (true IoU, as the current stack's NMS; see models/maths/nms.py)."""
    keep = scores > confidence
    boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
    kept = non_max_suppression(boxes, scores, class_ids, ROBOFLOW_IOU, MAX_DETECTIONS)
    return boxes[kept], scores[kept], class_ids[kept]


__all__ = ["Placement", "letterbox", "network_input", "roboflow_nms", "to_source", "ultralytics_nms", "xywh_to_xyxy"]
