"""YOLO-NAS layout: two outputs, boxes ``(B, N, 4)`` x1, y1, x2, y2 in input pixels and class scores
``(B, N, C)`` in [0, 1]. Label = best class, kept when its score is above the confidence; NMS follows."""

from __future__ import annotations

import numpy as np

from edge_agent.models.engines.base import TensorSpec
from edge_agent.models.tasks.decoders.base import DetectionDecoder, RawDetections, top_candidates
from edge_agent.models.tasks.params import DetectionParams


class YOLONASDecoder(DetectionDecoder):
    layout = "YOLO-NAS (boxes (B, N, 4), scores (B, N, C))"
    expected = (
        "two outputs: boxes (batch, candidates, 4) as x1, y1, x2, y2 pixels and scores (batch, candidates, classes)"
    )

    def __init__(self, num_classes: int, input_size: tuple[int, int], extra_width: int = 0) -> None:
        super().__init__(num_classes, input_size, extra_width)
        self._boxes, self._scores = 0, 1

    def _order(self, outputs: list[TensorSpec]) -> tuple[int, int]:
        """(boxes, scores) output indices: the one whose last axis is 4 holds the boxes."""
        last = outputs[1].shape[-1] if len(outputs) > 1 else None
        return (1, 0) if last == 4 and self.num_classes != 4 else (0, 1)

    def check(self, outputs: list[TensorSpec], model_id: str) -> None:
        self.need_outputs(outputs, model_id, 2, (3, 3))
        b, s = self._order(outputs)
        self.need_dim(outputs, model_id, b, 2, 4)
        self.need_dim(outputs, model_id, s, 2, self.num_classes)
        nb, ns = outputs[b].dim(1), outputs[s].dim(1)
        if nb is not None and ns is not None and nb != ns:
            raise self.mismatch(model_id, outputs, "box and score outputs must have the same number of candidates")
        self._boxes, self._scores = b, s

    def decode(self, outputs: list[np.ndarray], index: int, params: DetectionParams) -> RawDetections:
        boxes_all, scores_all = outputs[self._boxes][index], outputs[self._scores][index]
        class_ids = scores_all.argmax(axis=1)
        scores = scores_all[np.arange(scores_all.shape[0]), class_ids]
        keep = np.flatnonzero(scores > params.confidence)
        if keep.size == 0:
            return RawDetections.empty()
        keep = top_candidates(scores, keep, params.max_candidates)
        return RawDetections(
            boxes_all[keep].astype(np.float32), scores[keep].astype(np.float32), class_ids[keep].astype(np.int64)
        )
