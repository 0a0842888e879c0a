"""Per-stream options of tracking, zones, lines and events (``STREAM_<NAME>_<KEY>``).

Part of the one stream model (``pipelines.stream_config.StreamOptions`` inherits these fields),
so the environment and the control API accept exactly the same values.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from edge_agent.pipelines.sources.options import Bool, Seconds, SecondsOrZero, _choice
from edge_agent.pipelines.zones.config import Hysteresis, HysteresisSetting, Lines, Zones
from edge_agent.pipelines.zones.geometry import ANCHORS


def _classes(value: Any) -> Any:
    """``car|person`` or ``car,person`` (env) or a list -> tuple of class names."""
    if isinstance(value, str):
        sep = "|" if "|" in value else ","
        value = [v.strip() for v in value.split(sep) if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("accepted: class names separated by '|' or ',' (car|person), or a JSON list")
    return tuple(value)


class TrackingOptions(BaseModel):
    """What a stream does with its boxes beyond publishing them."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    tracking: Bool = Field(
        default=True, description="object detection: track objects (tracker_id on predictions, events); false = off"
    )
    zones: Zones = Field(
        default=(),
        description='named polygon zones: "bay=0.1,0.5 0.4,0.5 0.4,0.9 0.1,0.9;exit=px:100,360 ..." (fractions '
        "of the frame, px: for pixels) or a JSON list",
    )
    lines: Lines = Field(
        default=(),
        description='named directed lines: "door=0.5,0 0.5,1" (left to right across it is in) or a JSON list',
    )
    zone_enter: HysteresisSetting = Field(
        default=Hysteresis(frames=3),
        description="frames (3) or seconds (0.5s) inside a zone before zone.enter",
    )
    zone_exit: HysteresisSetting = Field(
        default=Hysteresis(frames=3),
        description="frames (3) or seconds (0.5s) outside a zone before zone.exit",
    )
    line_hysteresis: HysteresisSetting = Field(
        default=Hysteresis(frames=1),
        description="frames (1) or seconds on the new side of a line before line.cross counts",
    )
    loiter_s: SecondsOrZero = Field(default=0.0, description="zone.loiter after this many seconds in a zone (0 = off)")
    anchor: Annotated[str, _choice(*ANCHORS)] = Field(
        default="bottom_center", description=f"the point of a box tested against zones and lines: {' | '.join(ANCHORS)}"
    )
    track_classes: Annotated[tuple[str, ...], BeforeValidator(_classes)] = Field(
        default=(), description="classes that produce events, zone and line counts (car|person; default all)"
    )
    stationary_s: Seconds = Field(default=5.0, description="seconds without moving before a track is stationary")
    lost_s: Seconds = Field(
        default=1.5, description="seconds (and at least 2 frames) a lost track is kept for an occluded object to return"
    )
    speed_unit: Annotated[Literal["km/h", "mph"], _choice("km/h", "mph")] = Field(
        default="km/h", description="speed zones: km/h (distances in metres) or mph (feet)"
    )
    event_update_s: SecondsOrZero = Field(
        default=1.0, description="track.update at most once per this many seconds per track (0 = no limit)"
    )
    snapshots: Bool = Field(default=True, description="best JPEG snapshot per track (MQTT retained, HTTP, disk)")


__all__ = ["TrackingOptions"]
