"""CLIP: image and text embeddings (``visual.onnx`` + ``textual.onnx``), and zero-shot classification.

Pre-processing is OpenAI's ``clip._transform``: resize the shorter side to the visual input's size
(bicubic; area averaging when shrinking, standing in for PIL's antialiased bicubic), centre crop,
RGB, /255, CLIP's mean and std. Text goes through CLIP's tokenizer (:mod:`.tokenizer`) in batches
of CLIP_MAX_BATCH_SIZE. Embeddings are the raw ONNX outputs, as Roboflow returns them; similarity
is the cosine, and zero-shot probabilities are CLIP's ``softmax(100 * cosine)`` over the prompts.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.models.common.errors import InvalidInputError, ModelLayoutError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.engines.onnx import OnnxEngine
from edge_agent.models.foundation.base import FoundationModel
from edge_agent.models.foundation.tokenizer import ClipTokenizer
from edge_agent.models.maths.predictions import Embeddings, Prediction, ZeroShotClassification

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LOGIT_SCALE = 100.0
VISUAL_FILE = "visual.onnx"
TEXTUAL_FILE = "textual.onnx"
_TEXT_CACHE_SIZE = 1024


def clip_preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """One BGR uint8 image -> (3, size, size) float32, normalised the way CLIP was trained."""
    height, width = image.shape[:2]
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    shrink = new_w < width
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)
    crop: np.ndarray = resized[top : top + size, left : left + size, ::-1].astype(np.float32) / 255.0
    crop = (crop - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return np.ascontiguousarray(crop.transpose(2, 0, 1))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` (N, D) with every row of ``b`` (M, D): (N, M)."""
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return a @ b.T


def zero_shot(similarities: np.ndarray) -> np.ndarray:
    logits = LOGIT_SCALE * similarities
    logits = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class ClipParams:
    prompts: tuple[str, ...] | None


def check_prompts(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise InvalidInputError("prompts must be a non-empty list of strings")
    prompts = tuple(value)
    if not all(isinstance(p, str) and p.strip() for p in prompts):
        raise InvalidInputError("every prompt must be a non-empty string")
    if len(set(prompts)) != len(prompts):
        raise InvalidInputError("prompts must not repeat")
    return prompts


class ClipModel(FoundationModel):
    """``predict`` gives :class:`Embeddings`, or :class:`ZeroShotClassification` when prompts are given
    (for every image, or per image through ``image_options=[{"prompts": [...]}, ...]``)."""

    stream_options = ("prompts",)

    def __init__(
        self,
        model_id: str,
        directory: Path,
        settings: ModelSettings,
        status: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(model_id, "embed", "clip")
        self.directory = directory
        self.settings = settings
        self.tokenizer = ClipTokenizer(f"{model_id} (CLIP)")
        self.visual = OnnxEngine(directory / VISUAL_FILE, f"{model_id}/visual", settings, status)
        self.textual = OnnxEngine(directory / TEXTUAL_FILE, f"{model_id}/textual", settings, status)
        spec = self.visual.input
        if spec.rank != 4 or spec.dim(2) is None or spec.dim(2) != spec.dim(3):
            raise ModelLayoutError(
                model_id, "CLIP visual", "input 0 of shape (batch, 3, size, size)", [spec.describe()]
            )
        self.resolution = int(spec.dim(2) or 0)
        text_spec = self.textual.input
        if text_spec.rank != 2 or text_spec.dtype not in ("int32", "int64"):
            raise ModelLayoutError(
                model_id,
                "CLIP textual",
                "input 0 of shape (batch, 77) of int32 or int64 tokens",
                [text_spec.describe()],
            )
        self._token_dtype = np.int32 if text_spec.dtype == "int32" else np.int64
        image_dim, text_dim = self.visual.outputs[0].shape[-1], self.textual.outputs[0].shape[-1]
        if image_dim is not None and text_dim is not None and image_dim != text_dim:
            raise ModelLayoutError(
                model_id,
                "CLIP",
                "image and text embeddings of one size",
                [self.visual.outputs[0].describe(), self.textual.outputs[0].describe()],
                "visual.onnx and textual.onnx come from different CLIP variants",
            )
        self.max_batch_size = self.visual.max_batch_size
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_lock = threading.Lock()

    @property
    def providers(self) -> list[str]:
        return self.visual.providers

    # -- text ----------------------------------------------------------------------------------

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), D) raw text embeddings; recent texts are remembered (a stream's prompts repeat)."""
        texts = list(texts)
        with self._text_lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        step = self.settings.clip_max_batch_size
        if not self.textual.dynamic_batch:
            step = self.textual.max_batch_size
        computed: dict[str, np.ndarray] = {}
        for start in range(0, len(missing), step):
            chunk = missing[start : start + step]
            tokens = self.tokenizer(chunk, self._token_dtype)
            (vectors,) = self.textual.run(tokens)[:1]
            computed.update(zip(chunk, np.asarray(vectors, dtype=np.float32), strict=True))
        with self._text_lock:
            for text, vector in computed.items():
                self._text_cache[text] = vector
            out = []
            for text in texts:
                out.append(self._text_cache[text])
                self._text_cache.move_to_end(text)
            while len(self._text_cache) > _TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
        return np.stack(out) if out else np.zeros((0, 0), np.float32)

    # -- images --------------------------------------------------------------------------------

    def inference_parameters(self, confidence: float | None = None, prompts: Any = None) -> ClipParams:  # type: ignore[override]
        # confidence: the stream stage passes one to every model; every prompt's score is kept anyway.
        return ClipParams(None if prompts is None else check_prompts(prompts))

    def preprocess(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        batch = np.stack([clip_preprocess(image, self.resolution) for image in images])
        return batch, [(image.shape[1], image.shape[0]) for image in images]

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        return self.visual.run(inputs)

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        return np.stack([p.vector for p in self.predict(list(images))])  # type: ignore[attr-defined]

    def postprocess(self, outputs: list[np.ndarray], metas: list[Any], params: ClipParams) -> list[Prediction]:
        vectors = np.asarray(outputs[0], dtype=np.float32)
        results: list[Prediction] = []
        for vector, (size, options) in zip(vectors, metas, strict=True):
            prompts = check_prompts(options["prompts"]) if "prompts" in options else params.prompts
            if not prompts:
                results.append(Embeddings(vector=vector, image_size=size))
                continue
            similarities = cosine(vector[None], self.embed_text(prompts))[0]
            results.append(
                ZeroShotClassification(
                    prompts=prompts,
                    similarities=similarities.astype(np.float32),
                    probabilities=zero_shot(similarities).astype(np.float32),
                    image_size=size,
                )
            )
        return results

    def compare(self, image: Any, prompts: Sequence[str]) -> list[float]:
        """Roboflow's ``/clip/compare``: cosine similarity of the image with each prompt."""
        (prediction,) = self.predict([image], prompts=list(prompts))
        return prediction.similarities.tolist()  # type: ignore[attr-defined]

    def make_response(self, prediction: Prediction) -> Any:
        from edge_agent.models.foundation.responses import response_of

        return response_of(prediction)

    def close(self) -> None:
        self.visual.close()
        self.textual.close()
