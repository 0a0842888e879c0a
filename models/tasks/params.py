"""Per-call inference options, validated, with defaults from the model settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.models.common.errors import InvalidInputError
from edge_agent.models.common.settings import ModelSettings


def unit_interval(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number between 0 and 1, got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise InvalidInputError(f"{name} must be between 0 and 1, got {value!r}")
    return number


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidInputError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class DetectionParams:
    """Thresholds of every box-producing task (detection, segmentation, keypoints)."""

    confidence: float
    iou_threshold: float
    max_detections: int
    max_candidates: int
    class_agnostic_nms: bool

    @classmethod
    def build(
        cls,
        settings: ModelSettings,
        confidence: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        max_candidates: int | None = None,
        class_agnostic_nms: bool | None = None,
    ) -> DetectionParams:
        s = settings
        return cls(
            confidence=unit_interval("confidence", s.confidence if confidence is None else confidence),
            iou_threshold=unit_interval("iou_threshold", s.iou_threshold if iou_threshold is None else iou_threshold),
            max_detections=positive_int(
                "max_detections", s.max_detections if max_detections is None else max_detections
            ),
            max_candidates=positive_int(
                "max_candidates", s.max_candidates if max_candidates is None else max_candidates
            ),
            class_agnostic_nms=bool(s.class_agnostic_nms if class_agnostic_nms is None else class_agnostic_nms),
        )
