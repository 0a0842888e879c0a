"""Per-stream zone membership, line crossings, loitering and speed of tracks.

The rules are pure functions on small mutable state records (:func:`step_membership`,
:func:`step_line`), tested against hand-computed cases; :class:`ZoneEngine` applies them to every
tracked object of a frame, vectorising the geometry over the tracks.

Time is the frame's time (media time for files, capture time for live), never the wall clock.
A track that is not observed in a frame (occluded, missed) neither extends nor resets a run.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edge_agent.pipelines.zones.config import Hysteresis, LineSpec, SpeedUnit, ZoneSpec
from edge_agent.pipelines.zones.geometry import (
    anchor_points,
    apply_homography,
    crossing_within_segment,
    ground_rectangle,
    homography,
    points_in_polygon,
    side_of_line,
)

# m/s -> km/h, ft/s -> mph
_SPEED_FACTOR: dict[str, float] = {"km/h": 3.6, "mph": 3600.0 / 5280.0}
# Speed is the distance covered over at least this much frame time (shorter spans are all noise).
SPEED_WINDOW_S = 0.5


@dataclass(slots=True)
class Membership:
    """One track in one zone. ``inside`` is the confirmed state; a run of observations that
    disagree with it (``run_count`` long, begun at ``run_since``) flips it once it has held."""

    inside: bool = False
    run_count: int = 0
    run_since: float = 0.0
    entered_at: float = 0.0
    exited_at: float = 0.0
    loitered: bool = False


def step_membership(
    state: Membership, observed_inside: bool, t: float, enter: Hysteresis, leave: Hysteresis
) -> str | None:
    """Feed one observation; returns ``"enter"``, ``"exit"`` or None.

    ``entered_at`` / ``exited_at`` are the times of the first observation of the run that flipped
    the state (when the object really crossed), not of the one that confirmed it.
    """
    if observed_inside == state.inside:
        state.run_count = 0
        return None
    if state.run_count == 0:
        state.run_since = t
    state.run_count += 1
    rule = enter if observed_inside else leave
    if not rule.held(state.run_count, state.run_since, t):
        return None
    state.inside = observed_inside
    state.run_count = 0
    if observed_inside:
        state.entered_at = state.run_since
        state.loitered = False
        return "enter"
    state.exited_at = state.run_since
    return "exit"


@dataclass(slots=True)
class LineState:
    """One track against one line: its confirmed side (+1, -1, 0 = not seen yet), the last point
    seen on that side, and a run on the other side waiting to hold."""

    side: int = 0
    last_point: tuple[float, float] = (0.0, 0.0)
    run_count: int = 0
    run_since: float = 0.0
    run_through: bool = False  # the move that began the run passed through the segment


def step_line(
    state: LineState, a: np.ndarray, b: np.ndarray, point: tuple[float, float], side: float, t: float, rule: Hysteresis
) -> str | None:
    """Feed one observation of the anchor (``side`` = side_of_line of ``point``); returns ``"in"``
    (side > 0 to side < 0), ``"out"`` or None.

    A point exactly on the line changes nothing. The crossing counts only if the move from the
    last point on the old side to the first point on the new side passes through the segment
    (a track going round an end flips its side silently), and only once the new side has held
    for ``rule``.
    """
    s = 1 if side > 0 else -1 if side < 0 else 0
    if s == 0:
        return None
    if state.side == 0 or s == state.side:
        state.side = s
        state.last_point = point
        state.run_count = 0
        return None
    if state.run_count == 0:
        state.run_since = t
        state.run_through = crossing_within_segment(a, b, np.asarray(state.last_point), np.asarray(point))
    state.run_count += 1
    if not rule.held(state.run_count, state.run_since, t):
        return None
    state.side = s
    state.last_point = point
    state.run_count = 0
    if not state.run_through:
        return None
    return "in" if s < 0 else "out"


@dataclass(frozen=True, slots=True)
class Transition:
    """Something that happened to a track: ``kind`` enter | exit | loiter | cross."""

    kind: str
    track_id: int
    name: str  # the zone or line
    t: float  # when it happened (frame time)
    direction: str | None = None  # lines: in | out
    time_in_zone: float | None = None  # exit, loiter


@dataclass
class _Speed:
    samples: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=64))
    value: float | None = None


@dataclass
class _Resolved:
    size: tuple[int, int]
    polygons: list[np.ndarray]
    segments: list[tuple[np.ndarray, np.ndarray]]
    ground: dict[int, np.ndarray]  # zone index -> image->ground homography


class ZoneEngine:
    """Zones and lines of one stream; keeps per-track state until :meth:`end_track`."""

    def __init__(
        self,
        zones: tuple[ZoneSpec, ...] = (),
        lines: tuple[LineSpec, ...] = (),
        *,
        anchor: str = "bottom_center",
        enter: Hysteresis | None = None,
        leave: Hysteresis | None = None,
        line_rule: Hysteresis | None = None,
        loiter_s: float = 0.0,
        classes: tuple[str, ...] = (),
        speed_unit: SpeedUnit = "km/h",
    ) -> None:
        self.zones = zones
        self.lines = lines
        self.anchor = anchor
        self.enter = enter or Hysteresis(frames=1)
        self.leave = leave or Hysteresis(frames=1)
        self.line_rule = line_rule or Hysteresis(frames=1)
        self.loiter_s = loiter_s
        self.classes = frozenset(classes)
        self.speed_unit = speed_unit
        self._resolved: _Resolved | None = None
        self._members: dict[tuple[int, int], Membership] = {}
        self._lines: dict[tuple[int, int], LineState] = {}
        self._speeds: dict[int, _Speed] = {}
        self._last_seen: dict[int, float] = {}

    # -- geometry ---------------------------------------------------------------------------------

    def _resolve(self, size: tuple[int, int]) -> _Resolved:
        r = self._resolved
        if r is not None and r.size == size:
            return r
        w, h = size
        ground = {}
        polygons = [z.polygon(w, h) for z in self.zones]
        for i, z in enumerate(self.zones):
            if z.speed is not None:
                ground[i] = homography(polygons[i], ground_rectangle(z.speed.width, z.speed.length))
        r = _Resolved(size, polygons, [ln.segment(w, h) for ln in self.lines], ground)
        self._resolved = r
        return r

    def _wants(self, classes: tuple[str, ...], cls: str) -> bool:
        if self.classes and cls not in self.classes:
            return False
        return not classes or cls in classes

    # -- per frame --------------------------------------------------------------------------------

    def observe(
        self,
        track_ids: list[int],
        classes: list[str],
        boxes: np.ndarray,
        t: float,
        size: tuple[int, int],
        points: np.ndarray | None = None,
    ) -> list[Transition]:
        """The tracks seen in this frame (ids, their classes, xyxy boxes; ``points``: their anchor
        points when the caller has them already); returns what happened."""
        if not track_ids or (not self.zones and not self.lines):
            return []
        r = self._resolve(size)
        if points is None:
            points = anchor_points(boxes, self.anchor)
        out: list[Transition] = []
        for zi, zone in enumerate(self.zones):
            inside = points_in_polygon(points, r.polygons[zi])
            loiter_s = zone.loiter_s if zone.loiter_s is not None else self.loiter_s
            for k, tid in enumerate(track_ids):
                if not self._wants(zone.classes, classes[k]):
                    continue
                key = (tid, zi)
                state = self._members.get(key)
                if state is None:
                    state = self._members[key] = Membership()
                change = step_membership(state, bool(inside[k]), t, self.enter, self.leave)
                if change == "enter":
                    out.append(Transition("enter", tid, zone.name, t))
                elif change == "exit":
                    out.append(Transition("exit", tid, zone.name, t, time_in_zone=state.exited_at - state.entered_at))
                if state.inside and loiter_s > 0 and not state.loitered and t - state.entered_at >= loiter_s:
                    state.loitered = True
                    out.append(Transition("loiter", tid, zone.name, t, time_in_zone=t - state.entered_at))
                if zi in r.ground and inside[k]:
                    self._speed_sample(tid, r.ground[zi], points[k], t)
        for li, line in enumerate(self.lines):
            a, b = r.segments[li]
            sides = side_of_line(a, b, points)
            for k, tid in enumerate(track_ids):
                if not self._wants(line.classes, classes[k]):
                    continue
                key = (tid, li)
                ls = self._lines.get(key)
                if ls is None:
                    ls = self._lines[key] = LineState()
                p = (float(points[k, 0]), float(points[k, 1]))
                direction = step_line(ls, a, b, p, float(sides[k]), t, self.line_rule)
                if direction is not None:
                    out.append(Transition("cross", tid, line.name, t, direction=direction))
        for tid in track_ids:
            self._last_seen[tid] = t
        return out

    def _speed_sample(self, tid: int, h: np.ndarray, point: np.ndarray, t: float) -> None:
        sp = self._speeds.get(tid)
        if sp is None:
            sp = self._speeds[tid] = _Speed()
        g = apply_homography(h, point[None, :])[0]
        sp.samples.append((t, float(g[0]), float(g[1])))
        while len(sp.samples) > 2 and t - sp.samples[1][0] >= SPEED_WINDOW_S:
            sp.samples.popleft()
        t0, x0, y0 = sp.samples[0]
        if t - t0 >= SPEED_WINDOW_S:
            sp.value = math.hypot(float(g[0]) - x0, float(g[1]) - y0) / (t - t0) * _SPEED_FACTOR[self.speed_unit]

    # -- queries and track end ------------------------------------------------------------------

    def zones_of(self, tid: int) -> list[str]:
        """The zones the track is in now (confirmed), in configuration order."""
        if not self.zones:
            return []
        return [z.name for zi, z in enumerate(self.zones) if (m := self._members.get((tid, zi))) and m.inside]

    def speed_of(self, tid: int) -> float | None:
        sp = self._speeds.get(tid)
        return None if sp is None or sp.value is None else round(sp.value, 2)

    def end_track(self, tid: int, t: float) -> list[Transition]:
        """The track is gone: close its open memberships (exit at its last sighting) and forget it."""
        out = []
        last = self._last_seen.pop(tid, t)
        for zi, zone in enumerate(self.zones):
            state = self._members.pop((tid, zi), None)
            if state is not None and state.inside:
                left = state.run_since if state.run_count else last
                out.append(Transition("exit", tid, zone.name, last, time_in_zone=max(left - state.entered_at, 0.0)))
        for li in range(len(self.lines)):
            self._lines.pop((tid, li), None)
        self._speeds.pop(tid, None)
        return out

    def reconfigure(self, zones: tuple[ZoneSpec, ...], lines: tuple[LineSpec, ...]) -> None:
        """New zones/lines at run time: the state of kept names is kept, the rest starts afresh."""
        old_z = {z.name: i for i, z in enumerate(self.zones)}
        old_l = {ln.name: i for i, ln in enumerate(self.lines)}
        z_map = {old_z[z.name]: i for i, z in enumerate(zones) if z.name in old_z and self.zones[old_z[z.name]] == z}
        l_map = {
            old_l[ln.name]: i for i, ln in enumerate(lines) if ln.name in old_l and self.lines[old_l[ln.name]] == ln
        }
        self._members = {(tid, z_map[zi]): s for (tid, zi), s in self._members.items() if zi in z_map}
        self._lines = {(tid, l_map[li]): s for (tid, li), s in self._lines.items() if li in l_map}
        self.zones, self.lines = zones, lines
        self._resolved = None


__all__ = ["LineState", "Membership", "Transition", "ZoneEngine", "step_line", "step_membership"]
