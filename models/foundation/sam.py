"""SAM v1 (``sam/<vit_b|vit_l|vit_h>``): the SAM2 segmenter's machinery with SAM's own steps.

Roboflow's ``encoder.pth`` (legacy; ``decoder.onnx`` beside it is not needed: the whole network
runs in transformers' ``SamModel``) or ``model.pth`` + ``sam_configuration.json`` (current stack).
Pre-processing is ``segment_anything``'s: RGB, the longest side resized to 1024, normalised with
the pixel mean/std in 0-255 units, padded bottom/right to 1024x1024; coordinates scale with the
resize (``ResizeLongestSide.apply_coords``); the low-res masks go up to 1024x1024, lose the padding
and are resized to the source (``Sam.postprocess_masks``). One mask per prompt (Roboflow's
``multimask_output=False``); the response is ``/sam/segment_image``'s ``{masks: [polygon, ...]}``
with each mask's largest outer contour.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.models.common.errors import ModelArtifactsError
from edge_agent.models.foundation.sam2 import PromptedMasks, Sam2Segmenter
from edge_agent.models.foundation.sam_steps import NETWORK_SIZE, largest_polygon, longest_side_scale, longest_side_size
from edge_agent.models.foundation.sam_weights import sam_config, sam_spec, sam_state_to_hf
from edge_agent.models.maths.predictions import Prediction

PIXEL_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], np.float32)
LEGACY_FILE = "encoder.pth"
PACKAGE_FILES = ("model.pth", "sam_configuration.json")


def sam_input(image: np.ndarray) -> np.ndarray:
    """One BGR frame -> (3, 1024, 1024): RGB, longest side 1024, normalised, zero-padded bottom/right."""
    height, width = image.shape[:2]
    new_w, new_h = longest_side_size((width, height))
    shrink = new_w < width
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    rgb = (resized[:, :, ::-1].astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
    out = np.zeros((3, NETWORK_SIZE, NETWORK_SIZE), np.float32)
    out[:, :new_h, :new_w] = rgb.transpose(2, 0, 1)
    return out


@dataclass(frozen=True)
class SamMasks(PromptedMasks):
    """SAM v1's answer: Roboflow's ``/sam/segment_image`` JSON has the masks' largest contours."""

    model_family: str = "sam"

    def filter_confidence(self, threshold: float) -> SamMasks:
        keep = self.confidences >= threshold
        return replace(self, masks=self.masks[keep], confidences=self.confidences[keep])

    def to_response(self) -> dict[str, Any]:
        return {"masks": [largest_polygon(m) for m in self.masks]}


class SamSegmenter(Sam2Segmenter):
    model_type = "sam"
    multimask_default = False

    def _build(self, state: dict[str, Any], version: str, weights: Path) -> Any:
        from transformers import SamModel

        model = SamModel(sam_config(state, sam_spec(version), weights))
        try:
            model.load_state_dict(sam_state_to_hf(state, weights), strict=True)
        except RuntimeError as exc:
            raise ModelArtifactsError(weights, f"does not fit SAM {version} ({str(exc)[:400]})") from None
        return model

    def _network_input(self, image: np.ndarray) -> np.ndarray:
        return sam_input(image)

    def _coord_scale(self, size: tuple[int, int]) -> tuple[float, float]:
        return longest_side_scale(size)

    def _to_source(self, low_res: Any, size: tuple[int, int]) -> Any:
        functional = self._torch.nn.functional
        width, height = size
        new_w, new_h = longest_side_size(size)
        padded = functional.interpolate(low_res, (NETWORK_SIZE, NETWORK_SIZE), mode="bilinear", align_corners=False)
        return functional.interpolate(
            padded[..., :new_h, :new_w], (height, width), mode="bilinear", align_corners=False
        )

    def predict_chunk(self, images: list[np.ndarray], options: list[dict[str, Any]], params: Any) -> list[Any]:
        return [
            SamMasks(p.masks, p.confidences, p.image_size, p.mask_format)
            for p in super().predict_chunk(images, options, params)
        ]

    def make_response(self, prediction: Prediction) -> Any:
        from edge_agent.models.foundation.responses import SamResponse

        return SamResponse.model_validate(prediction.to_response())


__all__ = ["LEGACY_FILE", "PACKAGE_FILES", "SamMasks", "SamSegmenter", "sam_input"]
