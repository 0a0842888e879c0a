"""The tracking processing step: per stream a :class:`StreamEvents`, fed every frame's detections.

It runs on the event loop between inference and the sinks (``pipelines/processing.py``); what it
produces besides the prediction (events, counts, snapshots) goes to an :class:`EventOutlet`
(the result router, which numbers the events and hands them to the sinks).

Frame time: a file's frames are timed by their presentation timestamp (media time), so a file
gives the same tracks and events however fast it is processed; a live source's by capture time.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from edge_agent.models.maths.predictions import Detections, Prediction
from edge_agent.pipelines.events.builder import StreamEvents
from edge_agent.pipelines.events.options import TrackingOptions
from edge_agent.pipelines.events.overlay import Overlay
from edge_agent.pipelines.events.snapshots import SnapshotStore
from edge_agent.pipelines.events.store import TrackingStore
from edge_agent.pipelines.frames import Frame

log = logging.getLogger("edge_agent.tracking")


class EventOutlet(Protocol):
    def publish_event(self, stream: str, event: dict[str, Any]) -> None: ...

    def publish_counts(self, stream: str, counts: dict[str, int]) -> None: ...

    def publish_snapshot(self, stream: str, cls: str, jpeg: bytes) -> None: ...


class _Stream:
    def __init__(self, events: StreamEvents, media_time: bool) -> None:
        self.events = events
        self.media_time = media_time
        self.last_wall = 0.0
        self.events_sent = 0


def geometry_doc(options: TrackingOptions) -> dict[str, Any]:
    """The zones and lines of ``options`` as the control API shows (and accepts) them."""
    return {
        "zones": [z.model_dump(exclude_defaults=True) | {"name": z.name} for z in options.zones],
        "lines": [ln.model_dump(exclude_defaults=True) | {"name": ln.name} for ln in options.lines],
    }


class TrackingStep:
    """Tracking, zones, lines and events of every stream that has tracking on."""

    name = "tracking"

    def __init__(
        self, store: TrackingStore, outlet: EventOutlet | None = None, snapshots: SnapshotStore | None = None
    ) -> None:
        self.store = store
        self.outlet = outlet
        self.snapshots = snapshots
        self._streams: dict[str, _Stream] = {}
        self._env_options: dict[str, TrackingOptions] = {}

    # -- configuration -------------------------------------------------------------------------

    def configure(self, stream: str, options: TrackingOptions, *, media_time: bool) -> None:
        """A stream starts. Zones/lines saved from the control API replace the environment's."""
        self._env_options[stream] = options
        if not options.tracking:
            self._streams.pop(stream, None)
            return
        saved = self.store.geometry(stream)
        if saved is not None:
            try:
                options = options.model_copy(update=_validated(options, saved))
            except ValueError as exc:
                log.warning("stream %s: saved zones/lines are invalid (%s); using the environment's", stream, exc)
        saved_counts = self.store.line_totals(stream)
        totals = {k: v for k, v in saved_counts.items() if not k.startswith("zones/")}
        events = StreamEvents(stream, options, next_id=self.store.id_source(stream), line_totals=totals)
        self._streams[stream] = _Stream(events, media_time)
        initial = events.initial_counts()
        # Zone counts left above 0 by the last run (a crash, or objects still there at the stop)
        # are retained on the broker: the objects are no longer tracked, so they are 0 now.
        stale = {k: 0 for k, v in saved_counts.items() if k.startswith("zones/") and v != 0}
        initial.update(stale)
        events.note_published(stale)
        self.store.save_line_totals(stream, stale)
        if self.outlet is not None and initial:
            self.outlet.publish_counts(stream, initial)

    def options(self, stream: str) -> TrackingOptions | None:
        s = self._streams.get(stream)
        return s.events.options if s is not None else self._env_options.get(stream)

    def set_geometry(self, stream: str, doc: dict[str, Any] | None) -> TrackingOptions:
        """New zones/lines for a running stream (``None``: back to the environment's); saved.

        Raises KeyError for a stream without tracking, ValueError (pydantic's) for a bad body.
        """
        s = self._streams[stream]
        base = self._env_options[stream]
        options = base if doc is None else base.model_copy(update=_validated(base, doc))
        s.events.set_geometry(options)
        self.store.save_geometry(stream, None if doc is None else geometry_doc(options))
        self.store.clear_line_totals(stream, keep=set(s.events.line_totals))
        return options

    def reset_counts(self, stream: str) -> None:
        s = self._streams[stream]
        zeroed = s.events.reset_counts()
        self.store.save_line_totals(stream, {k.removeprefix("lines/"): 0 for k in zeroed})
        if self.outlet is not None and zeroed:
            self.outlet.publish_counts(stream, zeroed)

    def tracked(self, stream: str) -> bool:
        return stream in self._streams

    def stats(self, stream: str) -> dict[str, Any] | None:
        """For the stats message and GET /streams: tracks alive, events so far, zones and lines."""
        s = self._streams.get(stream)
        if s is None:
            return None
        ev = s.events
        return {
            "tracks": sum(1 for tr in ev.tracker.tracks if tr.confirmed),
            "events": s.events_sent,
            "zones": [z.name for z in ev.engine.zones],
            "lines": [ln.name for ln in ev.engine.lines],
        }

    # -- per frame -----------------------------------------------------------------------------

    def __call__(self, stream: str, prediction: Prediction, frame: Frame | None = None) -> Prediction:
        s = self._streams.get(stream)
        if s is None or frame is None or not isinstance(prediction, Detections):
            return prediction
        t = frame.pts if s.media_time and frame.pts is not None else frame.capture_time
        s.last_wall = frame.capture_time
        out = s.events.process(prediction, float(t), lambda: frame.image)
        self._emit(stream, s, out.events, out.counts, out.snapshots)
        return out.prediction

    def _emit(
        self,
        stream: str,
        s: _Stream,
        events: list[dict[str, Any]],
        counts: dict[str, int],
        snapshots: list[tuple[str, str, bytes]],
    ) -> None:
        for cls, key, jpeg in snapshots:
            if self.snapshots is not None:
                self.snapshots.put(key, jpeg)
            if self.outlet is not None:
                self.outlet.publish_snapshot(stream, cls, jpeg)
        if counts:
            # line totals to continue from; zone counts to zero after a crash (see configure)
            saved = {k.removeprefix("lines/"): v for k, v in counts.items()}
            self.store.save_line_totals(stream, saved)
        if self.outlet is None:
            return
        for event in events:
            event["wall_time"] = s.last_wall
            self.outlet.publish_event(stream, event)
        s.events_sent += len(events)
        if counts:
            self.outlet.publish_counts(stream, counts)

    def overlay(self, stream: str) -> Overlay | None:
        s = self._streams.get(stream)
        return s.events.overlay() if s is not None else None

    def finish(self, stream: str) -> None:
        """End every open track of the stream (zone.exit, track.end) at its last frame time."""
        s = self._streams.get(stream)
        if s is None:
            return
        out = s.events.finish()
        self._emit(stream, s, out.events, out.counts, out.snapshots)

    def forget(self, stream: str) -> None:
        self.finish(stream)
        self._streams.pop(stream, None)
        self._env_options.pop(stream, None)

    def finish_all(self) -> None:
        for stream in list(self._streams):
            self.finish(stream)

    def close(self) -> None:
        """Save what is left and stop the store threads (call :meth:`finish_all` before, while
        the sinks are still open)."""
        self.store.close()
        if self.snapshots is not None:
            self.snapshots.close()


def _validated(base: TrackingOptions, doc: dict[str, Any]) -> dict[str, Any]:
    """``{"zones": ..., "lines": ...}`` validated by the stream model's own fields."""
    unknown = set(doc) - {"zones", "lines"}
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}; accepted: zones, lines")
    checked = TrackingOptions.model_validate(
        {"zones": doc.get("zones", base.zones), "lines": doc.get("lines", base.lines)}
    )
    return {"zones": checked.zones, "lines": checked.lines}


__all__ = ["EventOutlet", "TrackingStep", "geometry_doc"]
