"""The one configuration model of a stream, shared by the environment parser, the control API and
the sources.

``STREAM_<NAME>_<KEY>`` variables, a control API body and :class:`SourceOptions` all go through
these fields and their validators (``pipelines.sources.options``); a new per-stream option is
added here (or to ``ReadOptions`` when the reader needs it) and is then accepted everywhere.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from edge_agent.models.common.redaction import redact_url
from edge_agent.models.common.settings import UnitInterval
from edge_agent.models.maths.polygons import DEFAULT_TOLERANCE_PX, MaskOutput
from edge_agent.models.speed.precision import split_precision
from edge_agent.pipelines.events.options import TrackingOptions
from edge_agent.pipelines.sources.options import ReadOptions, SourceOptions, _choice

STREAM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
STREAM_NAME_RULE = "1-63 characters of letters, digits, '_' and '-', starting with a letter or digit"


def _stream_name(value: str) -> str:
    if not STREAM_NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid stream name; accepted: {STREAM_NAME_RULE}")
    return value


def _url(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("is empty; give the stream's URL, device or file path")
    return value


def _model_id(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("is empty; leave it out to use MODEL_ID")
    return value


def _prompts(value: Any) -> Any:
    """``"a person|an empty room"`` or a JSON list (env), or a list (control API) -> tuple of prompts."""
    items = value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except ValueError:
                raise ValueError("starts like a JSON list but is not valid JSON") from None
        else:
            items = text.split("|")
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ValueError("accepted: a JSON list of strings, or prompts separated by '|'")
    prompts = tuple(i.strip() for i in items if i.strip())
    if not prompts:
        raise ValueError('names no prompt; accepted: "a person|an empty room" or a JSON list')
    if len(set(prompts)) != len(prompts):
        raise ValueError("repeats a prompt")
    return prompts


def _regions(value: Any) -> Any:
    """``x1,y1,x2,y2;...`` or a JSON list (env), or a list of 4-lists (control API) -> tuple of boxes."""
    items = value
    try:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                items = json.loads(text)
            else:
                items = [[float(v) for v in part.split(",")] for part in text.split(";") if part.strip()]
        if isinstance(items, (list, tuple)) and items and all(isinstance(v, (int, float)) for v in items):
            items = [items]
        regions = tuple(tuple(float(v) for v in item) for item in items)
    except (ValueError, TypeError):
        regions = ()
    if not regions or any(len(r) != 4 or not (0 <= r[0] < r[2] and 0 <= r[1] < r[3]) for r in regions):
        raise ValueError(
            "accepted: x1,y1,x2,y2 in source pixels with x1 < x2 and y1 < y2, several separated by ';' "
            "(e.g. 0,0,640,120;0,600,640,720) or a JSON list of such lists"
        )
    return regions


def _vlm_prompt(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty; leave it out to ask nothing")
    if len(value) > 4000:
        raise ValueError("is longer than 4000 characters")
    return value


VLM_EVENTS = ("track_end", "zone_enter")


def _vlm_events(value: Any) -> Any:
    items = value
    if isinstance(value, str):
        text = value.strip()
        items = json.loads(text) if text.startswith("[") else text.split("|")
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"accepted: {' | '.join(VLM_EVENTS)} separated by '|', or a JSON list")
    events = tuple(dict.fromkeys(i.strip() for i in items if i.strip()))
    unknown = [e for e in events if e not in VLM_EVENTS]
    if unknown or not events:
        raise ValueError(f"names {', '.join(unknown) or 'no event'}; accepted: {', '.join(VLM_EVENTS)}")
    return events


def _class_names(value: Any) -> Any:
    """``"plate|car"`` or a JSON list (env), or a list (control API) -> tuple of class names."""
    items = value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except ValueError:
                raise ValueError("starts like a JSON list but is not valid JSON") from None
        else:
            items = text.split("|")
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ValueError('accepted: class names separated by "|" (plate|car) or a JSON list of strings')
    return tuple(dict.fromkeys(i.strip() for i in items if i.strip()))


def env_name(stream: str) -> str:
    """How a stream name appears inside STREAM_<NAME>_... variables."""
    return stream.upper().replace("-", "_")


class StreamOptions(TrackingOptions, ReadOptions):
    """Everything a user may set for one stream besides its name and URL (tracking, zones and
    lines: ``pipelines.events.options``)."""

    model_id: Annotated[str, AfterValidator(_model_id)] | None = Field(
        default=None, description="model for this stream (default: MODEL_ID)"
    )
    model_precision: Annotated[Literal["fp32", "int8", "auto"], _choice("fp32", "int8", "auto")] | None = Field(
        default=None, description="fp32, int8 or auto for this stream's model (default: MODEL_PRECISION)"
    )
    confidence: UnitInterval | None = Field(default=None, description="confidence threshold for this stream (0..1)")
    prompts: Annotated[tuple[str, ...], BeforeValidator(_prompts)] = Field(
        default=(),
        description="CLIP models (also CLIP as SECOND_MODEL_ID, on each box): zero-shot text prompts; Grounding "
        'DINO: the classes to find; a JSON list or separated by "|" ("a person|an empty room")',
    )
    roi: Annotated[tuple[tuple[float, float, float, float], ...], BeforeValidator(_regions)] = Field(
        default=(),
        description="OCR models: regions to read, x1,y1,x2,y2 in source pixels, several separated by ';' "
        "(or a JSON list)",
    )

    vlm_prompt: Annotated[str, AfterValidator(_vlm_prompt)] | None = Field(
        default=None,
        description="a vision-language model's prompt asked about this stream every VLM_INTERVAL seconds "
        "(answers on {prefix}/{agent}/{stream}/vlm), e.g. '<CAPTION>' for Florence-2",
    )
    vlm_interval: float = Field(
        default=30.0,
        ge=1.0,
        le=86400.0,
        allow_inf_nan=False,
        description="seconds between two VLM_PROMPT questions about this stream (at least 1; never every frame)",
    )
    vlm_model_id: Annotated[str, AfterValidator(_model_id)] | None = Field(
        default=None, description="vision-language model of VLM_PROMPT (default: VLM_MODEL_ID)"
    )
    vlm_event_prompt: Annotated[str, AfterValidator(_vlm_prompt)] | None = Field(
        default=None,
        description="a VLM prompt asked about a tracked object's best snapshot on the events in VLM_EVENTS "
        "(answers carry the event id)",
    )
    vlm_events: Annotated[tuple[str, ...], BeforeValidator(_vlm_events)] = Field(
        default=("track_end",),
        description="events that ask VLM_EVENT_PROMPT: track_end, zone_enter (a '|' list or JSON list)",
    )
    training_data: Annotated[str, AfterValidator(_model_id)] | None = Field(
        default=None,
        description="OWLv2: a JSON file of Roboflow's training_data (example boxes on reference images; "
        "image paths relative to the file)",
    )
    second_model_id: Annotated[str, AfterValidator(_model_id)] | None = Field(
        default=None,
        description="a second model run on this stream's detections (sam2/hiera_tiny: a mask per box; a "
        "classifier, OCR or CLIP: on each box's crop), published with them",
    )
    second_classes: Annotated[tuple[str, ...], BeforeValidator(_class_names)] = Field(
        default=(),
        description='SECOND_MODEL_ID: only detections of these classes, separated by "|" (default: all)',
    )
    second_padding: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="SECOND_MODEL_ID on crops: pixels added around each box before cropping (default 0)",
    )

    mask_output: Annotated[Literal["polygon", "simplified", "none"], _choice("polygon", "simplified", "none")] = Field(
        default="polygon",
        description="segmentation models: polygon, simplified or none (mask outlines in messages; none = boxes only)",
    )
    mask_tolerance: float = Field(
        default=DEFAULT_TOLERANCE_PX,
        gt=0,
        allow_inf_nan=False,
        description="MASK_OUTPUT=simplified: largest distance in pixels of the outline from the simplified "
        f"polygon (default {DEFAULT_TOLERANCE_PX:g})",
    )

    @property
    def masks(self) -> MaskOutput:
        return MaskOutput(self.mask_output, self.mask_tolerance)

    def tracking_options(self) -> TrackingOptions:
        return TrackingOptions.model_validate({k: getattr(self, k) for k in TrackingOptions.model_fields})

    @property
    def model_options(self) -> dict[str, Any]:
        """Per-image options this stream hands its model (CLIP prompts, OCR regions)."""
        options: dict[str, Any] = {}
        if self.prompts:
            options["prompts"] = list(self.prompts)
        if self.roi:
            options["regions"] = [list(r) for r in self.roi]
        if self.training_data:
            options["training_data"] = self.training_data
        return options


class StreamConfig(StreamOptions):
    """One stream: name, URL and options. Unknown keys are refused, not ignored."""

    name: Annotated[str, AfterValidator(_stream_name)]
    url: Annotated[str, AfterValidator(_url)]

    @model_validator(mode="after")
    def _precision_agrees(self) -> StreamConfig:
        suffix = split_precision(self.model_id)[1] if self.model_id else None
        if self.model_precision is not None and suffix not in (None, self.model_precision):
            raise ValueError(
                f"model_precision {self.model_precision!r} contradicts the @{suffix} of model id {self.model_id!r}"
            )
        return self

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    def source_options(self, **agent_wide: Any) -> SourceOptions:
        """The reader's options: this stream's reading options plus the agent-wide timings."""
        return SourceOptions(**self.read_options(), **agent_wide)

    def public(self) -> dict[str, Any]:
        """The stream as shown to people (``config`` output, the control API): URL redacted."""
        return self.model_dump() | {"url": self.display_url}


# STREAM_<NAME>_<KEY>: the key of every per-stream option, with its description (README table).
STREAM_KEYS: dict[str, str] = {
    name.upper(): info.description or "" for name, info in StreamOptions.model_fields.items()
}

__all__ = ["STREAM_KEYS", "STREAM_NAME_RE", "StreamConfig", "StreamOptions", "env_name"]
