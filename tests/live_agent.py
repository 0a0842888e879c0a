"""What the live view tests share: a model with known objects and colours, and small waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.http_client import get_json, request
from tests.onnx_factory import constant_detector, letterbox_env, write_model_dir

T = TypeVar("T")

# The known objects: a "widget" in the model's own colour (magenta, which no test clip contains)
# and a "gadget" the model gives no colour, so it is drawn in the default palette's colour 1.
CLASSES = ["widget", "gadget"]
COLORS = {"widget": "#ff00ff"}
WIDGET_BGR = (255, 0, 255)
GADGET_BGR = (0x40, 0x40, 0xFF)  # DEFAULT_PALETTE[1] "#FF4040"


def known_objects_model(directory: Path) -> Path:
    """A constant detector (input 320x320, stretched): every frame has the same two boxes."""
    preds = np.zeros((4 + len(CLASSES), 2), np.float32)
    preds[:, 0] = [100, 110, 90, 100, 0.9, 0.0]  # widget: cx, cy, w, h (input pixels), scores
    preds[:, 1] = [230, 220, 80, 60, 0.0, 0.8]  # gadget
    environment = letterbox_env(320, 320, fmt="Stretch to") | {"COLORS": COLORS}
    return write_model_dir(directory, constant_detector(preds), CLASSES, environment=environment)


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; AssertionError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except OSError as exc:  # the agent's port not open yet
            last = exc
        else:
            if result:
                return result
            last = result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def wait_for_picture(base: str, stream: str, headers: dict[str, str] | None = None, timeout: float = 60) -> None:
    def has_picture() -> bool:
        status, body = get_json(f"{base}/live.json", headers=headers or {}, timeout=5)
        return status == 200 and any(s["name"] == stream and s["picture"] for s in body["streams"])

    wait_for(has_picture, timeout, f"a picture of stream {stream!r}")


def scrape(base: str, headers: dict[str, str] | None = None) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``/metrics`` parsed by prometheus_client: sample name -> {sorted label items: value}."""
    status, _, body = request(f"{base}/metrics", headers=headers or {})
    assert status == 200, body[:200]
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def sample(metrics: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str) -> float:
    key = tuple(sorted(labels.items()))
    series = metrics.get(name, {})
    assert key in series, f"{name}{labels} not in /metrics; has {sorted(series)[:8]}"
    return series[key]
