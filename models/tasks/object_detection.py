"""Object detection on any engine and any detector layout (the decoder says how to read outputs).

The task owns NMS (for layouts that need it), the mapping to source pixels and the response; a
family contributes a decoder class and its input normalisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.models.artifacts.artifact_loader import BACKGROUND_CLASS
from edge_agent.models.maths.coordinates import boxes_to_source
from edge_agent.models.maths.nms import non_max_suppression
from edge_agent.models.maths.predictions import Detections, Prediction
from edge_agent.models.maths.preprocessing import IMAGENET, ImageMeta, InputNormalization
from edge_agent.models.maths.responses import DetectionResponse, ObjectDetectionResponse
from edge_agent.models.tasks.base import ModelContext, VisionModel
from edge_agent.models.tasks.decoders.base import DetectionDecoder, RawDetections
from edge_agent.models.tasks.decoders.rfdetr import RFDETRDecoder
from edge_agent.models.tasks.params import DetectionParams


class ObjectDetectionModel(VisionModel):
    """Boxes, scores and class ids; ``extra_width`` is for tasks that read more per candidate."""

    extra_width: int = 0

    def __init__(
        self,
        context: ModelContext,
        decoder: type[DetectionDecoder],
        normalization: InputNormalization | None = None,
    ) -> None:
        super().__init__(context, normalization)
        self._names = self.output_class_names(self.artifacts.class_names)
        self.decoder = self.make_decoder(decoder)
        self.decoder.check(self.engine.outputs, self.model_id)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._names

    def output_class_names(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """The class names predictions are labelled with (a family may hide placeholders)."""
        return names

    def make_decoder(self, decoder: type[DetectionDecoder]) -> DetectionDecoder:
        return decoder(self.num_classes, self.input_size, self.extra_width)

    def inference_parameters(  # type: ignore[override]
        self,
        confidence: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        max_candidates: int | None = None,
        class_agnostic_nms: bool | None = None,
    ) -> DetectionParams:
        return DetectionParams.build(
            self.settings, confidence, iou_threshold, max_detections, max_candidates, class_agnostic_nms
        )

    def candidates(self, outputs: list[np.ndarray], index: int, params: DetectionParams) -> RawDetections:
        """Decoded candidates of one image after NMS (when the layout needs it), in input pixels."""
        raw = self.decoder.decode(outputs, index, params)
        if self.decoder.needs_nms and len(raw):
            keep = non_max_suppression(
                raw.boxes,
                raw.scores,
                None if params.class_agnostic_nms else raw.class_ids,
                params.iou_threshold,
                params.max_detections,
            )
            raw = raw.select(keep)
        return raw

    def finish(self, raw: RawDetections, meta: ImageMeta, outputs: list[np.ndarray], index: int) -> Detections:
        """Candidates in input pixels -> typed detections in source pixels (tasks extend this)."""
        return Detections(
            boxes=boxes_to_source(raw.boxes, meta),
            confidences=raw.scores,
            class_ids=raw.class_ids,
            class_names=self.class_names,
            image_size=(meta.width, meta.height),
            task_type=self.task_type,
        )

    def postprocess(self, outputs: list[np.ndarray], metas: list[ImageMeta], params: DetectionParams) -> list[Any]:
        return [self.finish(self.candidates(outputs, i, params), meta, outputs, i) for i, meta in enumerate(metas)]

    def make_response(self, prediction: Prediction) -> DetectionResponse:
        return ObjectDetectionResponse.model_validate(prediction.to_response())


class RFDETRObjectDetection(ObjectDetectionModel):
    """RF-DETR: ImageNet mean/std input and the background-class rule of Roboflow's exports."""

    normalization = IMAGENET

    def __init__(
        self,
        context: ModelContext,
        decoder: type[DetectionDecoder] = RFDETRDecoder,
        normalization: InputNormalization | None = None,
    ) -> None:
        names = context.artifacts.class_names
        self._background = names.index(BACKGROUND_CLASS) if BACKGROUND_CLASS in names else None
        super().__init__(context, decoder, normalization)

    def output_class_names(self, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(n for n in names if n != BACKGROUND_CLASS)

    def make_decoder(self, decoder: type[DetectionDecoder]) -> DetectionDecoder:
        if issubclass(decoder, RFDETRDecoder):
            return decoder(self.num_classes, self.input_size, self.extra_width, background_index=self._background)
        return decoder(self.num_classes, self.input_size, self.extra_width)
