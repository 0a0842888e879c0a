"""Moondream2 ``moondream2/moondream2_2b_jul24`` (revision 2025-06-21): ``detect`` as Roboflow serves it.

Roboflow's ``Moondream2.predict`` is ``model.detect(encode_image(img), prompt)["objects"]``, answered
as an ``ObjectDetectionInferenceResponse`` even on ``/infer/lmm``: each object's normalised box times
(W, H), ``confidence`` 1.0, ``class`` the prompt, ``class_id`` 0. The weights come as Roboflow ships
them (``GET /core_model/moondream2/<variant>``: the Hugging Face checkpoint's files, ``*.tar.gz``
unpacked in place); the network is edge-agent's own (:mod:`.moondream_network`), so none of the
checkpoint's ``.py`` files is imported.

On streams it is a vision-language model like the others (``STREAM_<NAME>_VLM_PROMPT`` names the
object to find); its answers carry ``predictions``.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.artifacts.api import ProgressCallback, RoboflowApi
from edge_agent.models.artifacts.core_cache import core_model_dir
from edge_agent.models.common.errors import CacheIntegrityError, MissingExtraError, ModelRuntimeError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.engines.torch_runtime import import_torch, resolve_device
from edge_agent.models.engines.transformers import GenerationCancelled, choose_dtype
from edge_agent.models.foundation.base import FoundationModel
from edge_agent.models.foundation.moondream_network import (
    MAX_OBJECTS,
    MoondreamRunner,
    build_network,
    load_weights,
    read_config,
)
from edge_agent.models.foundation.vlm import check_prompt
from edge_agent.models.foundation.vlm_artifacts import checkpoint_root, ensure_hf_files
from edge_agent.models.identity.ids import ModelRef, lock_name
from edge_agent.models.maths.predictions import Detections, Prediction

StatusCallback = Callable[[str], None]
DEFAULT_PROMPT = "object"


class LayerGate:
    """Called before every transformer layer: stops a detection when ``cancel`` is set (the agent is
    stopping), and paces it to ``cpu_share`` of the wall time (the VLM asker sets it) by sleeping
    after every 20 ms of work, as the transformers engine does for the other VLMs."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.cancel = threading.Event()
        self.cpu_share = 1.0
        self._busy = 0.0
        self._resumed = time.perf_counter()

    def start(self) -> None:
        self._busy, self._resumed = 0.0, time.perf_counter()

    def __call__(self) -> None:
        if self.cancel.is_set():
            raise GenerationCancelled(f"{self.model_id}: detection cancelled")
        if self.cpu_share >= 1.0:
            return
        now = time.perf_counter()
        self._busy += now - self._resumed
        self._resumed = now
        if self._busy >= 0.02:
            pause = self._busy * (1.0 / self.cpu_share - 1.0)
            self._busy = 0.0
            if self.cancel.wait(pause):
                raise GenerationCancelled(f"{self.model_id}: detection cancelled")
            self._resumed = time.perf_counter()


def boxes_in_pixels(objects: list[dict[str, float]], size: tuple[int, int]) -> np.ndarray:
    """(K, 4) xyxy source pixels of Moondream's normalised objects: each corner times (W, H), kept
    inside the picture. (Roboflow's legacy class took ``abs()`` of each corner instead, which
    mirrors a box hanging over the left or top edge; see the README.)"""
    width, height = size
    if not objects:
        return np.zeros((0, 4), np.float64)
    corners = np.array([[o["x_min"], o["y_min"], o["x_max"], o["y_max"]] for o in objects], np.float64)
    corners = np.clip(corners, 0.0, 1.0)
    return corners * np.array([width, height, width, height], np.float64)


class Moondream2Model(FoundationModel):
    """The loaded Moondream2 network; ``predict(images, prompt="person")`` finds the prompt's objects."""

    stream_options = ("prompt",)

    def __init__(self, model_id: str, model_type: str, directory: Path, settings: ModelSettings) -> None:
        super().__init__(model_id, "object-detection", model_type)
        torch = import_torch(f"{model_id} (Moondream2)")
        from tokenizers import Tokenizer

        config = read_config(directory)
        files = sorted(directory.glob("model*.safetensors"))
        if not files:
            raise CacheIntegrityError(f"{directory} holds no model*.safetensors weights for {model_id}")
        tokenizer_file = directory / "tokenizer.json"
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # tokenizers raises its own exception type
            raise CacheIntegrityError(f"{tokenizer_file} is not a readable tokenizer: {exc}") from exc
        self.device = resolve_device(torch, settings.default_device)
        self.dtype = choose_dtype(torch, self.device, settings.vlm_dtype)
        network = build_network(config, self.dtype)
        load_weights(network, files)
        self.gate = LayerGate(model_id)
        self.engine = self.gate  # the VLM asker paces and cancels through ``engine``
        self.runner: MoondreamRunner | None = MoondreamRunner(network.to(self.device), config, tokenizer, self.gate)
        self._lock = threading.Lock()
        self.max_batch_size = 1

    @property
    def providers(self) -> list[str]:
        return [f"torch:{self.device}:{str(self.dtype).removeprefix('torch.')}"]

    def inference_parameters(  # type: ignore[override]
        self, confidence: float | None = None, prompt: Any = None, max_new_tokens: Any = None
    ) -> str | None:
        # confidence: the stream stage passes one to every model; every box has 1.0.
        # max_new_tokens: taken for the VLM settings' sake; detection is bounded by objects (50).
        return None if prompt is None else check_prompt(prompt)

    def predict_chunk(self, images: list[np.ndarray], options: list[dict[str, Any]], params: Any) -> list[Prediction]:
        out: list[Prediction] = []
        for image, option in zip(images, options, strict=True):
            prompt = check_prompt(option["prompt"]) if "prompt" in option else (params or DEFAULT_PROMPT)
            out.append(self.detect(image, prompt))
        return out

    def detect(self, image: np.ndarray, prompt: str, max_objects: int = MAX_OBJECTS) -> Detections:
        """The objects ``prompt`` names in a BGR frame, as detections in its pixels."""
        picture = np.ascontiguousarray(image[:, :, ::-1])  # frames are BGR; the network was trained on RGB
        size = (image.shape[1], image.shape[0])
        with self._lock:
            if self.runner is None:
                raise ModelRuntimeError(f"{self.model_id} is closed")
            self.gate.start()
            try:
                objects = self.runner.detect(picture, prompt, max_objects)
            except GenerationCancelled:
                raise
            except (RuntimeError, ValueError) as exc:
                raise ModelRuntimeError(f"{self.model_id}: detection failed: {exc}") from exc
        boxes = boxes_in_pixels(objects, size)
        n = boxes.shape[0]
        return Detections(boxes, np.ones(n, np.float32), np.zeros(n, np.int64), (prompt,), size)

    def preprocess(self, images: list[np.ndarray]) -> tuple[Any, list[Any]]:
        return images, [None] * len(images)

    def run(self, inputs: Any) -> Any:
        return inputs

    def postprocess(self, outputs: Any, metas: list[Any], params: Any) -> list[Prediction]:
        raise NotImplementedError  # predict_chunk does the work

    def make_response(self, prediction: Prediction) -> Any:
        from edge_agent.models.maths.responses import ObjectDetectionResponse

        return ObjectDetectionResponse.model_validate(prediction.to_response())

    def close(self) -> None:
        self.gate.cancel.set()
        with self._lock:  # after the detection in flight has stopped
            self.runner = None


def check_moondream_extras(model_id: str) -> None:
    """Said before anything is downloaded: the runtime Moondream2 needs is installed."""
    for module, package in (("torch", "torch"), ("safetensors", "safetensors"), ("tokenizers", "tokenizers")):
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(f"{model_id} (Moondream2)", "vlm", package)
    if importlib.util.find_spec("PIL") is None:
        raise MissingExtraError(f"{model_id} (Moondream2)", "vlm", "pillow")


def load_moondream2(
    ref: ModelRef,
    model_type: str,
    api_key: str | None,
    settings: ModelSettings,
    *,
    progress: ProgressCallback | None = None,
    status: StatusCallback | None = None,
) -> Moondream2Model:
    """``moondream2/<variant>``: its core-model files (fetched once), then the network built from them."""
    assert ref.project is not None and ref.version is not None
    check_moondream_extras(ref.model_id)
    family, variant = ref.project, ref.version
    api = RoboflowApi(settings)
    directory = ensure_hf_files(
        core_model_dir(ref, settings.model_cache_dir),
        ref.model_id,
        lock_name(ref),
        lambda: api.describe_core_model(family, variant, api_key),
        settings,
        progress=progress,
        status=status,
    )
    root = checkpoint_root(directory)
    if root is None:
        raise CacheIntegrityError(f"{directory} holds no Moondream2 checkpoint (config.json)")
    if status:
        status(f"loading {ref.model_id}")
    return Moondream2Model(ref.model_id, model_type, root, settings)
