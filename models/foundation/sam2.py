"""SAM2 (``sam2/<variant>``): promptable segmentation, and masks for another model's boxes.

Runs Roboflow's SAM2 checkpoints (Meta's ``sam2`` state dict, see ``sam_weights.py``) in
transformers' ``Sam2Model`` on torch, float32 on the CPU. Pre-processing is the library's
(``SAM2Transforms``): RGB, squashed to 1024x1024, /255, ImageNet mean and std. Roboflow's current
adapter hands the network BGR pixels (fact sheet §3.4); the legacy stack and this one feed RGB, as
the model was trained.

``predict`` with ``prompts`` (one :class:`SamPrompt` each: a box and/or points, source pixels) gives
one mask per prompt, the best of SAM2's three by its predicted IoU (Roboflow's
``multimask_output=True``); as the second model of a stream (``predict_on_boxes``) it segments each
of a detector's boxes with the single-mask output (a box is not ambiguous) and clears what falls
outside the box, so the masks are exactly of what the detector found.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.models.common.errors import InvalidInputError, ModelArtifactsError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.foundation.base import FoundationModel
from edge_agent.models.foundation.sam_steps import (
    NETWORK_SIZE,
    SamPrompt,
    clip_to_box,
    mask_polygons,
    mask_rle,
    prompt_arrays,
    squash_scale,
)
from edge_agent.models.foundation.sam_weights import read_checkpoint, sam2_config, sam2_spec, sam2_state_to_hf
from edge_agent.models.maths.predictions import Detections, InstanceSegmentation, Prediction

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
MASK_FORMATS = ("json", "rle")
LEGACY_FILE = "weights.pt"
PACKAGE_FILES = ("model.pt", "sam_configuration.json")


def sam2_input(image: np.ndarray) -> np.ndarray:
    """One BGR uint8 frame -> (3, 1024, 1024) float32, as ``SAM2Transforms`` makes it from RGB."""
    height, width = image.shape[:2]
    shrink = width > NETWORK_SIZE or height > NETWORK_SIZE
    resized = cv2.resize(
        image, (NETWORK_SIZE, NETWORK_SIZE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    rgb = resized[:, :, ::-1].astype(np.float32) / 255.0
    return np.ascontiguousarray(((rgb - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))


@dataclass(frozen=True)
class PromptedMasks:
    """SAM2's answer for one image: one mask per prompt (source pixels) and its predicted IoU."""

    masks: np.ndarray  # (P, H, W) bool
    confidences: np.ndarray  # (P,) float32
    image_size: tuple[int, int]
    mask_format: str = "json"
    task_type: str = "interactive-instance-segmentation"

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def filter_confidence(self, threshold: float) -> PromptedMasks:
        keep = self.confidences >= threshold
        return replace(self, masks=self.masks[keep], confidences=self.confidences[keep])

    def to_response(self) -> dict[str, Any]:
        """Roboflow's ``/sam2/segment_image``: ``{predictions: [{masks, confidence, format}]}``."""
        rows = []
        for mask, confidence in zip(self.masks, self.confidences.tolist(), strict=True):
            body: Any = mask_rle(mask) if self.mask_format == "rle" else mask_polygons(mask)
            rows.append({"masks": body, "confidence": confidence, "format": self.mask_format})
        return {"predictions": rows}


@dataclass(frozen=True)
class SamParams:
    prompts: tuple[SamPrompt, ...]
    mask_format: str
    multimask: bool
    confidence: float | None = None


def prompts_from(boxes: Any = None, points: Any = None) -> tuple[SamPrompt, ...]:
    """Request fields -> prompts: each box ``[x1, y1, x2, y2]`` is one prompt; points ``[x, y]`` or
    ``[x, y, label]`` (label 1 object, 0 background; default 1) go with the one box, or form one
    prompt of their own when there is no box. Source pixels."""
    try:
        box_list = [tuple(float(v) for v in b) for b in (boxes or [])]
        point_list = [tuple(float(v) for v in p) for p in (points or [])]
    except (TypeError, ValueError):
        raise InvalidInputError("boxes are [x1, y1, x2, y2] and points [x, y] or [x, y, label], in pixels") from None
    if any(len(b) != 4 for b in box_list):
        raise InvalidInputError("a box is x1,y1,x2,y2 (four numbers, source pixels)")
    if any(len(p) not in (2, 3) for p in point_list):
        raise InvalidInputError("a point is x,y or x,y,label (label 1: object, 0: background)")
    if len(box_list) > 1 and point_list:
        raise InvalidInputError("points go with one box or none: with several boxes, give no points")
    coords = tuple((p[0], p[1]) for p in point_list)
    labels = tuple(int(p[2]) if len(p) == 3 else 1 for p in point_list)
    if not box_list:
        return (SamPrompt(points=coords, labels=labels),) if coords else ()
    return tuple(
        SamPrompt(box=b, points=coords, labels=labels)  # type: ignore[arg-type]
        for b in box_list
    )


@dataclass
class _Embedding:
    key: bytes
    features: list[Any] = field(default_factory=list)


class Sam2Segmenter(FoundationModel):
    """SAM2 on torch; ``boxes_as = "prompts"``: a detector's boxes become its prompts."""

    boxes_as = "prompts"

    def __init__(
        self,
        model_id: str,
        weights: Path,
        version: str,
        settings: ModelSettings,
        status: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(model_id, "interactive-instance-segmentation", self.model_type)
        import torch

        self.directory = weights.parent
        self.settings = settings
        self._torch = torch
        self.network = self._build(read_checkpoint(weights), version, weights).eval().to(torch.float32)
        self._lock = threading.Lock()  # one frame's embedding at a time; decoders reuse it
        self._last: _Embedding | None = None
        self.max_batch_size = 1

    model_type = "sam2"
    #: Roboflow's default for a prompt: three masks, the best kept (SAM v1: one)
    multimask_default = True

    def _build(self, state: dict[str, Any], version: str, weights: Path) -> Any:
        from transformers import Sam2Model

        model = Sam2Model(sam2_config(state, sam2_spec(version), weights))
        try:
            model.load_state_dict(sam2_state_to_hf(state, weights), strict=True)
        except RuntimeError as exc:
            raise ModelArtifactsError(weights, f"does not fit SAM2 {version} ({str(exc)[:400]})") from None
        return model

    def _network_input(self, image: np.ndarray) -> np.ndarray:
        return sam2_input(image)

    def _coord_scale(self, size: tuple[int, int]) -> tuple[float, float]:
        return squash_scale(size)

    def _to_source(self, low_res: Any, size: tuple[int, int]) -> Any:
        """(P, 1, 256, 256) logits -> (P, 1, H, W): ``SAM2Transforms.postprocess_masks``, bilinear
        straight to the source size."""
        width, height = size
        return self._torch.nn.functional.interpolate(low_res, (height, width), mode="bilinear", align_corners=False)

    # -- the network ---------------------------------------------------------------------------

    def _embed(self, image: np.ndarray) -> list[Any]:
        key = hashlib.sha1(repr(image.shape).encode() + np.ascontiguousarray(image).tobytes()).digest()
        last = self._last
        if last is not None and last.key == key:
            return last.features
        pixels = self._torch.from_numpy(self._network_input(image))[None]
        features = self.network.get_image_embeddings(pixels)
        self._last = _Embedding(key, features)
        return features

    def segment(
        self, image: np.ndarray, prompts: Sequence[SamPrompt], *, multimask: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each prompt: its mask logits at source size (P, H, W), the chosen mask's IoU score (P,)
        and which of the network's masks was chosen (P,)."""
        torch = self._torch
        height, width = image.shape[:2]
        scale = self._coord_scale((width, height))
        logits = np.zeros((len(prompts), height, width), np.float32)
        scores = np.zeros(len(prompts), np.float32)
        chosen = np.zeros(len(prompts), np.int64)
        with self._lock, torch.inference_mode():
            features = self._embed(image)
            # Prompts with the same number of points (and a box or not) share a decoder call, so
            # none is padded with points the network was never trained on.
            groups: dict[tuple[int, bool], list[int]] = {}
            for i, prompt in enumerate(prompts):
                groups.setdefault((len(prompt.points), prompt.box is not None), []).append(i)
            for indices in groups.values():
                points, labels, boxes = prompt_arrays([prompts[i] for i in indices], scale)
                outputs = self.network(
                    image_embeddings=features,
                    input_points=None if points is None else torch.from_numpy(points),
                    input_labels=None if labels is None else torch.from_numpy(labels),
                    input_boxes=None if boxes is None else torch.from_numpy(boxes),
                    multimask_output=multimask,
                )
                low_res = outputs.pred_masks[0]  # (P, M, 256, 256)
                iou = outputs.iou_scores[0]  # (P, M)
                best = iou.argmax(dim=-1)
                picked = low_res[torch.arange(len(indices)), best][:, None]  # (P, 1, 256, 256)
                full = self._to_source(picked, (width, height))
                for k, i in enumerate(indices):
                    logits[i] = full[k, 0].numpy()
                    scores[i] = float(iou[k, best[k]])
                    chosen[i] = int(best[k])
        return logits, scores, chosen

    # -- Model ---------------------------------------------------------------------------------

    def inference_parameters(  # type: ignore[override]
        self,
        confidence: float | None = None,
        boxes: Any = None,
        points: Any = None,
        mask_format: str = "json",
        multimask_output: bool | None = None,
    ) -> SamParams:
        """``boxes``/``points`` in source pixels (see :func:`prompts_from`); ``confidence`` drops masks
        whose predicted IoU is lower."""
        if mask_format not in MASK_FORMATS:
            raise InvalidInputError(f"mask format {mask_format!r} is not one of {', '.join(MASK_FORMATS)}")
        multimask = self.multimask_default if multimask_output is None else bool(multimask_output)
        return SamParams(prompts_from(boxes, points), mask_format, multimask, confidence)

    def predict_chunk(self, images: list[np.ndarray], options: list[dict[str, Any]], params: SamParams) -> list[Any]:
        out: list[Any] = []
        for image in images:
            height, width = image.shape[:2]
            prompts = params.prompts or (SamPrompt(),)  # Roboflow: no prompt -> the dummy (0, 0) / -1 point
            logits, scores, _ = self.segment(image, prompts, multimask=params.multimask)
            masks = PromptedMasks(logits > 0.0, scores, (width, height), params.mask_format)
            out.append(masks if params.confidence is None else masks.filter_confidence(params.confidence))
        return out

    def predict_on_boxes(
        self,
        image: np.ndarray,
        detections: Detections,
        which: np.ndarray,
        options: Mapping[str, Any] | None = None,
    ) -> Prediction:
        """A mask per selected box (source pixels, inside the box), as instance segmentation with
        the detections' classes and confidences; unselected boxes get an empty mask."""
        height, width = image.shape[:2]
        masks = np.zeros((len(detections), height, width), bool)
        indices = np.flatnonzero(which)
        if indices.size:
            prompts = [SamPrompt(box=tuple(float(v) for v in detections.boxes[i])) for i in indices]  # type: ignore[arg-type]
            logits, _, _ = self.segment(image, prompts, multimask=False)
            for k, i in enumerate(indices):
                masks[i] = clip_to_box(logits[k] > 0.0, detections.boxes[i])
        return InstanceSegmentation(
            boxes=detections.boxes,
            confidences=detections.confidences,
            class_ids=detections.class_ids,
            class_names=detections.class_names,
            image_size=detections.image_size,
            track_ids=detections.track_ids,
            masks=masks,
        )

    # FoundationModel.predict_chunk does the work; these satisfy the abstract steps.
    def preprocess(self, images: list[np.ndarray]) -> tuple[Any, list[Any]]:
        return images, [None] * len(images)

    def run(self, inputs: Any) -> Any:
        return inputs

    def postprocess(self, outputs: Any, metas: list[Any], params: Any) -> list[Prediction]:
        raise NotImplementedError  # predict_chunk is used instead

    def make_response(self, prediction: Prediction) -> Any:
        from edge_agent.models.foundation.responses import PromptedMasksResponse

        return PromptedMasksResponse.model_validate(prediction.to_response())


__all__ = ["LEGACY_FILE", "PACKAGE_FILES", "PromptedMasks", "Sam2Segmenter", "SamPrompt", "sam2_input"]
