"""Mask -> polygon, as Roboflow makes them, and the per-stream choice of how much polygon to send.

A polygon is the outer contour of the mask (``cv2.findContours`` with ``RETR_EXTERNAL`` and
``CHAIN_APPROX_SIMPLE``, which already drops the points inside straight runs). A mask in pieces
gives one contour per piece; the one with the largest area is kept (Roboflow keeps one contour
too: the current stack the largest, the legacy one the one with the most vertices). Points are
the centres of the mask's boundary pixels in source pixels (pixel ``i`` covers ``[i, i + 1)``, so
its centre is ``i + 0.5``), unrounded, as Roboflow's are.

``simplified`` runs Douglas-Peucker (``cv2.approxPolyDP``) with a tolerance in pixels: no point of
the contour is further than that from the simplified polygon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

MaskMode = Literal["polygon", "simplified", "none"]
MASK_MODES: tuple[str, ...] = ("polygon", "simplified", "none")
DEFAULT_TOLERANCE_PX = 2.0

_NO_POINTS = np.zeros((0, 2), dtype=np.float64)


@dataclass(frozen=True)
class MaskOutput:
    """What a stream sends for each mask: the full ``polygon``, a ``simplified`` one (tolerance in
    source pixels) or ``none`` (boxes only: the smallest messages)."""

    mode: MaskMode = "polygon"
    tolerance: float = DEFAULT_TOLERANCE_PX

    def __post_init__(self) -> None:
        if self.mode not in MASK_MODES:
            raise ValueError(f"mask output must be one of {', '.join(MASK_MODES)}, got {self.mode!r}")
        if not self.tolerance > 0:
            raise ValueError(f"mask tolerance must be a number of pixels > 0, got {self.tolerance!r}")


POLYGON = MaskOutput()


def mask_bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(c0, r0, c1, r1)`` of the True pixels of an ``(H, W)`` mask, or None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def mask_to_polygon(mask: np.ndarray, tolerance: float | None = None) -> np.ndarray:
    """The largest outer contour of an ``(H, W)`` bool mask as ``(M, 2)`` x, y source pixels
    (pixel centres), simplified to ``tolerance`` px when given. Empty masks give ``(0, 2)``."""
    bounds = mask_bounds(mask)
    if bounds is None:
        return _NO_POINTS
    c0, r0, c1, r1 = bounds
    # One pixel of background around the patch so contours along its edge are closed properly.
    patch = np.zeros((r1 - r0 + 2, c1 - c0 + 2), dtype=np.uint8)
    patch[1:-1, 1:-1] = mask[r0:r1, c0:c1]
    contours, _ = cv2.findContours(patch, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return _NO_POINTS
    best = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    if tolerance is not None:
        simpler = cv2.approxPolyDP(best, float(tolerance), True)
        if len(simpler) >= 3 or len(best) < 3:
            best = simpler
    points = best.reshape(-1, 2).astype(np.float64)
    points += (c0 - 1 + 0.5, r0 - 1 + 0.5)
    return points


def masks_to_polygons(masks: np.ndarray, tolerance: float | None = None) -> tuple[np.ndarray, ...]:
    """One polygon per ``(H, W)`` mask of ``masks`` (see :func:`mask_to_polygon`)."""
    return tuple(mask_to_polygon(m, tolerance) for m in masks)


def polygon_area(points: np.ndarray) -> float:
    """Shoelace area of an ``(M, 2)`` polygon (pixels^2)."""
    if len(points) < 3:
        return 0.0
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)
