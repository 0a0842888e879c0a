"""Tracking quality and cost: IDF1 / MOTA / ID switches, line and zone counts against the truth,
and the tracker + zones cost per frame at 20 objects.

    python -m bench.tracking_bench [--seconds 60] [--width 960 --height 540] [--seed 7]

1. A clip of the tracking world (``tools/synthworld.TrackingWorld``: objects with identities
   crossing the frame, stopping, passing behind a pillar) with its ground truth, cached in
   bench/_out.
2. The real agent with the built-in model (``builtin/shapes-v1``) on it, ``MODE=every`` (every
   frame), a zone and a line, tracking on; predictions and events read from its stdout.
3. IDF1, MOTA and ID switches of the published ``tracker_id`` against the ground-truth ids,
   computed by py-motmetrics (``pip install '.[bench]'``; IoU >= 0.5 to match; ground truth
   objects with less than ``--visible`` of their area visible are left out).
4. Line crossings (in/out per class) and zone entries per class from the agent's events,
   against the same rules (``pipelines/zones/engine.py``) applied to the ground-truth boxes
   and ids: the target is exact.
5. Cost per frame of ``StreamEvents.process`` (tracker, zones, lines, events; no snapshots) at 20
   objects, against building and JSON-encoding the prediction message of the same 20 boxes
   (the agent's own per-frame work, measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import OUT, ROOT

ZONES = "bay=0.15,0 0.4,0 0.4,1 0.15,1"
LINES = "door=0.5,0 0.5,1"


def _motmetrics() -> Any:
    """py-motmetrics 1.4.0 calls ``np.asfarray``, which NumPy 2 removed: give it back (the
    same function, float64) before the import, so the maintained package's own maths runs."""
    if not hasattr(np, "asfarray"):
        np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)  # type: ignore[attr-defined]
    import motmetrics

    return motmetrics


def make_clip(seconds: float, width: int, height: int, seed: int) -> tuple[Path, dict[str, Any]]:
    from tools.synthworld import write_tracking_clip

    path = OUT / f"tracking-{width}x{height}-{seconds:g}s-{seed}.mp4"
    gt_path = path.with_suffix(".json")
    if not (path.is_file() and gt_path.is_file()):
        OUT.mkdir(parents=True, exist_ok=True)
        write_tracking_clip(path, seconds, width, height, seed=seed, gt_path=gt_path)
    return path, json.loads(gt_path.read_text())


def run_agent(
    clip: Path, timeout: float, confidence: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Predictions and events of the real agent on ``clip`` (stdout sink), and its wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAM", "MQTT_", "MODEL_ID", "STATE_DIR"))}
        env.update(
            STREAMS=f"clip={clip}",
            STREAM_CLIP_MODE="every",
            STREAM_CLIP_CONFIDENCE=str(confidence),
            STREAM_CLIP_ZONES=ZONES,
            STREAM_CLIP_LINES=LINES,
            STATE_DIR=str(Path(tmp) / "state"),
            MODEL_CACHE_DIR=str(Path(tmp) / "cache"),
            OFFLINE_MODE="true",
            PYTHONUNBUFFERED="1",
        )
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "edge_agent.agent.cli", "run"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"agent failed ({proc.returncode}):\n{proc.stderr.decode()[-3000:]}")
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.startswith("{")]
    predictions = [m for m in lines if "predictions" in m]
    events = [m for m in lines if str(m.get("type", "")).startswith(("track.", "zone.", "line."))]
    return predictions, events, wall


def mot_metrics(predictions: list[dict[str, Any]], gt: dict[str, Any], visible: float) -> dict[str, float]:
    mm = _motmetrics()
    acc = mm.MOTAccumulator(auto_id=False)
    by_frame = {m["frame_id"]: m for m in predictions}
    for k, objects in enumerate(gt["frames"]):
        truth = [o for o in objects if o[6] >= visible]
        gt_ids = [o[0] for o in truth]
        gt_boxes = [[o[1], o[2], o[3] - o[1], o[4] - o[2]] for o in truth]
        preds = by_frame.get(k, {"predictions": []})["predictions"]
        hyp_ids = [p["tracker_id"] for p in preds]
        hyp_boxes = [[p["x"] - p["width"] / 2, p["y"] - p["height"] / 2, p["width"], p["height"]] for p in preds]
        dist = mm.distances.iou_matrix(gt_boxes, hyp_boxes, max_iou=0.5)
        acc.update(gt_ids, hyp_ids, dist, frameid=k)
    summary = mm.metrics.create().compute(
        acc, metrics=["idf1", "mota", "num_switches", "num_false_positives", "num_misses", "num_objects"], name="clip"
    )
    row = summary.loc["clip"]
    return {k: float(row[k]) for k in summary.columns}


def cost_per_frame(objects: int = 20, frames: int = 600, rounds: int = 5) -> tuple[float, float]:
    """Median ms per frame of StreamEvents.process at ``objects`` moving boxes, and of building +
    encoding the prediction message of the same boxes (the baseline)."""
    from edge_agent.models.maths.predictions import Detections
    from edge_agent.pipelines.events.builder import StreamEvents
    from edge_agent.pipelines.events.options import TrackingOptions
    from edge_agent.pipelines.sinks.encoding import encode_json
    from edge_agent.pipelines.sinks.message import build_prediction_message

    rng = np.random.default_rng(0)
    w, h = 1280, 720
    start = np.stack([rng.uniform(50, w - 50, objects), rng.uniform(50, h - 50, objects)], axis=1)
    vel = rng.uniform(-4, 4, (objects, 2))
    sizes = rng.uniform(30, 60, objects)
    preds = []
    for k in range(frames):
        c = start + vel * k
        c[:, 0] = np.abs((c[:, 0] - 40) % (2 * (w - 80)) - (w - 80)) + 40  # bounce inside the frame
        c[:, 1] = np.abs((c[:, 1] - 40) % (2 * (h - 80)) - (h - 80)) + 40
        boxes = np.concatenate([c - sizes[:, None] / 2, c + sizes[:, None] / 2], axis=1)
        conf = rng.uniform(0.6, 0.95, objects).astype(np.float32)
        preds.append(Detections(boxes, conf, np.arange(objects) % 3, ("circle", "square", "triangle"), (w, h)))
    options = TrackingOptions(zones=ZONES, lines=LINES, snapshots=False)  # type: ignore[arg-type]
    track_ms, base_ms = [], []
    for _ in range(rounds):
        se = StreamEvents("bench", options)
        t0 = time.perf_counter()
        for k, p in enumerate(preds):
            se.process(p, k / 30, None)
        track_ms.append((time.perf_counter() - t0) * 1000 / frames)
        t0 = time.perf_counter()
        for k, p in enumerate(preds):
            msg = build_prediction_message(
                prediction=p, agent_id="a", stream="s", seq=k, frame_id=k, frame_time=0.0, model_id="m",
                inference_ms=0.0, frame_age_ms=0.0, latency_ms=0.0,
            )  # fmt: skip
            encode_json(msg)
        base_ms.append((time.perf_counter() - t0) * 1000 / frames)
    return statistics.median(track_ms), statistics.median(base_ms)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--width", type=int, default=960)
    ap.add_argument("--height", type=int, default=540)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--visible", type=float, default=0.5, help="ground truth kept at this visible fraction")
    ap.add_argument("--timeout", type=float, default=1200.0)
    ap.add_argument(
        "--confidence",
        type=float,
        default=0.55,
        help="the stream's CONFIDENCE: the built-in detector scores a few background blobs of this world "
        "at about 0.5 (false positives, tracked like any published detection); 0.4 is the agent's default",
    )
    ap.add_argument("--skip-agent", action="store_true", help="only the cost per frame")
    args = ap.parse_args()

    track_ms, base_ms = cost_per_frame()
    print(
        f"tracker+zones+events per frame at 20 objects: {track_ms:.3f} ms "
        f"(prediction message build+encode of the same boxes: {base_ms:.3f} ms; ratio {track_ms / base_ms:.2f})"
    )
    if args.skip_agent:
        return
    clip, gt = make_clip(args.seconds, args.width, args.height, args.seed)
    predictions, events, wall = run_agent(clip, args.timeout, args.confidence)
    n_ids = len({o[0] for f in gt["frames"] for o in f})
    print(
        f"clip {clip.name}: {len(gt['frames'])} frames, {n_ids} objects; CONFIDENCE {args.confidence}; "
        f"agent {wall:.1f} s, {len(events)} events"
    )
    m = mot_metrics(predictions, gt, args.visible)
    print(
        f"IDF1 {m['idf1']:.4f}  MOTA {m['mota']:.4f}  ID switches {int(m['num_switches'])}  "
        f"FP {int(m['num_false_positives'])}  FN {int(m['num_misses'])}  GT boxes {int(m['num_objects'])}"
    )
    tracks = len({e["tracker_id"] for e in events if e["type"] == "track.start"})
    print(f"tracks started: {tracks} (ground-truth objects: {n_ids})")
    from edge_agent.pipelines.events.options import TrackingOptions
    from tests.tracking_truth import event_counts, truth_counts

    t_lines, t_zones = truth_counts(gt, TrackingOptions(zones=ZONES, lines=LINES))  # type: ignore[arg-type]
    e_lines, e_zones = event_counts(events)
    for what, truth, got in (("line crossings", t_lines, e_lines), ("zone entries", t_zones, e_zones)):
        keys = sorted(set(truth) | set(got))
        exact = all(truth[k] == got[k] for k in keys)
        detail = ", ".join(f"{k} {got[k]}/{truth[k]}" for k in keys)
        print(f"{what} (agent/truth): {detail} -> {'EXACT' if exact else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
