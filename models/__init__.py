"""The model ecosystem: ids, aliases, registry, artifact cache, runtime and model classes.

    from edge_agent.models import get_model
    model = get_model("builtin/shapes-v1")
    responses = model.infer([frame_a, frame_b])          # one ObjectDetectionResponse per image
    typed = model.predict([frame_a, frame_b])            # one Detections (numpy arrays) per image

``models`` knows nothing of asyncio, streams or MQTT; everything here is synchronous.

Subpackages, in layered order: each imports only the ones above it in this list (and itself);
``tests/test_layout.py`` keeps it so.

 1. ``common``        errors, model settings, secret redaction
 2. ``identity``      what a model id is: ids, aliases, foundation families
 3. ``maths``         images, pre-processing, NMS, masks, polygons, predictions, responses, mAP
 4. ``artifacts``     where files come from and are stored: API client, both cache layouts,
                      packages, the foundation core-model cache
 5. ``speed``         fp32 or INT8 weights, OpenVINO, run plans (concurrency)
 6. ``engines``       ONNX Runtime / TorchScript engines, execution providers, what the box runs
 7. ``tasks``         the Model base, task families and decoders
 8. ``foundation``    foundation families (CLIP, PP-OCR, ...)
 9. ``resolution``    which class runs an id: catalog, ``get_model``, package and foundation
                      loaders, cached-model listing, the shared-instance manager
10. ``quantization``  making INT8 copies (``edge-agent models quantize``)

This module (the facade below) may name any of them, lazily.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names are resolved lazily (PEP 562) so that `from models.errors import ...` or
# `models.settings` do not pay for importing onnxruntime and OpenCV.
_EXPORTS: dict[str, str] = {
    "MODEL_ALIASES": "edge_agent.models.identity.aliases",
    "resolve_alias": "edge_agent.models.identity.aliases",
    "Model": "edge_agent.models.tasks.model",
    "Detections": "edge_agent.models.maths.predictions",
    "Prediction": "edge_agent.models.maths.predictions",
    "Embeddings": "edge_agent.models.maths.predictions",
    "ZeroShotClassification": "edge_agent.models.maths.predictions",
    "TextDetections": "edge_agent.models.maths.predictions",
    "InstanceSegmentation": "edge_agent.models.maths.predictions",
    "KeypointDetections": "edge_agent.models.maths.predictions",
    "ClassificationPrediction": "edge_agent.models.maths.predictions",
    "MaskOutput": "edge_agent.models.maths.polygons",
    "Engine": "edge_agent.models.engines.base",
    "OnnxEngine": "edge_agent.models.engines.onnx",
    "ModelArtifacts": "edge_agent.models.artifacts.artifact_loader",
    "load_artifacts": "edge_agent.models.artifacts.artifact_loader",
    "ModelFamily": "edge_agent.models.resolution.catalog",
    "ObjectDetectionModel": "edge_agent.models.tasks.object_detection",
    "clear_cache": "edge_agent.models.artifacts.clear",
    "list_cached_models": "edge_agent.models.resolution.cached_models",
    "ModelRef": "edge_agent.models.identity.ids",
    "parse_model_id": "edge_agent.models.identity.ids",
    "ModelManager": "edge_agent.models.resolution.manager",
    "MODEL_REGISTRY": "edge_agent.models.resolution.build",
    "get_model": "edge_agent.models.resolution.registry",
    "get_model_type": "edge_agent.models.resolution.registry",
    "ImageDimensions": "edge_agent.models.maths.responses",
    "ObjectDetectionPrediction": "edge_agent.models.maths.responses",
    "ObjectDetectionResponse": "edge_agent.models.maths.responses",
    "ModelSettings": "edge_agent.models.common.settings",
    "get_model_settings": "edge_agent.models.common.settings",
    "reload_model_settings": "edge_agent.models.common.settings",
    "set_model_settings": "edge_agent.models.common.settings",
    "get_family": "edge_agent.models.resolution.build",
    **{
        name: "edge_agent.models.common.errors"
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
    from edge_agent.models.artifacts.artifact_loader import ModelArtifacts, load_artifacts
    from edge_agent.models.artifacts.clear import clear_cache
    from edge_agent.models.common.errors import (
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
    from edge_agent.models.common.settings import (
        ModelSettings,
        get_model_settings,
        reload_model_settings,
        set_model_settings,
    )
    from edge_agent.models.engines.base import Engine
    from edge_agent.models.engines.onnx import OnnxEngine
    from edge_agent.models.identity.aliases import MODEL_ALIASES, resolve_alias
    from edge_agent.models.identity.ids import ModelRef, parse_model_id
    from edge_agent.models.maths.polygons import MaskOutput
    from edge_agent.models.maths.predictions import (
        ClassificationPrediction,
        Detections,
        InstanceSegmentation,
        KeypointDetections,
        Prediction,
    )
    from edge_agent.models.maths.responses import ImageDimensions, ObjectDetectionPrediction, ObjectDetectionResponse
    from edge_agent.models.resolution.build import MODEL_REGISTRY, get_family
    from edge_agent.models.resolution.cached_models import list_cached_models
    from edge_agent.models.resolution.catalog import ModelFamily
    from edge_agent.models.resolution.manager import ModelManager
    from edge_agent.models.resolution.registry import get_model, get_model_type
    from edge_agent.models.tasks.model import Model
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
