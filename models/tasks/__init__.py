"""Layer 7, task families: what a model's outputs mean (detection, instance segmentation, keypoints,
classification). ``model`` holds the ``Model`` base every model class (foundation ones too)
derives from, ``params`` the per-call inference parameters, ``decoders`` one decoder per network
output layout. A task takes any :class:`~edge_agent.models.engines.Engine`.

May import: ``models.common`` .. ``models.engines`` (everything below it).
"""

from edge_agent.models.tasks.base import ModelContext, VisionModel
from edge_agent.models.tasks.object_detection import ObjectDetectionModel, RFDETRObjectDetection

__all__ = ["ModelContext", "ObjectDetectionModel", "RFDETRObjectDetection", "VisionModel"]
