"""OWLv2 (``owlv2/<version>``): few-shot detection from example boxes, and Roboflow Instant models.

The network is transformers' ``Owlv2ForObjectDetection`` from ``google/<version>`` in the Hugging
Face hub cache (Roboflow's legacy stack fetches it there too: ``MODEL_CACHE_DIR/hf_home/hub``, or
``HF_HUB_CACHE``), float32 on the CPU. Prompts are *visual*: Roboflow's ``training_data``, a list of
``{"image": path|array, "boxes": [{"x", "y", "w", "h", "cls", "negative"}]}`` (box centre and size in
the reference image's pixels). The rules are in ``owlv2_steps.py``.

What is cached: each image's embedding (its 300 best boxes) in memory by the sha1 of its pixels, and
for reference images also on disk (``MODEL_CACHE_DIR/owlv2-embeddings/<version>/<sha1>.npz``), so a
stream's examples are embedded once, not at every start; the class queries once per training set.

A Roboflow Instant model (``weights.pt``, model type ``owlv2-finetuned``) is the same detector with
its class queries stored: :class:`Owlv2Detector` with ``fixed_classes``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.common.errors import InvalidInputError, ModelArtifactsError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.foundation.base import FoundationModel
from edge_agent.models.foundation.owlv2_steps import (
    ClassQueries,
    ImageEmbedding,
    owl_input,
    query_embeddings,
    reference_box,
    score_frame,
    top_boxes,
)
from edge_agent.models.maths.images import load_image
from edge_agent.models.maths.predictions import Detections, Prediction
from edge_agent.models.tasks.params import unit_interval

logger = logging.getLogger(__name__)

DEFAULT_CONFIDENCE = 0.99  # Roboflow's request default
DEFAULT_IOU = 0.3
_IMAGE_CACHE = 64
_QUERY_CACHE = 32


def hub_cache_dir(settings: ModelSettings) -> Path:
    """Where Roboflow's environment puts the Hugging Face hub cache (HF_HUB_CACHE, else
    HF_HOME/hub, else MODEL_CACHE_DIR/hf_home/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return settings.model_cache_dir / "hf_home" / "hub"


def check_training_data(value: Any) -> tuple[dict[str, Any], ...]:
    """Roboflow's ``training_data``: images (paths, arrays) with boxes ``{x, y, w, h, cls, negative?}``."""
    if isinstance(value, (str, Path)):
        path = Path(value)
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"training data {path}: cannot be read as JSON ({exc})") from None
        base = path.parent
    else:
        base = None
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidInputError('training_data must be a non-empty list of {"image": ..., "boxes": [...]}')
    out = []
    for n, item in enumerate(value):
        if not isinstance(item, Mapping) or "image" not in item or not isinstance(item.get("boxes"), list):
            raise InvalidInputError(f'training_data[{n}] must be {{"image": ..., "boxes": [...]}}')
        image = item["image"]
        if isinstance(image, Mapping) and "value" in image:  # Roboflow's {"type": ..., "value": ...}
            image = image["value"]
        if isinstance(image, str) and base is not None and not Path(image).is_absolute():
            image = str(base / image)
        boxes = []
        for k, box in enumerate(item["boxes"]):
            try:
                boxes.append(
                    {
                        "x": float(box["x"]),
                        "y": float(box["y"]),
                        "w": float(box["w"]),
                        "h": float(box["h"]),
                        "cls": str(box["cls"]),
                        "negative": bool(box.get("negative", False)),
                    }
                )
            except (KeyError, TypeError, ValueError):
                raise InvalidInputError(
                    f"training_data[{n}].boxes[{k}] needs x, y, w, h (pixels, box centre and size), cls "
                    f"and optionally negative"
                ) from None
        out.append({"image": image, "boxes": boxes})
    return tuple(out)


@dataclass(frozen=True)
class OwlParams:
    confidence: float
    iou_threshold: float
    training_data: tuple[dict[str, Any], ...] | Path | None


class Owlv2Detector(FoundationModel):
    stream_options = ("training_data",)
    default_confidence = DEFAULT_CONFIDENCE

    def __init__(
        self,
        model_id: str,
        network: Any,
        image_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        settings: ModelSettings,
        *,
        version: str,
        fixed_classes: ClassQueries | None = None,
        status: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(model_id, "object-detection", "owlv2")
        import torch

        self._torch = torch
        self.network = network.eval().to(torch.float32)
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.settings = settings
        self.version = version
        self.fixed_classes = fixed_classes
        self.directory: Path | None = None
        self.disk_cache = settings.model_cache_dir / "owlv2-embeddings" / version
        self._lock = threading.Lock()
        self._images: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._queries: OrderedDict[str, ClassQueries] = OrderedDict()
        self._by_file: dict[tuple[str, int, int, float], ClassQueries] = {}
        self.max_batch_size = 1
        self.embeddings_computed = 0  # for tests and stats: how many times the network ran

    # -- embeddings ------------------------------------------------------------------------------

    def _run_network(self, image: np.ndarray) -> ImageEmbedding:
        torch = self._torch
        pixels = torch.from_numpy(owl_input(image, self.image_size, self.mean, self.std))[None]
        with torch.inference_mode():
            feature_map = self.network.image_embedder(pixel_values=pixels)[0]
            b, h, w, d = feature_map.shape
            features = feature_map.reshape(b, h * w, d)
            objectness = self.network.objectness_predictor(features).sigmoid()[0]
            boxes = self.network.box_predictor(features, feature_map=feature_map)[0]
            embeds = self.network.class_head.dense0(features)[0]
            embeds = embeds / (torch.linalg.norm(embeds, ord=2, dim=-1, keepdim=True) + 1e-6)
        self.embeddings_computed += 1
        score, kept_boxes, kept_embeds = top_boxes(objectness.numpy(), boxes.numpy(), embeds.numpy())
        height, width = image.shape[:2]
        return ImageEmbedding(kept_boxes.astype(np.float64), kept_embeds.astype(np.float32), score, (width, height))

    def embed(self, image: np.ndarray, *, on_disk: bool = False) -> ImageEmbedding:
        key = hashlib.sha1(repr(image.shape).encode() + np.ascontiguousarray(image).tobytes()).hexdigest()
        with self._lock:
            found = self._images.get(key)
            if found is not None:
                self._images.move_to_end(key)
                return found
        found = self._from_disk(key) if on_disk else None
        if found is None:
            found = self._run_network(image)
            if on_disk:
                self._to_disk(key, found)
        with self._lock:
            self._images[key] = found
            while len(self._images) > _IMAGE_CACHE:
                self._images.popitem(last=False)
        return found

    def _from_disk(self, key: str) -> ImageEmbedding | None:
        path = self.disk_cache / f"{key}.npz"
        try:
            with np.load(path) as data:
                width, height = (int(v) for v in data["size"])
                return ImageEmbedding(data["boxes"], data["embeddings"], data["objectness"], (width, height))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("ignoring the damaged OWLv2 embedding %s (%s)", path, exc)
            return None

    def _to_disk(self, key: str, embedding: ImageEmbedding) -> None:
        from edge_agent.models.artifacts import cache

        try:
            self.disk_cache.mkdir(parents=True, exist_ok=True)
            temp = self.disk_cache / f".{key}.{os.getpid()}.{threading.get_ident()}.npz"
            np.savez(
                temp,
                boxes=embedding.boxes,
                embeddings=embedding.embeddings,
                objectness=embedding.objectness,
                size=np.array(embedding.size),
            )
            cache.commit_temp(temp, self.disk_cache / f"{key}.npz")
        except OSError as exc:  # a read-only cache costs time at the next start, nothing else
            logger.warning("cannot keep the OWLv2 embedding on disk in %s: %s", self.disk_cache, exc)

    def class_queries(self, training_data: Sequence[Mapping[str, Any]], iou_threshold: float) -> ClassQueries:
        """Each class's positive and negative query embeddings from example boxes (cached)."""
        training_data = check_training_data(training_data)
        digest = hashlib.sha1()
        images = []
        for item in training_data:
            image = load_image(item["image"])
            images.append(image)
            digest.update(hashlib.sha1(np.ascontiguousarray(image).tobytes()).digest())
            digest.update(json.dumps(item["boxes"], sort_keys=True).encode())
        digest.update(repr(iou_threshold).encode())
        key = digest.hexdigest()
        with self._lock:
            if key in self._queries:
                self._queries.move_to_end(key)
                return self._queries[key]
        collected: dict[str, dict[str, list[np.ndarray]]] = {}
        for item, image in zip(training_data, images, strict=True):
            embedding = self.embed(image, on_disk=True)
            references = np.array([reference_box(b, embedding.size) for b in item["boxes"]]).reshape(-1, 4)
            # each box keeps its own class: boxes without a match are skipped, not shifted onto the
            # next box's class (Roboflow zips the matched embeddings with all boxes' classes)
            for box, query in zip(item["boxes"], query_embeddings(embedding, references, iou_threshold), strict=True):
                if query is None:
                    continue
                kind = "negative" if box["negative"] else "positive"
                collected.setdefault(box["cls"], {"positive": [], "negative": []})[kind].append(query)
        queries: ClassQueries = {
            name: {kind: (np.stack(v) if v else None) for kind, v in kinds.items()} for name, kinds in collected.items()
        }
        with self._lock:
            self._queries[key] = queries
            while len(self._queries) > _QUERY_CACHE:
                self._queries.popitem(last=False)
        return queries

    def _queries_of_file(self, path: Path, iou_threshold: float) -> ClassQueries:
        """A stream's training-data file: read again only when it changes (size, mtime)."""
        try:
            stat = path.stat()
        except OSError as exc:
            raise InvalidInputError(f"training data {path}: {exc.strerror or exc}") from None
        key = (str(path), stat.st_mtime_ns, stat.st_size, iou_threshold)
        found = self._by_file.get(key)
        if found is None:
            found = self.class_queries(check_training_data(path), iou_threshold)
            self._by_file = {key: found, **{k: v for k, v in list(self._by_file.items())[-7:]}}
        return found

    # -- Model -----------------------------------------------------------------------------------

    def inference_parameters(  # type: ignore[override]
        self,
        confidence: float | None = None,
        iou_threshold: float | None = None,
        training_data: Any = None,
    ) -> OwlParams:
        return OwlParams(
            DEFAULT_CONFIDENCE if confidence is None else unit_interval("confidence", confidence),
            DEFAULT_IOU if iou_threshold is None else unit_interval("iou_threshold", iou_threshold),
            None
            if training_data is None
            else Path(training_data)
            if isinstance(training_data, (str, Path))
            else check_training_data(training_data),
        )

    def predict_chunk(self, images: list[np.ndarray], options: list[dict[str, Any]], params: OwlParams) -> list[Any]:
        out: list[Any] = []
        for image, option in zip(images, options, strict=True):
            data = option.get("training_data", params.training_data)
            if self.fixed_classes is not None and data is None:
                classes = self.fixed_classes
            elif data is None:
                raise InvalidInputError(
                    f"{self.model_id} finds what example boxes show: give training_data (infer --training-data "
                    f"FILE.json, STREAM_<NAME>_TRAINING_DATA)"
                )
            elif isinstance(data, (str, Path)):
                classes = self._queries_of_file(Path(data), params.iou_threshold)
            else:
                classes = self.class_queries(check_training_data(data), params.iou_threshold)
            embedding = self.embed(image)
            boxes, scores, class_ids, names = score_frame(embedding, classes, params.confidence, params.iou_threshold)
            out.append(Detections(boxes, scores, class_ids, names, embedding.size))
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


def load_owlv2(
    model_id: str, version: str, settings: ModelSettings, status: Callable[[str], None] | None = None, **kwargs: Any
) -> Owlv2Detector:
    """``google/<version>`` from the hub cache (downloaded there unless OFFLINE_MODE)."""
    from huggingface_hub import snapshot_download
    from transformers import Owlv2ForObjectDetection

    repo = f"google/{version}"
    cache = hub_cache_dir(settings)
    try:
        snapshot = Path(snapshot_download(repo, cache_dir=str(cache), local_files_only=settings.offline_mode))
    except Exception as exc:  # huggingface_hub's errors for a missing cache or network
        from edge_agent.models.common.errors import ModelNotCachedError

        raise ModelNotCachedError(
            f"{model_id}: {repo} is not in the Hugging Face cache {cache}"
            + (" and OFFLINE_MODE is on" if settings.offline_mode else f" and could not be fetched ({exc})")
        ) from None
    config_path = snapshot / "preprocessor_config.json"
    try:
        processor = json.loads(config_path.read_text())
        size = processor.get("size") or {}
        image_size = (int(size["height"]), int(size["width"]))
        mean, std = processor["image_mean"], processor["image_std"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelArtifactsError(config_path, f"has no usable size / image_mean / image_std ({exc})") from None
    if status:
        status(f"loading {model_id}")
    network = Owlv2ForObjectDetection.from_pretrained(str(snapshot), local_files_only=True)
    return Owlv2Detector(model_id, network, image_size, mean, std, settings, version=version, status=status, **kwargs)


INSTANT_FILE = "weights.pt"
#: Roboflow Instant's model type (a serialized OWLv2)
INSTANT_TYPES = ("owlv2-finetuned",)
#: the cache class Roboflow's pickles may hold the reference embeddings in
_ROBOFLOW_CACHE_CLASS = "inference.models.owlv2.owlv2.LimitedSizeDict"


def read_instant(path: Path) -> tuple[str, ClassQueries]:
    """(Hugging Face id, class queries) of a Roboflow Instant ``weights.pt``: a torch pickle of
    ``{huggingface_id, train_data_dict: {class: {"positive": (n, D) | None, "negative": ...}},
    class_names, roboflow_id, image_embeds}``, read without running pickled code."""
    import torch

    try:
        # Roboflow's LimitedSizeDict (an OrderedDict with a size limit) is read as a plain OrderedDict
        with torch.serialization.safe_globals([(OrderedDict, _ROBOFLOW_CACHE_CLASS)]):
            content = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise ModelArtifactsError(
            path, f"cannot be read as a Roboflow Instant model ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(content, Mapping) or not isinstance(content.get("train_data_dict"), Mapping):
        raise ModelArtifactsError(path, "has no train_data_dict (not a Roboflow Instant model)")
    hf_id = str(content.get("huggingface_id") or "")
    if not hf_id.startswith("google/"):
        raise ModelArtifactsError(path, f"names base model {hf_id!r}; expected google/<owlv2 version>")
    classes: ClassQueries = {}
    for name, kinds in content["train_data_dict"].items():
        if not isinstance(kinds, Mapping):
            raise ModelArtifactsError(path, f"class {name!r} has no positive/negative embeddings")
        classes[str(name)] = {
            kind: (None if kinds.get(kind) is None else np.asarray(kinds[kind].float().numpy(), np.float32))
            for kind in ("positive", "negative")
        }
    return hf_id, classes


def load_instant(
    model_id: str, directory: Path, settings: ModelSettings, status: Callable[[str], None] | None = None
) -> Owlv2Detector:
    """A Roboflow Instant model from its directory (``weights.pt``) and its base OWLv2."""
    from edge_agent.models.common.errors import ModelNotCachedError

    weights = directory / INSTANT_FILE
    if not weights.is_file():
        raise ModelNotCachedError(
            f"{model_id} is a Roboflow Instant model (a serialized OWLv2): its {INSTANT_FILE} is read from "
            f"{directory}, which does not hold one; this build does not download Instant models"
        )
    hf_id, classes = read_instant(weights)
    detector = load_owlv2(model_id, hf_id.removeprefix("google/"), settings, status, fixed_classes=classes)
    detector.model_type = INSTANT_TYPES[0]
    detector.directory = directory
    return detector


__all__ = [
    "DEFAULT_CONFIDENCE",
    "INSTANT_TYPES",
    "Owlv2Detector",
    "check_training_data",
    "hub_cache_dir",
    "load_instant",
    "load_owlv2",
    "read_instant",
]
