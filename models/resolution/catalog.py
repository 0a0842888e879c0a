"""Every model family edge-agent runs, under every ``model_type`` spelling of Roboflow's registry.

One data table: a :class:`ModelFamily` names its task, its ``model_type`` strings, the weights
file name Roboflow Inference's cache uses for it, and how to build it from a
:class:`~models.tasks.base.ModelContext`. Add a row to support a new family. YOLOv7 object detection
is not listed because neither Roboflow stack registers it (only YOLOv7 instance segmentation).
YOLACT instance segmentation is not run (yet).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.models.artifacts.cache import WEIGHTS_FILE
from edge_agent.models.maths.preprocessing import HALF, IMAGENET, InputNormalization
from edge_agent.models.tasks.base import ModelContext
from edge_agent.models.tasks.classification import MULTI_LABEL_TASK, ClassificationModel
from edge_agent.models.tasks.decoders import (
    EndToEndDecoder,
    RFDETRDecoder,
    YOLONASDecoder,
    YOLOv5Decoder,
    YOLOv8Decoder,
)
from edge_agent.models.tasks.decoders.rfdetr_seg import RFDETRSegDecoder
from edge_agent.models.tasks.instance_segmentation import InstanceSegmentationModel, RFDETRInstanceSegmentation
from edge_agent.models.tasks.keypoints import KeypointDetectionModel
from edge_agent.models.tasks.model import Model
from edge_agent.models.tasks.object_detection import ObjectDetectionModel, RFDETRObjectDetection

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


def _seg(decoder: type, proto_output: int = 1) -> Builder:
    def build(ctx: ModelContext) -> Model:
        return InstanceSegmentationModel(ctx, decoder, proto_output)

    return build


def _rfdetr_seg(ctx: ModelContext) -> Model:
    return RFDETRInstanceSegmentation(ctx)


def _pose(decoder: type, keypoint_confidence: float) -> Builder:
    def build(ctx: ModelContext) -> Model:
        return KeypointDetectionModel(ctx, decoder, keypoint_confidence)

    return build


def _cls(normalization: InputNormalization) -> Builder:
    def build(ctx: ModelContext) -> Model:
        return ClassificationModel(ctx, normalization)

    return build


def _suffixed(prefix: str, sizes: str, suffix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{s}{suffix}" for s in sizes.split())


OD = "object-detection"
IS = "instance-segmentation"
KP = "keypoint-detection"
CLS = "classification"
# Classification files in Roboflow's legacy cache (best.onnx; YOLOv8-cls uses weights.onnx).
CLS_WEIGHTS = "best.onnx"
_CLASSIFIERS: tuple[tuple[str, tuple[str, ...], InputNormalization, str], ...] = (
    ("vit", ("vit",), HALF, CLS_WEIGHTS),
    ("resnet", ("resnet", "resnet18", "resnet34", "resnet50", "resnet101"), IMAGENET, CLS_WEIGHTS),
    ("dinov3", ("dinov3", "dinov3_probe"), IMAGENET, CLS_WEIGHTS),
    ("yolov8-cls", _sizes("yolov8", "n s m l x"), HALF, WEIGHTS_FILE),
)

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
    # Instance segmentation: a detection layout with 32 mask coefficients + mask prototypes.
    ModelFamily(
        "yolov5-seg",
        IS,
        ("yolov5", "yolov5-seg", *_suffixed("yolov5", "n s m l x", "-seg")),
        _seg(YOLOv5Decoder),
        weights_file="yolov5s_weights.onnx",
        layout=YOLOv5Decoder.layout + " + prototypes (output 1)",
    ),
    ModelFamily(
        "yolov7-seg",
        IS,
        ("yolov7", "yolov7-seg", "yolov7s-seg"),
        _seg(YOLOv5Decoder, proto_output=4),
        layout=YOLOv5Decoder.layout + " + prototypes (output 4)",
    ),
    ModelFamily(
        "yolov8-seg",
        IS,
        (
            *_sizes("yolov8", "n s m l x"),
            "yolov8-seg",
            *_suffixed("yolov8", "n s m l x", "-seg"),
            *_sizes("yolov11", "n s m l x", base=False),
            *_suffixed("yolov11", "n s m l x", "-seg"),
        ),
        _seg(YOLOv8Decoder),
        layout=YOLOv8Decoder.layout + " + prototypes (output 1)",
    ),
    ModelFamily(
        "yolo26-seg",
        IS,
        (*_sizes("yolo26", "n s m l x"), *_suffixed("yolo26", "n s m l x", "-seg")),
        _seg(EndToEndDecoder),
        layout=EndToEndDecoder.layout + " + prototypes (output 1)",
    ),
    ModelFamily(
        "rfdetr-seg",
        IS,
        (
            "rfdetr",
            *(f"rfdetr-seg-{s}" for s in ("nano", "small", "medium", "large", "xlarge", "2xlarge", "xxlarge")),
            "rfdetr-seg-preview",
            "rfdetr-nas-seg",
        ),
        _rfdetr_seg,
        layout=RFDETRSegDecoder.layout,
    ),
    # Keypoints: a detection layout with 3 values (x, y, confidence) per keypoint.
    ModelFamily(
        "yolov8-pose",
        KP,
        (
            *_sizes("yolov8", "n s m l x"),
            *_suffixed("yolov8", "n s m l x", "-pose"),
            *_sizes("yolov11", "n s m l x", base=False),
            *_suffixed("yolov11", "n s m l x", "-pose"),
        ),
        _pose(YOLOv8Decoder, 0.0),
        layout=YOLOv8Decoder.layout + " with 3 values per keypoint",
    ),
    ModelFamily(
        "yolo26-pose",
        KP,
        (*_sizes("yolo26", "n s m l x"), *_suffixed("yolo26", "n s m l x", "-pose")),
        _pose(EndToEndDecoder, 0.3),
        layout=EndToEndDecoder.layout + " with 3 values per keypoint",
    ),
    # Classification, single-label (task "classification", unless MULTICLASS) and multi-label.
    *(
        ModelFamily(name + suffix, task, types, _cls(norm), weights_file=weights, layout="classification (B, C)")
        for name, types, norm, weights in _CLASSIFIERS
        for task, suffix in ((CLS, ""), (MULTI_LABEL_TASK, "-multilabel"))
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
