"""What foundation models share: per-image options (a stream's prompts or regions) through ``predict``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edge_agent.models.common.errors import InvalidInputError
from edge_agent.models.foundation.responses import response_of
from edge_agent.models.maths.images import ImageInput
from edge_agent.models.maths.predictions import Prediction
from edge_agent.models.tasks.model import Model


class FoundationModel(Model):
    """A model whose ``predict`` also takes ``image_options``: one mapping per image.

    The inference stage batches frames of several streams; each stream brings its own options
    (CLIP prompts, OCR regions), so they travel with the images instead of being one call option.
    ``stream_options`` names the keys a stream may set.
    """

    stream_options: tuple[str, ...] = ()

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        image_options: Sequence[Mapping[str, Any] | None] | None = None,
        **kwargs: Any,
    ) -> list[Prediction]:
        if isinstance(images, (list, tuple)):
            items = list(images)
        elif isinstance(images, np.ndarray) and images.ndim == 4:
            items = list(images)
        else:
            items = [images]
        if image_options is not None and len(image_options) != len(items):
            raise InvalidInputError(f"image_options has {len(image_options)} entries for {len(items)} images")
        options = [dict(o or {}) for o in image_options] if image_options is not None else [{} for _ in items]
        for entry in options:
            unknown = set(entry) - set(self.stream_options)
            if unknown:
                raise InvalidInputError(
                    f"{self.model_id} takes per-image options {', '.join(self.stream_options) or 'none'}, "
                    f"not {', '.join(sorted(unknown))}"
                )
        params = self.inference_parameters(**kwargs)
        results: list[Prediction] = []
        step = max(1, self.max_batch_size)
        for start in range(0, len(items), step):
            chunk = [self.load_image(item) for item in items[start : start + step]]
            results.extend(self.predict_chunk(chunk, options[start : start + step], params))
        return results

    def predict_chunk(self, images: list[np.ndarray], options: list[dict[str, Any]], params: Any) -> list[Prediction]:
        inputs, metas = self.preprocess(images)
        outputs = self.run(inputs)
        return self.postprocess(outputs, [(m, o) for m, o in zip(metas, options, strict=True)], params)


class WholeImageModel(FoundationModel):
    """A family whose ``predict_chunk`` does all the work on whole images (depth, gaze, OCR
    networks that run several stages per image): the Model base's separate preprocess/run/
    postprocess steps are not used, and responses come from the prediction's own shape."""

    def preprocess(self, images: list[np.ndarray]) -> tuple[Any, list[Any]]:
        return images, [None] * len(images)

    def run(self, inputs: Any) -> Any:
        return inputs

    def postprocess(self, outputs: Any, metas: list[Any], params: Any) -> list[Prediction]:
        raise NotImplementedError(f"{type(self).__name__} predicts through predict_chunk")

    def make_response(self, prediction: Prediction) -> Any:
        return response_of(prediction)
