"""SAM3 (``sam3/<variant>``): promptable concept segmentation, every instance of what a text names.

Runs Roboflow's SAM3 artifacts (``weights.pt``, Meta's checkpoint, read by ``sam3_weights.py``; and
``bpe_simple_vocab_16e6.txt.gz``, OpenAI's CLIP BPE vocabulary) in transformers' ``Sam3Model`` on
torch, float32 on the CPU. Pre-processing is Meta's (and transformers'): RGB squashed to
1008x1008 (aspect not kept), /255, mean and std 0.5. transformers' ``Sam3ImageProcessor`` imports
torchvision, whose wheels do not load beside CPU torch, so the steps are done here.

Each prompt is run on the image's features (computed once per frame) and gives up to one instance
per DETR query: the score is ``sigmoid(query logit) * sigmoid(presence logit)`` (Meta's and
Roboflow's ``PostProcessImage``), kept above ``output_prob_thresh`` (0.5); a mask is its 288x288
logits bilinearly resized to the source size and cut at 0 (sigmoid 0.5); a box is the predicted
normalised xyxy times the source size. Text features are computed once per prompt set and kept.

``predict`` gives :class:`ConceptSegmentation`: instance segmentation whose classes are the prompts
(what a stream publishes, tracks and zones), answering ``infer`` in Roboflow's
``/sam3/concept_segment`` shape.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.models.common.errors import InvalidInputError, ModelArtifactsError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.foundation.base import WholeImageModel
from edge_agent.models.foundation.sam3_weights import IMAGE_SIZE, build_sam3
from edge_agent.models.foundation.sam_steps import mask_polygons, mask_rle
from edge_agent.models.foundation.sam_weights import read_checkpoint
from edge_agent.models.foundation.tokenizer import ClipTokenizer
from edge_agent.models.maths.predictions import InstanceSegmentation, Prediction

WEIGHTS_FILE = "weights.pt"
VOCABULARY_FILE = "bpe_simple_vocab_16e6.txt.gz"
REQUIRED_FILES = (WEIGHTS_FILE, VOCABULARY_FILE)
MASK_FORMATS = ("json", "rle")
#: Roboflow's ``/sam3/concept_segment`` limits and default
MAX_PROMPTS = 16
DEFAULT_THRESHOLD = 0.5
_TEXT_CACHE_SIZE = 32  # prompt sets: a box runs a few streams, each with one set at a time


def sam3_input(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """One BGR uint8 frame -> (3, size, size) float32: RGB, squashed to size x size, (x/255 - 0.5) / 0.5."""
    height, width = image.shape[:2]
    shrink = width > size or height > size
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    rgb = resized[:, :, ::-1].astype(np.float32) / 255.0
    return np.ascontiguousarray(((rgb - 0.5) / 0.5).transpose(2, 0, 1))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.asarray(x, np.float64))))


def concept_scores(query_logits: np.ndarray, presence_logit: float) -> np.ndarray:
    """Each query's probability: ``sigmoid(logit) * sigmoid(presence)`` (is the concept in the image at all)."""
    return np.asarray(_sigmoid(query_logits) * _sigmoid(np.asarray(presence_logit)), np.float32)


def boxes_to_source(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Normalised xyxy (K, 4) -> source pixels (width, height), clipped to the frame."""
    width, height = size
    out = np.asarray(boxes, np.float64).reshape(-1, 4) * np.array([width, height, width, height], np.float64)
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out


def check_prompts(value: Any) -> tuple[str, ...]:
    """Text prompts: 1 to 16 distinct non-empty strings (Roboflow's ``/sam3/concept_segment`` limit)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise InvalidInputError("SAM3 prompts must be a non-empty list of strings (e.g. --prompt person)")
    prompts = tuple(value)
    if not all(isinstance(p, str) and p.strip() for p in prompts):
        raise InvalidInputError("SAM3 prompts must be non-empty strings")
    if len(prompts) > MAX_PROMPTS:
        raise InvalidInputError(f"SAM3 takes at most {MAX_PROMPTS} prompts per image, got {len(prompts)}")
    if len(set(prompts)) != len(prompts):
        raise InvalidInputError("SAM3 prompts must not repeat")
    return prompts


@dataclass(frozen=True)
class ConceptSegmentation(InstanceSegmentation):
    """SAM3's instances for one image: class = the prompt that found it (class id = its index).

    ``to_response`` is the stream's instance-segmentation message; ``roboflow_response`` is
    ``/sam3/concept_segment``'s body (one entry per prompt, its masks as polygons or RLE)."""

    prompts: tuple[str, ...] = ()
    concept_format: str = "json"
    elapsed: float = 0.0

    def roboflow_response(self) -> dict[str, Any]:
        results = []
        for index, text in enumerate(self.prompts):
            rows = []
            for k in np.flatnonzero(self.class_ids == index):
                mask = self.masks[k] if self.masks is not None else np.zeros(self.image_size[::-1], bool)
                body: Any = mask_rle(mask) if self.concept_format == "rle" else mask_polygons(mask)
                rows.append({"masks": body, "confidence": float(self.confidences[k]), "format": self.concept_format})
            echo = {"prompt_index": index, "type": "text", "text": text, "num_boxes": None}
            results.append({"prompt_index": index, "echo": echo, "predictions": rows})
        return {"prompt_results": results, "time": self.elapsed}


@dataclass(frozen=True)
class Sam3Params:
    prompts: tuple[str, ...] | None
    threshold: float
    mask_format: str


class Sam3Segmenter(WholeImageModel):
    """SAM3 on torch; ``stream_options = ("prompts",)``: a stream's STREAM_<NAME>_PROMPTS."""

    stream_options = ("prompts",)
    #: a stream must say what to segment (the supervisor refuses one without PROMPTS at start)
    required_stream_options = ("prompts",)
    model_type = "sam3"

    def __init__(
        self,
        model_id: str,
        weights: Path,
        vocabulary: Path,
        settings: ModelSettings,
        status: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(model_id, "instance-segmentation", self.model_type)
        import torch

        self._torch = torch
        self.directory = weights.parent
        self.settings = settings
        self.network = build_sam3(read_checkpoint(weights, mmap=True), weights)
        context = int(self.network.config.text_config.max_position_embeddings)
        self.tokenizer = ClipTokenizer(f"{model_id} (SAM3)", vocabulary, context, extra="sam3")
        vocab = int(self.network.config.text_config.vocab_size)
        if self.tokenizer.end_of_text >= vocab:
            raise ModelArtifactsError(
                vocabulary, f"gives token ids up to {self.tokenizer.end_of_text}; {weights.name} embeds {vocab}"
            )
        self._lock = threading.Lock()  # one frame at a time through the network
        self._text_cache: OrderedDict[tuple[str, ...], tuple[Any, Any]] = OrderedDict()
        #: how many prompt sets went through the text encoder (the rest came from the cache)
        self.text_encodings = 0
        self.max_batch_size = 1

    # -- the network ---------------------------------------------------------------------------

    def text_features(self, prompts: tuple[str, ...]) -> tuple[Any, Any]:
        """(P, context, hidden) prompt features and their (P, context) attention mask, once per set."""
        cached = self._text_cache.get(prompts)
        if cached is not None:
            self._text_cache.move_to_end(prompts)
            return cached
        torch = self._torch
        ids = torch.from_numpy(self.tokenizer(list(prompts), np.int64))
        mask = (ids != 0).long()  # Meta's text mask: the tokens up to and with end-of-text
        with torch.inference_mode():
            features = self.network.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        self._text_cache[prompts] = (features, mask)
        self.text_encodings += 1
        while len(self._text_cache) > _TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return features, mask

    def raw_outputs(self, image: np.ndarray, prompts: tuple[str, ...]) -> list[Any]:
        """``Sam3Model``'s output for each prompt on one BGR frame (the image's features shared)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        torch = self._torch
        with self._lock:
            features, mask = self.text_features(prompts)
            with torch.inference_mode():
                pixels = torch.from_numpy(sam3_input(image))[None]
                vision = self.network.get_vision_features(pixel_values=pixels)
                outputs = []
                for i in range(len(prompts)):
                    text = BaseModelOutputWithPooling(pooler_output=features[i : i + 1])
                    outputs.append(self.network(vision_embeds=vision, text_embeds=text, attention_mask=mask[i : i + 1]))
        return outputs

    def segment(self, image: np.ndarray, prompts: tuple[str, ...], threshold: float) -> ConceptSegmentation:
        torch = self._torch
        height, width = image.shape[:2]
        boxes, scores, classes, masks = [], [], [], []
        for index, out in enumerate(self.raw_outputs(image, prompts)):
            query_scores = concept_scores(out.pred_logits[0].numpy(), float(out.presence_logits[0, 0]))
            keep = np.flatnonzero(query_scores > threshold)
            keep = keep[np.argsort(-query_scores[keep], kind="stable")]
            if not keep.size:
                continue
            with torch.inference_mode():
                logits = torch.nn.functional.interpolate(
                    out.pred_masks[0, torch.from_numpy(keep)][None],
                    (height, width),
                    mode="bilinear",
                    align_corners=False,
                )[0]
            masks.append(logits.numpy() > 0.0)
            boxes.append(boxes_to_source(out.pred_boxes[0].numpy()[keep], (width, height)))
            scores.append(query_scores[keep])
            classes.append(np.full(keep.size, index, np.int64))
        if not boxes:
            return ConceptSegmentation(
                boxes=np.zeros((0, 4), np.float64),
                confidences=np.zeros(0, np.float32),
                class_ids=np.zeros(0, np.int64),
                class_names=prompts,
                image_size=(width, height),
                masks=np.zeros((0, height, width), bool),
                prompts=prompts,
            )
        return ConceptSegmentation(
            boxes=np.concatenate(boxes),
            confidences=np.concatenate(scores).astype(np.float32),
            class_ids=np.concatenate(classes),
            class_names=prompts,
            image_size=(width, height),
            masks=np.concatenate(masks),
            prompts=prompts,
        )

    # -- Model ---------------------------------------------------------------------------------

    def inference_parameters(  # type: ignore[override]
        self,
        confidence: float | None = None,
        prompts: Any = None,
        mask_format: str = "json",
        output_prob_thresh: float | None = None,
    ) -> Sam3Params:
        """``prompts``: the texts (per image, a stream's PROMPTS win); ``output_prob_thresh`` (or
        ``confidence``): the lowest instance probability kept, 0.5 by default, as Roboflow's."""
        if mask_format not in MASK_FORMATS:
            raise InvalidInputError(f"mask format {mask_format!r} is not one of {', '.join(MASK_FORMATS)}")
        threshold = output_prob_thresh if output_prob_thresh is not None else confidence
        if threshold is None:
            threshold = DEFAULT_THRESHOLD
        if not 0.0 <= float(threshold) <= 1.0:
            raise InvalidInputError(f"SAM3's output_prob_thresh/confidence is between 0 and 1, got {threshold}")
        return Sam3Params(None if prompts is None else check_prompts(prompts), float(threshold), mask_format)

    def check_stream_options(self, options: dict[str, Any]) -> None:
        """A stream's options before its frames come (startup, ``PATCH``): InvalidInputError if not."""
        if "prompts" not in options:
            raise InvalidInputError(
                f"{self.model_id} segments what text prompts name; set STREAM_<NAME>_PROMPTS (e.g. person|car)"
            )
        self.tokenizer(list(check_prompts(options["prompts"])))  # each fits the text encoder's context

    def predict_chunk(self, images: list[np.ndarray], options: list[dict[str, Any]], params: Sam3Params) -> list[Any]:
        out: list[Prediction] = []
        for image, option in zip(images, options, strict=True):
            started = time.perf_counter()
            prompts = check_prompts(option["prompts"]) if "prompts" in option else params.prompts
            if not prompts:
                raise InvalidInputError(
                    f"{self.model_id} segments what text prompts name: give --prompt TEXT (or a stream's "
                    f"STREAM_<NAME>_PROMPTS)"
                )
            result = self.segment(image, prompts, params.threshold)
            out.append(replace(result, concept_format=params.mask_format, elapsed=time.perf_counter() - started))
        return out


def load_sam3(
    model_id: str, directory: Path, settings: ModelSettings, status: Callable[[str], None] | None
) -> Sam3Segmenter:
    return Sam3Segmenter(model_id, directory / WEIGHTS_FILE, directory / VOCABULARY_FILE, settings, status)


__all__ = [
    "MAX_PROMPTS",
    "REQUIRED_FILES",
    "ConceptSegmentation",
    "Sam3Segmenter",
    "boxes_to_source",
    "check_prompts",
    "concept_scores",
    "load_sam3",
    "sam3_input",
]
