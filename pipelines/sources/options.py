"""How to read one stream: the per-stream options a user sets, and the reader's full option set.

:class:`ReadOptions` holds the reading options a user may set per stream (as
``STREAM_<NAME>_<KEY>`` or in a control API body); ``pipelines.stream_config.StreamConfig``
extends it with the stream's name, URL and model. :class:`SourceOptions` extends it with the
agent-wide timings and internal knobs the reader needs. Every field is declared and validated
once, here: the environment, the control API and the reader accept exactly the same values.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from edge_agent.pipelines.errors import SourceConfigError
from edge_agent.pipelines.sources.spec import SourceSpec

Mode = Literal["live", "every"]
Decode = Literal["all", "keyframes", "auto"]
RtspTransport = Literal["tcp", "udp"]

_VIDEO_SIZE = re.compile(r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$")
_INPUT_FORMAT = re.compile(r"^[a-z0-9_]{2,32}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


# -- field types: each validator exists once and is shared by every model that has the field ------


def _choice(*allowed: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        text = value.strip().lower() if isinstance(value, str) else value
        if text not in allowed:
            raise ValueError(f"must be {' or '.join(repr(a) for a in allowed)}, got {value!r}")
        return text

    return BeforeValidator(check)


def parse_bool(value: Any) -> bool:
    """true/false, 1/0, yes/no, on/off (any case), or a JSON boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"must be true or false (also 1/0, yes/no, on/off), got {value!r}")


def _number(what: str, *, positive: bool) -> BeforeValidator:
    def check(value: Any) -> float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        bound = "a positive number" if positive else "a number >= 0"
        if number is None or not math.isfinite(number) or (number <= 0 if positive else number < 0):
            raise ValueError(f"must be {bound} of {what}, got {value!r}")
        return number

    return BeforeValidator(check)


def _video_size(value: str) -> str:
    text = value.strip().lower()
    if not _VIDEO_SIZE.match(text):
        raise ValueError(f"must look like 1280x720 (WIDTHxHEIGHT, positive whole numbers), got {value!r}")
    return text


def _input_format(value: str) -> str:
    text = value.strip().lower()
    if not _INPUT_FORMAT.match(text):
        raise ValueError(f"must be an FFmpeg pixel/codec name such as mjpeg, h264 or yuyv422, got {value!r}")
    return text


def _readable_file(value: str) -> str:
    if not value.strip() or not Path(value).is_file():
        raise ValueError(f"{value!r} is not a readable file (a PEM bundle)")
    return value


def _whole_number(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"must be an integer >= 0, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"must be an integer >= 0, got {value!r}") from None
    if number < 0:
        raise ValueError(f"must be an integer >= 0, got {value!r}")
    return number


Bool = Annotated[bool, BeforeValidator(parse_bool)]
Fps = Annotated[float, _number("frames per second", positive=True)]
Seconds = Annotated[float, _number("seconds", positive=True)]
SecondsOrZero = Annotated[float, _number("seconds", positive=False)]
VideoSize = Annotated[str, AfterValidator(_video_size)]
InputFormat = Annotated[str, AfterValidator(_input_format)]
CaFile = Annotated[str, AfterValidator(_readable_file)]


def describe_errors(exc: ValidationError) -> str:
    """``field must be ...; other must be ...``: one clause per bad field."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{field} {message}" if field else message)
    return "; ".join(parts)


class ReadOptions(BaseModel):
    """The reading options a user may set for one stream (``STREAM_<NAME>_<KEY>``, control API)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    mode: Annotated[Mode, _choice("live", "every")] = Field(
        default="live", description="live / every (every: files only, every frame processed)"
    )
    max_fps: Fps | None = Field(
        default=None, description="cap on frames per second taken from the stream (positive number)"
    )
    decode: Annotated[Decode, _choice("all", "keyframes", "auto")] = Field(
        default="all",
        description="all / keyframes / auto: decode every frame, only keyframes (a frame per keyframe "
        "interval, far less CPU), or keyframes when MAX_FPS is at or below the measured keyframe rate",
    )
    loop: Bool = Field(default=False, description="files: start again at the end (true/false)")
    rtsp_transport: Annotated[RtspTransport, _choice("tcp", "udp")] = Field(default="tcp", description="tcp / udp")
    video_size: VideoSize | None = Field(default=None, description="V4L2: WIDTHxHEIGHT, e.g. 1280x720")
    framerate: Fps | None = Field(default=None, description="V4L2: frames per second asked of the camera")
    input_format: InputFormat | None = Field(
        default=None, description="V4L2: pixel format asked of the camera, e.g. mjpeg, yuyv422"
    )
    tls_verify: Bool = Field(
        default=False,
        description="rtsps/https: check the server certificate (true/false; off by default: cameras are self-signed)",
    )
    tls_ca_file: CaFile | None = Field(
        default=None, description="rtsps/https: PEM file of trusted certificates for TLS_VERIFY"
    )

    def read_options(self) -> dict[str, Any]:
        """The :class:`ReadOptions` fields of this object, to build a :class:`SourceOptions`."""
        return {name: getattr(self, name) for name in ReadOptions.model_fields}

    def validate_for(self, spec: SourceSpec) -> None:
        """Raise :class:`SourceConfigError` when these options cannot apply to ``spec``."""
        where = f"stream {spec.display!r}"
        if spec.is_camera and self.mode == "every":
            raise SourceConfigError(
                f"{where}: mode 'every' is for files and HTTP videos; a camera cannot wait for inference, "
                "so cameras always run 'live'"
            )
        if spec.is_camera and self.loop:
            raise SourceConfigError(f"{where}: loop applies to files and HTTP videos, not to cameras")
        if (self.tls_verify or self.tls_ca_file) and not spec.is_tls:
            raise SourceConfigError(f"{where}: tls_verify/tls_ca_file apply to rtsps:// and https:// sources only")
        if spec.kind != "v4l2":
            for name in ("video_size", "framerate", "input_format"):
                if getattr(self, name) is not None:
                    raise SourceConfigError(f"{where}: {name} applies to V4L2 cameras (/dev/videoN) only")


class SourceOptions(ReadOptions):
    """Everything the reader and runner of one stream need.

    mode:           ``live`` keeps only the newest frame (cameras always; files paced at their
                    native rate); ``every`` hands every frame of a file or HTTP video to inference,
                    decoding only as fast as inference takes them.
    loop:           restart a file (or a finite HTTP/HLS video) when it ends; without it the
                    runner finishes when the file ends.
    max_fps:        skip frames above this rate before converting them (cheap); None = no cap.
    stall_timeout:  no decoded frame for this long -> the connection is dropped and retried.
    open_timeout:   seconds allowed for connecting + probing the stream.
    read_timeout:   seconds one blocking read may take (FFmpeg ``timeout``; also PyAV's interrupt but for RTSP).
    backoff_*:      reconnect delays: initial, cap, and how long a connection must deliver
                    frames to count as healthy and reset the delay to ``backoff_initial``.
    rtsp_transport: ``tcp`` (default: no packet loss, works through NAT) or ``udp``.
    video_size, framerate, input_format: V4L2 capture settings, e.g. "1280x720", 30, "mjpeg".
    tls_verify:     check the server certificate of rtsps:// and https:// sources. Off by default
                    because most cameras present self-signed certificates; turn it on with
                    ``tls_ca_file`` (the camera's or your CA's PEM) wherever you can.
    tls_ca_file:    PEM file of trusted certificates for ``tls_verify``.
    analyze_duration: seconds FFmpeg may spend probing a live stream before the first frame
                    (None = 1 s for live sources, FFmpeg's default for files). Lower connects
                    faster; too low may miss stream parameters on odd cameras.
    decode:         ``all`` / ``keyframes`` / ``auto``, see ``sources.decoding``.
    keyframe_wait:  in ``keyframes`` mode, seconds without a keyframe (while packets still come)
                    before falling back to ``all`` for the connection (intra-refresh cameras
                    never send one).
    decoder_threads: 0 shares the cores out between the streams (``sources.decoding.
                    decoder_thread_budget``); slice threads only (frame threads add latency and,
                    when the model keeps the cores busy, cost throughput).
    thread_join_timeout: how long a stopping reader thread may take before it is abandoned.
    file_attempts:  a file that cannot be opened or yields no frame is tried this many times,
                    then the stream is ``failed`` for good (a file does not heal like a camera).
    ffmpeg_options: extra FFmpeg options passed verbatim; they win over the computed ones.

    Bad values raise :class:`SourceConfigError` naming the field.
    """

    stall_timeout: Seconds = 10.0
    open_timeout: Seconds = 10.0
    read_timeout: Seconds = 5.0
    backoff_initial: Seconds = 1.0
    backoff_max: Seconds = 30.0
    backoff_reset_after: SecondsOrZero = 10.0
    analyze_duration: Seconds | None = None
    decoder_threads: Annotated[int, BeforeValidator(_whole_number)] = 0
    keyframe_wait: Seconds = 30.0
    thread_join_timeout: Seconds = 2.0
    file_attempts: Annotated[int, Field(ge=1)] = 3
    ffmpeg_options: dict[str, str] = Field(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SourceConfigError(describe_errors(exc)) from None

    @model_validator(mode="after")
    def _backoff_order(self) -> SourceOptions:
        if self.backoff_max < self.backoff_initial:
            raise ValueError(f"backoff_max ({self.backoff_max}) must be >= backoff_initial ({self.backoff_initial})")
        return self


__all__ = [
    "Bool",
    "Decode",
    "Fps",
    "Mode",
    "ReadOptions",
    "RtspTransport",
    "Seconds",
    "SourceOptions",
    "describe_errors",
    "parse_bool",
]
