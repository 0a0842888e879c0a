"""Task families: what a model's outputs mean (detection now; segmentation, keypoints and
classification beside it). A task takes any :class:`~models.engines.Engine`."""

from edge_agent.models.tasks.base import ModelContext, VisionModel
from edge_agent.models.tasks.object_detection import ObjectDetectionModel, RFDETRObjectDetection

__all__ = ["ModelContext", "ObjectDetectionModel", "RFDETRObjectDetection", "VisionModel"]
