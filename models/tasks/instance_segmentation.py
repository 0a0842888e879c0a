"""Instance segmentation: a detector's boxes plus one mask each, in source pixels.

YOLO families (v5-seg, v7-seg, v8/v11-seg, YOLO26-seg) read 32 mask coefficients per candidate
through their detection decoder (``extra_width`` = 32) and a prototype output ``(B, 32, h, w)``;
the mask is ``sigmoid(coefficients . prototypes)`` resampled into source pixels with the boxes'
geometry, cropped to the box and thresholded at 0.5 (as Roboflow's current stack does: the
mask covers the original image at full resolution). RF-DETR-seg gives one logit map per query,
resampled the same way, positive where the logit is > 0 and not cropped to the box.

Polygons are not made here: :class:`~models.predictions.InstanceSegmentation` makes them from the
masks in the form a stream asks for (full, simplified or none).
"""

from __future__ import annotations

import numpy as np

from edge_agent.models.common.errors import ModelLayoutError
from edge_agent.models.maths.coordinates import boxes_to_source
from edge_agent.models.maths.masks import masks_from_logits, masks_from_prototypes
from edge_agent.models.maths.predictions import InstanceSegmentation, Prediction
from edge_agent.models.maths.preprocessing import ImageMeta, InputNormalization
from edge_agent.models.maths.responses import InstanceSegmentationResponse
from edge_agent.models.tasks.base import ModelContext
from edge_agent.models.tasks.decoders.base import DetectionDecoder, RawDetections
from edge_agent.models.tasks.decoders.rfdetr_seg import MASK_OUTPUT, RFDETRSegDecoder
from edge_agent.models.tasks.object_detection import ObjectDetectionModel, RFDETRObjectDetection

NUM_MASK_COEFFICIENTS = 32


def _segmentation(
    model: ObjectDetectionModel, raw: RawDetections, meta: ImageMeta, boxes: np.ndarray, masks: np.ndarray
) -> InstanceSegmentation:
    return InstanceSegmentation(
        boxes=boxes,
        confidences=raw.scores,
        class_ids=raw.class_ids,
        class_names=model.class_names,
        image_size=(meta.width, meta.height),
        task_type=model.task_type,
        masks=masks,
        class_colors=model.artifacts.colors,
    )


class InstanceSegmentationModel(ObjectDetectionModel):
    """A YOLO-style segmentation model: any detection decoder + prototypes at ``proto_output``."""

    extra_width = NUM_MASK_COEFFICIENTS

    def __init__(
        self,
        context: ModelContext,
        decoder: type[DetectionDecoder],
        proto_output: int = 1,
        normalization: InputNormalization | None = None,
    ) -> None:
        super().__init__(context, decoder, normalization)
        self.proto_output = proto_output
        self._check_prototypes()

    def _check_prototypes(self) -> None:
        outputs = self.engine.outputs
        i = self.proto_output
        if len(outputs) <= i or outputs[i].rank != 4 or outputs[i].dim(1) not in (NUM_MASK_COEFFICIENTS, None):
            raise ModelLayoutError(
                self.model_id,
                f"{self.decoder.layout} with mask prototypes",
                f"output {i} of shape (batch, {NUM_MASK_COEFFICIENTS}, height, width): the mask prototypes "
                f"(predictions in output 0 carry {NUM_MASK_COEFFICIENTS} mask coefficients per candidate)",
                [o.describe() for o in outputs],
                "an instance-segmentation model_type needs a segmentation export; is this a plain detector?"
                if len(outputs) <= i
                else "",
            )

    def finish(
        self, raw: RawDetections, meta: ImageMeta, outputs: list[np.ndarray], index: int
    ) -> InstanceSegmentation:
        prototypes = outputs[self.proto_output][index]
        coefficients = raw.extras if raw.extras is not None else np.zeros((0, NUM_MASK_COEFFICIENTS), np.float32)
        boxes = boxes_to_source(raw.boxes, meta)
        masks = masks_from_prototypes(coefficients, prototypes, boxes, meta, self.input_size)
        return _segmentation(self, raw, meta, boxes, masks)

    def make_response(self, prediction: Prediction) -> InstanceSegmentationResponse:
        return InstanceSegmentationResponse.model_validate(prediction.to_response())


class RFDETRInstanceSegmentation(RFDETRObjectDetection):
    """RF-DETR-seg: RF-DETR's queries, ImageNet input, and a mask logit map per query."""

    def __init__(self, context: ModelContext, normalization: InputNormalization | None = None) -> None:
        super().__init__(context, RFDETRSegDecoder, normalization)

    def finish(
        self, raw: RawDetections, meta: ImageMeta, outputs: list[np.ndarray], index: int
    ) -> InstanceSegmentation:
        grid_h, grid_w = outputs[MASK_OUTPUT].shape[2:]
        logits = (
            raw.extras.reshape(-1, grid_h, grid_w)
            if raw.extras is not None
            else np.zeros((0, grid_h, grid_w), np.float32)
        )
        masks = masks_from_logits(logits, meta, self.input_size)
        return _segmentation(self, raw, meta, boxes_to_source(raw.boxes, meta), masks)

    def make_response(self, prediction: Prediction) -> InstanceSegmentationResponse:
        return InstanceSegmentationResponse.model_validate(prediction.to_response())
