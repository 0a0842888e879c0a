"""DocTR: detection post-processing, recognition decoding and page assembly by hand; doctr-layout
state dicts (tests/doctr_factory.py) through both of Roboflow's layouts and the infer CLI."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from edge_agent.models.foundation.doctr import (
    VOCABULARIES,
    ctc_best_path,
    det_input,
    fit_size,
    prob_to_boxes,
    rec_input,
    to_page,
)

torch = pytest.importorskip("torch")

# doctr's parameter names (torchvision ResNet/VGG naming under feat_extractor), a sample of each part
DOCTR_DET_KEYS = [
    "feat_extractor.conv1.weight",
    "feat_extractor.bn1.running_mean",
    "feat_extractor.layer1.0.conv1.weight",
    "feat_extractor.layer1.0.downsample.0.weight",
    "feat_extractor.layer4.0.bn3.weight",
    "fpn.in_branches.0.0.weight",
    "fpn.in_branches.3.1.running_var",
    "fpn.out_branches.2.0.weight",
    "prob_head.0.weight",
    "prob_head.3.weight",
    "prob_head.6.bias",
]
DOCTR_REC_KEYS = [
    "feat_extractor.0.weight",
    "feat_extractor.1.running_mean",
    "feat_extractor.40.weight",
    "decoder.weight_ih_l0",
    "decoder.weight_hh_l1_reverse",
    "linear.weight",
]


def test_key_names_are_doctrs():
    from tests.doctr_factory import crnn, dbnet

    assert set(DOCTR_DET_KEYS) <= set(dbnet(tiny=False).state_dict())
    assert set(DOCTR_REC_KEYS) <= set(crnn(tiny=False).state_dict())


def test_detection_boxes_unclip_and_mapping_by_hand():
    prob = np.zeros((100, 200), np.float32)
    prob[20:30, 40:80] = 0.9  # 40x10 region: boundingRect (40, 20, 40, 10)
    prob[60:62, 10:12] = 0.9  # 2x2 pixels: a contour span of 1 < 2, dropped
    prob[70:80, 150:160] = 0.25  # under the 0.3 threshold
    boxes, scores = prob_to_boxes(prob)
    # grow = 40 * 10 * 1.5 / (2 * 50) = 6: (40 - 6, 20 - 6) .. (80 + 6, 30 + 6), end exclusive + 1
    assert boxes.tolist() == [[34, 14, 87, 37]]
    # mean probability over rows 20..30 and columns 40..80 inclusive: 40 x 10 of 0.9 in 41 x 11
    assert scores[0] == pytest.approx(0.9 * 400 / 451, rel=1e-5)
    # a 100x200 page fits the 1024 square as 512 x 1024, padded 256 above: canvas -> page is (x, y - 256) / 5.12
    assert fit_size(100, 200, 1024) == (512, 1024) and fit_size(300, 100, 1024) == (1024, 341)
    _, mapping = det_input(np.zeros((100, 200, 3), np.uint8))
    assert mapping == (5.12, 256, 0)
    page = to_page(np.array([[512.0, 256.0, 1024.0, 512.0], [0, 0, 1024, 1024]]), mapping, 200, 100)
    assert page.tolist() == [[100.0, 0.0, 200.0, 50.0], [0.0, 0.0, 200.0, 100.0]]


def test_recognition_input_and_ctc_by_hand():
    crop = np.zeros((16, 32, 3), np.uint8)
    crop[:] = (0, 0, 255)  # red, BGR
    out = rec_input(crop)  # 16x32 -> 32x64, padded right to 128
    red = [(1 - 0.694) / 0.299, (0 - 0.695) / 0.296, (0 - 0.693) / 0.301]
    assert out.shape == (3, 32, 128)
    assert np.allclose(out[:, :, :64].reshape(3, -1).T, red, atol=1e-5)
    assert np.allclose(out[:, :, 64:].reshape(3, -1).T, [-0.694 / 0.299, -0.695 / 0.296, -0.693 / 0.301], atol=1e-5)
    vocabulary = "ab"
    logits = np.log(np.array([[[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1]]]))
    # best path a a - b b -> "ab"; confidence = the smallest best probability = 0.5
    assert ctc_best_path(logits, vocabulary) == [("ab", pytest.approx(0.5))]
    assert len(VOCABULARIES[126]) == 126 and VOCABULARIES[126][:10] == "0123456789"


def _serve_legacy(model_server, rigged: str = "A"):
    from tests.doctr_factory import crnn, dbnet, state_bytes

    model_server.add_core_model("doctr_det", "db_resnet50_v2", {"model.pt": state_bytes(dbnet())})
    model_server.add_core_model("doctr_rec", "crnn_vgg16_bn_v2", {"model.pt": state_bytes(crnn(rigged=rigged))})


def test_legacy_layout_regions_lines_and_blocks(model_server, model_env):
    from edge_agent.models import get_model

    _serve_legacy(model_server)
    model_env.set(API_BASE_URL=model_server.base_url)
    model = get_model("doctr")  # bare family = doctr/default, as Roboflow's doctr_version_id
    assert (model_env.cache_dir / "doctr_det" / "db_resnet50_v2" / "model.pt").is_file()
    page = np.full((100, 200, 3), 255, np.uint8)
    (whole,) = model.predict(page)
    assert whole.boxes.tolist() == [[0.0, 0.0, 200.0, 100.0]] and whole.texts == ("A",)
    assert whole.confidences[0] == pytest.approx(1 / (1 + math.exp(-10)), rel=1e-4)
    # three regions: two side by side on one line, one below: words read per region, in reading order
    regions = [[110, 10, 190, 40], [10, 12, 90, 38], [10, 60, 90, 90]]
    (reading,) = model.predict(page, regions=regions)
    assert reading.boxes.tolist() == [[10, 12, 90, 38], [110, 10, 190, 40], [10, 60, 90, 90]]
    assert reading.line_ids.tolist() == [0, 0, 1] and reading.result == "A A\nA"
    (body,) = model.infer(page, regions=regions)
    dumped = body.model_dump()
    kinds = [(p["class"], p["class_id"]) for p in dumped["predictions"]]
    assert kinds == [("word", 2)] * 3 + [("line", 1)] * 2 + [("block", 0)]
    line0 = dumped["predictions"][3]  # union of the first two words, int pixels, x = xmin + (xmax - xmin) // 2
    assert (line0["x"], line0["y"], line0["width"], line0["height"]) == (100, 25, 180, 30)
    assert dumped["predictions"][5]["width"] == 180 and dumped["predictions"][5]["height"] == 80
    assert dumped["result"] == "A A\nA" and dumped["time"] > 0 and dumped["parent_id"] is None
    stream = reading.to_response()  # what a stream publishes: each word's text as its class
    assert [p["class"] for p in stream["predictions"]] == ["A", "A", "A"]


def test_package_layout_offline_and_the_infer_cli(model_server, model_env, tmp_path):
    from edge_agent.models import get_model
    from tests.agent_cli import run_cli
    from tests.doctr_factory import crnn, dbnet, state_bytes
    from tests.fixtures.model_server import torch_package

    files = {
        "detection_weights.pt": state_bytes(dbnet()),
        "recognition_weights.pt": state_bytes(crnn(rigged="7")),
        "config.json": json.dumps({"det_model": "db_resnet50", "rec_model": "crnn_vgg16_bn"}).encode(),
    }
    model_server.add_package_model("doctr-dbnet-rn50/crnn-vgg16", [torch_package("d1", files)], "doctr", "ocr")
    model_env.set(API_BASE_URL=model_server.base_url)
    get_model("doctr-dbnet-rn50/crnn-vgg16")
    path = tmp_path / "page.png"
    cv2.imwrite(str(path), np.full((60, 90, 3), 200, np.uint8))
    env = {"MODEL_CACHE_DIR": str(model_env.cache_dir), "OFFLINE_MODE": "true"}
    result = run_cli("infer", "--model", "doctr-dbnet-rn50/crnn-vgg16", str(path), env=env)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["result"] == "7" and body["image"] == {"width": 90, "height": 60}
    word = body["predictions"][0]
    assert (word["class"], word["x"], word["y"], word["width"], word["height"]) == ("word", 45, 30, 90, 60)


def test_the_live_view_draws_ocr_boxes_labelled_with_their_text():
    from edge_agent.models.maths.predictions import TextDetections
    from edge_agent.pipelines.annotate import annotate

    words = TextDetections(
        np.array([[10.0, 40.0, 90.0, 80.0]]),
        np.ones(1, np.float32),
        ("HELLO",),
        np.ones(1, np.float32),
        np.zeros(1, np.int64),
        (200, 100),
    )
    out = annotate(np.zeros((100, 200, 3), np.uint8), words)
    assert out[60, 10].any() and out[60, 90].any()  # the box's left and right edges
    assert out[60:75, 20:80].sum() == 0  # nothing inside: the label tab sits above the box
    assert out[15:40, 10:90].any()  # the label tab with the text
