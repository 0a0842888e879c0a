"""Typed predictions: what a task hands the pipeline, before anything becomes JSON.

Arrays stay numpy from the decoder to the message builder, so per-stream filtering, tracking
and drawing work on numbers, and the Roboflow-shaped JSON (``to_response``) is built once, where a
message is made for the sinks.

Every prediction type has ``task_type``, ``image_size`` (source width, height), ``__len__`` and
``filter_confidence`` (what per-stream thresholds use), and ``to_response``.

Tasks: :class:`Detections` (object detection), :class:`InstanceSegmentation` (adds ``masks``),
:class:`KeypointDetections` (``keypoints`` with names), :class:`ClassificationPrediction`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from edge_agent.models.maths.polygons import MaskOutput, masks_to_polygons

_NO_BOXES = np.zeros((0, 4), dtype=np.float64)

# ``replace`` keeps the subclass, so a subclass's ``select`` gets its own type back
_DetectionsT = TypeVar("_DetectionsT", bound="Detections")


@runtime_checkable
class Prediction(Protocol):
    # read-only members: the predictions are frozen dataclasses
    @property
    def task_type(self) -> str: ...

    @property
    def image_size(self) -> tuple[int, int]: ...

    def __len__(self) -> int: ...

    def filter_confidence(self, threshold: float) -> Prediction: ...

    def to_response(self) -> dict[str, Any]: ...


def class_label(names: tuple[str, ...], class_id: int) -> str:
    """A class id's name; an id past the list is named by its number (as Roboflow's adapter does)."""
    return names[class_id] if 0 <= class_id < len(names) else str(class_id)


@dataclass(frozen=True)
class Detections:
    """One image's boxes in source pixels.

    ``boxes`` (K, 4) xyxy float64, ``confidences`` (K,) float32, ``class_ids`` (K,) int64. Optional
    per-detection fields travel with them through :meth:`select`: ``track_ids`` (K,) for a tracker,
    ``keypoints`` (K, P, 3) x, y, confidence, ``polygons`` (one (M, 2) array per detection), and
    ``details``: a second model's prediction per detection (None where it did not run), made by
    ``details_model`` (see models/tasks/on_detections.py); each response row then carries it as
    ``second_model``.
    """

    boxes: np.ndarray
    confidences: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    track_ids: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    polygons: tuple[np.ndarray, ...] | None = None
    details: tuple[Any, ...] | None = None
    details_model: str | None = None
    task_type: str = "object-detection"

    @classmethod
    def empty(cls, class_names: tuple[str, ...], image_size: tuple[int, int]) -> Detections:
        return cls(_NO_BOXES, np.zeros(0, np.float32), np.zeros(0, np.int64), class_names, image_size)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def select(self: _DetectionsT, index: np.ndarray) -> _DetectionsT:
        """The detections at ``index`` (integer indices or a boolean mask), every field kept in step."""
        idx = np.flatnonzero(index) if index.dtype == bool else np.asarray(index, dtype=np.int64)
        return replace(
            self,
            boxes=self.boxes[idx],
            confidences=self.confidences[idx],
            class_ids=self.class_ids[idx],
            track_ids=None if self.track_ids is None else self.track_ids[idx],
            keypoints=None if self.keypoints is None else self.keypoints[idx],
            polygons=None if self.polygons is None else tuple(self.polygons[i] for i in idx),
            details=None if self.details is None else tuple(self.details[i] for i in idx),
        )

    def filter_confidence(self, threshold: float) -> Detections:
        keep = self.confidences >= threshold
        return self if bool(keep.all()) else self.select(keep)

    def box_rows(self) -> list[dict[str, Any]]:
        """The Roboflow object-detection prediction dicts, in order (new ``detection_id`` each)."""
        b = self.boxes
        xs = ((b[:, 0] + b[:, 2]) / 2).tolist()
        ys = ((b[:, 1] + b[:, 3]) / 2).tolist()
        ws = (b[:, 2] - b[:, 0]).tolist()
        hs = (b[:, 3] - b[:, 1]).tolist()
        names = self.class_names
        rows = []
        for x, y, w, h, c, k in zip(xs, ys, ws, hs, self.confidences.tolist(), self.class_ids.tolist(), strict=True):
            rows.append(
                {
                    "x": x,
                    "y": y,
                    "width": w,
                    "height": h,
                    "confidence": c,
                    "class": class_label(names, k),
                    "class_id": k,
                    "detection_id": str(uuid.uuid4()),
                }
            )
        if self.track_ids is not None:
            for row, track in zip(rows, self.track_ids.tolist(), strict=True):
                row["tracker_id"] = track
        if self.details is not None:
            for row, detail in zip(rows, self.details, strict=True):
                if detail is not None:
                    body = detail.to_response()
                    body.pop("image", None)  # the crop's size; its coordinates are the frame's already
                    row["second_model"] = {"model_id": self.details_model, **body}
        return rows

    def to_response(self) -> dict[str, Any]:
        width, height = self.image_size
        return {"predictions": self.box_rows(), "image": {"width": width, "height": height}}


@dataclass(frozen=True)
class InstanceSegmentation(Detections):
    """Detections with a mask each: ``masks`` (K, H, W) bool in source pixels, and the classes'
    colours from the artifacts.

    ``polygons`` are made from the masks by :meth:`with_mask_output` (the stream does it in the
    inference executor, with the stream's choice) or, if nobody did, by :meth:`to_response`.
    ``mask_format`` None means the response carries no polygons (mask output ``none``).
    """

    masks: np.ndarray | None = None
    mask_format: str | None = "polygon"
    #: class name -> "#rrggbb" from the model's artifacts (for drawing; not part of the response)
    class_colors: dict[str, str] = field(default_factory=dict)
    task_type: str = "instance-segmentation"

    def select(self, index: np.ndarray) -> InstanceSegmentation:
        idx = np.flatnonzero(index) if index.dtype == bool else np.asarray(index, dtype=np.int64)
        picked = super().select(idx)
        return replace(picked, masks=None if self.masks is None else self.masks[idx])

    def with_mask_output(self, output: MaskOutput) -> InstanceSegmentation:
        """The polygons this output mode sends (or none), computed from the masks now."""
        if output.mode == "none":
            return replace(self, polygons=None, mask_format=None)
        tolerance = output.tolerance if output.mode == "simplified" else None
        if self.masks is None:
            return replace(self, mask_format="polygon")
        return replace(self, polygons=masks_to_polygons(self.masks, tolerance), mask_format="polygon")

    def to_response(self) -> dict[str, Any]:
        width, height = self.image_size
        rows = self.box_rows()
        if self.mask_format is not None:
            polygons = self.polygons
            if polygons is None:
                polygons = masks_to_polygons(self.masks) if self.masks is not None else tuple(_NO_POINTS for _ in rows)
            for row, points in zip(rows, polygons, strict=True):
                row["points"] = [{"x": x, "y": y} for x, y in points.tolist()]
                row["mask_format"] = self.mask_format
        return {"predictions": rows, "image": {"width": width, "height": height}}


_NO_POINTS = np.zeros((0, 2), dtype=np.float64)


@dataclass(frozen=True)
class KeypointDetections(Detections):
    """Detections with ``keypoints`` (K, P, 3): x, y in source pixels and a confidence each.

    ``keypoint_names`` maps an object class id to its keypoints' names (keypoints_metadata.json).
    In the response a keypoint is listed when its confidence is > 0 and >= ``keypoint_confidence``,
    and only if the metadata names it (an object class without metadata names them by number).
    """

    keypoint_names: dict[int, tuple[str, ...]] = field(default_factory=dict)
    keypoint_confidence: float = 0.0
    task_type: str = "keypoint-detection"

    def with_keypoint_confidence(self, threshold: float) -> KeypointDetections:
        return replace(self, keypoint_confidence=threshold)

    def keypoint_rows(self, detection: int) -> list[dict[str, Any]]:
        if self.keypoints is None:
            return []
        class_id = int(self.class_ids[detection])
        names = self.keypoint_names.get(class_id)
        out = []
        for p, (x, y, conf) in enumerate(self.keypoints[detection].tolist()):
            if names is not None and p >= len(names):
                break
            if conf <= 0 or conf < self.keypoint_confidence:
                continue
            out.append({"x": x, "y": y, "confidence": conf, "class_id": p, "class": names[p] if names else str(p)})
        return out

    def to_response(self) -> dict[str, Any]:
        width, height = self.image_size
        rows = self.box_rows()
        for k, row in enumerate(rows):
            row["keypoints"] = self.keypoint_rows(k)
        return {"predictions": rows, "image": {"width": width, "height": height}}


CONFIDENCE_DECIMALS = 4  # Roboflow rounds classification confidences to 4 decimals


@dataclass(frozen=True)
class ClassificationPrediction:
    """One image's class scores: ``confidences`` (C,) float32 after the model's activation
    (softmax for single-label, sigmoid for multi-label), one per name in ``class_names``.

    Nothing is dropped from the arrays: ``threshold`` says which classes the response lists
    (single-label: score >= threshold; multi-label: ``predicted_classes`` with score >= threshold).
    """

    confidences: np.ndarray
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    multilabel: bool = False
    threshold: float = 0.0
    task_type: str = "classification"

    def __len__(self) -> int:
        return int(np.count_nonzero(self.confidences >= self.threshold))

    def filter_confidence(self, threshold: float) -> ClassificationPrediction:
        return replace(self, threshold=threshold)

    @property
    def order(self) -> np.ndarray:
        """Class ids best first (ties by class id)."""
        return np.argsort(-self.confidences, kind="stable")

    def to_response(self) -> dict[str, Any]:
        width, height = self.image_size
        image = {"width": width, "height": height}
        scores = self.confidences.tolist()
        names = self.class_names
        if self.multilabel:
            return {
                "predictions": {
                    class_label(names, i): {"confidence": round(c, CONFIDENCE_DECIMALS), "class_id": i}
                    for i, c in enumerate(scores)
                },
                "predicted_classes": [class_label(names, i) for i, c in enumerate(scores) if c >= self.threshold],
                "image": image,
            }
        rows = [
            {"class": class_label(names, i), "class_id": i, "confidence": round(scores[i], CONFIDENCE_DECIMALS)}
            for i in self.order.tolist()
            if scores[i] >= self.threshold
        ]
        return {
            "predictions": rows,
            "top": rows[0]["class"] if rows else "",
            "confidence": rows[0]["confidence"] if rows else 0.0,
            "image": image,
        }


# --- foundation models: embeddings, zero-shot classification, OCR (issue 13) ----------------------


@dataclass(frozen=True)
class Embeddings:
    """One image's embedding (CLIP's raw visual output, not normalised, as Roboflow returns it)."""

    vector: np.ndarray  # (D,) float32
    image_size: tuple[int, int]
    task_type: str = "embed"

    def __len__(self) -> int:
        return 1

    def filter_confidence(self, threshold: float) -> Embeddings:
        return self  # nothing here has a confidence

    def to_response(self) -> dict[str, Any]:
        width, height = self.image_size
        return {"embeddings": [self.vector.tolist()], "image": {"width": width, "height": height}}


@dataclass(frozen=True)
class ZeroShotClassification:
    """One image scored against text prompts: cosine similarity and CLIP's softmax(100 * cos) per prompt.

    Every prompt's score is always published (``filter_confidence`` keeps them all): a consumer
    watching "is there a person" wants the low scores too.
    """

    prompts: tuple[str, ...]
    similarities: np.ndarray  # (P,) cosine similarity, prompt order
    probabilities: np.ndarray  # (P,) softmax over the prompts
    image_size: tuple[int, int]
    task_type: str = "classification"

    def __len__(self) -> int:
        return len(self.prompts)

    def filter_confidence(self, threshold: float) -> ZeroShotClassification:
        return self

    @property
    def top(self) -> str:
        return self.prompts[int(np.argmax(self.probabilities))] if self.prompts else ""

    def to_response(self) -> dict[str, Any]:
        width, height = self.image_size
        probs = self.probabilities.tolist()
        order = sorted(range(len(self.prompts)), key=lambda i: -probs[i])
        return {
            "predictions": [{"class": self.prompts[i], "class_id": i, "confidence": probs[i]} for i in order],
            "top": self.top,
            "confidence": max(probs) if probs else 0.0,
            "similarity": self.similarities.tolist(),
            "image": {"width": width, "height": height},
        }


@dataclass(frozen=True)
class TextDetections:
    """OCR of one image: text boxes (source pixels) in reading order, each with its string.

    ``line_ids`` groups boxes into lines; ``result`` joins a line's texts with spaces and lines
    with new lines, as Roboflow's OCR response does.
    """

    boxes: np.ndarray  # (K, 4) xyxy float64
    confidences: np.ndarray  # (K,) detector box scores
    texts: tuple[str, ...]
    text_confidences: np.ndarray  # (K,) recognition scores
    line_ids: np.ndarray  # (K,) int64, non-decreasing
    image_size: tuple[int, int]
    polygons: np.ndarray | None = None  # (K, 4, 2) quadrilaterals, source pixels
    task_type: str = "ocr"

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    # the live view labels each box with its text (pipelines/annotate.py reads these)
    @property
    def class_ids(self) -> np.ndarray:
        return np.arange(len(self), dtype=np.int64)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.texts

    @property
    def result(self) -> str:
        lines: dict[int, list[str]] = {}
        for line, text in zip(self.line_ids.tolist(), self.texts, strict=True):
            if text:
                lines.setdefault(line, []).append(text)
        return "\n".join(" ".join(parts) for _, parts in sorted(lines.items()))

    def filter_confidence(self, threshold: float) -> TextDetections:
        keep = np.flatnonzero(self.confidences >= threshold)
        if keep.size == len(self):
            return self
        return replace(
            self,
            boxes=self.boxes[keep],
            confidences=self.confidences[keep],
            texts=tuple(self.texts[i] for i in keep),
            text_confidences=self.text_confidences[keep],
            line_ids=self.line_ids[keep],
            polygons=None if self.polygons is None else self.polygons[keep],
        )

    def to_response(self) -> dict[str, Any]:
        width, height = self.image_size
        b = self.boxes
        rows = []
        for i, text in enumerate(self.texts):
            rows.append(
                {
                    "x": float((b[i, 0] + b[i, 2]) / 2),
                    "y": float((b[i, 1] + b[i, 3]) / 2),
                    "width": float(b[i, 2] - b[i, 0]),
                    "height": float(b[i, 3] - b[i, 1]),
                    "confidence": float(self.confidences[i]),
                    "class": text,
                    "class_id": 0,
                    "detection_id": str(uuid.uuid4()),
                }
            )
        return {"result": self.result, "image": {"width": width, "height": height}, "predictions": rows}
