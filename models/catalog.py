"""Every model family edge-agent runs, under every ``model_type`` spelling of Roboflow's registry.

One data table: a :class:`ModelFamily` names its task, its ``model_type`` strings, the weights
file name Roboflow Inference's cache uses for it, and how to build it from a
:class:`~models.tasks.base.ModelContext`. Add a row to support a new family. YOLOv7 object detection
is not listed because neither Roboflow stack registers it (only YOLOv7 instance segmentation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from models.base import Model
from models.cache import WEIGHTS_FILE
from models.decoders import EndToEndDecoder, RFDETRDecoder, YOLONASDecoder, YOLOv5Decoder, YOLOv8Decoder
from models.tasks.base import ModelContext
from models.tasks.object_detection import ObjectDetectionModel, RFDETRObjectDetection

Builder = Callable[[ModelContext], Model]


@dataclass(frozen=True)
class ModelFamily:
    name: str
    task_type: str
    model_types: tuple[str, ...]
    build: Builder
    weights_file: str = WEIGHTS_FILE
    #: the decoder's layout name, for docs and errors
    layout: str = ""


def _sizes(prefix: str, sizes: str, base: bool = True) -> tuple[str, ...]:
    return ((prefix,) if base else ()) + tuple(f"{prefix}{s}" for s in sizes.split())


def _yolov8(ctx: ModelContext) -> Model:
    return ObjectDetectionModel(ctx, YOLOv8Decoder)


def _yolov5(ctx: ModelContext) -> Model:
    return ObjectDetectionModel(ctx, YOLOv5Decoder)


def _end_to_end(ctx: ModelContext) -> Model:
    return ObjectDetectionModel(ctx, EndToEndDecoder)


def _yolo_nas(ctx: ModelContext) -> Model:
    return ObjectDetectionModel(ctx, YOLONASDecoder)


def _rfdetr(ctx: ModelContext) -> Model:
    return RFDETRObjectDetection(ctx, RFDETRDecoder)


OD = "object-detection"

FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily(
        "yolov5",
        OD,
        ("yolov5", "yolov5v2s", *_sizes("yolov5v6", "n s m l x", base=False)),
        _yolov5,
        weights_file="yolov5s_weights.onnx",
        layout=YOLOv5Decoder.layout,
    ),
    ModelFamily(
        "yolov8",
        OD,
        (
            *_sizes("yolov8", "n s m l x"),
            "yolov9",
            *_sizes("yolov11", "n s b m l x"),
            *_sizes("yolo11", "n s b m l x"),
            *_sizes("yolov12", "n s m l x"),
        ),
        _yolov8,
        layout=YOLOv8Decoder.layout,
    ),
    ModelFamily(
        "end-to-end",
        OD,
        (*_sizes("yolov10", "n s b m l x"), *_sizes("yolo26", "n s b m l x")),
        _end_to_end,
        layout=EndToEndDecoder.layout,
    ),
    ModelFamily(
        "yolo-nas", OD, ("yolonas", "yolo_nas_s", "yolo_nas_m", "yolo_nas_l"), _yolo_nas, layout=YOLONASDecoder.layout
    ),
    ModelFamily(
        "rfdetr",
        OD,
        (
            "rfdetr",
            *(f"rfdetr-{s}" for s in ("base", "nano", "small", "medium", "large", "xlarge", "2xlarge")),
            "rfdetr-nas",
        ),
        _rfdetr,
        layout=RFDETRDecoder.layout,
    ),
)


def family_table(families: tuple[ModelFamily, ...] = FAMILIES) -> dict[tuple[str, str], ModelFamily]:
    table: dict[tuple[str, str], ModelFamily] = {}
    for family in families:
        for model_type in family.model_types:
            key = (family.task_type, model_type)
            if key in table:
                raise ValueError(f"{key} is registered twice ({table[key].name} and {family.name})")
            table[key] = family
    return table
