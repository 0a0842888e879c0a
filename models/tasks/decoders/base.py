"""The decoder interface and the shape checks every layout shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edge_agent.models.common.errors import ModelLayoutError
from edge_agent.models.engines.base import TensorSpec
from edge_agent.models.tasks.params import DetectionParams

_EMPTY_BOXES = np.zeros((0, 4), dtype=np.float32)
_END_TO_END_HINT = "This looks like an end-to-end (B, 300, 6) output"


@dataclass(frozen=True)
class RawDetections:
    """One image's candidates in model-input pixels, best first.

    ``extras`` (K, E) carries per-candidate values after the class scores (mask coefficients,
    keypoints), or None when the layout has none.
    """

    boxes: np.ndarray  # (K, 4) xyxy float32
    scores: np.ndarray  # (K,) float32
    class_ids: np.ndarray  # (K,) int64
    extras: np.ndarray | None = None

    @classmethod
    def empty(cls, extra_width: int = 0) -> RawDetections:
        extras = np.zeros((0, extra_width), np.float32) if extra_width else None
        return cls(_EMPTY_BOXES, np.zeros(0, np.float32), np.zeros(0, np.int64), extras)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def select(self, index: np.ndarray) -> RawDetections:
        return RawDetections(
            self.boxes[index],
            self.scores[index],
            self.class_ids[index],
            None if self.extras is None else self.extras[index],
        )


class DetectionDecoder(ABC):
    """Decodes one layout. ``num_classes`` comes from the artifacts, ``extra_width`` from the task
    (32 mask coefficients, 3 x keypoints, 0 for plain detection)."""

    #: name used in errors and docs, e.g. "YOLOv8 (B, 4 + C, N)"
    layout: ClassVar[str]
    #: the outputs as a sentence, for the mismatch error
    expected: ClassVar[str]
    #: end-to-end layouts come out of the network already de-duplicated: no NMS
    needs_nms: ClassVar[bool] = True

    def __init__(self, num_classes: int, input_size: tuple[int, int], extra_width: int = 0) -> None:
        self.num_classes = num_classes
        self.input_size = input_size  # (width, height)
        self.extra_width = extra_width

    @abstractmethod
    def check(self, outputs: list[TensorSpec], model_id: str) -> None:
        """Raise ModelLayoutError unless ``outputs`` have this layout's shapes."""

    @abstractmethod
    def decode(self, outputs: list[np.ndarray], index: int, params: DetectionParams) -> RawDetections:
        """Candidates of image ``index`` of the batch whose outputs are ``outputs``."""

    # -- helpers for check() ----------------------------------------------------------------------

    def mismatch(self, model_id: str, outputs: list[TensorSpec], hint: str = "") -> ModelLayoutError:
        return ModelLayoutError(model_id, self.layout, self.expected, [o.describe() for o in outputs], hint)

    def need_outputs(self, outputs: list[TensorSpec], model_id: str, count: int, ranks: tuple[int, ...]) -> None:
        if len(outputs) < count or any(outputs[i].rank != r for i, r in enumerate(ranks)):
            raise self.mismatch(model_id, outputs, suggest_layout(outputs))

    def need_dim(
        self, outputs: list[TensorSpec], model_id: str, which: int, axis: int, want: int, fixed: int = 0
    ) -> None:
        """Output ``which`` must have ``want`` on ``axis``. ``fixed`` of those values are not class
        scores (box, objectness, mask coefficients); the rest are one per listed class name."""
        got = outputs[which].dim(axis)
        if got is None or got == want:
            return
        hint = suggest_layout(outputs)
        if fixed and got > fixed and not hint.startswith(_END_TO_END_HINT):
            # Same layout, other class count: the class list is what disagrees.
            hint = (
                f"The output has {got - fixed} class rows but {want - fixed} class names are listed; "
                f"class_names.txt must name every class the model predicts, in order"
            )
        raise self.mismatch(model_id, outputs, hint)


def top_candidates(scores: np.ndarray, keep: np.ndarray, limit: int) -> np.ndarray:
    """``keep`` (indices into ``scores``) reduced to the best ``limit``, sorted best first."""
    if keep.size > limit:
        keep = keep[np.argpartition(-scores[keep], limit - 1)[:limit]]
    return keep[np.argsort(-scores[keep], kind="stable")]


def suggest_layout(outputs: list[TensorSpec]) -> str:
    """A guess at what the outputs are, so a wrong model_type gets a useful hint."""
    if not outputs:
        return ""
    first = outputs[0].shape
    if len(outputs) >= 2 and len(first) == 3 and first[-1] == 4 and len(outputs[1].shape) == 3:
        second = outputs[1].shape
        if second[1] is not None and second[1] == first[1] and second[1] <= 1000:
            return "These look like DETR-style queries (RF-DETR: model_type rfdetr-base)"
        return "These look like separate box and score outputs (YOLO-NAS: model_type yolonas)"
    if len(first) == 3 and first[1] == 300 and first[2] is not None and first[2] >= 6:
        return (
            "This looks like an end-to-end (B, 300, 6) output (model_type yolov10 or yolo26); set it in model_type.json"
        )
    if len(first) == 3 and first[1] is not None and first[2] is not None:
        if first[1] < first[2]:
            return "This looks like the YOLOv8 layout (B, 4 + C, N) (model_type yolov8)"
        return "This looks like the YOLOv5 layout (B, N, 5 + C) (model_type yolov5)"
    return ""
