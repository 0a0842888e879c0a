"""YOLO-World (``yolo_world/{s,m,l,x,v2-s,v2-m,v2-l,v2-x}``): open-vocabulary detection of named classes.

Roboflow serves it from one Ultralytics checkpoint, ``yolo-world.pt`` in
``MODEL_CACHE_DIR/yolo_world/<variant>/``, with CLIP ViT-B/32's text tower (``clip/ViT-B-32``'s
``textual.onnx``) for the class names. Ultralytics is AGPL and pulls torchvision, so it is not
used: the checkpoint is read without running pickled code (:mod:`.yolo_world_checkpoint`) into our
own torch network (:mod:`.yolo_world_network`).

Per request, as Roboflow: each prompt embedded by CLIP, the set L2-normalised and handed to the
network as its class features (once per prompt set, not per frame); RGB in, Ultralytics'
letterbox, Ultralytics' NMS at the request's confidence (default 0.4) and IoU 0.7, then Roboflow's
class-aware NMS at IoU 0.3; class names are the prompts. Responses leave ``inference_id`` out, as
Roboflow's ``/yolo_world/infer`` (``exclude_none``) does.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.common.errors import InvalidInputError, ModelArtifactsError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.foundation.base import FoundationModel
from edge_agent.models.foundation.clip import check_prompts
from edge_agent.models.foundation.yolo_world_steps import (
    Placement,
    network_input,
    roboflow_nms,
    to_source,
    ultralytics_nms,
)
from edge_agent.models.maths.predictions import Detections, Prediction
from edge_agent.models.tasks.params import unit_interval

WEIGHTS_FILE = "yolo-world.pt"
TEXT_MODEL_ID = "clip/ViT-B-32"
DEFAULT_CONFIDENCE = 0.4  # Roboflow's request default
_PROMPT_SETS = 32


@dataclass(frozen=True)
class YoloWorldParams:
    confidence: float
    prompts: tuple[str, ...] | None


class YoloWorldModel(FoundationModel):
    stream_options = ("prompts",)
    required_stream_options = ("prompts",)  # it finds only what it is told
    default_confidence = DEFAULT_CONFIDENCE

    def __init__(
        self,
        model_id: str,
        network: Any,
        embed_text: Callable[[Sequence[str]], np.ndarray],
        settings: ModelSettings,
        *,
        text_model: Any = None,
    ) -> None:
        super().__init__(model_id, "object-detection", "yolo-world")
        import torch

        from edge_agent.models.foundation.torch_support import device_and_dtype

        self._torch = torch
        # DEFAULT_DEVICE and FOUNDATION_DTYPE (auto: float32 on the CPU, float16 on CUDA)
        self.device, self.dtype = device_and_dtype(settings, f"{model_id} (YOLO-World)")
        self.network = network.eval().to(self.device, self.dtype)
        self.embed_text = embed_text
        self.text_model = text_model  # closed with this model
        self.settings = settings
        self.max_batch_size = 4  # frames of several streams at once (grouped by prompts and size)
        self._lock = threading.Lock()
        self._prompt_sets: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self.text_sets_computed = 0  # for tests and stats: how many prompt sets went through CLIP

    def class_features(self, prompts: tuple[str, ...]) -> Any:
        """(1, N, D) L2-normalised CLIP text embeddings of a prompt set (cached per set)."""
        with self._lock:
            found = self._prompt_sets.get(prompts)
            if found is not None:
                self._prompt_sets.move_to_end(prompts)
                return found
        vectors = np.asarray(self.embed_text(list(prompts)), dtype=np.float32)
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
        expected = self.network.embed_dim
        if vectors.shape[-1] != expected:
            raise ModelArtifactsError(
                TEXT_MODEL_ID,
                f"gives {vectors.shape[-1]}-dimensional text embeddings; {self.model_id} takes {expected}",
            )
        features = self._torch.from_numpy(vectors)[None]
        with self._lock:
            self.text_sets_computed += 1
            self._prompt_sets[prompts] = features
            while len(self._prompt_sets) > _PROMPT_SETS:
                self._prompt_sets.popitem(last=False)
        return features

    def inference_parameters(  # type: ignore[override]
        self, confidence: float | None = None, prompts: Any = None
    ) -> YoloWorldParams:
        return YoloWorldParams(
            DEFAULT_CONFIDENCE if confidence is None else unit_interval("confidence", confidence),
            None if prompts is None else check_prompts(prompts),
        )

    def detect(self, image: np.ndarray, prompts: tuple[str, ...], confidence: float) -> Detections:
        """One BGR image -> detections of the prompts in source pixels."""
        (found,) = self._detect_batch([image], prompts, confidence)
        return found

    def _detect_batch(self, images: list[np.ndarray], prompts: tuple[str, ...], confidence: float) -> list[Detections]:
        """Images of one input shape and one prompt set: one forward pass."""
        torch = self._torch
        features = self.class_features(prompts).to(self.device, self.dtype)
        pixels = np.stack([network_input(image, self.network.stride) for image in images])
        with torch.inference_mode():
            batch = torch.from_numpy(pixels).to(self.device, self.dtype)
            outputs = self.network(batch, features).float().cpu().numpy()
        out = []
        for image, output in zip(images, outputs, strict=True):
            boxes, scores, class_ids = ultralytics_nms(output, confidence)
            boxes = to_source(boxes, Placement(pixels.shape[2:], image.shape[:2]))
            boxes, scores, class_ids = roboflow_nms(boxes, scores, class_ids, confidence)
            height, width = image.shape[:2]
            out.append(Detections(boxes, scores, class_ids, prompts, (width, height)))
        return out

    def predict_chunk(self, images: list[np.ndarray], options: list[dict[str, Any]], params: Any) -> list[Any]:
        """Frames of several streams: those with the same prompts and input shape share a forward pass."""
        groups: dict[tuple[tuple[str, ...], tuple[int, int]], list[int]] = {}
        for index, (image, option) in enumerate(zip(images, options, strict=True)):
            prompts = check_prompts(option["prompts"]) if "prompts" in option else params.prompts
            if not prompts:
                raise InvalidInputError(
                    f"{self.model_id} finds the classes it is told: give prompts (infer --prompt NAME, "
                    f"STREAM_<NAME>_PROMPTS)"
                )
            groups.setdefault((prompts, (image.shape[0], image.shape[1])), []).append(index)
        out: list[Any] = [None] * len(images)
        for (prompts, _), indices in groups.items():
            found = self._detect_batch([images[i] for i in indices], prompts, params.confidence)
            for i, detections in zip(indices, found, strict=True):
                out[i] = detections
        return out

    def preprocess(self, images: list[np.ndarray]) -> tuple[Any, list[Any]]:
        return images, [None] * len(images)

    def run(self, inputs: Any) -> Any:
        return inputs

    def postprocess(self, outputs: Any, metas: list[Any], params: Any) -> list[Prediction]:
        raise NotImplementedError  # predict_chunk does the work

    def make_response(self, prediction: Prediction) -> Any:
        from edge_agent.models.maths.responses import ObjectDetectionResponse

        return ObjectDetectionResponse.model_validate(prediction.to_response())

    def infer(self, images: Any, **kwargs: Any) -> list[Any]:
        # Roboflow's /yolo_world/infer dumps with exclude_none and never sets an inference_id
        return [r.model_copy(update={"inference_id": None}) for r in super().infer(images, **kwargs)]

    def close(self) -> None:
        if self.text_model is not None:
            self.text_model.close()


def load_yolo_world(
    model_id: str, weights: Path, embed_text: Callable[[Sequence[str]], np.ndarray], settings: ModelSettings, **kw: Any
) -> YoloWorldModel:
    from edge_agent.models.foundation.yolo_world_checkpoint import read_checkpoint
    from edge_agent.models.foundation.yolo_world_network import YoloWorldNetwork

    checkpoint = read_checkpoint(weights)
    try:
        network = YoloWorldNetwork(checkpoint)
    except ModelArtifactsError as exc:  # the network names the file by its name only: say where it is
        raise ModelArtifactsError(weights, exc.problem) from None
    return YoloWorldModel(model_id, network, embed_text, settings, **kw)


__all__ = ["DEFAULT_CONFIDENCE", "TEXT_MODEL_ID", "WEIGHTS_FILE", "YoloWorldModel", "load_yolo_world"]
