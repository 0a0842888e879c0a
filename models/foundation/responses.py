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


class LMMResponse(_Shape):
    """``/infer/lmm``: the answer (text, or Florence-2's dict keyed by its task token), the image size,
    and Roboflow object-detection ``predictions`` when the answer is boxes."""

    response: str | dict[str, Any]
    image: ImageDimensions
    predictions: list[ObjectDetectionPrediction] | None = None

    def model_dump(self, *, by_alias: bool | None = True, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("exclude_none", True)
        return super().model_dump(by_alias=by_alias, **kwargs)


class DepthResponse(_Shape):
    """``/infer/depth-estimation``: the normalised map (nested lists or a base64 PNG), its format, a picture."""

    normalized_depth: list[list[float]] | str
    depth_map_format: str
    image: str


class GazeResponse(_Shape):
    """``/gaze/gaze_detection`` for one image: faces with yaw and pitch (radians), stage times in seconds."""

    predictions: list[dict[str, Any]]
    time: float
    time_face_det: float | None
    time_gaze_det: float | None


class TrOCRResponse(_Shape):
    """``/ocr/trocr``: the text read and the time taken (seconds)."""

    result: str
    time: float


class DocTRResponse(_Shape):
    """``/doctr/ocr``: the page's text, its words, lines and blocks, the time taken."""

    result: str
    image: ImageDimensions
    predictions: list[dict[str, Any]]
    time: float
    parent_id: str | None


class PromptedMask(_Shape):
    """One prompt's mask: all outer contours as integer points (``json``) or COCO RLE (``rle``)."""

    masks: list[list[list[int]]] | dict[str, Any]
    confidence: float
    format: str


class PromptedMasksResponse(_Shape):
    """Roboflow's ``/sam2/segment_image``: one prediction per prompt."""

    predictions: list[PromptedMask]


class ConceptEcho(_Shape):
    """The prompt a ``/sam3/concept_segment`` result answers (Roboflow emits its unset fields as null)."""

    prompt_index: int
    type: str | None
    text: str | None
    num_boxes: int | None


class ConceptPromptResult(_Shape):
    prompt_index: int
    echo: ConceptEcho
    predictions: list[PromptedMask]


class ConceptSegmentResponse(_Shape):
    """Roboflow's ``/sam3/concept_segment``: per prompt, every instance it names (masks, confidence)."""

    prompt_results: list[ConceptPromptResult]
    time: float


class SamResponse(_Shape):
    """Roboflow's ``/sam/segment_image`` (json format): each mask's largest outer contour."""

    masks: list[list[list[int]]]


def response_of(prediction: Prediction) -> Any:
    roboflow = getattr(prediction, "roboflow_response", None)
    if callable(roboflow):  # families whose Roboflow body differs from their stream message
        shape = _ROBOFLOW_SHAPES.get(type(prediction).__name__)
        if shape is None:
            raise TypeError(f"no response shape for {type(prediction).__name__}")
        return shape.model_validate(roboflow())
    body = prediction.to_response()
    if isinstance(prediction, Embeddings):
        return EmbeddingResponse.model_validate(body)
    if isinstance(prediction, ZeroShotClassification):
        return ZeroShotResponse.model_validate(body)
    if isinstance(prediction, TextDetections):
        return OCRResponse.model_validate(body)
    raise TypeError(f"no response shape for {type(prediction).__name__}")


#: Roboflow response shape -> the prediction type it serialises (through ``roboflow_response()``)
_ROBOFLOW_SHAPES: dict[str, type[_Shape]] = {
    "DepthMap": DepthResponse,
    "ConceptSegmentation": ConceptSegmentResponse,
    "GazeDetections": GazeResponse,
    "LineTexts": TrOCRResponse,
    "DocumentText": DocTRResponse,
    "EasyOCRText": DocTRResponse,  # the same OCRInferenceResponse fields
}
