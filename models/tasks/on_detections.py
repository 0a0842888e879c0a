"""A model run on another model's detections: the *second model* of a stream.

A detector finds things; a second model then looks at each of them. How it uses the boxes is
declared by the model itself:

* **prompts** (:class:`BoxPrompted`): the model takes the whole frame with the boxes as its prompts
  and returns the stream's prediction in place of the detector's. SAM and SAM2 do this: one mask per
  box, published as instance segmentation with the detector's classes and confidences. Such a model
  has ``boxes_as = "prompts"`` and a ``predict_on_boxes`` method.
* **crops** (every other model; ``boxes_as = "crops"`` or no attribute): each box is cut out of the
  frame (plus ``padding`` pixels), the model's ordinary ``predict`` runs on the crops in one call,
  and its prediction for each crop rides along with the detection (``Detections.details``), with
  boxes and polygons mapped back to frame pixels. In the response each row gains ``second_model``:
  the crop's Roboflow response (a classifier's classes, OCR's text, CLIP's embedding, a VLM's
  answer...). A foundation second model may also take per-image options (CLIP prompts, say).

``classes`` limits the second model to the detections of those classes (plates, not cars): the
others keep no details (crops) or an empty mask (prompts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from edge_agent.models.maths.polygons import POLYGON
from edge_agent.models.maths.predictions import Detections, InstanceSegmentation, Prediction, TextDetections

BoxesAs = Literal["prompts", "crops"]


@runtime_checkable
class BoxPrompted(Protocol):
    """A model that segments (or otherwise answers) a frame for a set of boxes at once."""

    boxes_as: BoxesAs

    def predict_on_boxes(
        self, image: np.ndarray, detections: Detections, which: np.ndarray, options: Mapping[str, Any] | None = None
    ) -> Prediction:
        """``detections`` in frame pixels; ``which`` (K,) bool marks the boxes to work on (the others
        stay in the result without the model's output)."""


def boxes_as(model: Any) -> BoxesAs:
    """How ``model`` takes a detector's boxes."""
    declared = getattr(model, "boxes_as", "crops")
    if declared == "prompts" and callable(getattr(model, "predict_on_boxes", None)):
        return "prompts"
    return "crops"


def crop_window(box: Sequence[float], size: tuple[int, int], padding: float = 0.0) -> tuple[int, int, int, int] | None:
    """Integer ``(x0, y0, x1, y1)`` of a box grown by ``padding`` on every side, clipped to the
    frame (``size`` = width, height): whole pixels that the box touches. None when nothing is left."""
    width, height = size
    x0 = max(0, math.floor(box[0] - padding))
    y0 = max(0, math.floor(box[1] - padding))
    x1 = min(width, math.ceil(box[2] + padding))
    y1 = min(height, math.ceil(box[3] + padding))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def shift_prediction(prediction: Prediction, dx: float, dy: float, image_size: tuple[int, int]) -> Prediction:
    """A prediction made on a crop whose top-left corner is (dx, dy) in the frame, in frame pixels.

    Boxes, polygons and keypoints move; masks (crop-sized) become polygons first and are dropped,
    so nothing crop-sized is left. Predictions without coordinates are returned as they are.
    """
    offset = np.array([dx, dy, dx, dy], dtype=np.float64)
    if isinstance(prediction, Detections):
        moved = prediction
        if isinstance(moved, InstanceSegmentation) and moved.masks is not None:
            if moved.mask_format is not None and moved.polygons is None:
                moved = moved.with_mask_output(POLYGON)
            moved = replace(moved, masks=None)
        keypoints = moved.keypoints
        if keypoints is not None:
            keypoints = keypoints.copy()
            keypoints[..., 0] += dx
            keypoints[..., 1] += dy
        return replace(
            moved,
            boxes=moved.boxes + offset,
            polygons=None if moved.polygons is None else tuple(p + np.array([dx, dy]) for p in moved.polygons),
            keypoints=keypoints,
            image_size=image_size,
        )
    if isinstance(prediction, TextDetections):
        return replace(
            prediction,
            boxes=prediction.boxes + offset,
            polygons=None if prediction.polygons is None else prediction.polygons + np.float32(0) + (dx, dy),
            image_size=image_size,
        )
    return prediction


def selected(detections: Detections, classes: Sequence[str] | None) -> np.ndarray:
    """(K,) bool: the detections a second model works on (all, or those of ``classes``)."""
    if not classes:
        return np.ones(len(detections), dtype=bool)
    wanted = set(classes)
    names = detections.class_names
    return np.array(
        [(names[k] if 0 <= k < len(names) else str(k)) in wanted for k in detections.class_ids.tolist()], dtype=bool
    )


def run_on_detections(
    model: Any,
    image: np.ndarray,
    detections: Detections,
    *,
    model_id: str,
    classes: Sequence[str] | None = None,
    padding: float = 0.0,
    options: Mapping[str, Any] | None = None,
) -> Prediction:
    """The stream's prediction after ``model`` has run on ``detections`` of the BGR frame ``image``.

    ``options``: per-image options for a foundation model (CLIP prompts), given for every crop.
    """
    which = selected(detections, classes)
    if boxes_as(model) == "prompts":
        return model.predict_on_boxes(image, detections, which, options)
    height, width = image.shape[:2]
    windows: list[tuple[int, tuple[int, int, int, int]]] = []
    for index in np.flatnonzero(which).tolist():
        window = crop_window(detections.boxes[index], (width, height), padding)
        if window is not None:
            windows.append((index, window))
    details: list[Prediction | None] = [None] * len(detections)
    if windows:
        crops = [np.ascontiguousarray(image[y0:y1, x0:x1]) for _, (x0, y0, x1, y1) in windows]
        extra: dict[str, Any] = {}
        if options:
            extra["image_options"] = [dict(options) for _ in crops]
        predictions = model.predict(crops, **extra)
        for (index, (x0, y0, _, _)), prediction in zip(windows, predictions, strict=True):
            details[index] = shift_prediction(prediction, x0, y0, (width, height))
    return replace(detections, details=tuple(details), details_model=model_id)


__all__ = [
    "BoxPrompted",
    "BoxesAs",
    "boxes_as",
    "crop_window",
    "run_on_detections",
    "selected",
    "shift_prediction",
]
