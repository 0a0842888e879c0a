"""Where inference results become messages: processing steps, per-stream sequence numbers, metrics,
fan-out to sinks.

Typed predictions arrive from the inference stage, pass the processing steps
(``pipelines/processing.py``: where tracking and zones go), and become JSON once, in
``build_prediction_message``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.models.maths.predictions import Prediction
from edge_agent.pipelines.frames import Frame
from edge_agent.pipelines.live import LiveView
from edge_agent.pipelines.metrics import StreamMetrics
from edge_agent.pipelines.processing import ProcessingChain, ProcessingStep
from edge_agent.pipelines.sequence import SequenceStore
from edge_agent.pipelines.sinks.base import Sink
from edge_agent.pipelines.sinks.message import build_prediction_message

log = logging.getLogger("edge_agent.results")


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
        prediction = self.processing(frame.stream, result.prediction)
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
            self.live.update(frame.stream, result.model_id, frame, prediction)
        for sink in self._sinks:
            try:
                sink.publish_prediction(frame.stream, message)
            except Exception:  # one broken sink must not starve the others
                log.exception("sink %s failed to take a prediction", type(sink).__name__)

    def record_error(self, stream: str) -> None:
        self.metrics[stream].inference_errors += 1
