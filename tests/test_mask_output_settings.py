"""STREAM_<NAME>_MASK_OUTPUT / _MASK_TOLERANCE: the per-stream choice of what masks become."""

from __future__ import annotations

import os

import pytest

from edge_agent.agent.settings import load_config
from edge_agent.models.maths.polygons import MaskOutput
from tests.test_agent_config import run_cli


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith(("STREAM", "MQTT_", "MODEL_ID")):
            monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_mask_output_per_stream(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STREAMS", "a=rtsp://x/1;b=rtsp://x/2;c=rtsp://x/3")
    clean_env.setenv("STREAM_B_MASK_OUTPUT", "Simplified")
    clean_env.setenv("STREAM_B_MASK_TOLERANCE", "3.5")
    clean_env.setenv("STREAM_C_MASK_OUTPUT", "none")
    a, b, c = load_config().streams
    assert a.masks == MaskOutput("polygon", 2.0)  # the default: Roboflow's full polygon
    assert b.masks == MaskOutput("simplified", 3.5)
    assert c.masks.mode == "none"


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        (
            {"STREAM_A_MASK_OUTPUT": "rle"},
            ["STREAM_A_MASK_OUTPUT='rle'", "must be 'polygon' or 'simplified' or 'none'"],
        ),
        ({"STREAM_A_MASK_TOLERANCE": "0"}, ["STREAM_A_MASK_TOLERANCE='0'", "greater than 0"]),
    ],
)
def test_bad_mask_output_exits_2_naming_the_variable(env: dict[str, str], needles: list[str]) -> None:
    result = run_cli("config", env={"STREAMS": "a=rtsp://x", **env})
    assert result.returncode == 2, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
