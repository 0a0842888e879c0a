"""The unit that travels from a source to the inference stage."""

from __future__ import annotations

from typing import Any

import numpy as np


class Frame:
    """One decoded picture of one stream.

    ``frame_id`` is 0-based per stream and counts frames handed to the stream's slot since the
    agent started; it keeps counting across reconnects, so (stream, frame_id) is unique for the
    life of the process. ``capture_time`` is the unix wall clock when the frame left the decoder
    (what consumers compare against; a live frame that comes out late, such as the last frame of
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
            self._image = self._decoded.to_ndarray(format="bgr24")
            self._decoded = None  # let FFmpeg reuse the buffer
        return self._image

    @property
    def converted(self) -> bool:
        return self._image is not None

    def __repr__(self) -> str:
        return f"<Frame {self.stream}#{self.frame_id} {self.width}x{self.height} pts={self.pts}>"
