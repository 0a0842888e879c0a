"""Typed predictions: what a task hands the pipeline, before anything becomes JSON.

Arrays stay numpy from the decoder to the message builder, so per-stream filtering, tracking
and drawing work on numbers, and the Roboflow-shaped JSON (``to_response``) is built once, where a
message is made for the sinks.

Every prediction type has ``task_type``, ``image_size`` (source width, height), ``__len__`` and
``filter_confidence`` (what per-stream thresholds use), and ``to_response``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

_NO_BOXES = np.zeros((0, 4), dtype=np.float64)


@runtime_checkable
class Prediction(Protocol):
    task_type: str
    image_size: tuple[int, int]

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
    ``keypoints`` (K, P, 3) x, y, confidence, ``polygons`` (one (M, 2) array per detection).
    """

    boxes: np.ndarray
    confidences: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    track_ids: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    polygons: tuple[np.ndarray, ...] | None = None
    task_type: str = "object-detection"

    @classmethod
    def empty(cls, class_names: tuple[str, ...], image_size: tuple[int, int]) -> Detections:
        return cls(_NO_BOXES, np.zeros(0, np.float32), np.zeros(0, np.int64), class_names, image_size)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def select(self, index: np.ndarray) -> Detections:
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
        return rows

    def to_response(self) -> dict[str, Any]:
        width, height = self.image_size
        return {"predictions": self.box_rows(), "image": {"width": width, "height": height}}
