"""Tier-2 foundation-model families: ``family/variant`` -> (task_type, model_type) and their flags.

One data table. A family is switched off when any of its flags is false; CORE_MODELS_ENABLED
gates them all. Flag names and defaults follow Roboflow Inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_agent.models.common.errors import ModelDisabledError

if TYPE_CHECKING:
    from edge_agent.models.common.settings import ModelSettings


@dataclass(frozen=True)
class Family:
    task_type: str
    model_type: str
    flags: tuple[str, ...]  # ModelSettings field names, all must be true


_CORE = "core_models_enabled"

GENERIC_FAMILIES: dict[str, Family] = {
    "clip": Family("embed", "clip", (_CORE, "core_model_clip_enabled")),
    "sam": Family("embed", "sam", (_CORE, "core_model_sam_enabled")),
    "sam2": Family("embed", "sam2", (_CORE, "core_model_sam2_enabled")),
    "gaze": Family("gaze", "l2cs", (_CORE, "core_model_gaze_enabled")),
    # the current stack's id of the same network (package l2cs-net/rn50, weights.onnx)
    "l2cs-net": Family("gaze-detection", "l2cs-net", (_CORE, "core_model_gaze_enabled")),
    "doctr": Family("ocr", "doctr", (_CORE, "core_model_doctr_enabled")),
    # the current stack's DocTR package id (doctr-dbnet-rn50/crnn-vgg16)
    "doctr-dbnet-rn50": Family("ocr", "doctr", (_CORE, "core_model_doctr_enabled")),
    "easy_ocr": Family("ocr", "easy_ocr", (_CORE, "core_model_easyocr_enabled")),
    # the current stack's EasyOCR package ids (easy-ocr-english/craft, easy-ocr-zh-sim/craft, ...)
    **{
        f"easy-ocr-{language}": Family("ocr", "easy_ocr", (_CORE, "core_model_easyocr_enabled"))
        for language in ("english", "latin", "zh-sim", "japanese", "korean", "telugu", "kannada", "cyrillic")
    },
    "trocr": Family("ocr", "trocr", (_CORE, "core_model_trocr_enabled")),
    "grounding_dino": Family("object-detection", "grounding-dino", (_CORE, "core_model_groundingdino_enabled")),
    "yolo_world": Family("object-detection", "yolo-world", (_CORE, "core_model_yolo_world_enabled")),
    "owlv2": Family("object-detection", "owlv2", (_CORE, "core_model_owlv2_enabled")),
    "paligemma": Family("llm", "paligemma", (_CORE, "lmm_enabled", "paligemma_enabled")),
    "smolvlm2": Family("lmm", "smolvlm-2.2b-instruct", (_CORE, "lmm_enabled", "smolvlm2_enabled")),
    "moondream2": Family("lmm", "moondream2", (_CORE, "lmm_enabled", "moondream2_enabled")),
    "depth-anything-v2": Family("depth-estimation", "depth-anything-v2", (_CORE, "depth_estimation_enabled")),
    "depth-anything-v3": Family("depth-estimation", "depth-anything-v3", (_CORE, "depth_estimation_enabled")),
    "perception_encoder": Family("embed", "perception_encoder", (_CORE, "core_model_pe_enabled")),
    # Roboflow routes pp_ocr through MODEL_PIPELINES, not GENERIC_MODELS; the id forms are the same.
    "pp_ocr": Family("ocr", "pp_ocr", (_CORE, "core_model_ppocr_enabled")),
}

# pp_ocr, pp_ocr/<size> and pp_ocr/<det>-<rec>; "none" switches a stage off; bare pp_ocr is small-small.
PP_OCR_SIZES = ("none", "tiny", "small", "medium")
BARE_FAMILIES = {
    "pp_ocr": "small-small",
    "depth-anything-v2": "small",
    "doctr": "default",
    "easy_ocr": "english_g2",
    "grounding_dino": "default",  # Roboflow's grounding_dino_version_id default
}


#: families whose bare id takes its variant from a setting (Roboflow's *_VERSION_ID variables)
VERSION_SETTINGS = {"sam": "sam_version_id", "sam2": "sam2_version_id", "owlv2": "owlv2_version_id"}


def bare_variant(family: str) -> str | None:
    """The variant a bare ``family`` id means (``sam2`` -> SAM2_VERSION_ID), or None."""
    if family in BARE_FAMILIES:
        return BARE_FAMILIES[family]
    setting = VERSION_SETTINGS.get(family)
    if setting is None:
        return None
    from edge_agent.models.common.settings import get_model_settings

    return str(getattr(get_model_settings(), setting))


def canonical_variant(family: str, variant: str) -> str:
    """The canonical variant of a family id (pp_ocr/small -> small-small); ValueError says why not."""
    if family != "pp_ocr":
        return variant
    parts = variant.split("-")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or any(p not in PP_OCR_SIZES for p in parts) or parts == ["none", "none"]:
        raise ValueError(
            f"pp_ocr variants are <size> or <detection>-<recognition> with sizes {', '.join(PP_OCR_SIZES)} "
            f"(not both none), e.g. pp_ocr/small or pp_ocr/medium-small"
        )
    return "-".join(parts)


def find_family(model_id: str) -> tuple[str, Family] | None:
    """(family name, Family) for ``model_id``: the whole id is matched first, then its first part."""
    if model_id in GENERIC_FAMILIES:
        return model_id, GENERIC_FAMILIES[model_id]
    head = model_id.split("/", 1)[0]
    if head in GENERIC_FAMILIES:
        return head, GENERIC_FAMILIES[head]
    return None


def check_family_enabled(name: str, family: Family, settings: ModelSettings) -> None:
    """Raise ModelDisabledError naming the first flag that switches ``family`` off."""
    for flag in family.flags:
        if not getattr(settings, flag):
            env = flag.upper()
            raise ModelDisabledError(
                f"{name} models are disabled by {env}=false; set {env}=true in the environment to allow them"
            )
