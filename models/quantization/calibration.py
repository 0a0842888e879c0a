"""Frames to calibrate and check an INT8 copy on: from a video file, a folder of images or a live stream.

Frames are spread over the whole source (every k-th frame of a clip, evenly chosen images of a
folder, one frame every ``interval_s`` of a stream) so the activation ranges cover the scene,
not one moment of it. Every read is bounded in time. Frames are BGR ``uint8`` arrays, as the
agent hands them to a model.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from edge_agent.models.common.errors import CalibrationSourceError
from edge_agent.models.identity.ids import BUILTIN_ROOT

logger = logging.getLogger(__name__)

SAMPLE_CLIP = BUILTIN_ROOT / "sample.mp4"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "udp", "tcp")
ACCEPTED = (
    "a video file, a folder of images (jpg, png, ...), a stream URL (rtsp://, http(s)://) or a V4L2 device "
    "(/dev/videoN)"
)


class FrameSource:
    """Frames read on demand (a clip is decoded while calibration runs, not held in memory first).

    ``frames`` is a one-shot iterator; ``read`` counts what it produced and :meth:`describe` says
    what was read, for the record (never with credentials).
    """

    def __init__(self, frames: Iterator[np.ndarray], label: str, how: str) -> None:
        self._frames = frames
        self.label = label
        self.how = how
        self.read = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in self._frames:
            self.read += 1
            yield frame

    def describe(self) -> str:
        return f"{self.label} ({self.read} {self.how})"


def redact_url(url: str) -> str:
    """``rtsp://user:pass@host/x`` -> ``rtsp://***@host/x``; other text unchanged."""
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"***@{host}"))
    return url


def _is_stream(source: str) -> bool:
    scheme = urlsplit(source).scheme.lower()
    return scheme in STREAM_SCHEMES or bool(re.fullmatch(r"(v4l2://)?/dev/video\d+", source))


def open_frames(
    source: str | Path | None, count: int, *, timeout_s: float = 120.0, interval_s: float = 0.2
) -> FrameSource:
    """Up to ``count`` frames from ``source`` (None: the bundled sample clip), spread over it.

    The source is opened (and a folder listed) here, so a bad path fails before any work; frames
    are decoded as they are taken.
    """
    if count < 1:
        raise CalibrationSourceError(f"--frames must be a positive number of frames, got {count}")
    if source is None:
        return _video_frames(SAMPLE_CLIP, count, timeout_s, "the bundled sample clip")
    text = str(source).strip()
    if not text:
        raise CalibrationSourceError(f"--calibration is empty; accepted: {ACCEPTED}")
    if _is_stream(text):
        return _stream_frames(text, count, timeout_s, interval_s)
    path = Path(text).expanduser()
    if path.is_dir():
        return _folder_frames(path, count)
    if path.is_file():
        return _video_frames(path, count, timeout_s, str(path))
    raise CalibrationSourceError(f"--calibration {text!r} does not exist; accepted: {ACCEPTED}")


def _folder_frames(folder: Path, count: int) -> FrameSource:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationSourceError(
            f"--calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); accepted: {ACCEPTED}"
        )
    if len(files) > count:
        picks = np.linspace(0, len(files) - 1, count).round().astype(int)
        files = [files[i] for i in dict.fromkeys(int(i) for i in picks)]

    def frames() -> Iterator[np.ndarray]:
        import cv2

        for path in files:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                logger.warning("calibration: %s is not a readable image; skipped", path)
                continue
            yield image

    return FrameSource(frames(), str(folder), "images")


def _open(source: str, timeout_s: float) -> Any:
    import av

    options = {"rtsp_transport": "tcp"} if source.lower().startswith(("rtsp://", "rtsps://")) else {}
    fmt: str | None = None
    device = re.fullmatch(r"(?:v4l2://)?(/dev/video\d+)", source)
    if device:
        source, fmt = device.group(1), "v4l2"
    try:
        return av.open(source, format=fmt, options=options, timeout=(min(timeout_s, 10.0), 5.0))
    except Exception as exc:  # PyAV raises many types (FileNotFoundError, av.error.*)
        raise CalibrationSourceError(f"--calibration {redact_url(source)!r} cannot be opened: {exc}") from None


def _video_frames(path: Path, count: int, timeout_s: float, label: str) -> FrameSource:
    container = _open(str(path), timeout_s)
    if not container.streams.video:
        container.close()
        raise CalibrationSourceError(f"--calibration {path} has no video stream; accepted: {ACCEPTED}")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    total = stream.frames or 0
    if not total and stream.duration and stream.average_rate and stream.time_base:
        total = int(stream.duration * stream.time_base * stream.average_rate)
    step = max(1, total // count) if total else 1

    def frames() -> Iterator[np.ndarray]:
        taken = 0
        deadline = time.monotonic() + timeout_s
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % step == 0:
                    yield frame.to_ndarray(format="bgr24")
                    taken += 1
                    if taken >= count:
                        return
                if time.monotonic() > deadline:
                    logger.warning("calibration: stopped reading %s after %.0f s", label, timeout_s)
                    return
        except Exception as exc:  # a damaged file: keep what was decoded
            if not taken:
                raise CalibrationSourceError(f"--calibration {path}: decoding failed: {exc}") from None
            logger.warning("calibration: decoding %s stopped early (%s)", label, exc)
        finally:
            container.close()

    return FrameSource(frames(), label, f"frames, every {step}")


def _stream_frames(url: str, count: int, timeout_s: float, interval_s: float) -> FrameSource:
    shown = redact_url(url)
    container = _open(url, timeout_s)
    if not container.streams.video:
        container.close()
        raise CalibrationSourceError(f"--calibration {shown} has no video stream")
    stream = container.streams.video[0]

    def frames() -> Iterator[np.ndarray]:
        taken = 0
        deadline = time.monotonic() + timeout_s
        next_take = 0.0
        try:
            for frame in container.decode(stream):
                now = time.monotonic()
                if now >= next_take:
                    yield frame.to_ndarray(format="bgr24")
                    taken += 1
                    next_take = now + interval_s
                    if taken >= count:
                        return
                if now > deadline:
                    logger.warning("calibration: stopped reading %s after %.0f s", shown, timeout_s)
                    return
        except Exception as exc:
            if not taken:
                raise CalibrationSourceError(f"--calibration {shown}: reading failed: {exc}") from None
            logger.warning("calibration: %s ended early (%s); using %d frames", shown, exc, taken)
        finally:
            container.close()

    return FrameSource(frames(), shown, f"frames, one per {interval_s:g} s")
