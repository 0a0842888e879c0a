"""The model ecosystem: ids, aliases, registry, artifact cache, runtime and model classes.

    from edge_agent.models import get_model
    model = get_model("builtin/shapes-v1")
    responses = model.infer([frame_a, frame_b])          # one ObjectDetectionResponse per image
    typed = model.predict([frame_a, frame_b])            # one Detections (numpy arrays) per image

``models`` knows nothing of asyncio, streams or MQTT; everything here is synchronous.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names are resolved lazily (PEP 562) so that `from models.errors import ...` or
# `models.settings` do not pay for importing onnxruntime and OpenCV.
_EXPORTS: dict[str, str] = {
    "MODEL_ALIASES": "edge_agent.models.aliases",
    "resolve_alias": "edge_agent.models.aliases",
    "Model": "edge_agent.models.base",
    "Detections": "edge_agent.models.predictions",
    "Prediction": "edge_agent.models.predictions",
    "Embeddings": "edge_agent.models.predictions",
    "ZeroShotClassification": "edge_agent.models.predictions",
    "TextDetections": "edge_agent.models.predictions",
    "InstanceSegmentation": "edge_agent.models.predictions",
    "KeypointDetections": "edge_agent.models.predictions",
    "ClassificationPrediction": "edge_agent.models.predictions",
    "MaskOutput": "edge_agent.models.polygons",
    "Engine": "edge_agent.models.engines.base",
    "OnnxEngine": "edge_agent.models.engines.onnx",
    "ModelArtifacts": "edge_agent.models.artifact_loader",
    "load_artifacts": "edge_agent.models.artifact_loader",
    "ModelFamily": "edge_agent.models.catalog",
    "ObjectDetectionModel": "edge_agent.models.tasks.object_detection",
    "clear_cache": "edge_agent.models.cache",
    "list_cached_models": "edge_agent.models.cache",
    "ModelRef": "edge_agent.models.ids",
    "parse_model_id": "edge_agent.models.ids",
    "ModelManager": "edge_agent.models.manager",
    "MODEL_REGISTRY": "edge_agent.models.registry",
    "get_model": "edge_agent.models.registry",
    "get_model_type": "edge_agent.models.registry",
    "ImageDimensions": "edge_agent.models.responses",
    "ObjectDetectionPrediction": "edge_agent.models.responses",
    "ObjectDetectionResponse": "edge_agent.models.responses",
    "ModelSettings": "edge_agent.models.settings",
    "get_model_settings": "edge_agent.models.settings",
    "reload_model_settings": "edge_agent.models.settings",
    "set_model_settings": "edge_agent.models.settings",
    "get_family": "edge_agent.models.registry",
    **{
        name: "edge_agent.models.errors"
        for name in (
            "ApiAuthError",
            "CacheIntegrityError",
            "CacheLockTimeoutError",
            "CacheWriteError",
            "EdgeAgentError",
            "ExecutionProviderError",
            "InvalidInputError",
            "InvalidModelIdError",
            "ModelArtifactsError",
            "ModelLayoutError",
            "ModelArtifactsError",
            "ModelDisabledError",
            "MissingExtraError",
            "ChecksumMismatchError",
            "NoSuitablePackageError",
            "ModelDownloadError",
            "ModelError",
            "ModelNotCachedError",
            "ModelNotFoundError",
            "ModelRuntimeError",
            "ModelSettingsError",
            "UnsupportedModelTypeError",
        )
    },
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from edge_agent.models.aliases import MODEL_ALIASES, resolve_alias
    from edge_agent.models.artifact_loader import ModelArtifacts, load_artifacts
    from edge_agent.models.base import Model
    from edge_agent.models.cache import clear_cache, list_cached_models
    from edge_agent.models.catalog import ModelFamily
    from edge_agent.models.engines.base import Engine
    from edge_agent.models.engines.onnx import OnnxEngine
    from edge_agent.models.errors import (
        ApiAuthError,
        CacheIntegrityError,
        CacheLockTimeoutError,
        CacheWriteError,
        EdgeAgentError,
        ExecutionProviderError,
        InvalidInputError,
        InvalidModelIdError,
        ModelArtifactsError,
        ModelDisabledError,
        ModelDownloadError,
        ModelError,
        ModelLayoutError,
        ModelNotCachedError,
        ModelNotFoundError,
        ModelRuntimeError,
        ModelSettingsError,
        UnsupportedModelTypeError,
    )
    from edge_agent.models.ids import ModelRef, parse_model_id
    from edge_agent.models.manager import ModelManager
    from edge_agent.models.polygons import MaskOutput
    from edge_agent.models.predictions import (
        ClassificationPrediction,
        Detections,
        InstanceSegmentation,
        KeypointDetections,
        Prediction,
    )
    from edge_agent.models.registry import MODEL_REGISTRY, get_family, get_model, get_model_type
    from edge_agent.models.responses import ImageDimensions, ObjectDetectionPrediction, ObjectDetectionResponse
    from edge_agent.models.settings import ModelSettings, get_model_settings, reload_model_settings, set_model_settings
    from edge_agent.models.tasks.object_detection import ObjectDetectionModel

__all__ = [
    "MODEL_ALIASES",
    "MODEL_REGISTRY",
    "ApiAuthError",
    "CacheIntegrityError",
    "CacheLockTimeoutError",
    "CacheWriteError",
    "ClassificationPrediction",
    "Detections",
    "EdgeAgentError",
    "Engine",
    "ExecutionProviderError",
    "ImageDimensions",
    "InstanceSegmentation",
    "InvalidInputError",
    "InvalidModelIdError",
    "KeypointDetections",
    "MaskOutput",
    "Model",
    "ModelArtifacts",
    "ModelArtifactsError",
    "ModelDisabledError",
    "ModelDownloadError",
    "ModelError",
    "ModelFamily",
    "ModelLayoutError",
    "ModelManager",
    "ModelNotCachedError",
    "ModelNotFoundError",
    "ModelRef",
    "ModelRuntimeError",
    "ModelSettings",
    "ModelSettingsError",
    "ObjectDetectionModel",
    "ObjectDetectionPrediction",
    "ObjectDetectionResponse",
    "OnnxEngine",
    "Prediction",
    "UnsupportedModelTypeError",
    "clear_cache",
    "get_family",
    "get_model",
    "get_model_settings",
    "get_model_type",
    "list_cached_models",
    "load_artifacts",
    "parse_model_id",
    "reload_model_settings",
    "resolve_alias",
    "set_model_settings",
]
