"""Keypoint detection (YOLOv8 / v11 / YOLO26 pose): boxes plus K keypoints (x, y, confidence) each.

The detection decoder reads the 3 x K values after the class scores (``extra_width``); K comes from
the output's shape (each keypoint is 3 values). Keypoint x, y are model-input pixels mapped to
source pixels exactly like boxes (and clipped the same way); confidences are used as the graph
gives them. Names come from ``keypoints_metadata.json`` per object class.

The keypoint threshold is a per-call option ``keypoint_confidence`` (Roboflow's request field; it
has no environment variable), by default the family's as in Roboflow's current stack: 0.0 for
the Ultralytics families, 0.3 for YOLO26; keypoints with confidence 0 are never listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.models.common.errors import ModelLayoutError
from edge_agent.models.maths.coordinates import boxes_to_source, points_to_source
from edge_agent.models.maths.predictions import KeypointDetections, Prediction
from edge_agent.models.maths.preprocessing import ImageMeta, InputNormalization
from edge_agent.models.maths.responses import KeypointsDetectionResponse
from edge_agent.models.tasks.base import ModelContext
from edge_agent.models.tasks.decoders.base import DetectionDecoder, RawDetections
from edge_agent.models.tasks.decoders.end_to_end import EndToEndDecoder
from edge_agent.models.tasks.object_detection import ObjectDetectionModel
from edge_agent.models.tasks.params import DetectionParams, unit_interval

VALUES_PER_KEYPOINT = 3


@dataclass(frozen=True)
class KeypointParams(DetectionParams):
    keypoint_confidence: float = 0.0


def keypoint_values(decoder: type[DetectionDecoder], shape: tuple[int | None, ...], num_classes: int) -> int | None:
    """How many per-candidate values follow the box and class scores in output 0 (None: dynamic)."""
    if issubclass(decoder, EndToEndDecoder):
        width = shape[2] if len(shape) == 3 else None
        return None if width is None else width - 6
    rows = shape[1] if len(shape) == 3 else None  # YOLOv8 layout (B, 4 + C + 3K, N)
    return None if rows is None else rows - 4 - num_classes


class KeypointDetectionModel(ObjectDetectionModel):
    def __init__(
        self,
        context: ModelContext,
        decoder: type[DetectionDecoder],
        default_keypoint_confidence: float = 0.0,
        normalization: InputNormalization | None = None,
    ) -> None:
        self.default_keypoint_confidence = default_keypoint_confidence
        self.extra_width = self._count_values(context, decoder)
        super().__init__(context, decoder, normalization)
        self.num_keypoints = self.extra_width // VALUES_PER_KEYPOINT

    @staticmethod
    def _count_values(context: ModelContext, decoder: type[DetectionDecoder]) -> int:
        outputs = context.engine.outputs
        names = context.artifacts.keypoints
        from_metadata = VALUES_PER_KEYPOINT * max((len(v) for v in names.values()), default=0)
        values = keypoint_values(decoder, outputs[0].shape, len(context.artifacts.class_names)) if outputs else None
        if values is None:
            values = from_metadata
        if values <= 0 or values % VALUES_PER_KEYPOINT:
            raise ModelLayoutError(
                context.model_id,
                f"{decoder.layout} with keypoints",
                f"{decoder.expected}, followed by 3 values (x, y, confidence) per keypoint",
                [o.describe() for o in outputs],
                f"after the box and {len(context.artifacts.class_names)} class scores there are {values} values, "
                "not a positive multiple of 3: the class list or the model type does not match this export",
            )
        return values

    def inference_parameters(  # type: ignore[override]
        self,
        confidence: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        max_candidates: int | None = None,
        class_agnostic_nms: bool | None = None,
        keypoint_confidence: float | None = None,
    ) -> KeypointParams:
        base = super().inference_parameters(
            confidence, iou_threshold, max_detections, max_candidates, class_agnostic_nms
        )
        threshold = self.default_keypoint_confidence if keypoint_confidence is None else keypoint_confidence
        return KeypointParams(**base.__dict__, keypoint_confidence=unit_interval("keypoint_confidence", threshold))

    def postprocess(self, outputs: list[np.ndarray], metas: list[ImageMeta], params: Any) -> list[Any]:
        results = super().postprocess(outputs, metas, params)
        threshold = getattr(params, "keypoint_confidence", self.default_keypoint_confidence)
        return [r.with_keypoint_confidence(threshold) for r in results]

    def finish(self, raw: RawDetections, meta: ImageMeta, outputs: list[np.ndarray], index: int) -> KeypointDetections:
        values = raw.extras if raw.extras is not None else np.zeros((0, self.extra_width), np.float32)
        keypoints = values.reshape(len(values), self.num_keypoints, VALUES_PER_KEYPOINT).astype(np.float64)
        keypoints[..., :2] = points_to_source(keypoints[..., :2], meta)
        return KeypointDetections(
            boxes=boxes_to_source(raw.boxes, meta),
            confidences=raw.scores,
            class_ids=raw.class_ids,
            class_names=self.class_names,
            image_size=(meta.width, meta.height),
            keypoints=keypoints,
            keypoint_names=self.artifacts.keypoints,
            task_type=self.task_type,
        )

    def make_response(self, prediction: Prediction) -> KeypointsDetectionResponse:
        return KeypointsDetectionResponse.model_validate(prediction.to_response())
