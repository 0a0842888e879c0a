"""Accuracy and CPU latency of the built-in models on fresh synthetic frames (COCO-style mAP).

    python -m bench.accuracy              # through models.get_model("builtin/shapes-v1").predict
    python -m bench.accuracy --fallback   # own onnxruntime + letterbox + NMS path
    python -m bench.accuracy --model builtin/shapes-seg-v1   # box and mask mAP
    python -m bench.accuracy --compare    # MODEL@fp32 and MODEL@int8 on the same frames

500 frames from a seed never used in training, sizes spread across 640x360..1280x720, evaluated at
confidence 0.01 with at most 100 detections per image (as COCO does); exits 1 below the targets.
For a segmentation model the masks (source pixels) are scored against each shape's exact visible
pixels too (mask IoU instead of box IoU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.maths.evaluation import evaluate_map

# ------------------------------------------------------------------------------------------------
# Running the model


def _fallback_infer(model_dir: Path):
    """Own onnxruntime + letterbox + per-class NMS, for use before models.get_model exists."""
    import cv2
    import onnxruntime as ort

    from tools.train_shapes import letterbox, nms_numpy

    sess = ort.InferenceSession(str(model_dir / "weights.onnx"), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    h_in, w_in = inp.shape[2], inp.shape[3]

    def infer(img: np.ndarray, conf: float, max_det: int) -> np.ndarray:
        lb, s, px, py = letterbox(img, w_in, h_in, cv2.INTER_LINEAR)
        x = np.ascontiguousarray(lb[..., ::-1].transpose(2, 0, 1))[None].astype(np.float32) / 255
        out = sess.run(None, {inp.name: x})[0][0]
        det = nms_numpy(out, conf, 0.5, max_det)
        det[:, [0, 2]] = np.clip((det[:, [0, 2]] - px) / s, 0, img.shape[1])
        det[:, [1, 3]] = np.clip((det[:, [1, 3]] - py) / s, 0, img.shape[0])
        return det

    return infer


def _get_model_infer(model_id: str, with_masks: list[np.ndarray] | None = None):
    """``infer`` through models.get_model; a segmentation model's masks go to ``with_masks``
    (replaced on every call: (n, H, W) bool, in the order of the rows returned)."""
    from edge_agent.models import get_model

    model = get_model(model_id)

    def infer(img: np.ndarray, conf: float, max_det: int) -> np.ndarray:
        (pred,) = model.predict(img, confidence=conf, max_detections=max_det)
        rows = np.concatenate([pred.boxes, pred.confidences[:, None], pred.class_ids[:, None]], axis=1)
        if with_masks is not None:
            with_masks[:] = [getattr(pred, "masks", None)]
        return rows.astype(np.float32).reshape(-1, 6)

    return infer


def mask_ious(pred_masks: np.ndarray, gt_ids: np.ndarray, order: list[int], gt_boxes: np.ndarray) -> np.ndarray:
    """(n, m) IoU of predicted masks and the true visible-pixel masks (``gt_ids == order[j] + 1``).

    Intersections are counted inside each true box only (a true mask has no pixel outside it)."""
    n, m = len(pred_masks), len(order)
    out = np.zeros((n, m))
    if n == 0 or m == 0:
        return out
    pred_area = pred_masks.reshape(n, -1).sum(axis=1)
    for j, k in enumerate(order):
        x0, y0, x1, y1 = (int(v) for v in gt_boxes[j, :4])
        truth = gt_ids[y0:y1, x0:x1] == k + 1
        inter = (pred_masks[:, y0:y1, x0:x1] & truth).reshape(n, -1).sum(axis=1)
        out[:, j] = inter / np.maximum(pred_area + truth.sum() - inter, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import time

    from tools import synthworld as sw

    p = argparse.ArgumentParser(description="mAP and CPU latency of the built-in shapes model.")
    p.add_argument("--model", default="builtin/shapes-v1")
    p.add_argument("--frames", type=int, default=500)
    p.add_argument("--seed", type=int, default=7_777_777, help="never used in training")
    p.add_argument("--confidence", type=float, default=0.01)
    p.add_argument("--max-detections", type=int, default=100)
    p.add_argument("--latency-runs", type=int, default=30)
    p.add_argument("--fallback", action="store_true", help="own onnxruntime path instead of get_model")
    p.add_argument("--compare", action="store_true", help="MODEL@fp32 and MODEL@int8 on the same frames")
    p.add_argument("--max-drop", type=float, default=0.01, help="--compare: largest mAP drop of int8 allowed")
    p.add_argument("--size", default=None, help="fixed frame size WxH instead of a random spread")
    p.add_argument("--shape-sizes", default=None, help="size-across range LO,HI (stress runs)")
    p.add_argument("--background", choices=["gradient", "texture"], default=None)
    p.add_argument("--noise", type=float, default=None, help="fixed noise sigma (default 0..8)")
    p.add_argument("--objects", type=int, default=None, help="fixed number of shapes (default 0..6)")
    p.add_argument("--min-map50", type=float, default=0.90)
    p.add_argument("--min-map5095", type=float, default=0.65)
    p.add_argument("--min-mask-map50", type=float, default=0.85, help="segmentation models")
    args = p.parse_args(argv)

    root = Path(__file__).resolve().parent.parent
    # label -> (infer, the list its masks land in); --compare runs both precisions on the same frames
    paths: dict[str, tuple[Any, list[np.ndarray]]] = {}
    if args.fallback:
        paths["fallback (own onnxruntime + letterbox + NMS)"] = (_fallback_infer(root / "models" / args.model), [])
    else:
        base = args.model.split("@")[0]
        for model_id in (f"{base}@fp32", f"{base}@int8") if args.compare else (args.model,):
            masks_out: list[np.ndarray] = []
            paths[f"models.get_model({model_id!r}).predict"] = (_get_model_infer(model_id, masks_out), masks_out)

    sizes = (sw.MIN_SIZE, sw.MAX_SIZE)
    if args.shape_sizes:
        lo, hi = (float(v) for v in args.shape_sizes.split(","))
        sizes = (lo, hi)
    rng = np.random.default_rng(args.seed)
    preds: dict[str, list[np.ndarray]] = {label: [] for label in paths}
    ious: dict[str, list[np.ndarray]] = {label: [] for label in paths}
    gts = []
    for _ in range(args.frames):
        w, h = sw.random_frame_size(rng) if args.size is None else map(int, args.size.split("x"))
        img, gt, shapes = sw.render_frame(
            rng,
            w,
            h,
            n_objects=args.objects,
            noise_sigma=args.noise,
            background=args.background,
            size_range=sizes,
            return_shapes=True,
        )
        gts.append(np.array(gt, np.float32).reshape(-1, 5))
        for label, (infer, masks_out) in paths.items():
            preds[label].append(infer(img, args.confidence, args.max_detections))
            if masks_out and masks_out[0] is not None:
                ids, order = sw.instance_ids(shapes, w, h)
                ious[label].append(mask_ious(masks_out[0], ids, order, gts[-1]))
    n_obj = sum(len(g) for g in gts)
    where = args.size or "640x360..1280x720"
    print(f"frames: {args.frames} (seed {args.seed}, {where}), objects: {n_obj}")
    img, _ = sw.render_frame(np.random.default_rng(args.seed + 1), 1280, 720, n_objects=6)
    ok = True
    figures = []
    for label, (infer, _) in paths.items():
        m50, m5095 = evaluate_map(preds[label], gts, len(sw.CLASS_NAMES))
        figures.append((m50, m5095))
        print(f"path: {label}")
        print(f"  box mAP@0.5      = {m50:.4f}  (target >= {args.min_map50})")
        print(f"  box mAP@0.5:0.95 = {m5095:.4f}  (target >= {args.min_map5095})")
        ok = ok and m50 >= args.min_map50 and m5095 >= args.min_map5095
        if ious[label]:
            k50, k5095 = evaluate_map(preds[label], gts, len(sw.CLASS_NAMES), ious=ious[label])
            print(f"  mask mAP@0.5      = {k50:.4f}  (target >= {args.min_mask_map50})")
            print(f"  mask mAP@0.5:0.95 = {k5095:.4f}")
            ok = ok and k50 >= args.min_mask_map50
        infer(img, 0.4, 300)  # warm-up
        times = []
        for _ in range(args.latency_runs):
            t0 = time.perf_counter()
            infer(img, 0.4, 300)
            times.append(time.perf_counter() - t0)
        print(
            f"  CPU latency, one 1280x720 frame (pre + model + post): median {np.median(times) * 1000:.1f} ms "
            f"over {args.latency_runs} runs"
        )
    if args.compare:
        (a50, a95), (b50, b95) = figures
        print(f"int8 - fp32: mAP@0.5 {b50 - a50:+.4f}, mAP@0.5:0.95 {b95 - a95:+.4f} (allowed drop {args.max_drop})")
        ok = ok and a50 - b50 <= args.max_drop and a95 - b95 <= args.max_drop
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
