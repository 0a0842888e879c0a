"""Grounding DINO (``grounding_dino/<variant>``): boxes of the classes a user names in text.

The network is transformers' ``GroundingDinoForObjectDetection`` holding Roboflow's original
checkpoint (``grounding_dino_weights.py`` renames it); its text encoder's configuration and
tokenizer come from ``bert-base-uncased`` in the Hugging Face hub cache, as Roboflow's legacy class
reads them (``MODEL_CACHE_DIR/hf_home/hub/models--google-bert--bert-base-uncased``, or the older
``models--bert-base-uncased``). Classes come per call or per stream (``prompts``); decoding rules are
in ``grounding_dino_steps.py``.

What is computed once per prompt set, not per frame: the caption's tokens, the classes as the
tokenizer renders them, and BERT's output for the caption (a cache in front of the text backbone;
the text features still meet each frame's image features in the fusion layers, which cannot be
cached).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.common.errors import InvalidInputError, ModelNotCachedError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.foundation.base import FoundationModel
from edge_agent.models.foundation.clip import check_prompts
from edge_agent.models.foundation.grounding_dino_steps import NMS_IOU, caption_of, decode, pixel_values
from edge_agent.models.foundation.grounding_dino_weights import (
    DEFAULT_TEXT_ENCODER,
    build_network,
    read_config_py,
    read_state_dict,
)
from edge_agent.models.foundation.owlv2 import hub_cache_dir
from edge_agent.models.maths.predictions import Detections, Prediction
from edge_agent.models.tasks.params import unit_interval

DEFAULT_BOX_THRESHOLD = 0.5  # Roboflow's box_threshold
DEFAULT_TEXT_THRESHOLD = 0.5
_PROMPT_CACHE = 32
#: where Roboflow's legacy class finds BERT (the hub's current repo name first)
BERT_REPOS = {DEFAULT_TEXT_ENCODER: ("google-bert/bert-base-uncased", "bert-base-uncased")}


@dataclass(frozen=True)
class GroundingParams:
    box_threshold: float
    text_threshold: float
    class_agnostic_nms: bool
    iou_threshold: float
    prompts: tuple[str, ...] | None


@dataclass(frozen=True)
class PromptSet:
    """What one class list turns into before any frame: the caption's tokens, the classes rendered."""

    classes: tuple[str, ...]
    input_ids: Any  # (1, T) torch.long
    attention_mask: Any
    token_ids: tuple[int, ...]
    rendered: tuple[str, ...]


def _text_cache_module(inner: Any, size: int) -> Any:
    """A module standing in for the text backbone: BERT runs once per distinct caption."""
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    class CachedTextBackbone(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.cache: OrderedDict[str, Any] = OrderedDict()
            self.lock = threading.Lock()
            self.runs = 0

        def forward(
            self,
            input_ids: Any,
            attention_mask: Any = None,
            token_type_ids: Any = None,
            position_ids: Any = None,
            return_dict: Any = None,
            **kwargs: Any,
        ) -> Any:
            digest = hashlib.sha1()
            for part in (input_ids, attention_mask, token_type_ids, position_ids):
                if part is not None:
                    digest.update(repr(tuple(part.shape)).encode())
                    digest.update(part.detach().cpu().numpy().tobytes())
            key = digest.hexdigest()
            with self.lock:
                found = self.cache.get(key)
                if found is not None:
                    self.cache.move_to_end(key)
                    return BaseModelOutput(last_hidden_state=found)
            out = self.inner(input_ids, attention_mask, token_type_ids, position_ids, return_dict=True)
            hidden = out.last_hidden_state
            with self.lock:
                self.runs += 1
                self.cache[key] = hidden
                while len(self.cache) > size:
                    self.cache.popitem(last=False)
            return BaseModelOutput(last_hidden_state=hidden)

    return CachedTextBackbone()


class GroundingDinoDetector(FoundationModel):
    """``predict(images, prompts=[...])`` or per image ``image_options=[{"prompts": [...]}]``:
    :class:`Detections` whose class names are the prompts."""

    stream_options = ("prompts",)
    #: a stream without prompts is refused at start (exit 2), not failed at every frame
    required_stream_options = ("prompts",)
    default_confidence = DEFAULT_BOX_THRESHOLD

    def __init__(
        self,
        model_id: str,
        network: Any,
        tokenizer: Any,
        settings: ModelSettings,
        status: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(model_id, "object-detection", "grounding-dino")
        import torch

        from edge_agent.models.foundation.torch_support import device_and_dtype

        self._torch = torch
        self.device, self.dtype = device_and_dtype(settings, model_id)
        self.network = network.eval().to(device=self.device, dtype=self.dtype)
        self.text_backbone = _text_cache_module(self.network.model.text_backbone, _PROMPT_CACHE)
        self.network.model.text_backbone = self.text_backbone
        self.tokenizer = tokenizer
        self.settings = settings
        self.max_text_len = int(network.config.max_text_len)
        self.max_batch_size = 1
        self._prompts: OrderedDict[tuple[str, ...], PromptSet] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def text_runs(self) -> int:
        """How many times BERT ran (once per distinct prompt set still cached)."""
        return int(self.text_backbone.runs)

    def _render(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids))

    def prompt_set(self, classes: Sequence[str]) -> PromptSet:
        key = check_prompts(list(classes))
        with self._lock:
            found = self._prompts.get(key)
            if found is not None:
                self._prompts.move_to_end(key)
                return found
        tokens = self.tokenizer(caption_of(key), return_tensors="pt", truncation=True, max_length=self.max_text_len)
        # a class is matched in a phrase as the tokenizer renders text ("t-shirt" -> "t - shirt")
        rendered = tuple(
            self._render(self.tokenizer(c.strip().lower(), add_special_tokens=False)["input_ids"]) for c in key
        )
        found = PromptSet(
            classes=key,
            input_ids=tokens["input_ids"].to(self.device),
            attention_mask=tokens["attention_mask"].to(self.device),
            token_ids=tuple(int(t) for t in tokens["input_ids"][0].tolist()),
            rendered=rendered,
        )
        with self._lock:
            self._prompts[key] = found
            while len(self._prompts) > _PROMPT_CACHE:
                self._prompts.popitem(last=False)
        return found

    def raw_outputs(self, image: np.ndarray, prompts: PromptSet) -> tuple[np.ndarray, np.ndarray]:
        """(sigmoid token scores (Q, T), normalised cxcywh boxes (Q, 4)) of one BGR image."""
        torch = self._torch
        pixels = torch.from_numpy(pixel_values(image))[None].to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            out = self.network(pixel_values=pixels, input_ids=prompts.input_ids, attention_mask=prompts.attention_mask)
        scores = out.logits[0].float().sigmoid().cpu().numpy()
        boxes = out.pred_boxes[0].float().cpu().numpy()
        return scores, boxes

    # -- Model -----------------------------------------------------------------------------------

    def inference_parameters(  # type: ignore[override]
        self,
        confidence: float | None = None,
        text_threshold: float | None = None,
        class_agnostic_nms: bool | None = None,
        iou_threshold: float | None = None,
        prompts: Any = None,
    ) -> GroundingParams:
        return GroundingParams(
            DEFAULT_BOX_THRESHOLD if confidence is None else unit_interval("confidence", confidence),
            DEFAULT_TEXT_THRESHOLD if text_threshold is None else unit_interval("text_threshold", text_threshold),
            self.settings.class_agnostic_nms if class_agnostic_nms is None else bool(class_agnostic_nms),
            NMS_IOU if iou_threshold is None else unit_interval("iou_threshold", iou_threshold),
            None if prompts is None else check_prompts(prompts),
        )

    def predict_chunk(
        self, images: list[np.ndarray], options: list[dict[str, Any]], params: GroundingParams
    ) -> list[Prediction]:
        out: list[Prediction] = []
        for image, option in zip(images, options, strict=True):
            classes = option.get("prompts", params.prompts)
            if not classes:
                raise InvalidInputError(
                    f"{self.model_id} finds the classes it is told: give prompts (infer --prompt dog --prompt cat, "
                    f"STREAM_<NAME>_PROMPTS=dog,cat)"
                )
            prompts = self.prompt_set(classes)
            scores, boxes = self.raw_outputs(image, prompts)
            size = (int(image.shape[1]), int(image.shape[0]))
            xyxy, confidences, class_ids = decode(
                scores,
                boxes,
                prompts.token_ids,
                self._render,
                prompts.rendered,
                params.box_threshold,
                params.text_threshold,
                size,
                class_agnostic=params.class_agnostic_nms,
                iou_threshold=params.iou_threshold,
            )
            out.append(Detections(xyxy, confidences, class_ids, prompts.classes, size))
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


def bert_snapshot(settings: ModelSettings, text_encoder: str, model_id: str) -> Path:
    """BERT's snapshot directory in the hub cache (fetched there unless OFFLINE_MODE)."""
    from huggingface_hub import snapshot_download

    repos = BERT_REPOS.get(text_encoder, (text_encoder,))
    cache = hub_cache_dir(settings)
    for repo in repos:
        try:
            return Path(snapshot_download(repo, cache_dir=str(cache), local_files_only=True))
        except Exception:  # huggingface_hub's errors for a repository the cache does not hold
            continue
    if not settings.offline_mode:
        try:
            return Path(
                snapshot_download(repos[0], cache_dir=str(cache), allow_patterns=["*.json", "*.txt", "*.safetensors"])
            )
        except Exception as exc:  # network, authentication, a missing repository
            raise ModelNotCachedError(
                f"{model_id}: its text encoder {repos[0]} is not in the Hugging Face cache {cache} and could "
                f"not be fetched ({exc})"
            ) from None
    raise ModelNotCachedError(
        f"{model_id}: its text encoder {' or '.join(repos)} is not in the Hugging Face cache {cache} "
        f"(models--{repos[0].replace('/', '--')}) and OFFLINE_MODE is on"
    )


def load_grounding_dino(
    model_id: str,
    weights: Path,
    config_py: Path | None,
    settings: ModelSettings,
    status: Callable[[str], None] | None = None,
) -> GroundingDinoDetector:
    """A detector from an original checkpoint (``groundingdino_swint_ogc.pth`` or ``weights.pth``),
    its config (``config.py``, optional) and BERT from the hub cache."""
    from transformers import AutoTokenizer, BertConfig

    from edge_agent.models.common.errors import ModelArtifactsError

    options = read_config_py(config_py) if config_py is not None and config_py.is_file() else {}
    snapshot = bert_snapshot(settings, str(options.get("text_encoder_type", DEFAULT_TEXT_ENCODER)), model_id)
    try:
        text_config = BertConfig.from_pretrained(str(snapshot), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(snapshot), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelArtifactsError(snapshot, f"is not a usable BERT snapshot ({exc})") from None
    if status:
        status(f"loading {model_id}")
    state = read_state_dict(weights)
    text_weights = None
    if not any(k.startswith("bert.") for k in state):  # a checkpoint without its text encoder
        text_weights = _bert_weights(snapshot)
    network = build_network(state, text_config, text_weights, options, weights)
    detector = GroundingDinoDetector(model_id, network, tokenizer, settings, status)
    detector.directory = weights.parent
    return detector


def _bert_weights(snapshot: Path) -> dict[str, Any]:
    from edge_agent.models.common.errors import ModelArtifactsError

    path = snapshot / "model.safetensors"
    if not path.is_file():
        raise ModelArtifactsError(snapshot, "has no model.safetensors, and the checkpoint holds no bert.* weights")
    from safetensors.torch import load_file

    return dict(load_file(str(path)))


__all__ = [
    "BERT_REPOS",
    "DEFAULT_BOX_THRESHOLD",
    "DEFAULT_TEXT_THRESHOLD",
    "GroundingDinoDetector",
    "GroundingParams",
    "PromptSet",
    "bert_snapshot",
    "load_grounding_dino",
]
