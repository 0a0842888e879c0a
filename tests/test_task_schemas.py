"""The per-task message schemas share the envelope of prediction.schema.json, field for field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SCHEMAS = Path(__file__).resolve().parent.parent / "pipelines" / "schemas"
TASK_FIELDS = {"predictions", "top", "confidence", "predicted_classes"}


def _load(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


@pytest.mark.parametrize(
    "task", ["instance-segmentation", "keypoint-detection", "classification", "multi-label-classification"]
)
def test_task_schema_envelope_matches_the_detection_schema(task: str) -> None:
    base, schema = _load("prediction"), _load(task)
    envelope = {k: v for k, v in base["properties"].items() if k not in TASK_FIELDS}
    assert {k: v for k, v in schema["properties"].items() if k not in TASK_FIELDS} == envelope
    assert set(schema["required"]) - TASK_FIELDS == set(base["required"]) - TASK_FIELDS
