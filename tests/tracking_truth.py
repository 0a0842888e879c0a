"""Ground truth of the tracking world (tools/synthworld.TrackingWorld) for tests and bench/.

Counts come from applying the agent's documented zone and line rules (``pipelines/zones``,
checked against hand-computed cases in tests/test_tracking_units.py) to the *true* boxes and
identities; the agent must reach the same numbers from detections and its own tracks.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from edge_agent.pipelines.events.options import TrackingOptions
from edge_agent.pipelines.zones.engine import ZoneEngine


def truth_counts(gt: dict[str, Any], options: TrackingOptions) -> tuple[Counter[str], Counter[str]]:
    """(line crossings ``line/class/direction``, zone entries ``zone/class``) of the truth."""
    engine = ZoneEngine(
        options.zones,
        options.lines,
        anchor=options.anchor,
        enter=options.zone_enter,
        leave=options.zone_exit,
        line_rule=options.line_hysteresis,
    )
    names = gt["classes"]
    size = (gt["width"], gt["height"])
    lines: Counter[str] = Counter()
    zones: Counter[str] = Counter()
    cls_of: dict[int, str] = {}
    for k, objects in enumerate(gt["frames"]):
        ids = [int(o[0]) for o in objects]
        for o in objects:
            cls_of[int(o[0])] = names[int(o[5])]
        boxes = np.array([o[1:5] for o in objects], dtype=np.float64).reshape(-1, 4)
        for tn in engine.observe(ids, [cls_of[i] for i in ids], boxes, k / gt["fps"], size):
            if tn.kind == "cross":
                lines[f"{tn.name}/{cls_of[tn.track_id]}/{tn.direction}"] += 1
            elif tn.kind == "enter":
                zones[f"{tn.name}/{cls_of[tn.track_id]}"] += 1
    return lines, zones


def event_counts(events: list[dict[str, Any]]) -> tuple[Counter[str], Counter[str]]:
    """The same counts from the agent's events."""
    lines: Counter[str] = Counter()
    zones: Counter[str] = Counter()
    for e in events:
        if e["type"] == "line.cross":
            lines[f"{e['line']}/{e['class']}/{e['direction']}"] += 1
        elif e["type"] == "zone.enter":
            zones[f"{e['zone']}/{e['class']}"] += 1
    return lines, zones


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def identity_map(predictions: list[dict[str, Any]], gt: dict[str, Any], min_iou: float = 0.5) -> dict[int, set[int]]:
    """For each true object, the tracker ids of the predictions that overlap it (IoU >= min_iou,
    best match per prediction) over the whole clip."""
    out: dict[int, set[int]] = {}
    by_frame = {m["frame_id"]: m for m in predictions}
    for k, objects in enumerate(gt["frames"]):
        for p in by_frame.get(k, {"predictions": []})["predictions"]:
            box = [p["x"] - p["width"] / 2, p["y"] - p["height"] / 2, p["x"] + p["width"] / 2, p["y"] + p["height"] / 2]
            best = max(objects, key=lambda o: iou(box, o[1:5]), default=None)
            if best is not None and iou(box, best[1:5]) >= min_iou:
                out.setdefault(int(best[0]), set()).add(int(p["tracker_id"]))
    return out
