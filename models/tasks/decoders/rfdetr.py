"""RF-DETR (and rfdetr-nas): boxes ``(B, Q, 4)`` normalised cx, cy, w, h and class logits ``(B, Q, K)``.

As Roboflow's current stack: sigmoid of the logits, the best ``Q`` (number of queries) of the
flattened Q x K scores, kept when ``> confidence``, query = index // K and label = index % K, sorted
best first, no NMS. Labels outside the class list are dropped. Roboflow's exports may list a
placeholder background class (``background_class83422``); when ``background_index`` is given its
detections are dropped and higher labels move down by one, as the class names did.
"""

from __future__ import annotations

import numpy as np

from edge_agent.models.engines.base import TensorSpec
from edge_agent.models.maths.activations import stable_sigmoid
from edge_agent.models.maths.coordinates import cxcywh_to_xyxy
from edge_agent.models.tasks.decoders.base import DetectionDecoder, RawDetections
from edge_agent.models.tasks.params import DetectionParams


class RFDETRDecoder(DetectionDecoder):
    layout = "RF-DETR (boxes (B, Q, 4), logits (B, Q, K))"
    expected = "two outputs: boxes (batch, queries, 4) as normalised cx, cy, w, h and logits (batch, queries, classes)"
    needs_nms = False

    def __init__(
        self,
        num_classes: int,
        input_size: tuple[int, int],
        extra_width: int = 0,
        background_index: int | None = None,
    ) -> None:
        super().__init__(num_classes, input_size, extra_width)
        self.background_index = background_index
        self._boxes, self._logits = 0, 1

    def check(self, outputs: list[TensorSpec], model_id: str) -> None:
        self.need_outputs(outputs, model_id, 2, (3, 3))
        if outputs[0].dim(2) != 4 and outputs[1].dim(2) == 4:
            self._boxes, self._logits = 1, 0
        self.need_dim(outputs, model_id, self._boxes, 2, 4)
        queries, logit_queries = outputs[self._boxes].dim(1), outputs[self._logits].dim(1)
        if queries is not None and logit_queries is not None and queries != logit_queries:
            raise self.mismatch(model_id, outputs, "box and logit outputs must have the same number of queries")
        classes = outputs[self._logits].dim(2)
        listed = self.num_classes + (1 if self.background_index is not None else 0)
        if classes is not None and classes < listed:
            raise self.mismatch(model_id, outputs, f"the logits have {classes} classes but {listed} names are listed")

    def decode(self, outputs: list[np.ndarray], index: int, params: DetectionParams) -> RawDetections:
        query, label, scores = self.select(outputs, index, params)
        if query.size == 0:
            return RawDetections.empty()
        width, height = self.input_size
        b = outputs[self._boxes][index][query]
        boxes = cxcywh_to_xyxy(b[:, 0] * width, b[:, 1] * height, b[:, 2] * width, b[:, 3] * height)
        return RawDetections(boxes, scores, label)

    def select(
        self, outputs: list[np.ndarray], index: int, params: DetectionParams
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query index, label, score) of the kept candidates of image ``index``, best first."""
        logits = outputs[self._logits][index]
        queries, classes = logits.shape
        probs = stable_sigmoid(logits.reshape(-1))
        k = min(queries, probs.size)
        top = np.argpartition(-probs, k - 1)[:k] if k < probs.size else np.arange(probs.size)
        top = top[probs[top] > params.confidence]
        if top.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        top = top[np.argsort(-probs[top], kind="stable")]
        query, label = top // classes, (top % classes).astype(np.int64)
        if self.background_index is not None:
            keep = label != self.background_index
            query, label, top = query[keep], label[keep], top[keep]
            label = np.where(label > self.background_index, label - 1, label)
        valid = label < self.num_classes
        query, label, top = query[valid], label[valid], top[valid]
        top = top[: params.max_detections]
        query, label = query[: params.max_detections], label[: params.max_detections]
        return query, label, probs[top].astype(np.float32)
