"""Florence-2: ``<loc_N>`` parsing (hand-computed), and tiny random-weight checkpoints served as
Roboflow serves them (``/ort`` ``weights``, a tar.gz unpacked in place), loaded through ``get_model``."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.models.foundation import florence2

pytest.importorskip("transformers")
pytest.importorskip("PIL")


# -- parsing (pure) --------------------------------------------------------------------------------


def test_dequantize_is_the_bin_centre():
    # 640 x 480: x bins are 0.64 px wide, y bins 0.48 px
    assert florence2.dequantize([0, 0, 999, 999], (640, 480)) == pytest.approx([0.32, 0.24, 639.68, 479.76])
    assert florence2.dequantize([10, 20], (1000, 2000)) == pytest.approx([10.5, 41.0])


def test_od_answer_is_boxes_and_labels_in_pixels():
    text = "</s><s>car<loc_10><loc_20><loc_500><loc_999>person<loc_0><loc_0><loc_99><loc_199></s>"
    got = florence2.parse_answer(text, "<OD>", (640, 480))
    assert list(got) == ["<OD>"]
    assert got["<OD>"]["labels"] == ["car", "person"]
    assert got["<OD>"]["bboxes"] == [
        pytest.approx([6.72, 9.84, 320.32, 479.76]),
        pytest.approx([0.32, 0.24, 63.68, 95.76]),
    ]


def test_one_label_with_several_boxes_repeats_the_label():
    text = "car<loc_0><loc_0><loc_9><loc_9><loc_10><loc_10><loc_19><loc_19>"
    got = florence2.parse_answer(text, "<OD>", (1000, 1000))["<OD>"]
    assert got == {"bboxes": [[0.5, 0.5, 9.5, 9.5], [10.5, 10.5, 19.5, 19.5]], "labels": ["car", "car"]}


def test_region_proposal_allows_empty_labels():
    got = florence2.parse_answer("<loc_1><loc_2><loc_3><loc_4>", "<REGION_PROPOSAL>", (1000, 1000))
    assert got == {"<REGION_PROPOSAL>": {"bboxes": [[1.5, 2.5, 3.5, 4.5]], "labels": [""]}}


def test_caption_is_plain_text_without_special_tokens():
    assert florence2.parse_answer("</s><s>a red car</s><pad>", "<CAPTION>", (10, 10)) == {"<CAPTION>": "a red car"}


def test_ocr_with_region_gives_quadrilaterals():
    text = "TRUCK<loc_0><loc_0><loc_9><loc_0><loc_9><loc_9><loc_0><loc_9>"
    got = florence2.parse_answer(text, "<OCR_WITH_REGION>", (1000, 100))["<OCR_WITH_REGION>"]
    assert got["labels"] == ["TRUCK"]
    assert got["quad_boxes"] == [pytest.approx([0.5, 0.05, 9.5, 0.05, 9.5, 0.95, 0.5, 0.95])]


def test_segmentation_gives_polygons():
    text = "<loc_100><loc_100><loc_200><loc_100><loc_200><loc_200><loc_7>"  # odd count: the last x is dropped
    got = florence2.parse_answer(text, "<REFERRING_EXPRESSION_SEGMENTATION>", (1000, 1000))
    (polygons,) = got["<REFERRING_EXPRESSION_SEGMENTATION>"]["polygons"]
    assert polygons == [[100.5, 100.5, 200.5, 100.5, 200.5, 200.5]]


def test_open_vocabulary_detection_shape():
    got = florence2.parse_answer("car<loc_0><loc_0><loc_9><loc_9>", "<OPEN_VOCABULARY_DETECTION>", (1000, 1000))
    assert got == {
        "<OPEN_VOCABULARY_DETECTION>": {
            "bboxes": [[0.5, 0.5, 9.5, 9.5]],
            "bboxes_labels": ["car"],
            "polygons": [],
            "polygons_labels": [],
        }
    }


def test_box_answers_become_roboflow_detections():
    rows = florence2.answer_predictions({"<OD>": {"bboxes": [[10.0, 20.0, 30.0, 60.0]], "labels": ["car"]}})
    assert rows is not None
    (row,) = rows
    assert (row["x"], row["y"], row["width"], row["height"], row["confidence"], row["class"]) == (
        20.0,
        40.0,
        20.0,
        40.0,
        1.0,
        "car",
    )
    # md5("car") = e6d96502596d7e7887b76646c5f615d9 -> int % 10000
    assert row["class_id"] == int("e6d96502596d7e7887b76646c5f615d9", 16) % 10_000
    assert florence2.answer_predictions({"<CAPTION>": "a car"}) is None


def test_region_prompt_quantizes_normalised_coordinates():
    # clamp(round(v * 1000), 0, 999): 64/640 -> 100, 480/480 -> 999
    assert florence2.region_prompt("<REGION_TO_CATEGORY>", (64, 0, 640, 480), (640, 480)) == (
        "<REGION_TO_CATEGORY><loc_100><loc_0><loc_999><loc_999>"
    )


def test_task_of_prompt():
    assert florence2.task_of("<CAPTION_TO_PHRASE_GROUNDING>a red car") == "<CAPTION_TO_PHRASE_GROUNDING>"


# -- through get_model -----------------------------------------------------------------------------


ANSWER = "a red car<loc_10><loc_20><loc_500><loc_999>"


@pytest.fixture(scope="module")
def florence_od(tmp_path_factory):
    from tests.vlm_factory import florence_checkpoint, tar_gz

    directory = florence_checkpoint(tmp_path_factory.mktemp("florence") / "ckpt", answer=ANSWER)
    return directory, tar_gz(directory)


def _frame(width: int = 640, height: int = 480) -> np.ndarray:
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, :, 2] = 200  # red in BGR
    return frame


def test_florence_alias_from_ort_weights_tar_gz_answers_od(model_server, model_env, florence_od):
    from edge_agent.models import get_model
    from edge_agent.models.foundation.vlm import VLMModel

    _directory, archive = florence_od
    model_server.add_hf_model(
        "florence-pretrains", "3", {"weights.tar.gz": archive}, "text-image-pairs", "florence-2-base"
    )
    model_env.set(API_BASE_URL=model_server.base_url, LMM_ENABLED="true")
    model = get_model("florence-2-base")
    assert isinstance(model, VLMModel) and model.model_id == "florence-pretrains/3"
    assert model.providers == ["transformers:cpu:float32"]  # float32 on the CPU by default
    answer = model.ask(_frame(), prompt="<OD>")
    body = answer.to_response()
    assert body["image"] == {"width": 640, "height": 480}
    assert body["response"]["<OD>"]["labels"] == ["a red car"]
    assert body["response"]["<OD>"]["bboxes"] == [pytest.approx([6.72, 9.84, 320.32, 479.76])]
    (row,) = body["predictions"]
    assert (row["x"], row["width"], row["class"]) == (pytest.approx(163.52), pytest.approx(313.6), "a red car")
    # the archive is unpacked in place and kept, as Roboflow does; the cache survives offline
    cache_dir = model_env.cache_dir / "florence-pretrains" / "3"
    assert (cache_dir / "weights.tar.gz").is_file() and (cache_dir / "config.json").is_file()
    served = model_server.count()
    model_env.set(OFFLINE_MODE="true", API_BASE_URL="http://127.0.0.1:9")
    again = get_model("florence-2-base")
    assert again.ask(_frame(320, 240), prompt="<OD>").response["<OD>"]["bboxes"] == [
        pytest.approx([3.36, 4.92, 160.16, 239.88])
    ]
    assert model_server.count() == served


def test_florence_prompt_assembly_and_response_model(model_server, model_env, florence_od):
    from edge_agent.models import get_model

    directory, _ = florence_od
    files = {p.name: p.read_bytes() for p in directory.iterdir()}
    model_server.add_hf_model("florence-pretrains", "4", files, "text-image-pairs", "florence-2-large")
    model_env.set(API_BASE_URL=model_server.base_url, LMM_ENABLED="true")
    model = get_model("florence-2-large")
    from PIL import Image

    picture = Image.fromarray(np.zeros((48, 64, 3), np.uint8))
    inputs = model.family.inputs(model.processor, picture, "<CAPTION>")
    tokenizer = model.processor.tokenizer
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    # 17 image tokens (a 32x32 input strided by 8 is 4x4, plus one), then <s> task text </s>
    expected = [image_token] * 17 + [0] + tokenizer.encode("What does the image describe?", add_special_tokens=False)
    assert inputs["input_ids"][0].tolist() == [*expected, 2]
    # the checkpoint's chain answers every prompt alike: as a caption it is kept as text, special
    # tokens (<s>, </s>) removed, and no detections are made of it
    (response,) = model.infer([_frame()], prompt="<CAPTION>")
    dumped = response.model_dump()
    assert dumped == {
        "response": {"<CAPTION>": "a red car<loc_10><loc_20><loc_500><loc_999>"},
        "image": {"width": 640, "height": 480},
    }


def test_bad_florence_prompt_is_a_clear_error(model_server, model_env, florence_od):
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import InvalidInputError

    _, archive = florence_od
    model_server.add_hf_model(
        "florence-pretrains", "3", {"weights.tar.gz": archive}, "text-image-pairs", "florence-2-base"
    )
    model_env.set(API_BASE_URL=model_server.base_url, LMM_ENABLED="true")
    model = get_model("florence-2-base")
    with pytest.raises(InvalidInputError, match="task token"):
        model.ask(_frame(), prompt="what is this?")


def test_florence_needs_lmm_enabled(model_server, model_env, florence_od):
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelDisabledError

    _, archive = florence_od
    model_server.add_hf_model(
        "florence-pretrains", "3", {"weights.tar.gz": archive}, "text-image-pairs", "florence-2-base"
    )
    model_env.set(API_BASE_URL=model_server.base_url)
    with pytest.raises(ModelDisabledError, match="LMM_ENABLED"):
        get_model("florence-2-base")
    model_env.set(LMM_ENABLED="true", FLORENCE2_ENABLED="false")
    with pytest.raises(ModelDisabledError, match="FLORENCE2_ENABLED"):
        get_model("florence-2-base")


def test_infer_cli_with_prompts_and_max_new_tokens(tmp_path, model_server, model_env, florence_od):
    import json
    import os
    import subprocess
    import sys

    import cv2

    _, archive = florence_od
    model_server.add_hf_model(
        "florence-pretrains", "3", {"weights.tar.gz": archive}, "text-image-pairs", "florence-2-base"
    )
    model_env.set(API_BASE_URL=model_server.base_url, LMM_ENABLED="true")
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), _frame())

    def cli(*args: str) -> subprocess.CompletedProcess:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        command = [sys.executable, "-m", "edge_agent.agent.cli", "infer", "--model", "florence-2-base", *args]
        return subprocess.run(command, cwd=root, env=dict(os.environ), capture_output=True, text=True, timeout=180)

    # one process (a CI box pays torch's import once): two prompts, one answer each, at most 4 new
    # tokens: the forced <s>, "a", " red", and </s> forced at the limit (BART's forced_eos_token_id)
    result = cli("--prompt", "<CAPTION>", "--prompt", "<OD>", "--max-new-tokens", "4", str(image))
    assert result.returncode == 0, result.stderr
    caption, od = (json.loads(line) for line in result.stdout.splitlines())
    assert caption == {"response": {"<CAPTION>": "a red"}, "image": {"width": 640, "height": 480}}
    assert od["response"] == {"<OD>": {"bboxes": [], "labels": []}} and od["predictions"] == []


def test_generation_limits_are_checked():
    from edge_agent.models.common.errors import InvalidInputError
    from edge_agent.models.foundation.vlm import check_max_new_tokens, check_prompt

    assert check_max_new_tokens(12) == 12
    for bad in (0, -1, 9000, 1.5, True, "3"):
        with pytest.raises(InvalidInputError, match="max_new_tokens"):
            check_max_new_tokens(bad)
    with pytest.raises(InvalidInputError, match="non-empty"):
        check_prompt("  ")
