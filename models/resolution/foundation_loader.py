"""``get_model`` for ``family/variant`` ids: the family's flag, its runtime, its weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.models.artifacts.api import ProgressCallback
from edge_agent.models.common.errors import UnsupportedModelTypeError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.identity.families import GENERIC_FAMILIES, check_family_enabled
from edge_agent.models.identity.ids import ModelRef
from edge_agent.models.tasks.model import Model

StatusCallback = Callable[[str], None]
BOX_TASKS = ("object-detection", "instance-segmentation", "keypoint-detection")


DetectorLoader = Callable[[str], Model]


def paired_detector(variable: str, model_id: str, load: DetectorLoader | None) -> Model:
    """The detector a foundation model runs on the same frames (``variable`` names the setting).

    ``load`` is the registry's ``get_model`` (handed down: this module sits below the registry)."""
    from edge_agent.models.common.errors import ModelSettingsError

    if load is None:
        raise ModelSettingsError(f"{variable}={model_id}: detectors are loaded through edge_agent.models.get_model")
    if model_id.split("/", 1)[0] in GENERIC_FAMILIES:  # also stops a model pairing with itself forever
        raise ModelSettingsError(
            f"{variable}={model_id} is a foundation model; it must be a detector that gives boxes "
            f"({', '.join(BOX_TASKS)})"
        )
    detector = load(model_id)
    if detector.task_type not in BOX_TASKS:
        detector.close()
        raise ModelSettingsError(
            f"{variable}={model_id} is a {detector.task_type or 'non-detection'} model; it must give boxes "
            f"({', '.join(BOX_TASKS)})"
        )
    return detector


RUNNABLE = (
    "clip",
    "pp_ocr",
    "depth-anything-v2",
    "depth-anything-v3",
    "gaze",
    "l2cs-net",
    "trocr",
    "perception_encoder",
    "doctr",
    "doctr-dbnet-rn50",
    "easy_ocr",
    "easy-ocr-<language>",
    "sam",
    "sam2",
    "sam3",
    "owlv2",
    "grounding_dino",
    "paligemma",
    "smolvlm2",
    "yolo_world",
    "moondream2",
)


def get_foundation_model(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    *,
    progress: ProgressCallback | None = None,
    status: StatusCallback | None = None,
    load_detector: DetectorLoader | None = None,
) -> Model:
    """``load_detector``: how a paired detector (DEPTH_/GAZE_FACE_/OCR_DETECTOR_MODEL_ID) is loaded."""
    assert ref.family is not None and ref.version is not None
    family = GENERIC_FAMILIES[ref.family]
    check_family_enabled(ref.family, family, settings)
    if ref.family == "clip":
        return _clip(ref, api_key, settings, progress, status)
    if ref.family == "pp_ocr":
        return _pp_ocr(ref, api_key, settings, progress, status)
    from edge_agent.models.foundation.vlm_families import is_vlm_type

    if is_vlm_type(family.model_type):  # smolvlm2/..., paligemma/...: Hugging Face checkpoints
        from edge_agent.models.foundation.vlm_loader import get_vlm_model

        return get_vlm_model(
            ref, family.task_type, family.model_type, api_key, settings, progress=progress, status=status
        )
    if ref.family == "moondream2":  # edge-agent's own network: the checkpoint's .py files are never run
        from edge_agent.models.foundation.moondream import load_moondream2

        return load_moondream2(ref, family.model_type, api_key, settings, progress=progress, status=status)
    if ref.family in ("depth-anything-v2", "depth-anything-v3"):
        return _depth(ref, api_key, settings, progress, status, load_detector)
    if ref.family in ("gaze", "l2cs-net"):
        return _gaze(ref, api_key, settings, progress, status, load_detector)
    if ref.family == "trocr":
        return _trocr(ref, api_key, settings, progress, status, load_detector)
    if ref.family in ("doctr", "doctr-dbnet-rn50"):
        return _doctr(ref, api_key, settings, progress, status)
    if ref.family == "easy_ocr" or ref.family.startswith("easy-ocr-"):
        return _easy_ocr(ref, api_key, settings, progress, status)
    if ref.family == "perception_encoder":
        return _perception_encoder(ref, api_key, settings, progress, status)
    if ref.family in ("sam", "sam2"):
        return _sam(ref, api_key, settings, progress, status)
    if ref.family == "sam3":
        return _sam3(ref, api_key, settings, progress, status)
    if ref.family == "owlv2":
        from edge_agent.models.foundation.owlv2 import load_owlv2

        assert ref.version is not None
        _require_transformers(ref.model_id, "owlv2")
        return load_owlv2(ref.model_id, ref.version, settings, status)
    if ref.family == "yolo_world":
        return _yolo_world(ref, api_key, settings, progress, status)
    if ref.family == "grounding_dino":
        return _grounding_dino(ref, api_key, settings, progress, status)
    raise UnsupportedModelTypeError(
        f"{ref.model_id} is a {ref.family} foundation model; this build of edge-agent runs the "
        f"{', '.join(RUNNABLE)} families only"
    )


def _clip(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
) -> Model:
    from edge_agent.models.artifacts.core_cache import ensure_core_files
    from edge_agent.models.foundation.clip import TEXTUAL_FILE, VISUAL_FILE, ClipModel
    from edge_agent.models.foundation.tokenizer import ClipTokenizer

    ClipTokenizer(f"{ref.model_id} (CLIP)")  # a missing extra is said before anything is downloaded
    directory = ensure_core_files(
        ref,
        (VISUAL_FILE, TEXTUAL_FILE),
        api_key,
        settings,
        task_type="embed",
        model_type="clip",
        progress=progress,
        status=status,
    )
    if status:
        status(f"loading {ref.model_id}")
    return ClipModel(ref.model_id, directory, settings, status)


def _pp_ocr(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
) -> Model:
    import importlib.util

    from edge_agent.models.common.errors import MissingExtraError
    from edge_agent.models.foundation.ocr import DET_PACKAGE, REC_PACKAGE, PPOCRModel
    from edge_agent.models.resolution.package_loader import package_directory

    assert ref.version is not None
    if importlib.util.find_spec("yaml") is None:  # said before anything is downloaded
        raise MissingExtraError(ref.model_id, "ocr", "PyYAML")
    det_size, rec_size = ref.version.split("-")
    directories = []
    for package, size in ((DET_PACKAGE, det_size), (REC_PACKAGE, rec_size)):
        directories.append(
            None
            if size == "none"
            else package_directory(f"{package}/{size}", api_key, settings, progress=progress, status=status)
        )
    if status:
        status(f"loading {ref.model_id}")
    return PPOCRModel(ref.model_id, directories[0], directories[1], settings, status)


def _require_transformers(model_id: str, extra: str) -> None:
    import importlib.util

    from edge_agent.models.common.errors import MissingExtraError

    for module in ("torch", "transformers"):
        if importlib.util.find_spec(module) is None:  # said before anything is downloaded
            raise MissingExtraError(model_id, extra, module)


def _sam(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
) -> Model:
    """Legacy ``/core_model/<family>/<v>`` (SAM ``encoder.pth``, SAM2 ``weights.pt``) or the current
    stack's package (``model.pth``/``model.pt`` + ``sam_configuration.json``), whichever the cache
    holds; a download takes the legacy route."""
    import json

    from edge_agent.models.artifacts.core_cache import core_model_dir, ensure_core_files, inspect
    from edge_agent.models.common.errors import ModelArtifactsError
    from edge_agent.models.foundation import sam, sam2

    assert ref.version is not None and ref.family is not None
    module: Any = sam2 if ref.family == "sam2" else sam
    cls: Any = sam2.Sam2Segmenter if ref.family == "sam2" else sam.SamSegmenter
    _require_transformers(ref.model_id, ref.family)
    weights, version = None, ref.version
    if not inspect(core_model_dir(ref, settings.model_cache_dir), (module.LEGACY_FILE,)).complete:
        package = _cached_package(ref, settings, ("torch",), module.PACKAGE_FILES)
        if package is not None:
            config_path = package / "sam_configuration.json"
            try:
                version = str(json.loads(config_path.read_text())["version"])
            except (OSError, ValueError, KeyError, TypeError):
                raise ModelArtifactsError(config_path, 'must be {"version": "<variant>"}') from None
            weights = package / module.PACKAGE_FILES[0]
    if weights is None:
        directory = ensure_core_files(
            ref,
            (module.LEGACY_FILE,),
            api_key,
            settings,
            task_type="embed",
            model_type=ref.family,
            progress=progress,
            status=status,
        )
        weights = directory / module.LEGACY_FILE
    if status:
        status(f"loading {ref.model_id}")
    model: Model = cls(ref.model_id, weights, version, settings, status)
    return model


def _sam3(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
) -> Model:
    """``weights.pt`` + ``bpe_simple_vocab_16e6.txt.gz``: the legacy ``/core_model/sam3/<v>`` files
    or the current stack's torch package (same names), whichever the cache holds."""
    from edge_agent.models.foundation.tokenizer import ClipTokenizer
    from edge_agent.models.resolution.foundation_artifacts import foundation_directory

    _require_transformers(ref.model_id, "sam3")
    try:
        import instant_clip_tokenizer  # noqa: F401
    except ImportError:  # said before anything is downloaded
        ClipTokenizer(f"{ref.model_id} (SAM3)", extra="sam3")
    from edge_agent.models.foundation.sam3 import REQUIRED_FILES, load_sam3

    directory = foundation_directory(
        ref,
        REQUIRED_FILES,
        api_key,
        settings,
        task_type="embed",
        model_type="sam3",
        backends=("torch",),
        progress=progress,
        status=status,
    )
    if status:
        status(f"loading {ref.model_id}")
    return load_sam3(ref.model_id, directory, settings, status)


def _grounding_dino(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
) -> Model:
    """Legacy ``groundingdino_swint_ogc.pth`` (+ the ``GroundingDINO_SwinT_OGC.py`` Roboflow keeps
    beside it) in the id's directory, or another variant's (``default`` and
    ``groundingdino_swint_ogc`` are the same network), else the current stack's package
    (``weights.pth`` + ``config.py``); a download takes the legacy route."""
    from dataclasses import replace

    from edge_agent.models.artifacts.core_cache import ensure_core_files
    from edge_agent.models.foundation.grounding_dino import load_grounding_dino
    from edge_agent.models.foundation.grounding_dino_weights import LEGACY_CONFIG, LEGACY_FILE, PACKAGE_FILES
    from edge_agent.models.foundation.torch_support import import_runtime
    from edge_agent.models.resolution.foundation_artifacts import cached_legacy_dir

    import_runtime("transformers", f"{ref.model_id} (Grounding DINO)", "grounding-dino")  # before any download
    siblings = [ref] + [
        replace(ref, model_id=f"grounding_dino/{v}", requested_id=f"grounding_dino/{v}", version=v)
        for v in ("groundingdino_swint_ogc", "default")
        if v != ref.version
    ]
    for candidate in siblings:
        legacy = cached_legacy_dir(candidate, (LEGACY_FILE,), settings)
        if legacy is not None:
            return load_grounding_dino(ref.model_id, legacy / LEGACY_FILE, legacy / LEGACY_CONFIG, settings, status)
    package = _cached_package(ref, settings, ("torch",), PACKAGE_FILES)
    if package is not None:
        return load_grounding_dino(
            ref.model_id, package / PACKAGE_FILES[0], package / PACKAGE_FILES[1], settings, status
        )
    directory = ensure_core_files(
        ref,
        (LEGACY_FILE,),
        api_key,
        settings,
        task_type="object-detection",
        model_type="grounding-dino",
        progress=progress,
        status=status,
    )
    return load_grounding_dino(ref.model_id, directory / LEGACY_FILE, directory / LEGACY_CONFIG, settings, status)


def _cached_package(
    ref: ModelRef, settings: ModelSettings, backends: tuple[str, ...], files: tuple[str, ...]
) -> Path | None:
    """The directory of an intact cached package of ``ref`` (current stack) holding ``files``, or None."""
    from edge_agent.models.artifacts.packages.store import PackageStore

    store = PackageStore(settings)
    for entry in store.cached_packages(ref.model_id):
        if entry.package.backend in backends and not store.problems(entry):
            if all((entry.directory / name).is_file() for name in files):
                return entry.directory
    return None


def _depth(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
    load_detector: DetectorLoader | None,
) -> Model:
    from edge_agent.models.foundation.depth import REQUIRED_FILES, DepthAnythingModel
    from edge_agent.models.foundation.depth_v3 import DepthAnythingV3Model
    from edge_agent.models.foundation.torch_support import import_runtime
    from edge_agent.models.resolution.foundation_artifacts import foundation_directory

    import_runtime("transformers", f"{ref.model_id} (Depth Anything)", "transformers")  # before any download
    v3 = ref.family == "depth-anything-v3"  # ByteDance's DA3 weights, edge-agent's network; same files
    directory = foundation_directory(
        ref,
        REQUIRED_FILES,
        api_key,
        settings,
        task_type="depth-estimation",
        model_type=ref.family or "",
        backends=("torch",) if v3 else ("hugging-face",),
        progress=progress,
        status=status,
    )
    detector = None
    if settings.depth_detector_model_id:
        detector = paired_detector("DEPTH_DETECTOR_MODEL_ID", settings.depth_detector_model_id, load_detector)
    if status:
        status(f"loading {ref.model_id}")
    cls = DepthAnythingV3Model if v3 else DepthAnythingModel
    return cls(ref.model_id, directory, settings, status, detector)


def _gaze(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
    load_detector: DetectorLoader | None,
) -> Model:
    from edge_agent.models.foundation.gaze import LEGACY_FILE, PACKAGE_FILE, GazeModel
    from edge_agent.models.resolution.foundation_artifacts import foundation_directory

    # gaze/L2CS: the legacy file name; l2cs-net/rn50: the current stack's package
    name = LEGACY_FILE if ref.family == "gaze" else PACKAGE_FILE
    directory = foundation_directory(
        ref,
        (name,),
        api_key,
        settings,
        task_type="gaze",
        model_type="l2cs",
        backends=("onnx",),
        progress=progress,
        status=status,
    )
    if not (directory / name).is_file():  # a legacy directory holding the package's file name, or back
        name = PACKAGE_FILE if name == LEGACY_FILE else LEGACY_FILE
    face_detector, face_finder = None, None
    if settings.gaze_face_detector_model_id:
        face_detector = paired_detector(
            "GAZE_FACE_DETECTOR_MODEL_ID", settings.gaze_face_detector_model_id, load_detector
        )
    else:  # OpenCV's frontal-face cascade, shipped with edge-agent: faces without any download
        from edge_agent.models.foundation.haar_cascade import HaarFaceFinder

        face_finder = HaarFaceFinder()
    if status:
        status(f"loading {ref.model_id}")
    return GazeModel(ref.model_id, directory / name, settings, status, face_detector, face_finder)


def _trocr(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
    load_detector: DetectorLoader | None,
) -> Model:
    from edge_agent.models.foundation.torch_support import import_runtime
    from edge_agent.models.foundation.trocr import REQUIRED_FILES, TrOCRModel, hub_snapshot
    from edge_agent.models.resolution.foundation_artifacts import foundation_directory

    assert ref.version is not None
    import_runtime("transformers", f"{ref.model_id} (TrOCR)", "transformers")  # before any download
    directory = hub_snapshot(ref.version, settings)  # Roboflow's legacy class: the Hugging Face hub cache
    if directory is None:
        directory = foundation_directory(
            ref,
            REQUIRED_FILES,
            api_key,
            settings,
            task_type="ocr",
            model_type="trocr",
            backends=("hugging-face",),
            progress=progress,
            status=status,
        )
    detector = None
    if settings.ocr_detector_model_id:
        detector = paired_detector("OCR_DETECTOR_MODEL_ID", settings.ocr_detector_model_id, load_detector)
    if status:
        status(f"loading {ref.model_id}")
    return TrOCRModel(ref.model_id, directory, settings, status, detector)


def _perception_encoder(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
) -> Model:
    from edge_agent.models.common.errors import MissingExtraError
    from edge_agent.models.engines.torch_runtime import import_torch
    from edge_agent.models.foundation.perception_encoder import WEIGHTS_FILE, PerceptionEncoderModel
    from edge_agent.models.resolution.foundation_artifacts import foundation_directory

    assert ref.version is not None
    import_torch(f"{ref.model_id} (Perception Encoder)")  # missing runtimes are said before any download
    try:
        import instant_clip_tokenizer  # noqa: F401
    except ImportError:
        raise MissingExtraError(f"{ref.model_id} (Perception Encoder)", "clip", "instant-clip-tokenizer") from None
    directory = foundation_directory(
        ref,
        (WEIGHTS_FILE,),
        api_key,
        settings,
        task_type="embed",
        model_type="perception_encoder",
        backends=("torch",),
        package_id=f"perception-encoder/{ref.version}",  # Roboflow's adapter rewrites the family so
        progress=progress,
        status=status,
    )
    if status:
        status(f"loading {ref.model_id}")
    return PerceptionEncoderModel(ref.model_id, directory, settings, status)


def _doctr(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
) -> Model:
    from edge_agent.models.artifacts.core_cache import ensure_core_files
    from edge_agent.models.engines.torch_runtime import import_torch
    from edge_agent.models.foundation.doctr import LEGACY_DET, LEGACY_FILE, LEGACY_REC, PACKAGE_FILES, DocTRModel
    from edge_agent.models.resolution.foundation_artifacts import foundation_directory

    import_torch(f"{ref.model_id} (DocTR)")
    if ref.family == "doctr-dbnet-rn50":  # the current stack's package: both state dicts in one directory
        directory = foundation_directory(
            ref,
            PACKAGE_FILES,
            api_key,
            settings,
            task_type="ocr",
            model_type="doctr",
            backends=("torch",),
            progress=progress,
            status=status,
        )
        det, rec = (directory / name for name in PACKAGE_FILES)
    else:  # doctr/<any variant>: Roboflow's legacy class loads these two core models whatever the variant
        paths = []
        for project, version in (LEGACY_DET, LEGACY_REC):
            part = ModelRef(
                kind="generic",
                model_id=f"{project}/{version}",
                requested_id=f"{project}/{version}",
                project=project,
                version=version,
                local_dir=None,
                family=None,
            )
            where = ensure_core_files(
                part,
                (LEGACY_FILE,),
                api_key,
                settings,
                task_type="ocr",
                model_type="doctr",
                progress=progress,
                status=status,
            )
            paths.append(where / LEGACY_FILE)
        det, rec = paths
    if status:
        status(f"loading {ref.model_id}")
    return DocTRModel(ref.model_id, det, rec, settings, status)


def _easy_ocr(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
) -> Model:
    from edge_agent.models.engines.torch_runtime import import_torch
    from edge_agent.models.foundation.easy_ocr import (
        CHARACTERS,
        LEGACY_DETECTOR,
        LEGACY_RECOGNIZER,
        PACKAGE_CONFIG,
        EasyOCRModel,
        package_files,
    )
    from edge_agent.models.resolution.foundation_artifacts import foundation_directory

    assert ref.version is not None
    import_torch(f"{ref.model_id} (EasyOCR)")
    if ref.family == "easy_ocr" and ref.version not in CHARACTERS:  # said before anything is downloaded
        raise UnsupportedModelTypeError(
            f"{ref.model_id}: EasyOCR's generation-2 networks are {', '.join(CHARACTERS)} (generation-1 "
            f"networks are not read)"
        )
    legacy = ref.family == "easy_ocr"
    directory = foundation_directory(
        ref,
        (LEGACY_DETECTOR, LEGACY_RECOGNIZER) if legacy else (PACKAGE_CONFIG,),
        api_key,
        settings,
        task_type="ocr",
        model_type="easy_ocr",
        backends=("torch",),
        progress=progress,
        status=status,
    )
    languages: list[str] | None = None  # legacy ids: the network's own (Roboflow's workflow map)
    if (directory / PACKAGE_CONFIG).is_file():
        detector, recognizer, network, languages = package_files(directory)
    else:
        detector, recognizer, network = directory / LEGACY_DETECTOR, directory / LEGACY_RECOGNIZER, ref.version
    if status:
        status(f"loading {ref.model_id}")
    return EasyOCRModel(ref.model_id, detector, recognizer, network, settings, status, languages)


def _yolo_world(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
) -> Model:
    """``yolo-world.pt`` (an Ultralytics checkpoint, read without Ultralytics) + ``clip/ViT-B-32`` for text."""
    from edge_agent.models.artifacts.core_cache import ensure_core_files
    from edge_agent.models.engines.torch_runtime import import_torch
    from edge_agent.models.foundation.tokenizer import ClipTokenizer
    from edge_agent.models.foundation.yolo_world import TEXT_MODEL_ID, WEIGHTS_FILE, load_yolo_world
    from edge_agent.models.identity.ids import parse_model_id

    import_torch(f"{ref.model_id} (YOLO-World)")  # missing runtimes are said before any download
    ClipTokenizer(f"{ref.model_id} (YOLO-World's CLIP text)")
    directory = ensure_core_files(
        ref,
        (WEIGHTS_FILE,),
        api_key,
        settings,
        task_type="object-detection",
        model_type="yolo-world",
        progress=progress,
        status=status,
    )
    clip = _clip(parse_model_id(TEXT_MODEL_ID), api_key, settings, progress, status)
    if status:
        status(f"loading {ref.model_id}")
    try:
        return load_yolo_world(ref.model_id, directory / WEIGHTS_FILE, clip.embed_text, settings, text_model=clip)  # type: ignore[attr-defined]
    except BaseException:
        clip.close()
        raise
