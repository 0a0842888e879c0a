"""Image classification, single-label and multi-label (ViT, ResNet, DINOv3, YOLOv8-cls).

Input: Roboflow's common pipeline (size from the network, resize mode from environment.json, RGB)
then ``(x / 255 - mean) / std`` with the family's mean/std: 0.5/0.5 for ViT and YOLOv8-cls,
ImageNet for ResNet and DINOv3. Output 0 is ``(B, C)`` class scores.

Activation, as Roboflow's current stack applies it to a graph that does not already end in one:
softmax for single-label, sigmoid for multi-label. Whether the graph ends in one is read from the
scores themselves (the graph is not inspected): a row that is already a probability distribution
is not softmaxed again (the legacy stack always softmaxes, so a softmax export gets a second one),
and multi-label scores that all lie in [0, 1] are taken as probabilities (as the legacy stack
takes them raw); otherwise the sigmoid is applied.

Multi-label is chosen by the task type ``multi-label-classification`` (current stack) or by
``MULTICLASS`` in environment.json (legacy stack).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.models.common.errors import ModelLayoutError
from edge_agent.models.maths.activations import stable_sigmoid
from edge_agent.models.maths.predictions import ClassificationPrediction, Prediction
from edge_agent.models.maths.preprocessing import ImageMeta, InputNormalization
from edge_agent.models.maths.responses import ClassificationResponse, MultiLabelClassificationResponse
from edge_agent.models.tasks.base import ModelContext, VisionModel
from edge_agent.models.tasks.params import unit_interval

MULTI_LABEL_TASK = "multi-label-classification"
_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ClassificationParams:
    confidence: float


def softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax of a (C,) row, unless it already is a probability distribution."""
    s = scores.astype(np.float64)
    if s.size and s.min() >= 0 and abs(s.sum() - 1.0) <= _SUM_TOLERANCE:
        return scores.astype(np.float32)
    e = np.exp(s - s.max())
    return (e / e.sum()).astype(np.float32)


def sigmoid_unless_probabilities(scores: np.ndarray) -> np.ndarray:
    """Sigmoid of a (C,) row, unless every value already lies in [0, 1]."""
    if scores.size and scores.min() >= 0 and scores.max() <= 1:
        return scores.astype(np.float32)
    return stable_sigmoid(scores.astype(np.float32))


def class_scores(output: np.ndarray) -> np.ndarray:
    """Output 0 as (B, C): (B, C, 1, 1) heads are flattened."""
    if output.ndim == 4 and output.shape[2:] == (1, 1):
        return output.reshape(output.shape[0], -1)
    return output


class ClassificationModel(VisionModel):
    def __init__(
        self,
        context: ModelContext,
        normalization: InputNormalization | None = None,
        multilabel: bool | None = None,
    ) -> None:
        super().__init__(context, normalization)
        if multilabel is None:
            multilabel = context.task_type == MULTI_LABEL_TASK or self.artifacts.multiclass
        self.multilabel = multilabel
        self._check_output()

    def _check_output(self) -> None:
        outputs = self.engine.outputs
        spec = outputs[0] if outputs else None
        ok = spec is not None and (spec.rank == 2 or (spec.rank == 4 and spec.shape[2:] == (1, 1)))
        classes = spec.dim(1) if spec is not None and ok else None
        if not ok or (classes is not None and classes != self.num_classes):
            hint = ""
            if ok:
                hint = (
                    f"The output has {classes} class scores but {self.num_classes} class names are listed; "
                    "class_names.txt must name every class the model predicts, in order"
                )
            elif spec is not None and spec.rank == 3:
                hint = "This looks like a detector's output; check the task and model type in model_type.json"
            raise ModelLayoutError(
                self.model_id,
                "classification (B, C)",
                "output 0 of shape (batch, classes): one score per class",
                [o.describe() for o in outputs],
                hint,
            )

    def inference_parameters(self, confidence: float | None = None) -> ClassificationParams:  # type: ignore[override]
        value = self.settings.confidence if confidence is None else confidence
        return ClassificationParams(confidence=unit_interval("confidence", value))

    def postprocess(self, outputs: list[np.ndarray], metas: list[ImageMeta], params: Any) -> list[Any]:
        scores = class_scores(outputs[0])
        activate = sigmoid_unless_probabilities if self.multilabel else softmax
        return [
            ClassificationPrediction(
                confidences=activate(scores[i]),
                class_names=self.class_names,
                image_size=(meta.width, meta.height),
                multilabel=self.multilabel,
                threshold=params.confidence,
                task_type=self.task_type,
            )
            for i, meta in enumerate(metas)
        ]

    def make_response(self, prediction: Prediction) -> ClassificationResponse | MultiLabelClassificationResponse:
        if self.multilabel:
            return MultiLabelClassificationResponse.model_validate(prediction.to_response())
        return ClassificationResponse.model_validate(prediction.to_response())
