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


class ObjectDetectionResponse(_RoboflowShape):
    predictions: list[ObjectDetectionPrediction]
    image: ImageDimensions
