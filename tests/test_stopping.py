"""Stopping is prompt in every phase (issue 11, items 3 and 8).

SIGTERM and Ctrl-C while a model downloads end the agent at once with status 0 (under systemd a
stop that takes longer than TimeoutStopSec ends in SIGKILL); a huge ORT_INTRA_OP_THREADS is
refused; ``edge-agent run | head -3`` ends when head does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agent_cli import ROOT, assert_refused, clean_environment, run_cli

BUILTIN_WEIGHTS = ROOT / "models" / "builtin" / "shapes-v1" / "weights.onnx"
WEIGHTS_PATH = "/artifacts/someproj/1/weights.onnx"

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_model_download_stops_the_agent_at_once(tmp_path: Path, model_server, sig: int) -> None:  # type: ignore[no-untyped-def]
    model_server.add_model("someproj", "1", BUILTIN_WEIGHTS.read_bytes(), classes=["circle", "square", "triangle"])
    model_server.stall(WEIGHTS_PATH, mode="slow", delay_s=0.05)  # a byte every 50 ms: alive, never done
    env = clean_environment(
        MODEL_ID="someproj/1",
        API_BASE_URL=model_server.base_url,
        MODEL_CACHE_DIR=str(tmp_path / "cache"),
        LOG_LEVEL="DEBUG",
    )
    stderr_path = tmp_path / "stderr.log"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.agent.cli", "run"],
            env=env,
            cwd=str(ROOT),
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 60
            while model_server.count(WEIGHTS_PATH) == 0 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            assert model_server.count(WEIGHTS_PATH) == 1, stderr_path.read_text()
            time.sleep(0.5)  # well inside the download
            sent = time.monotonic()
            proc.send_signal(sig)
            rc = proc.wait(timeout=30)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    log = stderr_path.read_text()
    assert rc == 0, log
    assert took < 3.0, f"{took:.1f} s from the signal to the exit\n{log}"
    assert "Traceback" not in log
    assert proc.stdout is not None and proc.stdout.read() == b""  # no stream ever started


def test_a_huge_intra_op_thread_count_is_refused(tmp_path: Path) -> None:
    env = {"ORT_INTRA_OP_THREADS": "1000000", "MODEL_CACHE_DIR": str(tmp_path)}
    line = assert_refused(run_cli("config", env=env), "ORT_INTRA_OP_THREADS='1000000'", "at most")
    started = time.monotonic()
    assert assert_refused(run_cli("run", env=env)) == line
    assert time.monotonic() - started < 20


def test_run_piped_into_head_ends_with_head(tmp_path: Path) -> None:
    env = clean_environment(MODEL_CACHE_DIR=str(tmp_path / "cache"))
    command = f'{sys.executable} -m agent.cli run | head -3; echo "agent=${{PIPESTATUS[0]}}" >&2'
    started = time.monotonic()
    # its own process group: if the agent does not end, the whole pipeline is killed, not orphaned
    shell = subprocess.Popen(
        ["bash", "-c", command],
        env=env,
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = shell.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
    assert time.monotonic() - started < 60
    assert len(stdout.splitlines()) == 3
    assert stderr.strip().endswith("agent=0"), stderr
    assert "BrokenPipeError" not in stderr and "Traceback" not in stderr
