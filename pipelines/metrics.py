"""Rolling per-stream measurements: processed fps, frame age, inference time and latency.

The rolling windows feed the stats topic (p50/p95/max); the cumulative bucket counts feed the
Prometheus histograms of ``/metrics`` (a scraper computes its own quantiles over any window).
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

# Enough samples for a stable p95 at camera rates, small enough that summarising is cheap.
WINDOW_SAMPLES = 512
FPS_WINDOW_S = 5.0
# Histogram upper bounds in seconds, shared by inference time, end-to-end latency and frame age:
# an edge model takes from ~5 ms (GPU) to ~1 s (large input on a CPU); past 10 s something is stuck.
LATENCY_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def summarize(values: deque[float] | list[float]) -> dict[str, float] | None:
    """p50/p95/max of a sample window, ``None`` when there is nothing to summarise."""
    if not values:
        return None
    arr = np.fromiter(values, dtype=np.float64, count=len(values))
    p50, p95 = np.percentile(arr, [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "max": round(float(arr.max()), 3)}


@dataclass
class RateMeter:
    """Events per second over the last ``window_s`` seconds (or since creation, if shorter)."""

    window_s: float = FPS_WINDOW_S
    _created: float = field(default_factory=time.monotonic)
    _stamps: deque[float] = field(default_factory=lambda: deque(maxlen=4096))

    def mark(self, now: float | None = None) -> None:
        self._stamps.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        horizon = now - self.window_s
        while self._stamps and self._stamps[0] < horizon:
            self._stamps.popleft()
        elapsed = min(self.window_s, max(now - self._created, 1e-3))
        return round(len(self._stamps) / elapsed, 3)


@dataclass
class BucketCounts:
    """A cumulative histogram: observations per upper bound (``le``), their sum and count."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS_S
    counts: list[int] = field(default_factory=list)  # per bucket, the last one is +Inf
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(self.bounds):
            raise ValueError(f"bucket bounds must be increasing: {self.bounds}")
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        if math.isnan(value):
            return
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """[(le, observations <= le), ..., ("+Inf", count)] as Prometheus exposes them."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == math.inf else repr(float(bound)), running))
        return out


@dataclass
class StreamMetrics:
    """What the stats topic reports for one stream on the inference side."""

    processed: int = 0
    inference_errors: int = 0
    processed_rate: RateMeter = field(default_factory=RateMeter)
    frame_age_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW_SAMPLES))
    inference_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW_SAMPLES))
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW_SAMPLES))
    frame_age_s_buckets: BucketCounts = field(default_factory=BucketCounts)
    inference_s_buckets: BucketCounts = field(default_factory=BucketCounts)
    latency_s_buckets: BucketCounts = field(default_factory=BucketCounts)

    def record(self, *, frame_age_ms: float, inference_ms: float, latency_ms: float) -> None:
        self.processed += 1
        self.processed_rate.mark()
        self.frame_age_ms.append(frame_age_ms)
        self.inference_ms.append(inference_ms)
        self.latency_ms.append(latency_ms)
        self.frame_age_s_buckets.observe(frame_age_ms / 1000.0)
        self.inference_s_buckets.observe(inference_ms / 1000.0)
        self.latency_s_buckets.observe(latency_ms / 1000.0)

    def snapshot(self) -> dict[str, object]:
        return {
            "processed": self.processed,
            "fps_processed": self.processed_rate.rate(),
            "inference_errors": self.inference_errors,
            "frame_age_ms": summarize(self.frame_age_ms),
            "inference_ms": summarize(self.inference_ms),
            "latency_ms": summarize(self.latency_ms),
        }
