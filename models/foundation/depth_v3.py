"""Depth Anything 3 (``depth-anything-v3/{small,base}``): relative depth of every pixel, as v2's.

The package holds ``config.json`` (DA3's architecture), ``model.safetensors`` (ByteDance's DA3
weights) and ``preprocessor_config.json`` (read by transformers' image processor, fed RGB, as
for v2). The network is :mod:`.depth_v3_network` (transformers has no DA3 class). DA3 predicts
depth (larger = farther) at the processed size; each image's map is flipped into v2's
orientation (``d' = max + min - d``, so larger = nearer) then bilinearly upsampled to the frame
(Roboflow's post-processing, whose min and max run over the whole batch: here over each image,
so a frame's depth does not depend on the frames batched with it). Everything after that
(normalisation, 1 = nearest; responses; streams) is v2's (:mod:`.depth`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.common.errors import ModelArtifactsError
from edge_agent.models.foundation.depth import DepthAnythingModel


def flip_and_resize(depth: Any, height: int, width: int) -> Any:
    """(B, h, w) DA3 depth -> (B, height, width): flipped per image (max + min - d), then bilinear
    (align_corners=False) to the frame."""
    import torch.nn.functional as F

    flat = depth.reshape(depth.shape[0], -1)
    low = flat.min(dim=1).values[:, None, None]
    high = flat.max(dim=1).values[:, None, None]
    flipped = high + low - depth
    return F.interpolate(flipped[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]


class DepthAnythingV3Model(DepthAnythingModel):
    def load_network(self, transformers: Any, directory: Path) -> Any:
        from safetensors.torch import load_file

        from edge_agent.models.foundation import depth_v3_network as nets

        config_path = directory / "config.json"
        try:
            arch = nets.parse_config(json.loads(config_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise ModelArtifactsError(config_path, f"is not Depth Anything 3's config ({exc})") from None
        weights = directory / "model.safetensors"
        state = nets.convert_state_dict(load_file(str(weights)))
        try:
            network = nets.build(arch, state)
            # every weight the depth network has must be there; other tensors a DA3 checkpoint may
            # carry (heads of other tasks) are left out, as Roboflow's loader leaves them
            missing = network.load_state_dict(state, strict=False).missing_keys
            if missing:
                raise KeyError(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        except (KeyError, ValueError, RuntimeError) as exc:
            detail = " ".join(str(exc).split())  # torch's message spans lines
            raise ModelArtifactsError(weights, f"does not hold Depth Anything 3's weights ({detail})") from None
        return network.to(self.dtype)

    def depth(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Raw depth of each BGR image in v2's orientation (larger = nearer), at its size."""
        torch = self.torch
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape[:2], []).append(i)
        results: dict[int, np.ndarray] = {}
        for (height, width), members in groups.items():
            rgb = [np.ascontiguousarray(images[i][:, :, ::-1]) for i in members]
            pixels = self.processor(images=rgb, return_tensors="pt")["pixel_values"]
            if pixels.shape[-1] % 14 or pixels.shape[-2] % 14:
                raise ModelArtifactsError(
                    Path(self.directory or ".") / "preprocessor_config.json",
                    f"resizes to {pixels.shape[-1]}x{pixels.shape[-2]}; Depth Anything 3 needs multiples of 14 "
                    f"(ensure_multiple_of: 14)",
                )
            with torch.inference_mode():
                raw = self.network(pixels.to(self.device, self.dtype)).float()
                maps = flip_and_resize(raw, height, width)
            for i, item in zip(members, maps, strict=True):
                results[i] = item.cpu().numpy().astype(np.float32)
        return [results[i] for i in range(len(images))]
