"""The prediction message: a Roboflow response plus what a consumer needs to order and de-duplicate.

The shape is documented by ``pipelines/schemas/prediction.schema.json``; keep both in step.
"""

from __future__ import annotations

import uuid
from typing import Any

from edge_agent.models.maths.predictions import Prediction


def build_prediction_message(
    *,
    prediction: Prediction,
    agent_id: str,
    stream: str,
    seq: int,
    frame_id: int,
    frame_time: float,
    model_id: str,
    inference_ms: float,
    frame_age_ms: float,
    latency_ms: float,
    run_id: str | None = None,
    second_model_id: str | None = None,
    second_ms: float | None = None,
) -> dict[str, Any]:
    """The prediction as Roboflow's JSON response, with the envelope fields added.

    The response keys stay at the top level so ``supervision.Detections.from_inference`` and other
    Roboflow consumers read the message unchanged.
    """
    message = prediction.to_response()
    message.update(
        agent_id=agent_id,
        stream=stream,
        seq=seq,
        frame_id=frame_id,
        frame_time=frame_time,
        model_id=model_id,
        inference_ms=round(inference_ms, 3),
        frame_age_ms=round(frame_age_ms, 3),
        latency_ms=round(latency_ms, 3),
        message_id=uuid.uuid4().hex,
    )
    if run_id is not None:
        message["run_id"] = run_id  # new per process start: tells two runs' frame_ids apart
    if second_model_id is not None:  # a second model ran on model_id's detections
        message["second_model_id"] = second_model_id
        message["second_model_ms"] = round(second_ms or 0.0, 3)
    return message
