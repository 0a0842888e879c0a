"""One decoder per network output layout: raw tensors -> candidate boxes in model-input pixels.

A decoder states the outputs it expects and checks them when the model loads (``check``), then
turns one image's slice of the outputs into :class:`~edge_agent.models.tasks.decoders.base.RawDetections`. Tasks own
everything around it (pre-processing, NMS when the layout needs it, mapping to source pixels,
responses).

May import: ``models.common`` .. ``models.engines`` and ``models.tasks.params``.
"""

from edge_agent.models.tasks.decoders.base import DetectionDecoder, RawDetections
from edge_agent.models.tasks.decoders.end_to_end import EndToEndDecoder
from edge_agent.models.tasks.decoders.rfdetr import RFDETRDecoder
from edge_agent.models.tasks.decoders.yolo_nas import YOLONASDecoder
from edge_agent.models.tasks.decoders.yolov5 import YOLOv5Decoder
from edge_agent.models.tasks.decoders.yolov8 import YOLOv8Decoder

__all__ = [
    "DetectionDecoder",
    "EndToEndDecoder",
    "RFDETRDecoder",
    "RawDetections",
    "YOLONASDecoder",
    "YOLOv5Decoder",
    "YOLOv8Decoder",
]
