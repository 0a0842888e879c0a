"""Zones, lines and the hysteresis rule: typed configuration and the compact environment syntax.

``STREAM_<NAME>_ZONES="bay=0.1,0.5 0.4,0.5 0.4,0.9 0.1,0.9;exit=px:100,360 200,360 200,700"``:
named polygons, points ``x,y`` separated by spaces, fractions of the frame (0..1) or, after
``px:``, source pixels. ``STREAM_<NAME>_LINES="door=0.5,0 0.5,1"``: named directed lines from the
first point to the second. Either variable also takes a JSON list of objects (the control API's
form), which can carry per-zone options: ``[{"name": "bay", "points": [[0.1, 0.5], ...],
"classes": ["car"], "loiter_s": 30, "speed": {"width": 3.5, "length": 20}}]``.

Errors name the zone or line and the point (``zone 'bay', point 3 ('0.4;0.9')``); the
environment parser prefixes the variable.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator, model_validator

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
NAME_RULE = "1-63 letters, digits, '_' or '-', starting with a letter or digit"

Point = tuple[float, float]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SpeedCalibration(_Model):
    """The ground size of a 4-point zone: its first side (p0->p1) is ``width``, its second
    (p1->p2) ``length``, in metres (km/h) or feet (mph)."""

    width: float = Field(gt=0)
    length: float = Field(gt=0)


def _check_points(kind: str, name: str, points: tuple[Point, ...], pixels: bool) -> None:
    for i, (x, y) in enumerate(points, start=1):
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"{kind} {name!r}, point {i} ({x:g},{y:g}): not a finite number")
        if pixels and (x < 0 or y < 0):
            raise ValueError(f"{kind} {name!r}, point {i} ({x:g},{y:g}): pixels must be >= 0")
        if not pixels and not (0 <= x <= 1 and 0 <= y <= 1):
            raise ValueError(
                f"{kind} {name!r}, point {i} ({x:g},{y:g}): fractions of the frame must be within 0..1 "
                "(write px:X,Y for pixels)"
            )


def _name(kind: str, value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"{kind} name {value!r} is invalid; accepted: {NAME_RULE}")
    return value


class ZoneSpec(_Model):
    """One named polygon zone."""

    name: str
    points: tuple[Point, ...]
    pixels: bool = False
    classes: tuple[str, ...] = ()  # empty: every class
    loiter_s: float | None = Field(default=None, ge=0)  # None: the stream's LOITER_S
    speed: SpeedCalibration | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _name("zone", value)

    @model_validator(mode="after")
    def _shape(self) -> ZoneSpec:
        _check_points("zone", self.name, self.points, self.pixels)
        if len(self.points) < 3:
            raise ValueError(f"zone {self.name!r} has {len(self.points)} point(s); a polygon needs at least 3")
        if self.speed is not None and len(self.points) != 4:
            raise ValueError(f"zone {self.name!r}: speed needs exactly 4 points (the measured quadrilateral)")
        return self

    def polygon(self, width: int, height: int) -> np.ndarray:
        """The polygon in source pixels."""
        p = np.array(self.points, dtype=np.float64)
        return p if self.pixels else p * np.array([width, height], dtype=np.float64)


class LineSpec(_Model):
    """One named directed line, from ``points[0]`` to ``points[1]``."""

    name: str
    points: tuple[Point, Point]
    pixels: bool = False
    classes: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _name("line", value)

    @model_validator(mode="after")
    def _shape(self) -> LineSpec:
        _check_points("line", self.name, self.points, self.pixels)
        if self.points[0] == self.points[1]:
            raise ValueError(f"line {self.name!r}: its two points are the same")
        return self

    def segment(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        p = np.array(self.points, dtype=np.float64)
        if not self.pixels:
            p = p * np.array([width, height], dtype=np.float64)
        return p[0], p[1]


def _parse_point(kind: str, name: str, index: int, text: str) -> Point:
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(
            f"{kind} {name!r}, point {index} ({text!r}): expected x,y (two numbers separated by a comma)"
        ) from None


def _parse_compact(kind: str, text: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, eq, rest = part.partition("=")
        name = name.strip()
        if not eq or not name:
            raise ValueError(f"{part!r}: expected NAME=x,y x,y ...")
        rest = rest.strip()
        pixels = rest.startswith("px:")
        if pixels:
            rest = rest[3:].strip()
        points = [_parse_point(kind, name, i, p) for i, p in enumerate(rest.split(), start=1)]
        items.append({"name": name, "points": points, "pixels": pixels})
    return items


def _specs(kind: str) -> BeforeValidator:
    """The env's compact form or a JSON list (a string), or a list of objects (control API)."""

    def parse(value: Any) -> Any:
        items = value
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    items = json.loads(text)
                except ValueError:
                    raise ValueError("starts like a JSON list but is not valid JSON") from None
            else:
                items = _parse_compact(kind, text)
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"accepted: NAME=x,y x,y ...;NAME2=... or a JSON list of {kind} objects")
        names = [i.get("name") if isinstance(i, dict) else getattr(i, "name", None) for i in items]
        dupes = sorted({n for n in names if n is not None and names.count(n) > 1})
        if dupes:
            raise ValueError(f"{kind} name(s) used twice: {', '.join(dupes)}")
        return tuple(items)

    return BeforeValidator(parse)


Zones = Annotated[tuple[ZoneSpec, ...], _specs("zone")]
Lines = Annotated[tuple[LineSpec, ...], _specs("line")]


class Hysteresis(_Model):
    """How long a new state must hold before it counts: ``frames`` consecutive observations, or
    ``seconds`` from the first of them (frame time). ``frames=1`` takes effect at once."""

    frames: int | None = Field(default=None, ge=1)
    seconds: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one(self) -> Hysteresis:
        if (self.frames is None) == (self.seconds is None):
            raise ValueError("give frames or seconds (exactly one)")
        return self

    def held(self, count: int, since: float, now: float) -> bool:
        """Whether a run of ``count`` observations that began at ``since`` has lasted long enough."""
        if self.frames is not None:
            return count >= self.frames
        assert self.seconds is not None
        return now - since >= self.seconds

    def __str__(self) -> str:
        return f"{self.frames}" if self.frames is not None else f"{self.seconds:g}s"


def _hysteresis(value: Any) -> Any:
    """``3`` (frames) or ``0.5s`` (seconds), or the object form."""
    if isinstance(value, (Hysteresis, dict)):
        return value
    text = str(value).strip().lower()
    try:
        if text.endswith("s"):
            seconds = float(text[:-1])
            if seconds < 0 or not math.isfinite(seconds):
                raise ValueError
            return {"seconds": seconds}
        frames = int(text)
        if frames < 1:
            raise ValueError
        return {"frames": frames}
    except ValueError:
        raise ValueError(f"{value!r}: accepted a whole number of frames >= 1 (3) or seconds with an s (0.5s)") from None


HysteresisSetting = Annotated[Hysteresis, BeforeValidator(_hysteresis), PlainSerializer(str, return_type=str)]

SpeedUnit = Literal["km/h", "mph"]

__all__ = [
    "Hysteresis",
    "HysteresisSetting",
    "LineSpec",
    "Lines",
    "SpeedCalibration",
    "SpeedUnit",
    "ZoneSpec",
    "Zones",
]
