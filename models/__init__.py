"""The model ecosystem: ids, aliases, registry, artifact cache, runtime and model classes.

    from models import get_model
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
    "MODEL_ALIASES": "models.aliases",
    "resolve_alias": "models.aliases",
    "Model": "models.base",
    "Detections": "models.predictions",
    "Prediction": "models.predictions",
    "Embeddings": "models.predictions",
    "ZeroShotClassification": "models.predictions",
    "TextDetections": "models.predictions",
    "InstanceSegmentation": "models.predictions",
    "KeypointDetections": "models.predictions",
    "ClassificationPrediction": "models.predictions",
    "MaskOutput": "models.polygons",
    "Engine": "models.engines.base",
    "OnnxEngine": "models.engines.onnx",
    "ModelArtifacts": "models.artifact_loader",
    "load_artifacts": "models.artifact_loader",
    "ModelFamily": "models.catalog",
    "ObjectDetectionModel": "models.tasks.object_detection",
    "clear_cache": "models.cache",
    "list_cached_models": "models.cache",
    "ModelRef": "models.ids",
    "parse_model_id": "models.ids",
    "ModelManager": "models.manager",
    "MODEL_REGISTRY": "models.registry",
    "get_model": "models.registry",
    "get_model_type": "models.registry",
    "ImageDimensions": "models.responses",
    "ObjectDetectionPrediction": "models.responses",
    "ObjectDetectionResponse": "models.responses",
    "ModelSettings": "models.settings",
    "get_model_settings": "models.settings",
    "reload_model_settings": "models.settings",
    "set_model_settings": "models.settings",
    "get_family": "models.registry",
    **{
        name: "models.errors"
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
    from models.aliases import MODEL_ALIASES, resolve_alias
    from models.artifact_loader import ModelArtifacts, load_artifacts
    from models.base import Model
    from models.cache import clear_cache, list_cached_models
    from models.catalog import ModelFamily
    from models.engines.base import Engine
    from models.engines.onnx import OnnxEngine
    from models.errors import (
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
    from models.ids import ModelRef, parse_model_id
    from models.manager import ModelManager
    from models.polygons import MaskOutput
    from models.predictions import (
        ClassificationPrediction,
        Detections,
        InstanceSegmentation,
        KeypointDetections,
        Prediction,
    )
    from models.registry import MODEL_REGISTRY, get_family, get_model, get_model_type
    from models.responses import ImageDimensions, ObjectDetectionPrediction, ObjectDetectionResponse
    from models.settings import ModelSettings, get_model_settings, reload_model_settings, set_model_settings
    from models.tasks.object_detection import ObjectDetectionModel

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
