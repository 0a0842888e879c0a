"""Run ``edge-agent run`` as a real subprocess for end-to-end tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Variables of the agent that must not leak from the developer's shell into a test.
_CONFIG_PREFIXES = (
    "STREAM",
    "MQTT_",
    "MODEL_ID",
    "AGENT_ID",
    "STDOUT_SINK",
    "OFFLINE_MODE",
    "MODEL_CACHE_DIR",
    "STATE_DIR",
    "XDG_STATE_HOME",
    "MODEL_PRECISION",
)


class AgentProcess:
    """``python -m agent.cli run`` with a given environment; stdout JSON lines are collected.

    The agent's state (outbox, seq numbers) goes to ``workdir/state`` unless ``env`` names a
    STATE_DIR: pass the same one to a second process to restart "the same" agent.
    """

    def __init__(self, env: dict[str, str], workdir: Path, args: tuple[str, ...] = ()) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(_CONFIG_PREFIXES)}
        self.env = {**base, "PYTHONUNBUFFERED": "1", "STATE_DIR": str(workdir / "state"), **env}
        self.started = time.monotonic()
        self.workdir = workdir
        self.stderr_path = workdir / "agent.stderr.log"
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.agent.cli", "run", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                payload = json.loads(raw)
            except ValueError:
                continue
            with self._lock:
                self.lines.append((time.time(), payload))

    def predictions(self) -> list[dict[str, Any]]:
        with self._lock:
            return [p for _, p in self.lines if "predictions" in p]

    def wait_for(self, predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.predictions()):
                return True
            if self.proc.poll() is not None:
                return bool(predicate(self.predictions()))
            time.sleep(0.05)
        return False

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise
        finally:
            self._reader.join(5)
            self._stderr.close()
        return rc

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if not self._stderr.closed:
            self._stderr.close()
