"""PP-OCR's steps as pure numpy/OpenCV functions (DBNet text detection, CTC text recognition).

They follow PaddleOCR's reference code as Roboflow's ``pp_ocrv6`` models run it: detection input
resized to multiples of 32 (``limit_side_len``/``limit_type``), probability map > ``thresh``,
contours -> minimum-area rectangles, mean probability inside >= ``box_thresh``, expanded by
``area * unclip_ratio / perimeter`` on every side, scaled back to the source; each quadrilateral is
cut out with a perspective warp (rotated when upright), resized to the recogniser's height, and
greedy CTC-decoded over ``[blank] + characters + [" "]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

MIN_BOX_SIDE = 3
MAX_REC_WIDTH = 3200


@dataclass(frozen=True)
class DetConfig:
    limit_side_len: int = 736
    limit_type: str = "min"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    scale: float = 1.0 / 255.0
    rgb: bool = False
    thresh: float = 0.3
    box_thresh: float = 0.6
    unclip_ratio: float = 1.5
    max_candidates: int = 1000


@dataclass(frozen=True)
class RecConfig:
    characters: tuple[str, ...]
    height: int = 48
    width: int = 320
    rgb: bool = False
    batch_size: int = 8


def det_size(height: int, width: int, config: DetConfig) -> tuple[int, int]:
    """(resized height, width), each a multiple of 32."""
    limit = config.limit_side_len
    if config.limit_type == "max":
        ratio = limit / max(height, width) if max(height, width) > limit else 1.0
    else:
        ratio = limit / min(height, width) if min(height, width) < limit else 1.0
    return max(int(round(height * ratio / 32) * 32), 32), max(int(round(width * ratio / 32) * 32), 32)


def det_input(image: np.ndarray, config: DetConfig) -> np.ndarray:
    """(1, 3, H, W) float32 for the detector."""
    new_h, new_w = det_size(image.shape[0], image.shape[1], config)
    resized = cv2.resize(image, (new_w, new_h))
    if config.rgb:
        resized = resized[..., ::-1]
    mean = np.asarray(config.mean, np.float32)
    std = np.asarray(config.std, np.float32)
    tensor = (resized.astype(np.float32) * np.float32(config.scale) - mean) / std
    return np.ascontiguousarray(tensor.transpose(2, 0, 1)[None])


def mini_box(points: np.ndarray) -> tuple[np.ndarray, float, tuple]:
    """The minimum-area rectangle of ``points``: corners (top-left, top-right, bottom-right,
    bottom-left), its shorter side, and the cv2 rect."""
    rect = cv2.minAreaRect(points.astype(np.float32))
    corners = sorted(cv2.boxPoints(rect).tolist(), key=lambda p: p[0])
    left = sorted(corners[:2], key=lambda p: p[1])
    right = sorted(corners[2:], key=lambda p: p[1])
    box = np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)
    return box, float(min(rect[1])), rect


def box_score(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean probability inside the quadrilateral."""
    h, w = prob.shape
    xmin = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    xmax = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    ymin = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    ymax = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    shifted = box.copy()
    shifted[:, 0] -= xmin
    shifted[:, 1] -= ymin
    cv2.fillPoly(mask, shifted.reshape(1, -1, 2).astype(np.int32), 1)
    return float(cv2.mean(prob[ymin : ymax + 1, xmin : xmax + 1], mask)[0])


def unclip(rect: tuple, ratio: float) -> np.ndarray:
    """The rectangle grown by ``area * ratio / perimeter`` on every side.

    PaddleOCR offsets the polygon with rounded joins (pyclipper) and takes the minimum-area
    rectangle of the result; for a rectangle that is exactly the rectangle grown on every side.
    """
    (cx, cy), (w, h), angle = rect
    distance = (w * h) * ratio / max(2.0 * (w + h), 1e-6)
    grown = ((cx, cy), (w + 2 * distance, h + 2 * distance), angle)
    return cv2.boxPoints(grown)


def detect_boxes(prob: np.ndarray, source_hw: tuple[int, int], config: DetConfig) -> tuple[np.ndarray, np.ndarray]:
    """Quadrilaterals (K, 4, 2) in source pixels and their scores (K,) from a (H, W) probability map."""
    height, width = prob.shape
    src_h, src_w = source_hw
    bitmap = (prob > config.thresh).astype(np.uint8) * 255
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    quads, scores = [], []
    for contour in contours[: config.max_candidates]:
        box, side, _ = mini_box(contour.reshape(-1, 2))
        if side < MIN_BOX_SIDE:
            continue
        score = box_score(prob, box)
        if score < config.box_thresh:
            continue
        _, _, rect = mini_box(box)
        grown, side, _ = mini_box(unclip(rect, config.unclip_ratio))
        if side < MIN_BOX_SIDE + 2:
            continue
        grown[:, 0] = np.clip(np.round(grown[:, 0] / width * src_w), 0, src_w)
        grown[:, 1] = np.clip(np.round(grown[:, 1] / height * src_h), 0, src_h)
        quads.append(grown)
        scores.append(score)
    if not quads:
        return np.zeros((0, 4, 2), np.float32), np.zeros(0, np.float32)
    return np.stack(quads).astype(np.float32), np.asarray(scores, np.float32)


def reading_order(quads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, line id per box in that order): lines top to bottom, boxes left to right in a line.

    A box belongs to the current line when its vertical centre lies within the line's extent.
    """
    if len(quads) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = quads[:, :, 1].min(axis=1)
    bottom = quads[:, :, 1].max(axis=1)
    centre = (top + bottom) / 2
    left = quads[:, :, 0].min(axis=1)
    lines: list[list[int]] = []
    extent: list[tuple[float, float]] = []
    for i in np.argsort(top, kind="stable").tolist():
        if lines and extent[-1][0] <= centre[i] <= extent[-1][1]:
            lines[-1].append(i)
            extent[-1] = (min(extent[-1][0], top[i]), max(extent[-1][1], bottom[i]))
        else:
            lines.append([i])
            extent.append((float(top[i]), float(bottom[i])))
    order, ids = [], []
    for line_id, members in enumerate(lines):
        for i in sorted(members, key=lambda j: left[j]):
            order.append(i)
            ids.append(line_id)
    return np.asarray(order, np.int64), np.asarray(ids, np.int64)


def crop_quad(image: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """The text region straightened by a perspective warp; upright regions are turned to read left to right."""
    width = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3])))
    height = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
    width, height = max(width, 1), max(height, 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    crop = cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    if crop.shape[0] / crop.shape[1] >= 1.5:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)


def rec_batch(crops: list[np.ndarray], config: RecConfig) -> np.ndarray:
    """(N, 3, H, W) float32: each crop at the recogniser's height, (x/255 - 0.5)/0.5, zero-padded right."""
    height = config.height
    ratios = [c.shape[1] / max(c.shape[0], 1) for c in crops]
    max_ratio = max([config.width / height, *ratios])
    width = min(math.ceil(height * max_ratio), MAX_REC_WIDTH)
    batch = np.zeros((len(crops), 3, height, width), np.float32)
    for i, (crop, ratio) in enumerate(zip(crops, ratios, strict=True)):
        new_w = min(width, math.ceil(height * ratio))
        resized = cv2.resize(crop, (max(new_w, 1), height)).astype(np.float32)
        if config.rgb:
            resized = resized[..., ::-1]
        batch[i, :, :, : resized.shape[1]] = ((resized / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    return batch


def ctc_decode(probs: np.ndarray, characters: tuple[str, ...]) -> list[tuple[str, float]]:
    """Greedy CTC over ``(N, T, C)``: index 0 is the blank, 1..N the characters, N+1 a space."""
    table = ("", *characters, " ")
    best = probs.argmax(axis=2)
    scores = probs.max(axis=2)
    out = []
    for row, row_scores in zip(best, scores, strict=True):
        keep = row != 0
        keep[1:] &= row[1:] != row[:-1]
        indices = row[keep]
        text = "".join(table[i] if i < len(table) else "" for i in indices.tolist())
        out.append((text, float(row_scores[keep].mean()) if keep.any() else 0.0))
    return out
