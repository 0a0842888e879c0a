"""COCO-style mean average precision of detections against reference boxes (pure numpy).

Used by the INT8 accuracy guard (the fp32 model's detections are the reference) and by
``bench/accuracy.py`` (the synthetic world's ground truth is).
"""

from __future__ import annotations

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (n, 4) x (m, 4) -> (n, m)."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(aa[:, None] + ab[None, :] - inter, 1e-9)


def evaluate_map(
    preds: list[np.ndarray],
    gts: list[np.ndarray],
    num_classes: int,
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
    ious: list[np.ndarray] | None = None,
) -> tuple[float, float]:
    """COCO-style mAP at the first IoU threshold and averaged over all (101-point interpolation).

    preds[i]: (n, 6) x1,y1,x2,y2,score,cls for image i; gts[i]: (m, 5) x1,y1,x2,y2,cls.
    Greedy matching per image and class in score order, as pycocotools does (no crowd, all areas).
    ``ious[i]`` (n, m), when given, replaces box IoU (mask mAP: the IoU of the predicted and true
    masks of image i, rows and columns in the order of preds[i] and gts[i]).
    Classes without reference boxes are left out of the mean; NaN when no class has any.
    """
    aps = np.full((num_classes, len(iou_thresholds)), np.nan)
    for c in range(num_classes):
        scores, tps, n_gt = [], [], 0
        for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
            pi = np.flatnonzero(p[:, 5] == c)
            gi = np.flatnonzero(g[:, 4] == c)
            n_gt += len(gi)
            if len(pi) == 0:
                continue
            pi = pi[np.argsort(-p[pi, 4], kind="stable")]
            pc, gc = p[pi], g[gi]
            scores.append(pc[:, 4])
            tp = np.zeros((len(pc), len(iou_thresholds)), bool)
            if len(gc):
                iou = iou_matrix(pc[:, :4], gc[:, :4]) if ious is None else ious[i][np.ix_(pi, gi)]
                for t, thr in enumerate(iou_thresholds):
                    used = np.zeros(len(gc), bool)
                    for d in range(len(pc)):
                        cand = np.where(~used & (iou[d] >= thr), iou[d], -1.0)
                        j = int(cand.argmax())
                        if cand[j] >= thr:
                            used[j] = True
                            tp[d, t] = True
            tps.append(tp)
        if n_gt == 0:
            continue
        if not scores:
            aps[c] = 0.0
            continue
        s = np.concatenate(scores)
        tp = np.concatenate(tps)[np.argsort(-s, kind="mergesort")]
        ctp = np.cumsum(tp, 0)
        cfp = np.cumsum(~tp, 0)
        rec = ctp / n_gt
        prec = ctp / np.maximum(ctp + cfp, 1e-9)
        rs = np.linspace(0, 1, 101)
        for t in range(len(iou_thresholds)):
            pr = np.maximum.accumulate(prec[::-1, t])[::-1]
            idx = np.searchsorted(rec[:, t], rs, side="left")
            q = np.where(idx < len(pr), pr[np.minimum(idx, len(pr) - 1)], 0.0)
            aps[c, t] = q.mean()
    if np.isnan(aps).all():
        return float("nan"), float("nan")
    return float(np.nanmean(aps[:, 0])), float(np.nanmean(aps))
