"""STATE_DIR and the outage settings as a user sets them: where the outbox goes, what is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.agent.errors import ConfigError
from edge_agent.agent.settings import load_config, mqtt_config, state_dir

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith(("STREAM", "MQTT_", "STATE_DIR", "XDG_STATE_HOME")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MQTT_HOST", "broker.local")
    return monkeypatch


def test_the_outbox_lives_in_state_dir(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("STATE_DIR", str(tmp_path / "s"))
    config = load_config()
    assert mqtt_config(config).outbox_path == tmp_path / "s" / "edge-agent.db"
    assert mqtt_config(config).reconnect_max_s == 5.0 and mqtt_config(config).online_expiry_s == 60


def test_systemd_state_directory_then_the_xdg_default(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("STATE_DIRECTORY", f"{tmp_path}/sd:{tmp_path}/other")
    assert state_dir(load_config()) == tmp_path / "sd"
    env.delenv("STATE_DIRECTORY")
    env.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir(load_config()) == tmp_path / "xdg" / "edge-agent"


def test_memory_outbox_and_bounds(env: pytest.MonkeyPatch) -> None:
    env.setenv("MQTT_OUTBOX", "memory")
    env.setenv("MQTT_QUEUE_BYTES", "0")
    config = mqtt_config(load_config())
    assert config.outbox_path is None and config.queue_bytes is None


def test_reconnect_min_above_max_names_both(env: pytest.MonkeyPatch) -> None:
    env.setenv("MQTT_RECONNECT_MIN", "10")
    with pytest.raises(ConfigError, match=r"MQTT_RECONNECT_MIN=10\.0 is larger than MQTT_RECONNECT_MAX=5\.0"):
        load_config()


def test_an_unusable_state_dir_exits_2_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAM", "MQTT_", "STATE_DIR"))}
    env["STATE_DIR"] = str(blocker / "state")
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent.agent.cli", "run", "--seconds", "5"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "STATE_DIR=" in result.stderr and "writable directory" in result.stderr
