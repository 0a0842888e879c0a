"""What is installed claims no generic top-level module name (issue: a models.py in the working
directory, or another distribution's ``models`` package, must not shadow the agent's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHADOWS = ("agent", "models", "pipelines")


@pytest.fixture
def shadowing_dir(tmp_path: Path) -> Path:
    """A working directory with modules named like the repository's folders, each failing loudly."""
    for name in SHADOWS:
        (tmp_path / f"{name}.py").write_text(
            f"raise SystemExit('the {name}.py of the working directory was imported')\n"
        )
    return tmp_path


def _env() -> dict[str, str]:
    # The agent's own variables from the developer's shell must not change the answer.
    return {k: v for k, v in os.environ.items() if not k.startswith(("STREAM", "MQTT_", "MODEL_", "HEALTH_"))}


def test_cli_runs_from_a_directory_with_models_py(shadowing_dir: Path) -> None:
    for command in (
        [sys.executable, "-m", "edge_agent.agent.cli", "config"],
        [str(Path(sys.executable).parent / "edge-agent"), "config"],
    ):
        result = subprocess.run(command, cwd=shadowing_dir, env=_env(), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["agent"]["MODEL_ID"] == "builtin/shapes-v1"
        assert "working directory was imported" not in result.stderr


def test_library_imports_do_not_touch_top_level_names(shadowing_dir: Path) -> None:
    code = (
        "import sys; from edge_agent.models import get_model; m = get_model('builtin/shapes-v1'); "
        "print(m.model_type); assert not {'agent', 'models', 'pipelines'} & set(sys.modules), sorted(sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=shadowing_dir, env=_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "yolov8n"
