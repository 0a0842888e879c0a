"""From one stream's detections to track ids, events, counts and snapshots.

:class:`StreamEvents` holds a stream's tracker and zone engine and turns each frame into:

* the prediction with ``track_ids``: every detection has its track's real id from its first
  frame (the tracker takes every detection the stream publishes; were a ``low_threshold`` set,
  the detections under it would be left out rather than given a placeholder id);
* the events of the frame, in causal order per track: ``track.start``; ``zone.enter`` /
  ``zone.exit`` / ``zone.loiter`` / ``line.cross``; ``track.update`` (zones changed, became
  stationary/active, a better snapshot; at most one per ``event_update_s``); and, for a track
  that is gone, its ``zone.exit`` events before its ``track.end``;
* the retained counts that changed (objects in each zone per class, all and active; crossings of
  each line per class and direction, cumulative);
* snapshot JPEGs that improved.

Everything is computed on the frame's time, so a file gives the same output however fast it is
processed. Event ids are ``<track key>-<n>``: the track key (random, per track) names its
snapshot, so a snapshot is found from any of its track's event ids.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge_agent.models.maths.predictions import Detections, class_label
from edge_agent.pipelines.events.options import TrackingOptions
from edge_agent.pipelines.events.overlay import Overlay
from edge_agent.pipelines.events.snapshots import SnapshotChoice, render_snapshot
from edge_agent.pipelines.tracking.bytetrack import ByteTracker, FrameTracks, Track, TrackerParams
from edge_agent.pipelines.zones.engine import Transition, ZoneEngine
from edge_agent.pipelines.zones.geometry import anchor_points

EVENT_SCHEMA_VERSION = 1
TRAIL_POINTS = 30  # anchor points kept per track for the live view's trails


@dataclass
class _TrackInfo:
    key: str  # random hex: event ids and the snapshot's name
    n: int = 0  # events so far
    entered: list[str] = field(default_factory=list)
    last_update: float = -1e18
    reasons: list[str] = field(default_factory=list)
    snapshot: SnapshotChoice = field(default_factory=SnapshotChoice)
    snapshot_sent: int = 0  # version of the snapshot last published
    trail: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=TRAIL_POINTS))


@dataclass
class FrameOutput:
    prediction: Any
    events: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # subtopic -> value, changed ones only
    snapshots: list[tuple[str, str, bytes]] = field(default_factory=list)  # (class, track key, jpeg)


class StreamEvents:
    """One stream's tracking state. ``next_id`` hands out track ids (persisted by the caller);
    ``line_totals`` are the cumulative line counts to continue from (``line/class/dir`` -> n)."""

    def __init__(
        self,
        stream: str,
        options: TrackingOptions,
        *,
        next_id: Callable[[], int] | None = None,
        line_totals: dict[str, int] | None = None,
    ) -> None:
        self.stream = stream
        self.options = options
        self.tracker = ByteTracker(TrackerParams(lost_s=options.lost_s, stationary_s=options.stationary_s), next_id)
        self.engine = ZoneEngine(
            options.zones,
            options.lines,
            anchor=options.anchor,
            enter=options.zone_enter,
            leave=options.zone_exit,
            line_rule=options.line_hysteresis,
            loiter_s=options.loiter_s,
            classes=options.track_classes,
            speed_unit=options.speed_unit,
        )
        self.line_totals: dict[str, int] = dict(line_totals or {})
        self._published: dict[str, int] = {}
        self._info: dict[int, _TrackInfo] = {}  # by track uid
        self._names: tuple[str, ...] = ()
        self._t: float | None = None
        self._size = (0, 0)
        self._dirty = True  # counts must be recomputed (geometry changed, first frame)

    # -- configuration -----------------------------------------------------------------------

    def set_geometry(self, options: TrackingOptions) -> None:
        """New zones/lines (control API); counts of names that went away are dropped."""
        self.options = options
        self.engine.reconfigure(options.zones, options.lines)
        self._dirty = True
        lines = {ln.name for ln in options.lines}
        self.line_totals = {k: v for k, v in self.line_totals.items() if k.split("/", 1)[0] in lines}

    def reset_counts(self) -> dict[str, int]:
        """Line totals back to 0; returns the zeroed subtopics to publish."""
        zeroed = {f"lines/{k}": 0 for k in self.line_totals}
        self.line_totals = {k: 0 for k in self.line_totals}
        self._published.update(zeroed)
        return zeroed

    def note_published(self, counts: dict[str, int]) -> None:
        """Counts published on the stream's behalf (the zeros of a restart)."""
        self._published.update(counts)

    def initial_counts(self) -> dict[str, int]:
        """What to publish before the first frame: restored line totals."""
        out = {f"lines/{k}": v for k, v in self.line_totals.items()}
        self._published.update(out)
        return out

    # -- per frame ------------------------------------------------------------------------------

    def process(self, prediction: Detections, t: float, image: Callable[[], np.ndarray] | None) -> FrameOutput:
        self._names = prediction.class_names
        self._size = prediction.image_size
        out = FrameOutput(prediction)
        if self._t is not None and t < self._t:  # a looped file starts again: every track ends
            for tr in self.tracker.reset():
                self._end(tr, self._t, out)
            self._dirty = True  # the zones are empty now
        self._t = t
        frame = self.tracker.update(
            prediction.boxes, prediction.confidences, prediction.class_ids, t, prediction.image_size
        )
        out.prediction = self._with_ids(prediction, frame)
        observed = frame.observed
        for tr in frame.started:
            self._info[tr.uid] = _TrackInfo(uuid.uuid4().hex[:16])
            if self._wanted(tr):
                out.events.append(self._event("track.start", tr, t))
        wanted = [tr for tr in observed if self._wanted(tr)]
        boxes = np.array([tr.box for tr in wanted]).reshape(-1, 4)
        anchors = anchor_points(boxes, self.options.anchor)
        transitions = self.engine.observe(
            [tr.uid for tr in wanted], [self._cls(tr) for tr in wanted], boxes, t, self._size, anchors
        )
        by_uid = {tr.uid: tr for tr in wanted}
        for tr, (ax, ay) in zip(wanted, anchors.tolist(), strict=True):
            self._info[tr.uid].trail.append((ax, ay))
        for tn in transitions:
            self._transition(by_uid[tn.track_id], tn, out)
        for tr in frame.stopped:
            self._note(tr, "stationary")
        for tr in frame.moved:
            self._note(tr, "active")
        if self.options.snapshots and image is not None:
            self._snapshots(wanted, image, out)
        for tr in wanted:
            info = self._info[tr.uid]
            if info.reasons and t - info.last_update >= self.options.event_update_s:
                ev = self._event("track.update", tr, t)
                ev["reasons"] = sorted(set(info.reasons))
                info.reasons.clear()
                info.last_update = t
                out.events.append(ev)
                self._send_snapshot(tr, info, out)
        for tr in frame.ended:
            self._end(tr, tr.last_seen, out)
        if transitions or frame.ended or frame.stopped or frame.moved or self._dirty:
            self._counts(out)
        return out

    def overlay(self) -> Overlay:
        """Zones with their counts, lines with their totals, trails and speeds, in pixels."""
        w, h = self._size
        counts: dict[str, int] = {}
        cls_totals: dict[tuple[str, str], int] = {}
        for tr in self.tracker.tracks:
            if tr.uid in self._info:
                for name in self.engine.zones_of(tr.uid):
                    counts[name] = counts.get(name, 0) + 1
        for key, n in self.line_totals.items():
            name, _, direction = key.split("/")
            cls_totals[(name, direction)] = cls_totals.get((name, direction), 0) + n
        zones = tuple((z.name, z.polygon(w, h), counts.get(z.name, 0)) for z in self.engine.zones)
        lines = []
        for ln in self.engine.lines:
            a, b = ln.segment(w, h)
            lines.append((ln.name, a, b, cls_totals.get((ln.name, "in"), 0), cls_totals.get((ln.name, "out"), 0)))
        trails = []
        speeds = {}
        for tr in self.tracker.tracks:
            info = self._info.get(tr.uid)
            if info is None or tr.lost:
                continue
            trails.append((tr.track_id, np.array(info.trail)))
            speed = self.engine.speed_of(tr.uid)
            if speed is not None:
                speeds[tr.track_id] = f"{speed:.0f} {self.options.speed_unit}"
        return Overlay(zones, tuple(lines), tuple(trails), speeds)

    def finish(self) -> FrameOutput:
        """Every open track ends now (the stream stops): its zone exits, then its track.end."""
        out = FrameOutput(None)
        for tr in self.tracker.reset():
            self._end(tr, tr.last_seen, out)
        self._counts(out)
        return out

    def _with_ids(self, prediction: Detections, frame: FrameTracks) -> Detections:
        ids = frame.det_track_ids
        keep = np.array([i is not None for i in ids], dtype=bool)
        picked = prediction.select(keep) if len(ids) else prediction
        track_ids = np.array([i for i in ids if i is not None], dtype=np.int64)
        return replace(picked, track_ids=track_ids)

    def _cls(self, tr: Track) -> str:
        names = self._names
        k = tr.class_id
        return names[k] if 0 <= k < len(names) else class_label(names, k)

    def _wanted(self, tr: Track) -> bool:
        classes = self.options.track_classes
        return not classes or self._cls(tr) in classes

    def _note(self, tr: Track, reason: str) -> None:
        info = self._info.get(tr.uid)
        if info is not None and self._wanted(tr):
            info.reasons.append(reason)

    def _transition(self, tr: Track, tn: Transition, out: FrameOutput) -> None:
        info = self._info[tr.uid]
        if tn.kind == "cross":
            assert tn.direction is not None
            key = f"{tn.name}/{self._cls(tr)}/{tn.direction}"
            self.line_totals[key] = self.line_totals.get(key, 0) + 1
            ev = self._event("line.cross", tr, tn.t)
            ev["line"], ev["direction"] = tn.name, tn.direction
            out.events.append(ev)
            return
        if tn.kind == "enter" and tn.name not in info.entered:
            info.entered.append(tn.name)
        ev = self._event(f"zone.{tn.kind}", tr, tn.t)
        ev["zone"] = tn.name
        if tn.time_in_zone is not None:
            ev["time_in_zone"] = round(tn.time_in_zone, 3)
        out.events.append(ev)
        if tn.kind in ("enter", "exit"):
            info.reasons.append("zones")

    def _end(self, tr: Track, t: float, out: FrameOutput) -> None:
        info = self._info.get(tr.uid)
        if info is None:
            return
        if self._wanted(tr):
            for tn in self.engine.end_track(tr.uid, t):
                self._transition(tr, tn, out)
            self._send_snapshot(tr, info, out)
            ev = self._event("track.end", tr, t)
            ev["duration"] = round(tr.last_seen - tr.first_seen, 3)
            out.events.append(ev)
        del self._info[tr.uid]

    def _event(self, kind: str, tr: Track, t: float) -> dict[str, Any]:
        info = self._info[tr.uid]
        info.n += 1
        b = tr.box
        ev: dict[str, Any] = {
            "schema_version": EVENT_SCHEMA_VERSION,
            "type": kind,
            "event_id": f"{info.key}-{info.n}",
            "stream": self.stream,
            "tracker_id": tr.track_id,
            "class": self._cls(tr),
            "class_id": tr.class_id,
            "confidence": round(tr.confidence, 4),
            "best_confidence": round(tr.best_confidence, 4),
            "first_seen": tr.first_seen,
            "last_seen": tr.last_seen,
            "zones": self.engine.zones_of(tr.uid),
            "entered_zones": list(info.entered),
            "stationary": tr.stationary,
            "x": float((b[0] + b[2]) / 2),
            "y": float((b[1] + b[3]) / 2),
            "width": float(b[2] - b[0]),
            "height": float(b[3] - b[1]),
            "frame_time": t,
            "snapshot": info.snapshot.version > 0,
        }
        speed = self.engine.speed_of(tr.uid)
        if speed is not None:
            ev["speed"], ev["speed_unit"] = speed, self.options.speed_unit
        return ev

    # -- snapshots and counts -------------------------------------------------------------------

    def _snapshots(self, tracks: list[Track], image: Callable[[], np.ndarray], out: FrameOutput) -> None:
        w, h = self._size
        for tr in tracks:
            if tr.stationary:  # a parked object keeps the picture it had: no updates while it stands
                continue
            info = self._info[tr.uid]
            if info.snapshot.offer(tr.box, tr.confidence, tr.last_seen, (w, h)):
                info.snapshot.jpeg = render_snapshot(image(), tr.box, f"{self._cls(tr)} #{tr.track_id}")
                info.reasons.append("snapshot")

    def _send_snapshot(self, tr: Track, info: _TrackInfo, out: FrameOutput) -> None:
        snap = info.snapshot
        if snap.jpeg is not None and snap.version != info.snapshot_sent:
            info.snapshot_sent = snap.version
            out.snapshots.append((self._cls(tr), info.key, snap.jpeg))

    def _counts(self, out: FrameOutput) -> None:
        current: dict[str, int] = {}
        for zone in self.engine.zones:
            for cls in self._zone_classes(zone.classes):
                current[f"zones/{zone.name}/{cls}"] = 0
                current[f"zones/{zone.name}/{cls}/active"] = 0
        for tr in self.tracker.tracks:
            if tr.uid not in self._info:
                continue
            cls = self._cls(tr)
            for name in self.engine.zones_of(tr.uid):
                key = f"zones/{name}/{cls}"
                current[key] = current.get(key, 0) + 1
                current[key + "/active"] = current.get(key + "/active", 0) + (0 if tr.stationary else 1)
        for k, v in self.line_totals.items():
            current[f"lines/{k}"] = v
        for k, v in current.items():
            if self._published.get(k) != v:
                out.counts[k] = v
        self._dirty = False
        # a count that was published and is no longer computed (a class left the zone) is 0
        for k, v in self._published.items():
            if k not in current and k.startswith("zones/") and v != 0:
                out.counts[k] = 0
        self._published.update(out.counts)

    def _zone_classes(self, classes: tuple[str, ...]) -> tuple[str, ...]:
        """The classes a zone reports even at 0: its own filter, else the stream's filter."""
        return classes or self.options.track_classes


__all__ = ["EVENT_SCHEMA_VERSION", "FrameOutput", "StreamEvents"]
