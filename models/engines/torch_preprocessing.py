"""Pre-processing on the torch device: frames go up once as uint8, resize and normalise run there.

The same code runs on CPU torch, so CI checks it. Geometry (letterbox, stretch, centre crop) comes
from :func:`models.preprocessing.placement`, the function the numpy path uses, so both put every
pixel in the same place and boxes map back through the same :class:`ImageMeta`. Resizing is
OpenCV's ``INTER_LINEAR`` in integer arithmetic (11-bit weights, the same shifts and rounding as
its vectorised kernel), so a downscaled frame is bit-identical to the numpy path's and the two
engines see the same pixels; then the channel order, ``scale``, mean and std are applied in place.
Static crop, contrast and grayscale (rare, per-image OpenCV steps) stay on the host.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from edge_agent.models.maths.preprocessing import (
    ImageMeta,
    InputNormalization,
    Preprocessing,
    placement,
    prepare_image,
    visible_window,
)

_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE (11 bits)


def linear_coefficients(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(index0, index1, weight0, weight1) per output pixel of OpenCV's INTER_LINEAR along one axis."""
    position = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    index0 = np.floor(position).astype(np.int64)
    fraction = position - index0
    fraction = np.where(index0 < 0, 0.0, fraction)
    index0 = np.maximum(index0, 0)
    past = index0 >= src - 1
    fraction = np.where(past, 0.0, fraction)
    index0 = np.where(past, src - 1, index0)
    weight1 = np.round(fraction * _COEF_SCALE).astype(np.int64)
    return index0, np.minimum(index0 + 1, src - 1), _COEF_SCALE - weight1, weight1


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
        self._coefficients: dict[tuple[int, int], tuple[Any, ...]] = {}

    def _axis(self, src: int, dst: int) -> tuple[Any, ...]:
        key = (src, dst)
        found = self._coefficients.get(key)
        if found is None:
            torch = self.torch
            i0, i1, w0, w1 = linear_coefficients(src, dst)
            found = (
                torch.from_numpy(i0).to(self.device),
                torch.from_numpy(i1).to(self.device),
                torch.from_numpy(w0.astype(np.int32)).to(self.device),
                torch.from_numpy(w1.astype(np.int32)).to(self.device),
            )
            if len(self._coefficients) > 64:  # a few camera sizes; bounded anyway
                self._coefficients.clear()
            self._coefficients[key] = found
        return found

    def resize(self, image: Any, new_w: int, new_h: int) -> Any:
        """(h, w, 3) uint8 tensor -> (new_h, new_w, 3) int32, as ``cv2.resize(..., INTER_LINEAR)``."""
        torch = self.torch
        pixels = image.to(torch.int32)
        x0, x1, a0, a1 = self._axis(pixels.shape[1], new_w)
        y0, y1, b0, b1 = self._axis(pixels.shape[0], new_h)
        rows = pixels[:, x0] * a0[None, :, None] + pixels[:, x1] * a1[None, :, None]
        # The vertical pass with OpenCV's vectorised shifts: (b * (row >> 4)) >> 16, then (+2) >> 2.
        top = (b0[:, None, None] * (rows[y0] >> 4)) >> 16
        bottom = (b1[:, None, None] * (rows[y1] >> 4)) >> 16
        return (top + bottom + 2) >> 2

    def __call__(self, images: list[np.ndarray]) -> tuple[Any, list[ImageMeta]]:
        torch = self.torch
        n, width, height = len(images), self.width, self.height
        batch = torch.full((n, 3, height, width), float(self.pre.pad_value), dtype=torch.float32, device=self.device)
        metas = []
        for i, image in enumerate(images):
            src_h, src_w = image.shape[:2]
            prepared, box = prepare_image(image, self.pre)
            crop_h, crop_w = prepared.shape[:2]
            uploaded = torch.from_numpy(np.ascontiguousarray(prepared)).to(self.device, non_blocking=True)
            new_w, new_h, left, top = placement(self.pre, crop_w, crop_h, width, height)
            if self.pre.center_crop:
                rows, cols, src_rows, src_cols = visible_window(new_w, new_h, left, top, width, height)
                batch[i, :, rows, cols] = uploaded[src_rows, src_cols].permute(2, 0, 1).to(torch.float32)
                metas.append(ImageMeta(src_w, src_h, box, 1.0, 1.0, left, top))
                continue
            placed = uploaded if (new_w, new_h) == (crop_w, crop_h) else self.resize(uploaded, new_w, new_h)
            batch[i, :, top : top + new_h, left : left + new_w] = placed.permute(2, 0, 1).to(torch.float32)
            metas.append(ImageMeta(src_w, src_h, box, new_w / crop_w, new_h / crop_h, left, top))
        batch = batch.index_select(1, self._order)
        batch.mul_(self._gain).sub_(self._offset)
        return batch.to(self.dtype), metas
