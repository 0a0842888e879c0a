"""Where inference results become messages: processing steps, per-stream sequence numbers, metrics,
fan-out to sinks.

Typed predictions arrive from the inference stage, pass the processing steps
(``pipelines/processing.py``: where tracking and zones go), and become JSON once, in
``build_prediction_message``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.models.maths.predictions import Prediction
from edge_agent.pipelines.frames import Frame
from edge_agent.pipelines.live import LiveView
from edge_agent.pipelines.metrics import StreamMetrics
from edge_agent.pipelines.processing import ProcessingChain, ProcessingStep
from edge_agent.pipelines.sequence import SequenceStore
from edge_agent.pipelines.sinks.base import Sink
from edge_agent.pipelines.sinks.message import build_prediction_message

log = logging.getLogger("edge_agent.results")


def events_key(stream: str) -> str:
    """The sequence counter of a stream's events (stream names cannot hold '/', so no clash)."""
    return f"{stream}/events"


@dataclass(slots=True)
class InferenceResult:
    """One frame's outcome, as the inference stage hands it over."""

    frame: Frame
    prediction: Prediction
    model_id: str
    inference_ms: float
    frame_age_ms: float
    batch_size: int
    #: set when a second model ran on this result's detections (pipelines/second_stage.py)
    second_model_id: str | None = None
    second_ms: float | None = None


class ResultRouter:
    """Numbers each stream's results and hands the message to every sink.

    Runs on the event loop; sinks must not block (the MQTT sink only enqueues).
    """

    def __init__(
        self,
        agent_id: str,
        sinks: Sequence[Sink],
        *,
        sequences: SequenceStore | None = None,
        run_id: str | None = None,
        steps: Sequence[ProcessingStep] = (),
        live: LiveView | None = None,
    ) -> None:
        # Called with (frame, prediction) after the sinks: the VLM askers pick their frames here.
        self.taps: list[Callable[[Frame, Prediction], None]] = []
        self._agent_id = agent_id
        # Keeps each stream's newest frame + prediction for the live view (a reference, no copy).
        self.live = live
        self._sinks = list(sinks)
        self.processing = ProcessingChain(steps)
        # seq continues across restarts when the store is persistent (see pipelines/sequence.py)
        self._seq = sequences if sequences is not None else SequenceStore(agent_id)
        self._run_id = run_id
        self.metrics: dict[str, StreamMetrics] = defaultdict(StreamMetrics)

    def __call__(self, result: InferenceResult) -> None:
        frame = result.frame
        prediction = self.processing(frame.stream, result.prediction, frame)
        seq = self._seq.next(frame.stream)
        latency_ms = (time.monotonic() - frame.monotonic) * 1000.0
        message = build_prediction_message(
            prediction=prediction,
            agent_id=self._agent_id,
            stream=frame.stream,
            seq=seq,
            frame_id=frame.frame_id,
            frame_time=frame.capture_time,
            model_id=result.model_id,
            inference_ms=result.inference_ms,
            frame_age_ms=result.frame_age_ms,
            latency_ms=latency_ms,
            run_id=self._run_id,
            second_model_id=result.second_model_id,
            second_ms=result.second_ms,
        )
        self.metrics[frame.stream].record(
            frame_age_ms=result.frame_age_ms, inference_ms=result.inference_ms, latency_ms=latency_ms
        )
        if self.live is not None:
            overlay = self.processing.overlay(frame.stream) if self.live.watched(frame.stream) else None
            self.live.update(frame.stream, result.model_id, frame, prediction, overlay)
        for sink in self._sinks:
            try:
                sink.publish_prediction(frame.stream, message)
            except Exception:  # one broken sink must not starve the others
                log.exception("sink %s failed to take a prediction", type(sink).__name__)
        for tap in self.taps:
            try:
                tap(frame, prediction)
            except Exception:
                log.exception("result tap %s failed", getattr(tap, "__qualname__", tap))

    # -- the tracking step's outlet (pipelines/events/step.py) -----------------------------------

    def publish_event(self, stream: str, event: dict[str, Any]) -> None:
        """Number an event on its own ``seq`` (``<stream>/events``) and hand it to every sink that
        takes events."""
        event.update(
            agent_id=self._agent_id,
            seq=self._seq.next(events_key(stream)),
            message_id=uuid.uuid4().hex,
        )
        if self._run_id is not None:
            event["run_id"] = self._run_id
        for sink in self._sinks:
            publish = getattr(sink, "publish_event", None)
            if publish is None:
                continue
            try:
                publish(stream, event)
            except Exception:
                log.exception("sink %s failed to take an event", type(sink).__name__)

    def publish_counts(self, stream: str, counts: dict[str, int]) -> None:
        self._fan_out("publish_counts", stream, counts)

    def publish_snapshot(self, stream: str, cls: str, jpeg: bytes) -> None:
        self._fan_out("publish_snapshot", stream, cls, jpeg)

    def _fan_out(self, method: str, *args: Any) -> None:
        for sink in self._sinks:
            publish = getattr(sink, method, None)
            if publish is None:
                continue
            try:
                publish(*args)
            except Exception:
                log.exception("sink %s failed in %s", type(sink).__name__, method)

    def record_error(self, stream: str) -> None:
        self.metrics[stream].inference_errors += 1
