"""The model interface every model class implements, and the ONNX base that owns the session."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ModelRuntimeError
from models.images import ImageInput, load_image
from models.settings import ModelSettings, get_model_settings

logger = logging.getLogger(__name__)


class Model(ABC):
    """A ready model: ``infer`` = load images -> ``preprocess`` -> ``predict`` -> ``postprocess``
    -> ``make_response``, run in chunks of ``max_batch_size`` images."""

    task_type: str = ""
    model_type: str = ""

    def __init__(self, model_id: str, task_type: str, model_type: str) -> None:
        self.model_id = model_id
        self.task_type = task_type
        self.model_type = model_type
        self.max_batch_size = 1

    def infer(self, images: ImageInput | Sequence[ImageInput], **kwargs: Any) -> list[Any]:
        """One response per image, in order. ``images``: one image or a list/tuple of them."""
        if isinstance(images, (list, tuple)):
            items = list(images)
        elif isinstance(images, np.ndarray) and images.ndim == 4:
            items = list(images)  # an NHWC stack of frames
        else:
            items = [images]
        params = self.inference_parameters(**kwargs)
        responses: list[Any] = []
        step = max(1, self.max_batch_size)
        for start in range(0, len(items), step):
            chunk = [self.load_image(item) for item in items[start : start + step]]
            inputs, metas = self.preprocess(chunk)
            outputs = self.predict(inputs)
            predictions = self.postprocess(outputs, metas, params)
            responses.extend(self.make_response(predictions, metas))
        return responses

    def load_image(self, image: ImageInput) -> np.ndarray:
        return load_image(image)

    def inference_parameters(self, **kwargs: Any) -> Any:
        """Validate per-call options (defaults from settings); subclasses define their own."""
        if kwargs:
            raise TypeError(f"{type(self).__name__}.infer() got unexpected options {sorted(kwargs)}")
        return None

    @abstractmethod
    def preprocess(self, images: list[np.ndarray]) -> tuple[Any, list[Any]]:
        """Images -> (model input, per-image metadata needed to undo the preprocessing)."""

    @abstractmethod
    def predict(self, inputs: Any) -> Any:
        """Run the network."""

    @abstractmethod
    def postprocess(self, outputs: Any, metas: list[Any], params: Any) -> list[Any]:
        """Raw outputs -> one prediction set per image, in source coordinates."""

    @abstractmethod
    def make_response(self, predictions: list[Any], metas: list[Any]) -> list[Any]:
        """Prediction sets -> response objects."""

    def clear_cache(self) -> bool:
        """Delete this model's cached artifacts (not allowed for local/built-in directories)."""
        from models.cache import clear_cache

        return clear_cache(self.model_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r}, model_type={self.model_type!r})"


class OnnxModel(Model):
    """A model backed by ``weights.onnx`` in an artifact directory; owns the InferenceSession."""

    def __init__(
        self,
        model_id: str,
        directory: Path,
        task_type: str,
        model_type: str,
        settings: ModelSettings | None = None,
        status: Callable[[str], None] | None = None,
    ) -> None:
        from models.providers import create_session

        super().__init__(model_id, task_type, model_type)
        self.settings = settings or get_model_settings()
        self.directory = Path(directory)
        self.weights_path = self.directory / "weights.onnx"
        self.session = create_session(self.weights_path, model_id, self.settings, self.settings.max_batch_size, status)
        first = self.session.get_inputs()[0]
        self.input_name: str = first.name
        self.input_shape: list[Any] = list(first.shape)
        self.input_dtype = np.float16 if first.type == "tensor(float16)" else np.float32
        batch = self.input_shape[0] if self.input_shape else None
        self.dynamic_batch = not (isinstance(batch, int) and batch > 0)
        self.static_batch = 0 if self.dynamic_batch else int(batch)  # type: ignore[arg-type]
        self.max_batch_size = self.settings.max_batch_size if self.dynamic_batch else self.static_batch
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers: list[str] = self.session.get_providers()
        self._local = threading.local()

    def predict(self, inputs: np.ndarray) -> list[np.ndarray]:
        n = inputs.shape[0]
        if not self.dynamic_batch and n != self.static_batch:
            # A fixed batch axis: pad the last chunk with blank images, drop their outputs below.
            padded = np.zeros((self.static_batch, *inputs.shape[1:]), dtype=inputs.dtype)
            padded[:n] = inputs
            inputs = padded
        try:
            outputs = self.session.run(self.output_names, {self.input_name: inputs})
        except Exception as exc:
            raise ModelRuntimeError(f"onnxruntime failed running {self.model_id}: {exc}") from exc
        return [o[:n] if o.ndim and o.shape[0] == inputs.shape[0] else o for o in outputs]
