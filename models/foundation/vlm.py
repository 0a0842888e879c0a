"""Vision-language models: an image and a prompt in, an answer (text, or Florence-2's parsed dict) out.

``predict(images, prompt=...)`` or, from the stream stage, ``image_options=[{"prompt": ...}]``.
One image per ``generate`` call (answers differ in length, and a batch of them would wait on the
longest). The answer is Roboflow's ``LMMInferenceResponse``: ``{response, image}``, plus Roboflow
object-detection ``predictions`` when Florence-2 answered with boxes (``<OD>`` and kin).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.common.errors import InvalidInputError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.engines.transformers import GenerationSettings, TransformersEngine
from edge_agent.models.foundation import florence2
from edge_agent.models.foundation.base import FoundationModel
from edge_agent.models.foundation.vlm_artifacts import Checkpoint
from edge_agent.models.foundation.vlm_families import FLORENCE2, VLMFamily
from edge_agent.models.maths.predictions import Prediction

MAX_PROMPT_CHARS = 4000


@dataclass(frozen=True)
class VLMAnswer:
    """One answer about one image. ``predictions``: Roboflow detection rows of a box-shaped answer."""

    response: str | dict[str, Any]
    image_size: tuple[int, int]
    prompt: str
    new_tokens: int = 0
    seconds: float = 0.0
    predictions: tuple[dict[str, Any], ...] | None = None
    task_type: str = "lmm"

    def __len__(self) -> int:
        return len(self.predictions) if self.predictions is not None else 1

    def filter_confidence(self, threshold: float) -> VLMAnswer:
        return self  # an answer has no confidence; box answers all have 1.0

    def to_response(self) -> dict[str, Any]:
        width, height = self.image_size
        body: dict[str, Any] = {"response": self.response, "image": {"width": width, "height": height}}
        if self.predictions is not None:
            body["predictions"] = [dict(p) for p in self.predictions]
        return body


@dataclass(frozen=True)
class VLMParams:
    prompt: str | None
    max_new_tokens: int | None


def check_prompt(value: Any, what: str = "prompt") -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{what} must be a non-empty string")
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidInputError(f"{what} is {len(value)} characters long; at most {MAX_PROMPT_CHARS} are accepted")
    return value


def check_max_new_tokens(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 8192:
        raise InvalidInputError(f"max_new_tokens must be a whole number from 1 to 8192, got {value!r}")
    return value


class VLMModel(FoundationModel):
    """A loaded vision-language checkpoint of one family."""

    stream_options = ("prompt",)

    def __init__(
        self,
        model_id: str,
        task_type: str,
        model_type: str,
        family: VLMFamily,
        checkpoint: Checkpoint,
        settings: ModelSettings,
        status: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(model_id, task_type, model_type)
        self.family = family
        self.settings = settings
        self.checkpoint = checkpoint
        self.engine = TransformersEngine(
            family.model_class(), checkpoint.model_dir, model_id, settings, checkpoint.adapter_dir, status
        )
        # the processor comes with the adapter when it brings its own tokenizer files
        processor_dir = checkpoint.adapter_dir if _has_tokenizer(checkpoint.adapter_dir) else checkpoint.model_dir
        assert processor_dir is not None
        self.processor = family.load_processor(processor_dir)
        self.max_batch_size = 1

    @property
    def providers(self) -> list[str]:
        return self.engine.providers

    @property
    def precision(self) -> str:
        return "nf4" if self.engine.quantized else str(self.engine.dtype).removeprefix("torch.")

    def generation(self, max_new_tokens: int | None) -> GenerationSettings:
        # None means the family's default (never the checkpoint's own limit, unlike Roboflow: see README)
        limit = max_new_tokens or self.settings.vlm_max_new_tokens or self.family.max_new_tokens
        return GenerationSettings(max_new_tokens=limit, num_beams=self.settings.vlm_num_beams)

    def inference_parameters(  # type: ignore[override]
        self, confidence: float | None = None, prompt: Any = None, max_new_tokens: Any = None
    ) -> VLMParams:
        # confidence: the stream stage passes one to every model; an answer has none.
        return VLMParams(
            None if prompt is None else check_prompt(prompt),
            None if max_new_tokens is None else check_max_new_tokens(max_new_tokens),
        )

    def preprocess(self, images: list[np.ndarray]) -> tuple[list[Any], list[tuple[int, int]]]:
        from PIL import Image

        # frames are BGR; the processors take RGB (Roboflow's legacy stack fed BGR as RGB)
        pictures = [Image.fromarray(np.ascontiguousarray(image[:, :, ::-1])) for image in images]
        return pictures, [(image.shape[1], image.shape[0]) for image in images]

    def run(self, inputs: Any) -> Any:
        return inputs  # generation needs each image's prompt: it happens in postprocess

    def postprocess(self, outputs: list[Any], metas: list[Any], params: VLMParams) -> list[Prediction]:
        results: list[Prediction] = []
        for picture, (size, options) in zip(outputs, metas, strict=True):
            prompt = check_prompt(options["prompt"]) if "prompt" in options else params.prompt
            results.append(self.answer(picture, size, prompt or self.family.default_prompt, params.max_new_tokens))
        return results

    def answer(self, picture: Any, size: tuple[int, int], prompt: str, max_new_tokens: int | None) -> VLMAnswer:
        started = time.perf_counter()
        inputs = self.family.inputs(self.processor, picture, prompt)
        ids = self.engine.generate(inputs, self.generation(max_new_tokens))[0]
        tokens = self.family.new_tokens(ids, inputs)
        response = self.family.decode(self.processor, tokens, prompt, size)
        rows = florence2.answer_predictions(response) if self.family is FLORENCE2 else None
        return VLMAnswer(
            response=response,
            image_size=size,
            prompt=prompt,
            new_tokens=len(tokens),
            seconds=time.perf_counter() - started,
            predictions=None if rows is None else tuple(rows),
        )

    def ask(self, image: Any, prompt: str | None = None, max_new_tokens: int | None = None) -> VLMAnswer:
        """One answer about one image (any image input ``predict`` takes)."""
        (answer,) = self.predict([image], prompt=prompt, max_new_tokens=max_new_tokens)
        assert isinstance(answer, VLMAnswer)
        return answer

    def make_response(self, prediction: Prediction) -> Any:
        from edge_agent.models.foundation.responses import LMMResponse

        return LMMResponse.model_validate(prediction.to_response())

    def close(self) -> None:
        self.engine.close()


def _has_tokenizer(directory: Path | None) -> bool:
    return directory is not None and (directory / "tokenizer.json").is_file()
