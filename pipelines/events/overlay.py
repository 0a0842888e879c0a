"""What the live view draws for a tracked stream besides the boxes: zones, lines, trails, speeds.

A frozen copy taken on the event loop when the frame is kept for a viewer, drawn later in the
live view's thread (``pipelines/annotate.draw_overlay``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Overlay:
    zones: tuple[tuple[str, np.ndarray, int], ...] = ()  # name, polygon (pixels), objects in it now
    lines: tuple[tuple[str, np.ndarray, np.ndarray, int, int], ...] = ()  # name, a, b, in, out so far
    trails: tuple[tuple[int, np.ndarray], ...] = ()  # tracker id, (K, 2) recent anchor points
    speeds: dict[int, str] = field(default_factory=dict)  # tracker id -> "42 km/h"


__all__ = ["Overlay"]
