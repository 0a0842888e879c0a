"""End-to-end layouts (YOLOv10, YOLO26): ``(B, Q, 6 [+ E])`` = x1, y1, x2, y2, score, class [, extras].

The network already removed duplicates, so there is no NMS. As the current Roboflow stack does
for fused outputs, a row is kept when its score is ``>= confidence``; the best ``max_detections``
are returned, best first.
"""

from __future__ import annotations

import numpy as np

from edge_agent.models.engines.base import TensorSpec
from edge_agent.models.tasks.decoders.base import DetectionDecoder, RawDetections, top_candidates
from edge_agent.models.tasks.params import DetectionParams


class EndToEndDecoder(DetectionDecoder):
    layout = "end-to-end (B, 300, 6)"
    expected = "output 0 of shape (batch, detections, 6 [+ extras]): x1, y1, x2, y2 pixels, score, class id"
    needs_nms = False

    def check(self, outputs: list[TensorSpec], model_id: str) -> None:
        self.need_outputs(outputs, model_id, 1, (3,))
        self.need_dim(outputs, model_id, 0, 2, 6 + self.extra_width)

    def decode(self, outputs: list[np.ndarray], index: int, params: DetectionParams) -> RawDetections:
        out = outputs[0][index]
        scores = out[:, 4]
        labels = np.rint(out[:, 5])
        keep = np.flatnonzero((scores >= params.confidence) & (labels >= 0) & (labels < self.num_classes))
        if keep.size == 0:
            return RawDetections.empty(self.extra_width)
        keep = top_candidates(scores, keep, params.max_detections)
        class_ids = labels[keep].astype(np.int64)
        boxes = out[keep, 0:4].astype(np.float32)
        extras = out[keep, 6:].astype(np.float32) if self.extra_width else None
        return RawDetections(boxes, scores[keep].astype(np.float32), class_ids, extras)
