"""End to end with a real agent: YOLO-World on file streams with text prompts
(STREAM_<NAME>_PROMPTS), published through a real mosquitto as object detection with the prompts
as classes (a stream with a CONFIDENCE above every score publishes empty frames); prompts changed
on a running stream through the control API (PATCH /streams/NAME); a stream without prompts
refused at start. The scenarios are tests/prompted_streams.py's.

The checkpoint is the factory's tiny network in Ultralytics' pickle layout, rigged so that every
box scores every prompt sigmoid(2): a stream's detections are all of its first prompt, at 0.8808.
CLIP is the tiny CLIP ViT-B-32 of tests/yolo_world_factory; everything offline.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("instant_clip_tokenizer")

from tests import prompted_streams
from tests.yolo_world_factory import write_legacy

MODEL_ID = "yolo_world/v2-s"
RIGGED = 1.0 / (1.0 + math.exp(-2.0))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("yolo-world-cache")
    write_legacy(root, "v2-s", rigged=2.0)
    return root


def test_streams_with_text_prompts_publish_their_classes(
    cache: Path, tmp_path: Path, mosquitto, mqtt_subscriber_factory
):
    prompted_streams.streams_publish_their_first_prompt(
        cache=cache,
        model_id=MODEL_ID,
        agent_id="yoloworld",
        rigged=RIGGED,
        tmp_path=tmp_path,
        mosquitto=mosquitto,
        mqtt_subscriber_factory=mqtt_subscriber_factory,
        strict_stream=True,
    )


def test_prompts_change_through_the_control_api(cache: Path, tmp_path: Path):
    prompted_streams.prompts_change_through_the_control_api(cache=cache, model_id=MODEL_ID, tmp_path=tmp_path)


def test_a_stream_without_prompts_is_refused_at_start(cache: Path, tmp_path: Path):
    prompted_streams.a_stream_without_prompts_is_refused(cache=cache, model_id=MODEL_ID, tmp_path=tmp_path)
