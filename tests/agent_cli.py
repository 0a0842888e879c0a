"""``edge-agent`` as a user runs it: a subprocess with a clean environment, and the checks every
bad-input test makes (exit code, one line of error that names the culprit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Variables of the agent that must not leak from the developer's shell into a test.
AGENT_PREFIXES = (
    "STREAM",
    "MQTT_",
    "MODEL_",
    "AGENT_ID",
    "STDOUT_SINK",
    "OFFLINE_MODE",
    "HEALTH_",
    "CONTROL_API",
    "ONNXRUNTIME_",
    "TENSORRT_",
    "ORT_",
    "API_",
    "ROBOFLOW_",
    "LOG_",
    "CONFIDENCE",
)


def clean_environment(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith(AGENT_PREFIXES)}
    return {**base, "PYTHONUNBUFFERED": "1", **env}


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.agent.cli", *args],
        env=clean_environment(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
    )


def error_line(stderr: str) -> str:
    """The error the CLI printed: its last stderr line, which must be the only error line."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    errors = [line for line in lines if line.startswith(("configuration error:", "error:"))]
    assert len(errors) == 1 and errors[0] == lines[-1], f"expected one error line at the end:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    return lines[-1]


def assert_refused(result: subprocess.CompletedProcess[str], *culprits: str, code: int = 2) -> str:
    """Exit ``code`` with one error line naming every one of ``culprits``; returns that line."""
    assert result.returncode == code, f"exit {result.returncode}, expected {code}:\n{result.stderr}"
    line = error_line(result.stderr)
    for culprit in culprits:
        assert culprit in line, f"{culprit!r} not named in: {line}"
    return line
