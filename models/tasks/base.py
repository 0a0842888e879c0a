"""What every image task shares: the context it is built from, and batched pre-processing.

A task is constructed from a :class:`ModelContext` (id, types, artifacts, engine, settings): the
one typed way the registry builds a model. Pre-processing writes into per-thread buffers, so
steady-state frames allocate almost nothing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.models.artifacts.artifact_loader import ModelArtifacts
from edge_agent.models.common.errors import ModelLayoutError, ModelRuntimeError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.engines.base import Engine, TensorSpec
from edge_agent.models.maths.images import ImageInput, load_image
from edge_agent.models.maths.preprocessing import PLAIN, ImageMeta, InputNormalization, preprocess_batch
from edge_agent.models.tasks.model import Model

logger = logging.getLogger(__name__)

# Roboflow's default when neither the network nor environment.json gives an input size.
DEFAULT_INPUT_SIZE = 640


@dataclass(frozen=True)
class ModelContext:
    """Everything a task needs to exist; the registry makes one per load."""

    model_id: str
    task_type: str
    model_type: str
    artifacts: ModelArtifacts
    engine: Engine
    settings: ModelSettings


class VisionModel(Model):
    """An image-in task on one engine: load -> letterbox/stretch -> normalise -> run -> decode."""

    #: the task's pixel normalisation; families override it (ImageNet for RF-DETR, 0.5 for ViT...)
    normalization: InputNormalization = PLAIN

    def __init__(self, context: ModelContext, normalization: InputNormalization | None = None) -> None:
        super().__init__(context.model_id, context.task_type, context.model_type)
        self.context = context
        self.engine = context.engine
        self.artifacts = context.artifacts
        self.settings = context.settings
        self.preprocessing = context.artifacts.preprocessing
        if normalization is not None:
            self.normalization = normalization
        elif context.artifacts.normalization is not None:
            self.normalization = context.artifacts.normalization  # a package's inference_config.json
        self.max_batch_size = self.engine.max_batch_size
        self.input_size = self._input_size()
        self._resolve_outputs()
        self._local = threading.local()
        self._device_preprocess = self.engine.make_preprocessor(self.preprocessing, self.input_size, self.normalization)

    @property
    def providers(self) -> list[str]:
        return self.engine.providers

    @property
    def precision(self) -> str:
        return self.engine.precision

    @property
    def concurrency(self) -> int:
        # Safe to share: pre-processing buffers are per thread, decoders keep no state per call.
        return self.engine.concurrency

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.artifacts.class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _resolve_outputs(self) -> None:
        """Outputs whose shape the model does not declare are measured on one run of a blank image,
        so the layout checks see what the network computes.

        ONNX Runtime reports ``[]`` for an output whose declared shape disagrees with what its nodes
        compute (an exporter that wrote ``[7, 16]`` for a ``[1, 7, 16]`` output): Roboflow runs such
        a model, so the declaration must not decide. Unknown sizes past the batch axis are measured
        the same way; a model whose real outputs do not fit is still refused here, at load.
        """
        declared = self.engine.outputs
        if all(o.rank > 0 and None not in o.shape[1:] for o in declared):
            return
        width, height = self.input_size
        blank = np.zeros((1, 3, height, width), dtype=self.engine.input_dtype)
        try:
            real = self.engine.run(blank)
        except Exception as exc:
            raise ModelRuntimeError(
                f"{self.model_id}: a run on a blank {width}x{height} image failed while measuring the outputs "
                f"the model does not declare: {exc}"
            ) from exc
        measured = []
        for index, array in enumerate(real):
            spec = declared[index] if index < len(declared) else TensorSpec(f"output{index}", ())
            batch = None if self.engine.dynamic_batch else (array.shape[0] if array.ndim else None)
            shape = (batch, *array.shape[1:]) if array.ndim else ()
            if spec.rank and spec.rank == array.ndim:
                shape = tuple(d if d is not None else shape[i] for i, d in enumerate(spec.shape))
            measured.append(TensorSpec(spec.name, shape, str(array.dtype)))
        logger.info(
            "%s: outputs as run: %s (declared: %s)",
            self.model_id,
            ", ".join(f"{o.name} {list(o.describe()[1])}" for o in measured),
            ", ".join(f"{o.name} {list(o.describe()[1])}" for o in declared),
        )
        self.engine.outputs = measured

    def _input_size(self) -> tuple[int, int]:
        """(width, height): the network's fixed input, else environment.json's resize, else 640."""
        spec = self.engine.input
        if spec.rank != 4 or spec.dim(1) not in (3, None):
            raise ModelLayoutError(
                self.model_id, "image input", "input 0 of shape (batch, 3, height, width)", [spec.describe()]
            )
        height, width = self.engine.input_hw
        if height is not None and width is not None:
            return width, height
        if self.preprocessing.resize_size is not None:
            return self.preprocessing.resize_size
        logger.info("%s: input size not fixed by the network or environment.json; using 640x640", self.model_id)
        return DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE

    def load_image(self, image: ImageInput) -> np.ndarray:
        return load_image(image, auto_orient=self.preprocessing.auto_orient)

    def preprocess(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[ImageMeta]]:
        """Batch tensor (a view of a per-thread buffer, valid until this thread's next call)."""
        if self._device_preprocess is not None:
            return self._device_preprocess(images)
        n = len(images)
        width, height = self.input_size
        dtype = self.engine.input_dtype
        local = self._local
        staging = getattr(local, "staging", None)
        if staging is None or staging.shape[0] < n:
            staging = local.staging = np.empty((n, height, width, 3), dtype=np.uint8)
        tensor = getattr(local, "tensor", None)
        if tensor is None or tensor.shape[0] < n:
            tensor = local.tensor = np.empty((n, 3, height, width), dtype=dtype)
        planes = getattr(local, "planes", None)
        if planes is None:
            planes = local.planes = np.empty((3, height, width), dtype=np.uint8)
        return preprocess_batch(
            images, self.preprocessing, self.input_size, staging, tensor, dtype, self.normalization, planes
        )

    def run(self, inputs: Any) -> list[np.ndarray]:
        return self.engine.run(inputs)

    def close(self) -> None:
        self.engine.close()
