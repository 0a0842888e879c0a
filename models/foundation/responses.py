"""Roboflow-shaped responses of the foundation models (what ``infer`` returns; ``model_dump()`` is the JSON)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.models.maths.predictions import Embeddings, Prediction, TextDetections, ZeroShotClassification
from edge_agent.models.maths.responses import ImageDimensions, InferenceStamp, ObjectDetectionPrediction


class _Shape(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)

    def model_dump(self, *, by_alias: bool | None = True, **kwargs: Any) -> dict[str, Any]:
        return super().model_dump(by_alias=by_alias, **kwargs)


class EmbeddingResponse(InferenceStamp, _Shape):
    """``/clip/embed_image``: ``{embeddings: [[...]]}`` (plus the image size)."""

    embeddings: list[list[float]]
    image: ImageDimensions


class ZeroShotPrediction(_Shape):
    class_name: str = Field(alias="class")
    class_id: int
    confidence: float


class ZeroShotResponse(InferenceStamp, _Shape):
    """Roboflow's classification shape, plus ``similarity`` (``/clip/compare``'s cosine per prompt)."""

    predictions: list[ZeroShotPrediction]
    top: str
    confidence: float
    similarity: list[float]
    image: ImageDimensions


class OCRResponse(InferenceStamp, _Shape):
    """Roboflow's OCR response: the text, and one box per text fragment (``class`` is its text)."""

    result: str
    image: ImageDimensions
    predictions: list[ObjectDetectionPrediction]


class PromptedMask(_Shape):
    """One prompt's mask: all outer contours as integer points (``json``) or COCO RLE (``rle``)."""

    masks: list[list[list[int]]] | dict[str, Any]
    confidence: float
    format: str


class PromptedMasksResponse(_Shape):
    """Roboflow's ``/sam2/segment_image``: one prediction per prompt."""

    predictions: list[PromptedMask]


class SamResponse(_Shape):
    """Roboflow's ``/sam/segment_image`` (json format): each mask's largest outer contour."""

    masks: list[list[list[int]]]


def response_of(prediction: Prediction) -> Any:
    body = prediction.to_response()
    if isinstance(prediction, Embeddings):
        return EmbeddingResponse.model_validate(body)
    if isinstance(prediction, ZeroShotClassification):
        return ZeroShotResponse.model_validate(body)
    if isinstance(prediction, TextDetections):
        return OCRResponse.model_validate(body)
    raise TypeError(f"no response shape for {type(prediction).__name__}")
