"""EasyOCR: CRAFT box extraction, line grouping, recognition input and CTC confidence by hand;
EasyOCR-layout state dicts (tests/easyocr_factory.py) through both of Roboflow's layouts."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from edge_agent.models.foundation.easy_ocr import craft_boxes, craft_input, ctc_greedy, group_lines, rec_input

torch = pytest.importorskip("torch")

# EasyOCR's parameter names (CRAFT's VGG-16-BN slices and U-net; the generation-2 recogniser)
CRAFT_KEYS = [
    "basenet.slice1.0.weight",
    "basenet.slice1.1.running_var",
    "basenet.slice2.14.weight",
    "basenet.slice3.27.weight",
    "basenet.slice4.37.weight",
    "basenet.slice5.1.weight",
    "basenet.slice5.2.bias",
    "upconv1.conv.0.weight",
    "upconv4.conv.4.running_mean",
    "conv_cls.8.bias",
]
RECOGNIZER_KEYS = [
    "FeatureExtraction.ConvNet.0.weight",
    "FeatureExtraction.ConvNet.11.weight",
    "FeatureExtraction.ConvNet.12.running_mean",
    "FeatureExtraction.ConvNet.18.bias",
    "SequenceModeling.0.rnn.weight_ih_l0_reverse",
    "SequenceModeling.1.linear.weight",
    "Prediction.weight",
]


def test_key_names_are_easyocrs():
    from tests.easyocr_factory import craft, recognizer

    assert set(CRAFT_KEYS) <= set(craft(tiny=False).state_dict())
    assert set(RECOGNIZER_KEYS) <= set(recognizer(tiny=False).state_dict())


def test_craft_boxes_and_line_grouping_by_hand():
    text = np.zeros((50, 120), np.float32)
    link = np.zeros((50, 120), np.float32)
    text[10:20, 10:40] = 0.9  # a word: 30x10 region, strong enough (peak >= 0.7)
    text[30:34, 60:66] = 0.5  # peak 0.5 < 0.7: not text
    text[40:42, 100:103] = 0.9  # 6 pixels < 10: dropped
    (box,) = craft_boxes(text, link)
    # dilation: niter = int(sqrt(300 * 10 / 300) * 2) = 6, kernel 7x7 centred: 3 px on every side
    assert box.tolist() == [[7.0, 7.0], [42.0, 7.0], [42.0, 22.0], [7.0, 22.0]]
    # two words on a line (gap 10 < 0.5 * height 30) and one below: two lines, 10 % margins
    polys = [
        np.array([100, 100, 200, 100, 200, 130, 100, 130]),
        np.array([210, 102, 300, 102, 300, 132, 210, 132]),
        np.array([100, 200, 180, 200, 180, 230, 100, 230]),
    ]
    # line 1: x 100..300, y 100..132, margin int(0.1 * min(200, 32)) = 3; line 2: margin int(0.1 * min(80, 30)) = 3
    assert group_lines(polys) == [[97, 303, 97, 135], [97, 183, 197, 233]]
    assert group_lines([np.array([0, 0, 15, 0, 15, 10, 0, 10])]) == []  # 16 x 11 after margins: under 20 px
    tilted = np.array([0, 0, 100, 40, 90, 60, -10, 20])  # slope 0.4: not horizontal, not read
    assert group_lines([tilted]) == []


def test_craft_input_and_recognition_input_by_hand():
    image = np.zeros((40, 70, 3), np.uint8)
    image[:] = (0, 0, 255)
    tensor, ratio = craft_input(image)
    assert tensor.shape == (3, 64, 96) and ratio == 1.0  # padded to multiples of 32
    assert tensor[:, 0, 0] == pytest.approx([(255 - 123.675) / 58.395, -116.28 / 57.12, -103.53 / 57.375], rel=1e-4)
    assert tensor[:, 63, 95] == pytest.approx([-123.675 / 58.395, -116.28 / 57.12, -103.53 / 57.375], rel=1e-4)
    grey = np.full((64, 100), 255, np.uint8)
    grey[:, -1] = 0
    out = rec_input(grey, 128)
    assert out.shape == (1, 64, 128) and out[0, 0, 0] == 1.0
    assert np.all(out[0, :, 100:] == out[0, :, 99:100])  # padded with the last column
    logits = np.log(np.array([[[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.2, 0.6]]]))
    # path a a - b -> "ab"; confidence (0.8 * 0.8 * 0.6) ** (2 / sqrt(3))
    ((text, confidence),) = ctc_greedy(logits, "ab")
    assert text == "ab" and confidence == pytest.approx((0.8 * 0.8 * 0.6) ** (2 / math.sqrt(3)))


def _expected_confidence(steps: int) -> float:
    from tests.easyocr_factory import ENGLISH, RIG_LOGIT

    p = math.exp(RIG_LOGIT) / (math.exp(RIG_LOGIT) + len(ENGLISH))
    return p ** (steps * 2 / math.sqrt(steps))


def test_legacy_layout_regions_and_response(model_server, model_env):
    from edge_agent.models import get_model
    from tests.easyocr_factory import craft, recognizer, state_bytes

    model_server.add_core_model(
        "easy_ocr",
        "english_g2",
        {"craft_mlt_25k.pth": state_bytes(craft()), "weights.pt": state_bytes(recognizer())},
    )
    model_env.set(API_BASE_URL=model_server.base_url)
    model = get_model("easy_ocr")  # bare family: english_g2, as Roboflow's EASYOCR_VERSION_ID
    page = np.full((40, 160, 3), 200, np.uint8)
    (prediction,) = model.predict(page)
    # the whole 80x32 score map is one box -> (0, 0)..(158, 62), +6 px margins, clipped to the page
    assert prediction.boxes.tolist() == [[0.0, 0.0, 160.0, 40.0]] and prediction.texts == ("A",)
    # 160x40 -> 256x64, 63 steps of "A"
    assert prediction.confidences[0] == pytest.approx(_expected_confidence(63), rel=1e-4)
    regions = [[0, 0, 80, 40], [80, 0, 160, 40]]
    (two,) = model.predict(page, regions=regions)
    assert two.boxes.tolist() == [[0.0, 0.0, 80.0, 40.0], [80.0, 0.0, 160.0, 40.0]] and two.result == "A A"
    (body,) = model.infer(page)
    dumped = body.model_dump()
    assert dumped["result"] == "A" and dumped["image"] == {"width": 160, "height": 40}
    (row,) = dumped["predictions"]
    assert (row["class"], row["x"], row["y"], row["width"], row["height"]) == ("A", 80.0, 20.0, 160.0, 40.0)


def test_package_layout_the_infer_cli_and_unknown_languages(model_server, model_env, tmp_path):
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import UnsupportedModelTypeError
    from tests.agent_cli import run_cli
    from tests.easyocr_factory import craft, recognizer, state_bytes
    from tests.fixtures.model_server import torch_package

    config = {
        "lang_list": ["en"],
        "detector_model_file_name": "craft_mlt_25k.pth",
        "recognition_model_file_name": "english_g2.pth",
        "detect_network": "craft",
        "recognition_network": "english_g2",
    }
    files = {
        "easy-ocr-config.json": json.dumps(config).encode(),
        "craft_mlt_25k.pth": state_bytes(craft()),
        "english_g2.pth": state_bytes(recognizer(rigged="7")),
    }
    model_server.add_package_model("easy-ocr-english/craft", [torch_package("e1", files)], "easy-ocr", "ocr")
    model_env.set(API_BASE_URL=model_server.base_url)
    get_model("easy-ocr-english/craft")
    path = tmp_path / "sign.png"
    cv2.imwrite(str(path), np.full((40, 160, 3), 90, np.uint8))
    env = {"MODEL_CACHE_DIR": str(model_env.cache_dir), "OFFLINE_MODE": "true"}
    result = run_cli("infer", "--model", "easy-ocr-english/craft", str(path), env=env)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["result"] == "7" and body["predictions"][0]["confidence"] == pytest.approx(
        _expected_confidence(63), rel=1e-4
    )
    with pytest.raises(UnsupportedModelTypeError, match="generation-2 networks are english_g2, "):
        get_model("easy_ocr/thai")


def test_language_filter_by_hand():
    from edge_agent.models.foundation.easy_ocr import NETWORKS, alphabet, ignored_classes

    # probabilities (blank, a, b, c); "b" is outside the languages: zeroed, the rest renormalised
    probs = np.array([[[0.1, 0.15, 0.5, 0.25], [0.6, 0.1, 0.2, 0.1]]])
    ((text, confidence),) = ctc_greedy(np.log(probs), "abc", np.array([2]))
    # step 0: (0.1, 0.15, 0, 0.25) / 0.5 -> "c" at 0.5; step 1: (0.6, 0.1, 0, 0.1) / 0.8 -> blank
    assert text == "c" and confidence == pytest.approx(0.5 ** (2 / math.sqrt(1)))
    assert ctc_greedy(np.log(probs), "abc")[0][0] == "b"  # unfiltered
    korean = NETWORKS["korean_g2"]
    # easyocr's korean_g2: the 95 printable ASCII characters, then 913 Hangul syllables
    assert len(korean.characters) == 1008 and korean.characters[:95] == "".join(map(chr, range(32, 127)))
    assert korean.languages == ("en", "ko") and len(NETWORKS["zh_sim_g2"].characters) == 6718
    assert ignored_classes(korean, ["en"]).tolist() == list(range(96, 1009))  # every syllable
    # the full-width asterisk closes japanese_g2's list but is in neither ja's nor en's alphabet
    japanese = NETWORKS["japanese_g2"]
    assert japanese.characters[-1] == "＊" and "＊" not in alphabet("ja")
    assert ignored_classes(japanese, japanese.languages).tolist() == [len(japanese.characters)]
    with pytest.raises(ValueError, match="'xx' is not known here; known: be, bg, ch_sim"):
        alphabet("xx")


def test_other_languages_through_both_layouts(model_server, model_env):
    """Tiny random recognisers with the real class counts of japanese_g2 (2215) and korean_g2 (1009)
    load through the real path; the rigged logits make the decoding computable by hand."""
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelArtifactsError
    from edge_agent.models.common.settings import ModelSettings
    from edge_agent.models.foundation.easy_ocr import EasyOCRModel, package_files
    from tests.easyocr_factory import RIG_LOGIT, craft, recognizer, state_bytes
    from tests.fixtures.model_server import torch_package

    page = np.full((40, 160, 3), 200, np.uint8)  # one box, 63 recogniser steps (as above)
    steps = 63
    model_server.add_core_model(
        "easy_ocr",
        "japanese_g2",
        {
            "craft_mlt_25k.pth": state_bytes(craft()),
            "weights.pt": state_bytes(recognizer(rigged="日", network="japanese_g2")),
        },
    )
    model_env.set(API_BASE_URL=model_server.base_url)
    (prediction,) = get_model("easy_ocr/japanese_g2").predict(page)
    # languages en + ja: only the full-width asterisk is zeroed: "日" at 12, blank and 2212 others at 0
    p = math.exp(RIG_LOGIT) / (math.exp(RIG_LOGIT) + 1 + 2212)
    assert prediction.texts == ("日",)
    assert prediction.confidences[0] == pytest.approx(p ** (2 * math.sqrt(steps)), rel=1e-5)

    config = {
        "lang_list": ["en", "ko"],
        "detector_model_file_name": "craft_mlt_25k.pth",
        "recognition_model_file_name": "korean_g2.pth",
        "detect_network": "craft",
        "recognition_network": "korean_g2",
    }
    files = {
        "easy-ocr-config.json": json.dumps(config).encode(),
        "craft_mlt_25k.pth": state_bytes(craft()),
        # the best class is a Hangul syllable, the runner-up "B" at logit 6
        "korean_g2.pth": state_bytes(recognizer(rigged="한", network="korean_g2", runner_up=("B", 6.0))),
    }
    model_server.add_package_model("easy-ocr-korean/craft", [torch_package("k1", files)], "easy-ocr", "ocr")
    model = get_model("easy-ocr-korean/craft")
    (both,) = model.predict(page)
    # en + ko: 11 syllables of korean_g2 are in neither alphabet; blank + 1008 - 11 classes remain
    p = math.exp(RIG_LOGIT) / (math.exp(RIG_LOGIT) + math.exp(6) + 1 + (1008 - 11 - 2))
    assert both.texts == ("한",) and both.confidences[0] == pytest.approx(p ** (2 * math.sqrt(steps)), rel=1e-5)
    detector, weights, network, languages = package_files(model.directory)
    assert (network, languages) == ("korean_g2", ["en", "ko"])
    english = EasyOCRModel("k", detector, weights, network, ModelSettings(), languages=["en"])
    (only,) = english.predict(page)  # English only: every syllable zeroed, "B" wins
    p = math.exp(6) / (math.exp(6) + 1 + 94)  # "B", blank and the other 94 ASCII characters
    assert only.texts == ("B",) and only.confidences[0] == pytest.approx(p ** (2 * math.sqrt(steps)), rel=1e-5)
    with pytest.raises(ModelArtifactsError, match="'tlh' is not known here"):
        EasyOCRModel("k", detector, weights, network, ModelSettings(), languages=["en", "tlh"])
