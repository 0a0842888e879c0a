"""YOLOv8/YOLOv11 output decoding, non-max suppression and box mapping: pure vectorised numpy.

Output layout (SPEC §7): ``(B, 4 + nc, N)``; rows 0..3 are cx, cy, w, h in input pixels, rows
4.. are class scores already in [0, 1] (used as they are). One label per box (the best class).
"""

from __future__ import annotations

import numpy as np

from models.preprocessing import ImageMeta

_EMPTY_BOXES = np.zeros((0, 4), dtype=np.float32)


def decode_yolov8(
    output: np.ndarray, num_classes: int, confidence: float, max_candidates: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's ``(4 + nc', N)`` output -> (boxes xyxy (K, 4), scores (K,), class ids (K,)).

    Keeps boxes whose best score exceeds ``confidence`` (strictly, as Roboflow Inference), at most
    ``max_candidates`` of them, best first. Rows past ``4 + num_classes`` (mask coefficients of a
    segmentation head) are ignored.
    """
    scores_all = output[4 : 4 + num_classes]
    class_ids = scores_all.argmax(axis=0)
    scores = np.take_along_axis(scores_all, class_ids[None, :], axis=0)[0]
    keep = np.flatnonzero(scores > confidence)
    if keep.size == 0:
        return _EMPTY_BOXES, np.zeros(0, np.float32), np.zeros(0, np.int64)
    if keep.size > max_candidates:
        top = np.argpartition(-scores[keep], max_candidates - 1)[:max_candidates]
        keep = keep[top]
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    cx, cy, w, h = output[0, keep], output[1, keep], output[2, keep], output[3, keep]
    half_w, half_h = w / 2, h / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1).astype(np.float32)
    return boxes, scores[keep].astype(np.float32), class_ids[keep]


def non_max_suppression(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray | None,
    iou_threshold: float,
    max_detections: int,
) -> np.ndarray:
    """Greedy NMS; indices of kept boxes, best first.

    A box is dropped when its IoU with a better kept box is above ``iou_threshold``. With
    ``class_ids`` boxes only suppress boxes of their own class (done in one pass by shifting each
    class into its own coordinate range); with None it is class-agnostic.
    """
    if boxes.shape[0] == 0 or max_detections <= 0:
        return np.zeros(0, dtype=np.int64)
    b = boxes.astype(np.float64)
    if class_ids is not None:
        span = float(b.max() - b.min()) + 1.0
        b = b + (class_ids.astype(np.float64) * span)[:, None]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_detections:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        inter = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None) * np.clip(
            np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None
        )
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def map_to_source(boxes: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """xyxy boxes in model-input pixels -> source pixels, clipped to the (cropped) region seen."""
    x0, y0, x1, y1 = meta.crop
    out = np.empty_like(boxes, dtype=np.float64)
    out[:, 0::2] = (boxes[:, 0::2] - meta.pad_x) / meta.scale_x + x0
    out[:, 1::2] = (boxes[:, 1::2] - meta.pad_y) / meta.scale_y + y0
    np.clip(out[:, 0::2], x0, x1, out=out[:, 0::2])
    np.clip(out[:, 1::2], y0, y1, out=out[:, 1::2])
    return out
