"""Plane geometry of zones and lines: pure numpy functions, image coordinates (x right, y down).

Side of a directed line A->B for a point P (the issue's definition, kept literally so the sign
convention is the documented one)::

    side(P) = (Bx - Ax) * (Py - Ay) - (By - Ay) * (Px - Ax)

A move from side > 0 to side < 0 is ``in``, the other way ``out``. In image coordinates (y down)
``side > 0`` is the *left* of A->B as seen on the screen when A->B points down; for the vertical
line ``0.5,0 -> 0.5,1`` the left half of the frame has side > 0, so left -> right is ``in``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Anchor = Literal["bottom_center", "center", "top_center", "bottom_left", "bottom_right", "top_left", "top_right"]
ANCHORS: tuple[str, ...] = (
    "bottom_center",
    "center",
    "top_center",
    "bottom_left",
    "bottom_right",
    "top_left",
    "top_right",
)


def anchor_points(boxes: np.ndarray, anchor: str = "bottom_center") -> np.ndarray:
    """(N, 2) anchor points of (N, 4) xyxy boxes."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx = (b[:, 0] + b[:, 2]) / 2
    cy = (b[:, 1] + b[:, 3]) / 2
    xs = {"center": cx, "bottom": cx, "top": cx, "left": b[:, 0], "right": b[:, 2]}
    if anchor == "center":
        return np.stack([cx, cy], axis=1)
    vertical, _, horizontal = anchor.partition("_")
    y = b[:, 3] if vertical == "bottom" else b[:, 1]
    if vertical not in ("bottom", "top") or horizontal not in ("center", "left", "right"):
        raise ValueError(f"unknown anchor {anchor!r}; accepted: {', '.join(ANCHORS)}")
    return np.stack([xs[horizontal], y], axis=1)


def side_of_line(a: np.ndarray, b: np.ndarray, points: np.ndarray) -> np.ndarray:
    """side(P) for each of (N, 2) ``points`` against the directed line a->b (see the module doc)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return (b[0] - a[0]) * (p[:, 1] - a[1]) - (b[1] - a[1]) * (p[:, 0] - a[0])


def crossing_within_segment(a: np.ndarray, b: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> bool:
    """Whether the move p0 -> p1, whose ends lie on opposite sides of the line a->b, passes through
    the *segment* a-b (its ends included) rather than beside it.

    The move meets the infinite line at a point a + u (b - a); the move crosses the segment when
    0 <= u <= 1. A move that goes round an end of the segment (a track grazing its end) has u
    outside that range.
    """
    d = b - a
    m = p1 - p0
    denom = m[0] * d[1] - m[1] * d[0]
    if denom == 0.0:  # parallel to the line: it cannot change sides
        return False
    u = ((p0[0] - a[0]) * m[1] - (p0[1] - a[1]) * m[0]) / -denom
    return bool(0.0 <= u <= 1.0)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N,) bool: which of (N, 2) ``points`` lie inside the (M, 2) ``polygon`` (even-odd rule).

    Crossing-number test with half-open edges, so a point on a shared edge of two zones that tile
    the plane belongs to exactly one of them.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    x, y = p[:, 0:1], p[:, 1:2]  # (N, 1) against (1, M) edges
    x1, y1 = poly[:, 0][None, :], poly[:, 1][None, :]
    x2, y2 = np.roll(poly[:, 0], -1)[None, :], np.roll(poly[:, 1], -1)[None, :]
    straddles = (y1 <= y) != (y2 <= y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    crosses = straddles & (x < x_at)
    return np.asarray((crosses.sum(axis=1) % 2) == 1)


def polygon_area(polygon: np.ndarray) -> float:
    """Unsigned area (shoelace)."""
    p = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 projective map sending the 4 ``src`` points to the 4 ``dst`` points (DLT, h33 = 1).

    Raises ValueError when three of the points are collinear (no such map).
    """
    s = np.asarray(src, dtype=np.float64).reshape(4, 2)
    d = np.asarray(dst, dtype=np.float64).reshape(4, 2)
    rows = []
    rhs = []
    for (x, y), (u, v) in zip(s, d, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    a = np.array(rows)
    if abs(np.linalg.det(a)) < 1e-9:
        raise ValueError("the four points must form a quadrilateral (no three on one line)")
    h = np.linalg.solve(a, np.array(rhs))
    return np.append(h, 1.0).reshape(3, 3)


def apply_homography(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points mapped through ``h``."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    q = np.concatenate([p, np.ones((len(p), 1))], axis=1) @ h.T
    return q[:, :2] / q[:, 2:3]


def ground_rectangle(width: float, length: float) -> np.ndarray:
    """The ground-plane corners that a speed zone's 4 points map to: p0->p1 is ``width``, p1->p2 is
    ``length`` (in metres or feet, as the user measured them)."""
    return np.array([[0.0, 0.0], [width, 0.0], [width, length], [0.0, length]])
