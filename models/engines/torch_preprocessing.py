"""Pre-processing on the torch device: frames go up once as uint8, resize and normalise run there.

The same code runs on CPU torch, so CI checks it. Geometry (letterbox, stretch, centre crop) comes
from :func:`models.preprocessing.placement`, the function the numpy path uses, so both put every
pixel in the same place and boxes map back through the same :class:`ImageMeta`. Resizing is
bilinear with half-pixel centres like ``cv2.INTER_LINEAR``, rounded to whole pixel levels as the
uint8 numpy path is, then the channel order, ``scale``, mean and std are applied in place.
Static crop, contrast and grayscale (rare, per-image OpenCV steps) stay on the host.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from models.preprocessing import (
    ImageMeta,
    InputNormalization,
    Preprocessing,
    placement,
    prepare_image,
    visible_window,
)


class TorchPreprocessor:
    """Images (BGR uint8 HxWx3) -> an NCHW tensor on ``device`` plus the metas to undo it."""

    def __init__(
        self,
        torch: ModuleType,
        device: Any,
        pre: Preprocessing,
        input_size: tuple[int, int],
        norm: InputNormalization,
        dtype: Any,
    ) -> None:
        self.torch = torch
        self.device = device
        self.pre = pre
        self.width, self.height = input_size
        self.norm = norm
        self.dtype = dtype
        std = np.asarray(norm.std, dtype=np.float64)
        gain = norm.scale / std
        offset = np.asarray(norm.mean, dtype=np.float64) / std
        self._gain = torch.tensor(gain, dtype=torch.float32, device=device).reshape(1, 3, 1, 1)
        self._offset = torch.tensor(offset, dtype=torch.float32, device=device).reshape(1, 3, 1, 1)
        # Frames are BGR; the channel index turns them into the model's order in one gather.
        order = [2, 1, 0] if norm.channels == "rgb" else [0, 1, 2]
        self._order = torch.tensor(order, dtype=torch.long, device=device)

    def __call__(self, images: list[np.ndarray]) -> tuple[Any, list[ImageMeta]]:
        torch = self.torch
        functional = torch.nn.functional
        n, width, height = len(images), self.width, self.height
        batch = torch.full((n, 3, height, width), float(self.pre.pad_value), dtype=torch.float32, device=self.device)
        metas = []
        for i, image in enumerate(images):
            src_h, src_w = image.shape[:2]
            prepared, box = prepare_image(image, self.pre)
            crop_h, crop_w = prepared.shape[:2]
            uploaded = torch.from_numpy(np.ascontiguousarray(prepared)).to(self.device, non_blocking=True)
            chw = uploaded.permute(2, 0, 1).unsqueeze(0).to(torch.float32)
            new_w, new_h, left, top = placement(self.pre, crop_w, crop_h, width, height)
            if self.pre.center_crop:
                rows, cols, src_rows, src_cols = visible_window(new_w, new_h, left, top, width, height)
                batch[i, :, rows, cols] = chw[0, :, src_rows, src_cols]
                metas.append(ImageMeta(src_w, src_h, box, 1.0, 1.0, left, top))
                continue
            if (new_w, new_h) != (crop_w, crop_h):
                chw = functional.interpolate(chw, size=(new_h, new_w), mode="bilinear", align_corners=False)
                chw = chw.round_().clamp_(0.0, 255.0)
            batch[i, :, top : top + new_h, left : left + new_w] = chw[0]
            metas.append(ImageMeta(src_w, src_h, box, new_w / crop_w, new_h / crop_h, left, top))
        batch = batch.index_select(1, self._order)
        batch.mul_(self._gain).sub_(self._offset)
        return batch.to(self.dtype), metas
