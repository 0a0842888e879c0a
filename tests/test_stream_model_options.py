"""STREAM_<NAME>_PROMPTS / _ROI: parsed with clear errors, refused (exit 2) for a model that takes neither."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.settings import parse_prompts, parse_roi
from tests.agent_process import AgentProcess


def test_prompts_accept_a_pipe_list_or_json():
    assert parse_prompts("STREAM_A_PROMPTS", "a person| an empty room ") == ("a person", "an empty room")
    assert parse_prompts("STREAM_A_PROMPTS", '["a, b", "c|d"]') == ("a, b", "c|d")
    for bad in ("|", '["x", 1]', "[nope", "a|a"):
        with pytest.raises(ConfigError, match="STREAM_A_PROMPTS"):
            parse_prompts("STREAM_A_PROMPTS", bad)


def test_roi_accepts_rectangles_in_pixels():
    assert parse_roi("STREAM_A_ROI", "0,0,640,120; 0,600,640,720") == ((0, 0, 640, 120), (0, 600, 640, 720))
    assert parse_roi("STREAM_A_ROI", "[10, 20, 30, 40]") == ((10, 20, 30, 40),)
    assert parse_roi("STREAM_A_ROI", "[[10, 20, 30, 40]]") == ((10, 20, 30, 40),)
    for bad in ("1,2,3", "30,0,10,10", "a,b,c,d", "", "-1,0,5,5"):
        with pytest.raises(ConfigError, match=r"STREAM_A_ROI=.*x1,y1,x2,y2"):
            parse_roi("STREAM_A_ROI", bad)


def test_prompts_for_a_detector_exit_2(tmp_path: Path, model_env):
    env = {
        "STREAMS": "door=/dev/null/none.mp4",
        "STREAM_DOOR_PROMPTS": "a person|nobody",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "STDOUT_SINK": "true",
    }
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=60)
    text = agent.stderr_path.read_text()
    assert rc == 2, text
    assert "STREAM_DOOR_PROMPTS is set but model 'builtin/shapes-v1' (object-detection) does not take it" in text
