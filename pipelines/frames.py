"""The unit that travels from a source to the inference stage."""

from __future__ import annotations

from typing import Any

import av
import numpy as np


def scaler_options(pyav_version: str) -> dict[str, int]:
    """Extra ``to_ndarray`` arguments for the colour conversion under this PyAV version.

    PyAV 17 made FFmpeg's scaler threaded by default (``threads=0``: one per core). Every decoded
    frame gets its own scaler context, so each conversion starts and joins its own threads, and
    when the model keeps every core busy those threads wait for a core: a 0.3 ms 720p conversion
    took 2.5 ms of wall time in the reader and the built-in INT8 model starved (165 fps, 188 with
    one thread). The agent already converts in as many threads as it has streams and runs, so one
    scaler thread per conversion is the right count. Older PyAV has no such argument.
    """
    try:
        major = int(pyav_version.split(".", 1)[0])
    except ValueError:
        return {}
    return {"threads": 1} if major >= 17 else {}


_SCALER_OPTIONS = scaler_options(av.__version__)


def to_bgr(decoded: Any) -> np.ndarray:
    """BGR uint8 HxWx3 pixels of an ``av.VideoFrame`` (what Roboflow's OpenCV capture yields)."""
    return decoded.to_ndarray(format="bgr24", **_SCALER_OPTIONS)


class Frame:
    """One decoded picture of one stream.

    ``frame_id`` is 0-based per stream and counts the frames decoded since the agent started
    (a gap between two results is frames not processed: replaced in the slot by a newer one, or
    skipped by the rate cap); it keeps counting across reconnects, so (stream, frame_id) is
    unique for the life of the process (with ``DECODE=keyframes`` only keyframes are decoded, so
    consecutive ids are consecutive keyframes). ``capture_time`` is the unix wall clock when the
    frame left the decoder (what consumers compare against; a live frame that comes out late, such as the last frame of
    a stalled camera, gets the time it was really captured: see ``sources.reader.CaptureClock``);
    ``monotonic`` is the same instant on the monotonic clock (what latency maths inside the agent
    should use). ``pts`` is the stream's own timestamp in seconds, or ``None`` when the source
    gives none.

    The BGR pixels are made on first access of :attr:`image`, not in the reader thread: under
    latest-frame-wins most frames of a camera faster than the model are replaced in their slot
    before anyone looks at them, and converting those would burn CPU the model needs (on a 2-core
    box, eight 720p streams spend about a third of a core on colour conversion alone). The
    conversion then runs in the inference executor, which releases the GIL inside FFmpeg's scaler.
    """

    __slots__ = ("_decoded", "_image", "capture_time", "frame_id", "height", "monotonic", "pts", "stream", "width")

    def __init__(
        self,
        stream: str,
        frame_id: int,
        capture_time: float,
        pts: float | None,
        image: np.ndarray | None = None,
        monotonic: float = 0.0,
        *,
        decoded: Any = None,
    ) -> None:
        if image is None and decoded is None:
            raise ValueError("a Frame needs either image or decoded")
        self.stream = stream
        self.frame_id = frame_id
        self.capture_time = capture_time
        self.pts = pts
        self.monotonic = monotonic
        self._image = image
        self._decoded = decoded  # an av.VideoFrame until converted
        if image is not None:
            self.height, self.width = int(image.shape[0]), int(image.shape[1])
        else:
            self.width, self.height = int(decoded.width), int(decoded.height)

    @property
    def image(self) -> np.ndarray:
        """BGR uint8, HxWx3 (converted from the decoded picture on first access)."""
        if self._image is None:
            self._image = to_bgr(self._decoded)
            self._decoded = None  # let FFmpeg reuse the buffer
        return self._image

    @property
    def converted(self) -> bool:
        return self._image is not None

    def __repr__(self) -> str:
        return f"<Frame {self.stream}#{self.frame_id} {self.width}x{self.height} pts={self.pts}>"
