"""The unit that travels from a source to the inference stage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Frame:
    """One decoded picture of one stream.

    ``frame_id`` is 0-based per stream and counts frames handed to the stream's slot since the
    agent started; it keeps counting across reconnects, so (stream, frame_id) is unique for the
    life of the process. ``capture_time`` is the unix wall clock when the frame left the decoder
    (what consumers compare against); ``monotonic`` is the same instant on the monotonic clock
    (what latency maths inside the agent should use). ``pts`` is the stream's own timestamp in
    seconds, or ``None`` when the source gives none.
    """

    stream: str
    frame_id: int
    capture_time: float
    pts: float | None
    image: np.ndarray  # BGR uint8, HxWx3
    monotonic: float

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])
