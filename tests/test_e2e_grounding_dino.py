"""End to end with a real agent: Grounding DINO on file streams with text prompts
(STREAM_<NAME>_PROMPTS), published through a real mosquitto as object detection with the prompts
as classes; prompts changed on a running stream through the control API (PATCH /streams/NAME);
a stream without prompts refused at start. The scenarios are tests/prompted_streams.py's.

The checkpoint is the tiny rigged network of tests/gdino_factory in Roboflow's legacy layout, BERT
in the hub cache layout, offline: every query scores every caption token sigmoid(2), so a stream's
detections are all of its first prompt, at confidence 0.8808.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

from tests import prompted_streams
from tests.gdino_factory import RIGGED_LOGIT, rigged, tiny_grounding_dino, write_legacy

MODEL_ID = "grounding_dino/groundingdino_swint_ogc"
RIGGED = 1.0 / (1.0 + math.exp(-RIGGED_LOGIT))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gdino-cache")
    write_legacy(root, rigged(tiny_grounding_dino(seed=1)))
    return root


def test_streams_with_text_prompts_publish_their_classes(
    cache: Path, tmp_path: Path, mosquitto, mqtt_subscriber_factory
):
    prompted_streams.streams_publish_their_first_prompt(
        cache=cache,
        model_id=MODEL_ID,
        agent_id="gdino",
        rigged=RIGGED,
        tmp_path=tmp_path,
        mosquitto=mosquitto,
        mqtt_subscriber_factory=mqtt_subscriber_factory,
        tolerance=1e-5,
    )


def test_prompts_change_through_the_control_api(cache: Path, tmp_path: Path):
    prompted_streams.prompts_change_through_the_control_api(cache=cache, model_id=MODEL_ID, tmp_path=tmp_path)


def test_a_stream_without_prompts_is_refused_at_start(cache: Path, tmp_path: Path):
    prompted_streams.a_stream_without_prompts_is_refused(cache=cache, model_id=MODEL_ID, tmp_path=tmp_path)
