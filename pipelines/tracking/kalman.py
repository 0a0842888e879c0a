"""A constant-velocity Kalman filter on boxes, batched over tracks, in frame time.

State per track: ``[cx, cy, w, h, vcx, vcy, vw, vh]`` with velocities in pixels per *second*, so
the prediction step takes the real time since the track's last update: a live stream that drops
frames (or a model that skips them) predicts as far as the objects really moved, where a
per-frame model would fall behind.

Noise follows ByteTrack's choice of scaling with the box size (1/20 of the size for positions,
1/160 per frame for velocities), expressed per reference frame interval ``REF_DT`` and scaled
linearly with the elapsed time (a random walk's variance grows linearly).
"""

from __future__ import annotations

import numpy as np

REF_DT = 1.0 / 30.0
STD_POS = 1.0 / 20.0
STD_VEL = 1.0 / 160.0

_H = np.eye(4, 8)


def _size_scale(means: np.ndarray) -> np.ndarray:
    """(N, 4): the size each coordinate's noise scales with (w for cx and w, h for cy and h)."""
    w = np.maximum(means[:, 2], 1.0)
    h = np.maximum(means[:, 3], 1.0)
    return np.stack([w, h, w, h], axis=1)


def initiate(boxes_cxcywh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New tracks from (N, 4) measurements: zero velocity, wide velocity uncertainty."""
    z = np.asarray(boxes_cxcywh, dtype=np.float64).reshape(-1, 4)
    means = np.concatenate([z, np.zeros_like(z)], axis=1)
    s = _size_scale(means)
    std = np.concatenate([2 * STD_POS * s, 10 * STD_VEL * s / REF_DT], axis=1)
    covs = np.zeros((len(z), 8, 8))
    idx = np.arange(8)
    covs[:, idx, idx] = std**2
    return means, covs


def predict(means: np.ndarray, covs: np.ndarray, dt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Advance each track by its own ``dt`` seconds (N,), >= 0."""
    n = len(means)
    if n == 0:
        return means, covs
    dt = np.asarray(dt, dtype=np.float64).reshape(n)
    new_means = means.copy()
    new_means[:, :4] += means[:, 4:] * dt[:, None]
    s = _size_scale(means)
    k = (dt / REF_DT)[:, None]
    q = np.concatenate([(STD_POS * s) ** 2 * k, (STD_VEL * s / REF_DT) ** 2 * k], axis=1)
    # F P F^T with F = [[I, dt I], [0, I]] written out on the 4x4 blocks P = [[A, B], [B^T, C]]:
    # [[A + dt (B + B^T) + dt^2 C, B + dt C], [B^T + dt C, C]] (no 8x8 products)
    d = dt[:, None, None]
    a, b, c = covs[:, :4, :4], covs[:, :4, 4:], covs[:, 4:, 4:]
    bt = np.transpose(b, (0, 2, 1))
    new_covs = np.empty_like(covs)
    new_covs[:, :4, :4] = a + d * (b + bt) + d * d * c
    new_covs[:, :4, 4:] = b + d * c
    new_covs[:, 4:, :4] = bt + d * c
    new_covs[:, 4:, 4:] = c
    new_covs[:, np.arange(8), np.arange(8)] += q
    return new_means, new_covs


def update(means: np.ndarray, covs: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct (N,) tracks with their (N, 4) cx, cy, w, h measurements."""
    if len(means) == 0:
        return means, covs
    s_scale = _size_scale(means)
    r = (STD_POS * s_scale) ** 2
    proj_cov = covs[:, :4, :4].copy()
    proj_cov[:, np.arange(4), np.arange(4)] += r
    cross = covs[:, :, :4]  # P H^T, (N, 8, 4)
    # K = P H^T S^-1, via a solve on S (symmetric): K^T = S^-1 H P
    gain = np.transpose(np.linalg.solve(proj_cov, np.transpose(cross, (0, 2, 1))), (0, 2, 1))
    innovation = np.asarray(z, dtype=np.float64) - means[:, :4]
    new_means = means + np.einsum("nij,nj->ni", gain, innovation)
    new_covs = covs - gain @ proj_cov @ np.transpose(gain, (0, 2, 1))
    return new_means, new_covs


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = np.maximum(b[:, 2], 0.0)
    h = np.maximum(b[:, 3], 0.0)
    return np.stack([b[:, 0] - w / 2, b[:, 1] - h / 2, b[:, 0] + w / 2, b[:, 1] + h / 2], axis=1)


__all__ = ["REF_DT", "cxcywh_to_xyxy", "initiate", "predict", "update", "xyxy_to_cxcywh"]
