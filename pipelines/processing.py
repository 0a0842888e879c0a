"""Processing steps between inference and the sinks: typed predictions in, typed predictions out.

This is where per-stream work on results goes that is neither the model's nor a sink's: object
tracking (track ids on :class:`~models.predictions.Detections`), zones and line counters, class
filters. Steps run on the event loop in order, so each must be cheap (vectorised numpy on a
handful of boxes); heavy work belongs in the model's executor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from edge_agent.models.maths.predictions import Prediction
from edge_agent.pipelines.frames import Frame

log = logging.getLogger("edge_agent.processing")


class ProcessingStep(Protocol):
    """One step; it may keep per-stream state (a tracker per stream, say)."""

    name: str

    def __call__(self, stream: str, prediction: Prediction, frame: Frame | None = None) -> Prediction:
        """``frame``: the picture the prediction is of (its times, its pixels for snapshots)."""

    def forget(self, stream: str) -> None:
        """Drop the state of a stream that was removed."""


class ProcessingChain:
    """The steps of the agent, applied in order. A step that raises is skipped for that result
    (logged once per step), so a bug in one step never stops predictions from being published."""

    def __init__(self, steps: Sequence[ProcessingStep] = ()) -> None:
        self.steps = list(steps)
        self._failed: set[str] = set()

    def __call__(self, stream: str, prediction: Prediction, frame: Frame | None = None) -> Prediction:
        for step in self.steps:
            try:
                prediction = step(stream, prediction, frame)
            except Exception:
                if step.name not in self._failed:
                    self._failed.add(step.name)
                    log.exception("processing step %s failed; its output is skipped", step.name)
        return prediction

    def forget(self, stream: str) -> None:
        for step in self.steps:
            step.forget(stream)

    def overlay(self, stream: str) -> Any:
        """What the steps would draw on the live view for ``stream`` now (zones, trails), or None."""
        for step in self.steps:
            make = getattr(step, "overlay", None)
            if make is not None:
                drawn = make(stream)
                if drawn is not None:
                    return drawn
        return None
