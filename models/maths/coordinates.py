"""Model-input pixels -> source pixels: undo static crop, letterbox/stretch for boxes and points.

One :class:`~models.preprocessing.ImageMeta` per image says how it was placed into the input:
``source = (input - pad) / scale + crop offset``. Boxes and points share the same maths, so masks'
polygons and keypoints land exactly where boxes do.
"""

from __future__ import annotations

import numpy as np

from edge_agent.models.maths.preprocessing import ImageMeta


def points_to_source(points: np.ndarray, meta: ImageMeta, clip: bool = True) -> np.ndarray:
    """``(..., 2)`` x, y in model-input pixels -> source pixels (float64), clipped to the region seen."""
    x0, y0, x1, y1 = meta.crop
    out = np.empty(points.shape, dtype=np.float64)
    out[..., 0] = (points[..., 0] - meta.pad_x) / meta.scale_x + x0
    out[..., 1] = (points[..., 1] - meta.pad_y) / meta.scale_y + y0
    if clip:
        np.clip(out[..., 0], x0, x1, out=out[..., 0])
        np.clip(out[..., 1], y0, y1, out=out[..., 1])
    return out


def boxes_to_source(boxes: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """``(K, 4)`` xyxy boxes in model-input pixels -> source pixels, clipped to the (cropped) region."""
    return points_to_source(boxes.reshape(-1, 2, 2), meta).reshape(-1, 4)


def cxcywh_to_xyxy(cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    half_w, half_h = w / 2, h / 2
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1).astype(np.float32)
