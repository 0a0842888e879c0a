"""Responses in Roboflow's JSON shape, so existing consumers (and supervision) read them unchanged.

``model_dump()`` gives ``{"predictions": [{"x", "y", "width", "height", "confidence", "class",
"class_id", "detection_id"}], "image": {"width", "height"}}``; ``x``, ``y`` are the box centre in
source pixels.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _RoboflowShape(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)

    # Field names that are Python keywords ("class") are aliases; dump them by alias by default.
    def model_dump(self, *, by_alias: bool | None = True, **kwargs: Any) -> dict[str, Any]:
        return super().model_dump(by_alias=by_alias, **kwargs)

    def model_dump_json(self, *, by_alias: bool | None = True, **kwargs: Any) -> str:
        return super().model_dump_json(by_alias=by_alias, **kwargs)


class InferenceStamp(BaseModel):
    """Roboflow's ``inference_id`` and ``time`` of a response, set by ``Model.infer`` (left out when
    unset: a response made for a message carries the message's own ids instead)."""

    inference_id: str | None = Field(default=None, description="Unique id (uuid4) of this inference.")
    time: float | None = Field(default=None, description="Seconds the inference call took.")

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        out = super().model_dump(**kwargs)
        for key in ("inference_id", "time"):
            if key in out and out[key] is None:
                del out[key]
        return out


class ObjectDetectionPrediction(_RoboflowShape):
    x: float = Field(description="Box centre x in source pixels.")
    y: float = Field(description="Box centre y in source pixels.")
    width: float = Field(description="Box width in source pixels.")
    height: float = Field(description="Box height in source pixels.")
    confidence: float = Field(description="Class score in [0, 1].")
    class_name: str = Field(alias="class", description="Class name.")
    class_id: int = Field(description="Index of the class in the model's class list.")
    detection_id: str = Field(description="Unique id (uuid4) of this detection.")


class ImageDimensions(_RoboflowShape):
    width: int
    height: int


class ObjectDetectionResponse(InferenceStamp, _RoboflowShape):
    predictions: list[ObjectDetectionPrediction]
    image: ImageDimensions


class _WithoutNone(_RoboflowShape):
    """Fields that are None are left out, as Roboflow's server does (``exclude_none``)."""

    def model_dump(self, *, by_alias: bool | None = True, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("exclude_none", True)
        return super().model_dump(by_alias=by_alias, **kwargs)

    def model_dump_json(self, *, by_alias: bool | None = True, **kwargs: Any) -> str:
        kwargs.setdefault("exclude_none", True)
        return super().model_dump_json(by_alias=by_alias, **kwargs)


class Point(_RoboflowShape):
    x: float
    y: float


class InstanceSegmentationPrediction(ObjectDetectionPrediction):
    points: list[Point] | None = Field(default=None, description="Mask outline, source pixels.")
    mask_format: str | None = Field(default=None, description='"polygon" when points are given.')


class InstanceSegmentationResponse(InferenceStamp, _WithoutNone):
    predictions: list[InstanceSegmentationPrediction]
    image: ImageDimensions


class Keypoint(_RoboflowShape):
    x: float = Field(description="Source pixels.")
    y: float = Field(description="Source pixels.")
    confidence: float
    class_id: int = Field(description="Index of the keypoint in its object class's keypoint list.")
    class_name: str = Field(alias="class", description="Keypoint name from keypoints_metadata.json.")


class KeypointsPrediction(ObjectDetectionPrediction):
    keypoints: list[Keypoint]


class KeypointsDetectionResponse(InferenceStamp, _RoboflowShape):
    predictions: list[KeypointsPrediction]
    image: ImageDimensions


#: what a detection-family model (boxes, plus masks or keypoints in the subclasses) responds with
DetectionResponse = ObjectDetectionResponse | InstanceSegmentationResponse | KeypointsDetectionResponse


class ClassificationEntry(_RoboflowShape):
    class_name: str = Field(alias="class")
    class_id: int
    confidence: float


class ClassificationResponse(InferenceStamp, _RoboflowShape):
    predictions: list[ClassificationEntry] = Field(description="Classes at or above the threshold, best first.")
    top: str = Field(description='Best class, "" when none reaches the threshold.')
    confidence: float
    image: ImageDimensions


class MultiLabelEntry(_RoboflowShape):
    confidence: float
    class_id: int


class MultiLabelClassificationResponse(InferenceStamp, _RoboflowShape):
    predictions: dict[str, MultiLabelEntry] = Field(description="Every class by name.")
    predicted_classes: list[str] = Field(description="Classes at or above the threshold, in class order.")
    image: ImageDimensions
