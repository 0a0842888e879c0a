"""Greedy non-max suppression with true IoU, vectorised in numpy.

Roboflow's two stacks disagree here: the legacy ``non_max_suppression_fast`` divides the
intersection by the *weaker* box's area (with +1 pixel sizes), the current stack uses
``torchvision.ops.batched_nms`` (true IoU, no +1). We follow the current stack.
"""

from __future__ import annotations

import numpy as np


def non_max_suppression(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray | None,
    iou_threshold: float,
    max_detections: int,
) -> np.ndarray:
    """Indices of kept boxes, best first.

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
