"""Turn what callers hand to ``infer`` into BGR uint8 HxWx3 arrays."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edge_agent.models.common.errors import InvalidInputError

ImageInput = np.ndarray | str | os.PathLike | bytes | bytearray | memoryview


def _decode(data: bytes | bytearray | memoryview, what: str, auto_orient: bool) -> np.ndarray:
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size == 0:
        raise InvalidInputError(f"{what} is empty")
    flags = cv2.IMREAD_COLOR if auto_orient else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(buffer, flags)
    if image is None:
        raise InvalidInputError(f"{what} is not an image OpenCV can decode (JPEG, PNG, BMP, WebP, TIFF, ...)")
    return image


def load_image(image: ImageInput, auto_orient: bool = True) -> np.ndarray:
    """A BGR uint8 HxWx3 array from an array, a file path or encoded bytes.

    Arrays are used as given (BGR); grey (HxW or HxWx1) and BGRA are converted. ``auto_orient``
    applies EXIF orientation to encoded images (Roboflow's ``auto-orient`` step).
    """
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            raise InvalidInputError(f"image arrays must be uint8 BGR, got dtype {array.dtype}")
        if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1):
            return cv2.cvtColor(array.reshape(array.shape[:2]), cv2.COLOR_GRAY2BGR)
        if array.ndim == 3 and array.shape[2] == 4:
            return cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
        if array.ndim != 3 or array.shape[2] != 3:
            raise InvalidInputError(f"image arrays must be HxWx3 BGR, got shape {array.shape}")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise InvalidInputError(f"image has no pixels (shape {array.shape})")
        return array
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode(image, "image bytes", auto_orient)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidInputError(f"cannot read image file {path}: {exc.strerror or exc}") from None
        return _decode(data, f"image file {path}", auto_orient)
    raise InvalidInputError(
        f"unsupported image type {type(image).__name__}; pass a BGR numpy array, a file path or bytes"
    )
