"""Tier-3 aliases: friendly names of Roboflow's COCO-pretrained checkpoints -> ``project/version``.

One data table (SPEC §3, which follows Roboflow Inference's ``REGISTERED_ALIASES``). The
``yolo11…`` spelling of every ``yolov11…`` alias is derived from the table, as Roboflow does.
"""

from __future__ import annotations

from types import MappingProxyType

_TABLE: dict[str, str] = {
    # YOLOv8 detection
    "yolov8n-640": "coco/3",
    "yolov8s-640": "coco/6",
    "yolov8m-640": "coco/8",
    "yolov8l-640": "coco/7",
    "yolov8x-640": "coco/5",
    "yolov8n-1280": "coco/9",
    "yolov8s-1280": "coco/10",
    "yolov8m-1280": "coco/11",
    "yolov8l-1280": "coco/12",
    "yolov8x-1280": "coco/13",
    # YOLOv8 instance segmentation
    "yolov8n-seg-640": "coco-dataset-vdnr1/2",
    "yolov8s-seg-640": "coco-dataset-vdnr1/4",
    "yolov8m-seg-640": "coco-dataset-vdnr1/5",
    "yolov8l-seg-640": "coco-dataset-vdnr1/6",
    "yolov8x-seg-640": "coco-dataset-vdnr1/3",
    # YOLOv8 pose
    "yolov8n-pose-640": "coco-pose-detection/1",
    "yolov8s-pose-640": "coco-pose-detection/2",
    "yolov8m-pose-640": "coco-pose-detection/3",
    "yolov8l-pose-640": "coco-pose-detection/4",
    "yolov8x-pose-640": "coco-pose-detection/5",
    # YOLO-NAS
    "yolo-nas-s-640": "coco/14",
    "yolo-nas-m-640": "coco/15",
    "yolo-nas-l-640": "coco/16",
    # YOLOv10
    "yolov10n-640": "coco/19",
    "yolov10s-640": "coco/20",
    "yolov10m-640": "coco/21",
    "yolov10b-640": "coco/22",
    "yolov10l-640": "coco/23",
    "yolov10x-640": "coco/24",
    # YOLOv11 (the yolo11… spellings are added below)
    "yolov11n-640": "coco/25",
    "yolov11s-640": "coco/26",
    "yolov11m-640": "coco/27",
    "yolov11l-640": "coco/28",
    "yolov11x-640": "coco/29",
    "yolov11n-1280": "coco/30",
    "yolov11s-1280": "coco/31",
    "yolov11m-1280": "coco/32",
    "yolov11l-1280": "coco/33",
    "yolov11x-1280": "coco/34",
    "yolov11n-seg-640": "coco-dataset-vdnr1/19",
    "yolov11s-seg-640": "coco-dataset-vdnr1/20",
    "yolov11m-seg-640": "coco-dataset-vdnr1/21",
    "yolov11l-seg-640": "coco-dataset-vdnr1/22",
    "yolov11x-seg-640": "coco-dataset-vdnr1/23",
    # RF-DETR
    "rfdetr-base": "coco/36",
    "rfdetr-nano": "coco/38",
    "rfdetr-small": "coco/39",
    "rfdetr-medium": "coco/40",
    "rfdetr-large": "coco/50",
    # vision-language models (Roboflow's REGISTERED_ALIASES)
    "florence-2-base": "florence-pretrains/3",
    "florence-2-large": "florence-pretrains/4",
    "paligemma-3b-mix-224": "paligemma-pretrains/1",
    "paligemma-3b-mix-448": "paligemma-pretrains/20",
    "paligemma-3b-ft-cococap-224": "paligemma-pretrains/8",
    "paligemma-3b-ft-screen2words-224": "paligemma-pretrains/9",
    "paligemma-3b-ft-vqav2-224": "paligemma-pretrains/10",
    "paligemma-3b-ft-tallyqa-224": "paligemma-pretrains/11",
    "paligemma-3b-ft-docvqa-224": "paligemma-pretrains/12",
    "paligemma-3b-ft-ocrvqa-224": "paligemma-pretrains/13",
    "paligemma-3b-ft-cococap-448": "paligemma-pretrains/14",
    "paligemma-3b-ft-screen2words-448": "paligemma-pretrains/15",
    "paligemma-3b-ft-vqav2-448": "paligemma-pretrains/16",
    "paligemma-3b-ft-tallyqa-448": "paligemma-pretrains/17",
    "paligemma-3b-ft-docvqa-448": "paligemma-pretrains/18",
    "paligemma-3b-ft-ocrvqa-448": "paligemma-pretrains/19",
    "qwen25-vl-7b": "qwen-pretrains/1",
    # ImageNet classifiers
    "resnet18": "classifiers/1",
    "resnet34": "classifiers/2",
    "resnet50": "classifiers/3",
    "resnet101": "classifiers/4",
}

MODEL_ALIASES: MappingProxyType[str, str] = MappingProxyType(
    {
        **_TABLE,
        **{k.replace("yolov11", "yolo11", 1): v for k, v in _TABLE.items() if k.startswith("yolov11")},
    }
)


def resolve_alias(model_id: str) -> str:
    """The ``project/version`` an alias stands for, or ``model_id`` unchanged."""
    return MODEL_ALIASES.get(model_id, model_id)
