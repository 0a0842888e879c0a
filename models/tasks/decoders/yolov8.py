"""YOLOv8 / v9 / v11 / v12 layout: ``(B, 4 + C [+ E], N)``.

Rows 0..3 are cx, cy, w, h in input pixels, then C class scores already in [0, 1] (the graph ends
in a sigmoid; no objectness), then E extra rows (32 mask coefficients, or 3 values per keypoint).
A box's label is its best class; it is kept when that score is above the confidence (strictly,
as both Roboflow stacks do).
"""

from __future__ import annotations

import numpy as np

from edge_agent.models.engines.base import TensorSpec
from edge_agent.models.maths.coordinates import cxcywh_to_xyxy
from edge_agent.models.tasks.decoders.base import DetectionDecoder, RawDetections, top_candidates
from edge_agent.models.tasks.params import DetectionParams


class YOLOv8Decoder(DetectionDecoder):
    layout = "YOLOv8 (B, 4 + C, N)"
    expected = "output 0 of shape (batch, 4 + classes [+ extras], candidates), boxes as cx, cy, w, h pixels"

    def check(self, outputs: list[TensorSpec], model_id: str) -> None:
        self.need_outputs(outputs, model_id, 1, (3,))
        self.need_dim(outputs, model_id, 0, 1, 4 + self.num_classes + self.extra_width, fixed=4 + self.extra_width)

    def decode(self, outputs: list[np.ndarray], index: int, params: DetectionParams) -> RawDetections:
        out = outputs[0][index]
        nc = self.num_classes
        scores_all = out[4 : 4 + nc]
        # The max over classes is a fast row-wise reduction; the argmax (strided, ~10x dearer) is
        # taken only for the few candidates above the threshold. Ties resolve as argmax does.
        scores = scores_all.max(axis=0)
        keep = np.flatnonzero(scores > params.confidence)
        if keep.size == 0:
            return RawDetections.empty(self.extra_width)
        keep = top_candidates(scores, keep, params.max_candidates)
        class_ids = scores_all[:, keep].argmax(axis=0)
        boxes = cxcywh_to_xyxy(out[0, keep], out[1, keep], out[2, keep], out[3, keep])
        extras = out[4 + nc :, keep].T.astype(np.float32) if self.extra_width else None
        return RawDetections(boxes, scores[keep].astype(np.float32), class_ids.astype(np.int64), extras)
