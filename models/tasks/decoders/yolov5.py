"""YOLOv5 layout: ``(B, N, 5 + C [+ E])``: cx, cy, w, h (input pixels), objectness, class scores.

As Roboflow's current stack: candidates are kept on **objectness** (``> confidence``), the label is
the best class, and the reported confidence is that class's score (the legacy stack reports the
objectness instead).
"""

from __future__ import annotations

import numpy as np

from edge_agent.models.engines.base import TensorSpec
from edge_agent.models.maths.coordinates import cxcywh_to_xyxy
from edge_agent.models.tasks.decoders.base import DetectionDecoder, RawDetections, top_candidates
from edge_agent.models.tasks.params import DetectionParams


class YOLOv5Decoder(DetectionDecoder):
    layout = "YOLOv5 (B, N, 5 + C)"
    expected = "output 0 of shape (batch, candidates, 5 + classes [+ extras]): cx, cy, w, h, objectness, scores"

    def check(self, outputs: list[TensorSpec], model_id: str) -> None:
        self.need_outputs(outputs, model_id, 1, (3,))
        self.need_dim(outputs, model_id, 0, 2, 5 + self.num_classes + self.extra_width, fixed=5 + self.extra_width)

    def decode(self, outputs: list[np.ndarray], index: int, params: DetectionParams) -> RawDetections:
        out = outputs[0][index]
        nc = self.num_classes
        objectness = out[:, 4]
        keep = np.flatnonzero(objectness > params.confidence)
        if keep.size == 0:
            return RawDetections.empty(self.extra_width)
        class_scores = out[keep, 5 : 5 + nc]
        class_ids = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(keep.size), class_ids]
        order = top_candidates(scores, np.arange(keep.size), params.max_candidates)
        rows = keep[order]
        boxes = cxcywh_to_xyxy(out[rows, 0], out[rows, 1], out[rows, 2], out[rows, 3])
        extras = out[rows, 5 + nc :].astype(np.float32) if self.extra_width else None
        return RawDetections(boxes, scores[order].astype(np.float32), class_ids[order].astype(np.int64), extras)
