"""PP-OCR (``pp_ocr``) with real PP-OCRv4 weights served as Roboflow's pp-ocrv6 packages: rendered text is read."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.models import get_model
from edge_agent.models.artifacts.packages.layout import slug
from edge_agent.models.common.errors import InvalidModelIdError, ModelNotCachedError
from edge_agent.models.foundation.ocr_steps import ctc_decode, reading_order
from edge_agent.models.maths.predictions import TextDetections
from tests.fixtures.model_server import onnx_package
from tests.ocr_factory import det_files, rec_files, text_frame

ROOT = Path(__file__).resolve().parent.parent
LINES = [("TRUCK 2024", (40, 150), 2.0), ("edge agent ocr", (40, 320), 1.6)]


@pytest.fixture(scope="module")
def packages() -> tuple[dict[str, bytes], dict[str, bytes]]:
    return det_files(), rec_files()


@pytest.fixture
def ocr_server(model_server, model_env, packages):
    det, rec = packages
    model_server.add_package_model(
        "pp-ocrv6-det/small", [onnx_package("det1", det)], "pp-ocrv6-det", "object-detection"
    )
    model_server.add_package_model("pp-ocrv6-rec/small", [onnx_package("rec1", rec)], "pp-ocrv6-rec", "text-only-ocr")
    model_env.set(API_BASE_URL=model_server.base_url)
    return model_server


def test_rendered_text_is_read(ocr_server, model_env):
    model = get_model("pp_ocr")  # bare pp_ocr is small-small, as in Roboflow
    assert model.model_id == "pp_ocr/small-small"
    for name in ("pp-ocrv6-det/small", "pp-ocrv6-rec/small"):
        assert (model_env.cache_dir / "models-cache" / slug(name)).is_dir()
    frame = text_frame(LINES)
    (prediction,) = model.predict(frame)
    assert isinstance(prediction, TextDetections)
    assert prediction.texts == ("TRUCK 2024", "edge agent ocr")
    assert prediction.result == "TRUCK 2024\nedge agent ocr"
    assert (prediction.confidences >= 0.6).all() and (prediction.text_confidences > 0.8).all()
    first, second = prediction.boxes
    assert 30 <= first[0] < 60 and 95 <= first[1] < 120 and 360 < first[2] < 420 and 150 <= first[3] < 175
    assert 280 < second[1] < 300 < 320 < second[3] < 345
    (response,) = model.infer(frame)
    body = response.model_dump()
    assert body["result"] == "TRUCK 2024\nedge agent ocr" and body["image"] == {"width": 640, "height": 480}
    assert [p["class"] for p in body["predictions"]] == ["TRUCK 2024", "edge agent ocr"]
    assert {p["class_id"] for p in body["predictions"]} == {0}


def test_regions_read_only_inside_them_and_offline(ocr_server, model_env):
    model = get_model("pp_ocr/small")
    frame = text_frame(LINES)
    (lower,) = model.predict(frame, regions=[[0, 220, 640, 480]])
    assert lower.result == "edge agent ocr" and lower.boxes[0, 1] > 220
    (both,) = model.predict([frame], image_options=[{"regions": [[0, 240, 640, 480], [0, 0, 640, 240]]}])
    assert both.result == "TRUCK 2024\nedge agent ocr"  # reading order across regions
    served = len(ocr_server.requests)
    model_env.set(OFFLINE_MODE="true", API_BASE_URL="http://127.0.0.1:9")
    (again,) = get_model("pp_ocr/small-small").predict(frame)
    assert again.result == "TRUCK 2024\nedge agent ocr" and len(ocr_server.requests) == served
    with pytest.raises(ModelNotCachedError):
        get_model("pp_ocr/medium")


def test_a_stage_can_be_switched_off(ocr_server):
    (boxes_only,) = get_model("pp_ocr/small-none").predict(text_frame(LINES))
    assert len(boxes_only) == 2 and boxes_only.texts == ("", "")
    line = text_frame([("ROBOFLOW 7", (10, 40), 1.2)], size=(260, 56))
    (whole,) = get_model("pp_ocr/none-small").predict(line)
    assert whole.result == "ROBOFLOW 7"
    with pytest.raises(InvalidModelIdError, match="not both none"):
        get_model("pp_ocr/none-none")


def test_ctc_and_reading_order_units():
    probs = np.zeros((1, 6, 5), np.float32)
    for t, index in enumerate([1, 1, 0, 2, 4, 3]):  # a, a, blank, b, space, c
        probs[0, t, index] = 0.9
    assert ctc_decode(probs, ("a", "b", "c")) == [("ab c", pytest.approx(0.9))]
    quads = np.array(
        [
            [[300, 12], [400, 12], [400, 40], [300, 40]],
            [[10, 10], [100, 10], [100, 38], [10, 38]],
            [[10, 60], [90, 60], [90, 90], [10, 90]],
        ],
        np.float32,
    )
    order, lines = reading_order(quads)
    assert order.tolist() == [1, 0, 2] and lines.tolist() == [0, 0, 1]


def test_missing_yaml_names_the_extra(model_env):
    if importlib.util.find_spec("yaml") is None:
        pytest.skip("PyYAML missing here anyway")
    code = "import sys; sys.modules['yaml'] = None; from models import get_model; get_model('pp_ocr')"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "pip install 'edge-agent[ocr]'" in result.stderr
