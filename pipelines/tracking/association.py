"""Matching tracks to detections: IoU and a gated optimal assignment (pure functions)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of (N, 4) and (M, 4) xyxy boxes (0 where both are empty)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    # where the union is 0 both boxes are empty and so is the intersection: 0 / tiny = 0
    return inter / np.maximum(union, 1e-12)


def assign(cost: np.ndarray, max_cost: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Minimum-total-cost one-to-one matching of rows to columns, keeping only pairs whose cost
    is <= ``max_cost``. Returns (matches, unmatched rows, unmatched columns), each sorted.

    Pairs above the gate are made unmatchable *before* solving (not filtered after), so a gated
    pair never pushes a valid one out of the optimum.
    """
    n, m = cost.shape
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    big = max_cost + 1e6
    gated = np.where(cost <= max_cost, cost, big)
    rows, cols = linear_sum_assignment(gated)
    keep = gated[rows, cols] <= max_cost
    matches = list(zip(rows[keep].tolist(), cols[keep].tolist(), strict=True))
    used_r = {r for r, _ in matches}
    used_c = {c for _, c in matches}
    return (
        sorted(matches),
        [r for r in range(n) if r not in used_r],
        [c for c in range(m) if c not in used_c],
    )


__all__ = ["assign", "iou_matrix"]
