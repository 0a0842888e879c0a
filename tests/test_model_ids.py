"""Model ids of every tier, aliases (spot-checked against SPEC §3), path-escape attempts, families."""

from __future__ import annotations

import pytest

from edge_agent.models import MODEL_ALIASES, get_model_type, parse_model_id
from edge_agent.models.common.errors import InvalidModelIdError, ModelDisabledError
from edge_agent.models.identity.ids import BUILTIN_ROOT, cache_dir_for
from tests.onnx_factory import constant_detector, write_model_dir

# --- tiers ---------------------------------------------------------------------------------------


def test_project_version():
    ref = parse_model_id("someproj/1")
    assert (ref.kind, ref.model_id, ref.project, ref.version) == ("roboflow", "someproj/1", "someproj", "1")


def test_workspace_project_version_drops_workspace():
    ref = parse_model_id("my-workspace/someproj/12")
    assert (ref.kind, ref.model_id) == ("roboflow", "someproj/12")
    assert ref.requested_id == "my-workspace/someproj/12"


def test_alias_resolves_to_project_version():
    ref = parse_model_id("yolov8n-640")
    assert (ref.kind, ref.model_id, ref.project, ref.version) == ("roboflow", "coco/3", "coco", "3")


def test_generic_family_matches_first_part():
    ref = parse_model_id("clip/ViT-B-16")
    assert (ref.kind, ref.family, ref.model_id) == ("generic", "clip", "clip/ViT-B-16")
    assert parse_model_id("sam2/hiera_large").family == "sam2"
    assert parse_model_id("doctr/db_resnet50").family == "doctr"
    assert parse_model_id("depth-anything-v2/small").family == "depth-anything-v2"


def test_builtin_maps_to_packaged_directory():
    ref = parse_model_id("builtin/shapes-v1")
    assert ref.kind == "builtin" and ref.read_only
    assert ref.local_dir == BUILTIN_ROOT / "shapes-v1"
    assert BUILTIN_ROOT.parent.name == "models"


def test_local_directory_plain_and_file_url(tmp_path):
    directory = write_model_dir(tmp_path / "door v2", constant_detector([[0.0]] * 5), ["door"])
    ref = parse_model_id(str(directory))
    assert ref.kind == "local" and ref.read_only and ref.local_dir == directory.resolve()
    url = "file://" + str(directory).replace(" ", "%20")
    assert parse_model_id(url).local_dir == directory.resolve()
    assert parse_model_id("file://localhost" + str(directory).replace(" ", "%20")).kind == "local"


def test_surrounding_whitespace_is_ignored():
    assert parse_model_id("  someproj/1\n").model_id == "someproj/1"


# --- SPEC §3 alias table -------------------------------------------------------------------------

SPEC_ALIASES = {
    "yolov8n-640": "coco/3",
    "yolov8s-640": "coco/6",
    "yolov8m-640": "coco/8",
    "yolov8l-640": "coco/7",
    "yolov8x-640": "coco/5",
    "yolov8n-1280": "coco/9",
    "yolov8x-1280": "coco/13",
    "yolov8n-seg-640": "coco-dataset-vdnr1/2",
    "yolov8s-seg-640": "coco-dataset-vdnr1/4",
    "yolov8x-seg-640": "coco-dataset-vdnr1/3",
    "yolov8n-pose-640": "coco-pose-detection/1",
    "yolov8x-pose-640": "coco-pose-detection/5",
    "yolo-nas-s-640": "coco/14",
    "yolo-nas-l-640": "coco/16",
    "yolov10n-640": "coco/19",
    "yolov10b-640": "coco/22",
    "yolov10x-640": "coco/24",
    "yolov11n-640": "coco/25",
    "yolo11n-640": "coco/25",
    "yolov11x-640": "coco/29",
    "yolo11x-1280": "coco/34",
    "yolov11n-1280": "coco/30",
    "yolov11n-seg-640": "coco-dataset-vdnr1/19",
    "yolo11x-seg-640": "coco-dataset-vdnr1/23",
    "rfdetr-base": "coco/36",
    "rfdetr-nano": "coco/38",
    "rfdetr-small": "coco/39",
    "rfdetr-medium": "coco/40",
    "rfdetr-large": "coco/50",
    "resnet18": "classifiers/1",
    "resnet34": "classifiers/2",
    "resnet50": "classifiers/3",
    "resnet101": "classifiers/4",
}


@pytest.mark.parametrize(("alias", "target"), sorted(SPEC_ALIASES.items()))
def test_alias_table_matches_spec(alias, target):
    assert MODEL_ALIASES[alias] == target
    assert parse_model_id(alias).model_id == target


def test_alias_table_is_complete():
    # 5+5+5+5 (v8 det/1280/seg/pose) + 3 nas + 6 v10 + 15 v11 (x2 spellings) + 5 rfdetr + 4 resnet
    # + vision-language: 2 Florence-2, 14 PaliGemma, 1 Qwen2.5-VL
    assert len(MODEL_ALIASES) == 20 + 3 + 6 + 30 + 5 + 4 + 2 + 14 + 1
    assert all(v.count("/") == 1 for v in MODEL_ALIASES.values())


# --- refused ids ---------------------------------------------------------------------------------

ESCAPES = [
    ("../../etc/passwd", "relative path component"),
    ("a/b/../../..", "relative path component"),
    ("a/../b", "relative path component"),
    ("../1", "relative path component"),
    ("proj/..", "relative path component"),
    ("./1", "relative path component"),
    ("/etc/passwd", "not a directory"),
    ("/nonexistent-dir-xyz/1", "does not exist"),
    ("file:///etc/passwd", "not a directory"),
    ("file://evil.example.com/etc", "local path"),
    ("proj\uff0f1", "U+FF0F FULLWIDTH SOLIDUS"),
    ("\uff0e\uff0e/1", "FULLWIDTH FULL STOP"),
    ("proj/\u2024\u2024", "ONE DOT LEADER"),
    ("proj/1\x00", "control character U+0000"),
    ("proj\x00/1", "control character"),
    ("proj/1\u202e", "U+202E"),
    ("pro j/1", "U+0020"),
    ("proj\\..\\..\\x/1", "U+005C"),
    ("~/models/1", "U+007E"),
    (".hidden/1", "must start with a letter or digit"),
    ("proj//1", "empty"),
    ("proj/", "empty"),
    ("", "empty model id"),
    ("justaname", "not a known alias"),
    ("a/b/c/d", "too many"),
    ("p" * 300 + "/1", "longer than 256"),
    ("p" * 101 + "/1", "longer than 100"),
    ("/" + "x" * 5000, "longer than 4096"),
]


@pytest.mark.parametrize(("model_id", "reason"), ESCAPES)
def test_refused_ids_say_why(model_id, reason):
    with pytest.raises(InvalidModelIdError) as info:
        parse_model_id(model_id)
    assert reason in str(info.value)


def test_non_string_id():
    with pytest.raises(InvalidModelIdError, match="must be a string"):
        parse_model_id(None)


def test_existing_directory_without_weights_is_not_a_model(tmp_path):
    with pytest.raises(InvalidModelIdError, match=r"no weights\.onnx"):
        parse_model_id(str(tmp_path))


def test_cache_dir_stays_inside_cache_root(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    assert cache_dir_for(parse_model_id("p/1"), root) == (root / "p" / "1").resolve()
    # a symlink planted in the cache cannot redirect a model outside it
    (root / "evil").symlink_to(tmp_path)
    (tmp_path / "out").mkdir()
    with pytest.raises(InvalidModelIdError, match="outside MODEL_CACHE_DIR"):
        cache_dir_for(parse_model_id("evil/out"), root)
    with pytest.raises(InvalidModelIdError, match="read in place"):
        cache_dir_for(parse_model_id("builtin/shapes-v1"), root)


# --- families and flags --------------------------------------------------------------------------


def test_generic_types_come_from_the_table_without_network(model_env):
    assert get_model_type("clip/ViT-B-16") == ("embed", "clip")
    assert get_model_type("sam2/hiera_large") == ("embed", "sam2")
    assert get_model_type("gaze/l2cs") == ("gaze", "l2cs")
    assert get_model_type("doctr/db_resnet50") == ("ocr", "doctr")
    assert get_model_type("yolo_world/l") == ("object-detection", "yolo-world")


@pytest.mark.parametrize(
    ("model_id", "env", "flag"),
    [
        ("clip/ViT-B-16", {"CORE_MODEL_CLIP_ENABLED": "false"}, "CORE_MODEL_CLIP_ENABLED"),
        ("sam/vit_h", {"CORE_MODEL_SAM_ENABLED": "0"}, "CORE_MODEL_SAM_ENABLED"),
        ("clip/ViT-B-16", {"CORE_MODELS_ENABLED": "false"}, "CORE_MODELS_ENABLED"),
        ("paligemma/3b", {}, "LMM_ENABLED"),  # off by default, as in Roboflow Inference
        ("owlv2/base", {}, "CORE_MODEL_OWLV2_ENABLED"),
        ("moondream2/x", {"LMM_ENABLED": "true", "MOONDREAM2_ENABLED": "false"}, "MOONDREAM2_ENABLED"),
    ],
)
def test_disabled_family_names_its_flag(model_env, model_id, env, flag):
    model_env.set(**env)
    with pytest.raises(ModelDisabledError, match=flag):
        get_model_type(model_id)
