"""The interface every model implements, whatever its task or engine.

``predict`` is what the stream pipeline calls: images in, typed predictions
(:mod:`models.predictions`) out, one per image. ``infer`` is the library API: the same, as
Roboflow-shaped pydantic responses. Both run in chunks of ``max_batch_size`` images through
``load_image`` -> ``preprocess`` -> ``run`` -> ``postprocess``.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.maths.images import ImageInput, load_image
from edge_agent.models.maths.predictions import Prediction


class Model(ABC):
    task_type: str = ""
    model_type: str = ""
    #: Where the model's files are (its cache, package or local directory); None when it has no one
    #: directory (a model built in memory, or one made of several packages).
    directory: Path | None = None

    def __init__(self, model_id: str, task_type: str, model_type: str) -> None:
        self.model_id = model_id
        self.task_type = task_type
        self.model_type = model_type
        self.max_batch_size = 1

    @property
    def providers(self) -> list[str]:
        return []

    @property
    def precision(self) -> str:
        """Precision of the weights in use (``fp32``, ``int8``); see models/speed/precision.py."""
        return "fp32"

    @property
    def concurrency(self) -> int:
        """How many ``predict`` calls may run at once from different threads (see models/speed/concurrency.py)."""
        return 1

    def predict(self, images: ImageInput | Sequence[ImageInput], **kwargs: Any) -> list[Prediction]:
        """One typed prediction per image, in order. ``images``: one image or a list of them."""
        if isinstance(images, (list, tuple)):
            items = list(images)
        elif isinstance(images, np.ndarray) and images.ndim == 4:
            items = list(images)  # an NHWC stack of frames
        else:
            items = [images]
        params = self.inference_parameters(**kwargs)
        results: list[Prediction] = []
        step = max(1, self.max_batch_size)
        for start in range(0, len(items), step):
            chunk = [self.load_image(item) for item in items[start : start + step]]
            inputs, metas = self.preprocess(chunk)
            outputs = self.run(inputs)
            results.extend(self.postprocess(outputs, metas, params))
        return results

    def infer(self, images: ImageInput | Sequence[ImageInput], **kwargs: Any) -> list[Any]:
        """One Roboflow-shaped response object per image (``model_dump()`` gives its JSON), with
        Roboflow's ``inference_id`` (one per image) and ``time`` (seconds this call took)."""
        started = time.perf_counter()
        predictions = self.predict(images, **kwargs)
        elapsed = time.perf_counter() - started
        responses = []
        for prediction in predictions:
            response = self.make_response(prediction)
            if "inference_id" in type(response).model_fields:
                response = response.model_copy(update={"inference_id": str(uuid.uuid4()), "time": elapsed})
            responses.append(response)
        return responses

    def load_image(self, image: ImageInput) -> np.ndarray:
        return load_image(image)

    def inference_parameters(self, **kwargs: Any) -> Any:
        """Validate per-call options (defaults from settings); tasks define their own."""
        if kwargs:
            raise TypeError(f"{type(self).__name__}.predict() got unexpected options {sorted(kwargs)}")
        return None

    @abstractmethod
    def preprocess(self, images: list[np.ndarray]) -> tuple[Any, list[Any]]:
        """Images -> (network input, per-image metadata needed to undo the preprocessing)."""

    @abstractmethod
    def run(self, inputs: Any) -> Any:
        """Run the network (through the engine)."""

    @abstractmethod
    def postprocess(self, outputs: Any, metas: list[Any], params: Any) -> list[Prediction]:
        """Raw outputs -> one typed prediction per image, in source coordinates."""

    @abstractmethod
    def make_response(self, prediction: Prediction) -> Any:
        """A typed prediction -> the pydantic response object of this task."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine's resources."""

    def clear_cache(self) -> bool:
        """Delete this model's cached artifacts (not allowed for local/built-in directories)."""
        from edge_agent.models.artifacts.clear import clear_cache

        return clear_cache(self.model_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r}, model_type={self.model_type!r})"
