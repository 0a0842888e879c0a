"""OWLv2 few-shot detection, the pure parts: pre-processing, picking a reference box's embedding,
and scoring a frame against the class embeddings (Roboflow's ``owlv2.py`` rules, numpy).

* Pre-processing: RGB /255, bilinear resize keeping the aspect ratio to fit the processor's size,
  pad bottom/right with 0.5 to the square, CLIP mean/std.
* An image is kept as its ``MAX_BOXES`` most object-like boxes (sigmoid objectness): normalised
  cx, cy, w, h on the padded square and L2-normalised class embeddings.
* A reference box (pixels cx, cy, w, h / max(W, H)) takes the embedding of the image's box it
  overlaps most, if that IoU is above ``iou_threshold`` (0.3).
* A frame's box scores ``(max over a class's queries of the dot product + 1) / 2`` per class,
  kept above ``confidence``; positive and negative queries of a class go through one NMS and
  negatives are dropped; then one class-agnostic NMS; class ids are the sorted names' indices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge_agent.models.maths.nms import non_max_suppression

MAX_BOXES = 300
PAD_VALUE = 0.5


def owl_input(image: np.ndarray, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """BGR uint8 frame -> (3, H, W) float32 on the padded square (``size`` = height, width)."""
    height, width = image.shape[:2]
    ratio = min(size[0] / height, size[1] / width)
    new_h, new_w = int(ratio * height), int(ratio * width)
    rgb = image[:, :, ::-1].astype(np.float32) / 255.0
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size[0], size[1], 3), PAD_VALUE, np.float32)
    canvas[:new_h, :new_w] = resized
    normalised = (canvas - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1).astype(np.float32))


@dataclass(frozen=True)
class ImageEmbedding:
    """An image as OWLv2 sees it: its most object-like boxes and their class embeddings."""

    boxes: np.ndarray  # (N, 4) cx, cy, w, h normalised to the padded square
    embeddings: np.ndarray  # (N, D) L2-normalised
    objectness: np.ndarray  # (N,) after the sigmoid
    size: tuple[int, int]  # source width, height


def top_boxes(objectness: np.ndarray, boxes: np.ndarray, embeddings: np.ndarray, limit: int = MAX_BOXES) -> tuple:
    """The ``limit`` most object-like boxes (best first), as ``torch.topk`` orders them."""
    order = np.argsort(-objectness, kind="stable")[:limit]
    return objectness[order], boxes[order], embeddings[order]


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    cx, cy, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def reference_box(box: Mapping[str, float], size: tuple[int, int]) -> np.ndarray:
    """A training box (pixels, centre x, y, width w, height h) on the padded square's scale."""
    scale = float(max(size))
    return np.array([box["x"], box["y"], box["w"], box["h"]], np.float64) / scale


def query_embeddings(image: ImageEmbedding, references: np.ndarray, iou_threshold: float) -> list[np.ndarray | None]:
    """For each reference box (normalised cx, cy, w, h): the embedding of the image's box it
    overlaps most, or None when no box overlaps it by more than ``iou_threshold``."""
    if image.boxes.shape[0] == 0 or references.shape[0] == 0:
        return [None] * references.shape[0]
    iou = box_iou(cxcywh_to_xyxy(image.boxes), cxcywh_to_xyxy(references))  # (N, K)
    best = iou.argmax(axis=0)
    out: list[np.ndarray | None] = []
    for k, index in enumerate(best.tolist()):
        out.append(image.embeddings[index] if iou[index, k] > iou_threshold else None)
    return out


ClassQueries = dict[str, dict[str, np.ndarray | None]]  # class -> {"positive": (n, D), "negative": ...}


def score_frame(
    image: ImageEmbedding, classes: ClassQueries, confidence: float, iou_threshold: float, max_detections: int = 300
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """(boxes xyxy in source pixels, scores, class ids, class names) of one frame."""
    names = tuple(sorted(classes))
    all_boxes, all_scores, all_classes = [], [], []
    for class_id, name in enumerate(names):
        boxes, scores, positive = [], [], []
        for kind in ("positive", "negative"):
            queries = classes[name].get(kind)
            if queries is None or len(queries) == 0:
                continue
            score = (np.max(image.embeddings @ np.asarray(queries).T, axis=1) + 1.0) / 2.0  # (N,)
            keep = score > confidence
            boxes.append(image.boxes[keep])
            scores.append(score[keep])
            positive.append(np.full(int(keep.sum()), kind == "positive"))
        if not boxes:
            continue
        b, s, p = np.concatenate(boxes), np.concatenate(scores), np.concatenate(positive)
        kept = non_max_suppression(cxcywh_to_xyxy(b), s, None, iou_threshold, len(s))
        kept = kept[p[kept]]
        all_boxes.append(b[kept])
        all_scores.append(s[kept])
        all_classes.append(np.full(kept.size, class_id, np.int64))
    if not all_boxes:
        return np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int64), names
    b, s, c = np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_classes)
    kept = non_max_suppression(cxcywh_to_xyxy(b), s, None, iou_threshold, max_detections)
    scale = float(max(image.size))
    return cxcywh_to_xyxy(b[kept]) * scale, s[kept].astype(np.float32), c[kept], names


__all__ = [
    "MAX_BOXES",
    "ClassQueries",
    "ImageEmbedding",
    "box_iou",
    "cxcywh_to_xyxy",
    "owl_input",
    "query_embeddings",
    "reference_box",
    "score_frame",
    "top_boxes",
]
