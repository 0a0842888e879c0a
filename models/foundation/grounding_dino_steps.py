"""Grounding DINO's pure steps: the caption of a class list, image resizing, and decoding the
network's token scores into boxes of named classes (``groundingdino.util.inference`` and
Roboflow's ``predict_with_classes``, with Roboflow's listed defects fixed).

Decoding, per query: its confidence is the highest sigmoid token score (the box logit); queries at
or below ``box_threshold`` are dropped. The caption tokens scoring above ``text_threshold`` (never
the leading ``[CLS]``) are decoded into a phrase, dots removed; the phrase names the first class
whose text appears in it. A phrase naming no class is dropped (Roboflow's stacks give ``None`` /
an out-of-range index and fail or publish garbage).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from edge_agent.models.maths.nms import non_max_suppression

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SHORT_SIDE = 800
LONG_SIDE_MAX = 1333
NMS_IOU = 0.5
MAX_DETECTIONS = 300
#: tokens at or past this index are never part of a phrase (groundingdino's ``right_idx``)
RIGHT_INDEX = 255


def caption_of(classes: Sequence[str]) -> str:
    """``". ".join(classes)`` lower-cased, ending in a dot (groundingdino's ``preprocess_caption``)."""
    caption = ". ".join(c.strip() for c in classes).lower().strip()
    return caption if caption.endswith(".") else caption + "."


def resized_size(width: int, height: int, short: int = SHORT_SIDE, long_max: int = LONG_SIDE_MAX) -> tuple[int, int]:
    """(width, height) with the shorter side ``short`` unless the longer would pass ``long_max``
    (torchvision's ``Resize(800, max_size=1333)`` as groundingdino's transforms compute it)."""
    small, big = min(width, height), max(width, height)
    size = short
    if big / small * size > long_max:
        size = round(long_max * small / big)
    if width < height:
        return size, int(size * height / width)
    return int(size * width / height), size


def pixel_values(image_bgr: np.ndarray, short: int = SHORT_SIDE, long_max: int = LONG_SIDE_MAX) -> np.ndarray:
    """One BGR uint8 image -> (3, H, W) float32 RGB, resized keeping its aspect, ImageNet-normalised."""
    height, width = image_bgr.shape[:2]
    new_w, new_h = resized_size(width, height, short, long_max)
    # area averaging when shrinking stands in for PIL's antialiased bilinear resize
    interpolation = cv2.INTER_AREA if new_w < width else cv2.INTER_LINEAR
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=interpolation)
    rgb: np.ndarray = resized[:, :, ::-1].astype(np.float32) / np.float32(255.0)
    normalised = (rgb - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def phrase_class(phrase: str, classes: Sequence[str]) -> int | None:
    """Index of the first class whose text is part of ``phrase`` (both as the tokenizer renders
    them, see :func:`decode`), or None."""
    for index, name in enumerate(classes):
        if name and name in phrase:
            return index
    return None


def phrase_tokens(scores: np.ndarray, token_ids: Sequence[int], text_threshold: float) -> list[int]:
    """The caption's token ids whose score is above ``text_threshold``, minus ``[CLS]`` (index 0)."""
    count = min(len(token_ids), scores.shape[0], RIGHT_INDEX)
    return [int(token_ids[i]) for i in range(1, count) if scores[i] > text_threshold]


def cxcywh_to_pixels(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(K, 4) normalised centre/size boxes -> xyxy in the source image's pixels, inside the image."""
    width, height = size
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    xyxy = np.stack(
        [b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], axis=1
    ) * np.array([width, height, width, height], np.float64)
    xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, width)
    xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, height)
    return xyxy


def decode(
    probabilities: np.ndarray,
    boxes: np.ndarray,
    token_ids: Sequence[int],
    render: Callable[[list[int]], str],
    classes: Sequence[str],
    box_threshold: float,
    text_threshold: float,
    size: tuple[int, int],
    *,
    class_agnostic: bool = False,
    iou_threshold: float = NMS_IOU,
    max_detections: int = MAX_DETECTIONS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xyxy pixels (K, 4), confidences (K,), class ids (K,)) of one image, best first.

    ``probabilities`` (Q, T): sigmoid token scores per query; ``boxes`` (Q, 4) normalised cxcywh;
    ``render`` turns token ids into text; ``classes`` as ``render`` renders them.
    """
    confidence = probabilities.max(axis=1) if probabilities.size else np.zeros(0)
    kept_boxes, kept_scores, kept_ids = [], [], []
    for query in np.flatnonzero(confidence > box_threshold):
        phrase = render(phrase_tokens(probabilities[query], token_ids, text_threshold)).replace(".", "")
        found = phrase_class(phrase, classes)
        if found is None:
            continue
        kept_boxes.append(boxes[query])
        kept_scores.append(confidence[query])
        kept_ids.append(found)
    if not kept_ids:
        return np.zeros((0, 4), np.float64), np.zeros(0, np.float32), np.zeros(0, np.int64)
    xyxy = cxcywh_to_pixels(np.asarray(kept_boxes), size)
    scores = np.asarray(kept_scores, np.float32)
    ids = np.asarray(kept_ids, np.int64)
    keep = non_max_suppression(xyxy, scores, None if class_agnostic else ids, iou_threshold, max_detections)
    return xyxy[keep], scores[keep], ids[keep]


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "caption_of",
    "cxcywh_to_pixels",
    "decode",
    "phrase_class",
    "phrase_tokens",
    "pixel_values",
    "resized_size",
]
