"""RF-DETR segmentation: RF-DETR's boxes and logits plus mask logits ``(B, Q, h, w)`` (output 2).

Queries are chosen exactly as for RF-DETR detection; each kept candidate's ``extras`` row is its
query's mask logits, flattened (``h * w`` values), so they travel with the box through any
selection and the task reshapes them with :attr:`mask_shape`.
"""

from __future__ import annotations

import numpy as np

from edge_agent.models.engines.base import TensorSpec
from edge_agent.models.maths.coordinates import cxcywh_to_xyxy
from edge_agent.models.tasks.decoders.base import RawDetections
from edge_agent.models.tasks.decoders.rfdetr import RFDETRDecoder
from edge_agent.models.tasks.params import DetectionParams

MASK_OUTPUT = 2


class RFDETRSegDecoder(RFDETRDecoder):
    layout = "RF-DETR-seg (boxes (B, Q, 4), logits (B, Q, K), masks (B, Q, h, w))"
    expected = (
        "three outputs: boxes (batch, queries, 4) as normalised cx, cy, w, h, logits (batch, queries, classes) "
        "and mask logits (batch, queries, height, width)"
    )

    def check(self, outputs: list[TensorSpec], model_id: str) -> None:
        self.need_outputs(outputs, model_id, 3, (3, 3, 4))
        super().check(outputs, model_id)
        queries, mask_queries = outputs[self._boxes].dim(1), outputs[MASK_OUTPUT].dim(1)
        if queries is not None and mask_queries is not None and queries != mask_queries:
            raise self.mismatch(model_id, outputs, "the mask output must have one mask per query")

    def decode(self, outputs: list[np.ndarray], index: int, params: DetectionParams) -> RawDetections:
        query, label, scores = self.select(outputs, index, params)
        masks = outputs[MASK_OUTPUT][index]
        if query.size == 0:
            return RawDetections.empty(masks.shape[1] * masks.shape[2])
        width, height = self.input_size
        b = outputs[self._boxes][index][query]
        boxes = cxcywh_to_xyxy(b[:, 0] * width, b[:, 1] * height, b[:, 2] * width, b[:, 3] * height)
        return RawDetections(boxes, scores, label, masks[query].reshape(query.size, -1).astype(np.float32))
