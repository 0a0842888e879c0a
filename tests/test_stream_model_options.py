"""STREAM_<NAME>_PROMPTS / _ROI: parsed with clear errors, refused (exit 2) for a model that takes neither."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.agent.errors import ConfigError
from edge_agent.agent.settings import SAMPLE_CLIP, stream_from_env
from edge_agent.pipelines.stream_config import StreamConfig
from tests.agent_process import AgentProcess


def _prompts(raw: str) -> tuple[str, ...]:
    return stream_from_env("a", "/x.mp4", {"STREAM_A_PROMPTS": raw}).prompts


def _roi(raw: str) -> tuple[tuple[float, ...], ...]:
    return stream_from_env("a", "/x.mp4", {"STREAM_A_ROI": raw}).roi


def test_prompts_accept_a_pipe_list_or_json():
    assert _prompts("a person| an empty room ") == ("a person", "an empty room")
    assert _prompts('["a, b", "c|d"]') == ("a, b", "c|d")
    for bad in ("|", '["x", 1]', "[nope", "a|a"):
        with pytest.raises(ConfigError, match="STREAM_A_PROMPTS"):
            _prompts(bad)
    # The control API's JSON body goes through the same validator.
    assert StreamConfig(name="a", url="/x.mp4", prompts=["p", "q"]).model_options == {"prompts": ["p", "q"]}


def test_roi_accepts_rectangles_in_pixels():
    assert _roi("0,0,640,120; 0,600,640,720") == ((0, 0, 640, 120), (0, 600, 640, 720))
    assert _roi("[10, 20, 30, 40]") == ((10, 20, 30, 40),)
    assert _roi("[[10, 20, 30, 40]]") == ((10, 20, 30, 40),)
    for bad in ("1,2,3", "30,0,10,10", "a,b,c,d", "-1,0,5,5"):
        with pytest.raises(ConfigError, match=r"STREAM_A_ROI=.*x1,y1,x2,y2"):
            _roi(bad)


def test_prompts_for_a_detector_exit_2(tmp_path: Path, model_env):
    env = {
        "STREAMS": f"door={SAMPLE_CLIP}",
        "STREAM_DOOR_PROMPTS": "a person|nobody",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "STDOUT_SINK": "true",
    }
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=60)
    text = agent.stderr_path.read_text()
    assert rc == 2, text
    assert "STREAM_DOOR_PROMPTS is set but model 'builtin/shapes-v1' (object-detection) does not take it" in text
