"""Per-stream reading options (a plain dataclass; env parsing lives in agent/settings.py)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipelines.errors import SourceConfigError
from pipelines.sources.spec import SourceSpec

Mode = Literal["live", "every"]
RtspTransport = Literal["tcp", "udp"]

_VIDEO_SIZE = re.compile(r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$")
_INPUT_FORMAT = re.compile(r"^[a-z0-9_]{2,32}$")


@dataclass
class SourceOptions:
    """How to read one stream.

    mode:           ``live`` keeps only the newest frame (cameras always; files paced at their
                    native rate); ``every`` hands every frame of a file or HTTP video to inference,
                    decoding only as fast as inference takes them.
    loop:           restart a file (or a finite HTTP/HLS video) when it ends; without it the
                    runner finishes when the file ends.
    max_fps:        skip frames above this rate before converting them (cheap); None = no cap.
    stall_timeout:  no decoded frame for this long -> the connection is dropped and retried.
    open_timeout:   seconds allowed for connecting + probing the stream.
    read_timeout:   seconds one blocking read may take (FFmpeg ``timeout`` + PyAV's interrupt).
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
    decoder_threads: 0 lets FFmpeg pick (one per core); slice threads only (frame threads add
                    latency and, when the model keeps the cores busy, cost throughput).
    thread_join_timeout: how long a stopping reader thread may take before it is abandoned.
    ffmpeg_options: extra FFmpeg options passed verbatim; they win over the computed ones.
    """

    mode: Mode = "live"
    loop: bool = False
    max_fps: float | None = None
    stall_timeout: float = 10.0
    open_timeout: float = 10.0
    read_timeout: float = 5.0
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    backoff_reset_after: float = 10.0
    rtsp_transport: RtspTransport = "tcp"
    video_size: str | None = None
    framerate: float | None = None
    input_format: str | None = None
    tls_verify: bool = False
    tls_ca_file: str | None = None
    analyze_duration: float | None = None
    decoder_threads: int = 0
    thread_join_timeout: float = 2.0
    ffmpeg_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("live", "every"):
            raise SourceConfigError(f"mode must be 'live' or 'every', got {self.mode!r}")
        if not isinstance(self.loop, bool):
            raise SourceConfigError(f"loop must be true or false, got {self.loop!r}")
        if self.max_fps is not None:
            _positive("max_fps", self.max_fps)
        for name in (
            "stall_timeout",
            "open_timeout",
            "read_timeout",
            "backoff_initial",
            "backoff_max",
            "thread_join_timeout",
        ):
            _positive(name, getattr(self, name))
        _non_negative("backoff_reset_after", self.backoff_reset_after)
        if self.backoff_max < self.backoff_initial:
            raise SourceConfigError(
                f"backoff_max ({self.backoff_max}) must be >= backoff_initial ({self.backoff_initial})"
            )
        if self.rtsp_transport not in ("tcp", "udp"):
            raise SourceConfigError(f"rtsp_transport must be 'tcp' or 'udp', got {self.rtsp_transport!r}")
        if self.video_size is not None and not _VIDEO_SIZE.match(str(self.video_size)):
            raise SourceConfigError(f"video_size must look like 1280x720, got {self.video_size!r}")
        if self.framerate is not None:
            _positive("framerate", self.framerate)
        if self.input_format is not None:
            self.input_format = str(self.input_format).strip().lower()
            if not _INPUT_FORMAT.match(self.input_format):
                raise SourceConfigError(
                    f"input_format must be an FFmpeg pixel/codec name such as mjpeg, h264 or yuyv422, "
                    f"got {self.input_format!r}"
                )
        if not isinstance(self.tls_verify, bool):
            raise SourceConfigError(f"tls_verify must be true or false, got {self.tls_verify!r}")
        if self.tls_ca_file is not None and not Path(self.tls_ca_file).is_file():
            raise SourceConfigError(f"tls_ca_file {self.tls_ca_file!r} is not a readable file (a PEM bundle)")
        if self.analyze_duration is not None:
            _positive("analyze_duration", self.analyze_duration)
        threads = self.decoder_threads
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise SourceConfigError(f"decoder_threads must be an integer >= 0, got {self.decoder_threads!r}")
        if not isinstance(self.ffmpeg_options, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.ffmpeg_options.items()
        ):
            raise SourceConfigError("ffmpeg_options must map option names to string values")

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


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        unit = "frames per second" if name in ("max_fps", "framerate") else "seconds"
        raise SourceConfigError(f"{name} must be a positive number of {unit}, got {value!r}")


def _non_negative(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SourceConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")
