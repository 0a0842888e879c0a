"""``get_model`` for vision-language models: flags, extras, artifacts, adapter base, the loaded model."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from edge_agent.models.artifacts import cache
from edge_agent.models.artifacts.api import ProgressCallback, RoboflowApi
from edge_agent.models.artifacts.core_cache import core_model_dir
from edge_agent.models.common.errors import MissingExtraError, ModelDisabledError, ModelDownloadError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.foundation.vlm_artifacts import ensure_hf_files, resolve_checkpoint
from edge_agent.models.foundation.vlm_families import MODEL_TYPES
from edge_agent.models.identity.ids import ModelRef, cache_dir_for, lock_name
from edge_agent.models.tasks.model import Model

StatusCallback = Callable[[str], None]


def check_vlm_enabled(model_type: str, settings: ModelSettings) -> None:
    family, flag, _ = MODEL_TYPES[model_type]
    for name in ("core_models_enabled", "lmm_enabled", flag):
        if not getattr(settings, name):
            env = name.upper()
            raise ModelDisabledError(
                f"{family.name} models are disabled by {env}=false; set {env}=true in the environment to allow them"
            )


def check_vlm_extras(model_id: str, adapter: bool) -> None:
    """Said before anything is downloaded: the runtime a VLM needs is installed."""
    for module, package in (("torch", "torch"), ("transformers", "transformers"), ("PIL", "pillow")):
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(f"{model_id} (a vision-language model)", "vlm", package)
    if adapter and importlib.util.find_spec("peft") is None:
        raise MissingExtraError(f"{model_id} (a LoRA fine-tune)", "vlm", "peft")


def get_vlm_model(
    ref: ModelRef,
    task_type: str,
    model_type: str,
    api_key: str | None,
    settings: ModelSettings,
    *,
    progress: ProgressCallback | None = None,
    status: StatusCallback | None = None,
) -> Model:
    from edge_agent.models.foundation.vlm import VLMModel

    family, _, is_peft = MODEL_TYPES[model_type]
    check_vlm_enabled(model_type, settings)
    check_vlm_extras(ref.model_id, is_peft)
    api = RoboflowApi(settings)
    if ref.read_only:
        assert ref.local_dir is not None
        directory = ref.local_dir
    elif ref.kind == "generic":
        assert ref.project is not None and ref.version is not None
        family_name, variant = ref.project, ref.version
        directory = ensure_hf_files(
            core_model_dir(ref, settings.model_cache_dir),
            ref.model_id,
            lock_name(ref),
            lambda: api.describe_core_model(family_name, variant, api_key),
            settings,
            progress=progress,
            status=status,
        )
    else:
        assert ref.project is not None and ref.version is not None
        project, version = ref.project, ref.version
        directory = cache_dir_for(ref, settings.model_cache_dir)

        def describe() -> dict[str, str]:
            weights = api.describe_model(project, version, api_key).get("weights")
            if not isinstance(weights, dict) or not weights or not all(isinstance(v, str) for v in weights.values()):
                raise ModelDownloadError(
                    f"the Roboflow API answer for {ref.model_id} ({model_type}) has no 'weights' object of URLs"
                )
            return weights

        ensure_hf_files(
            directory,
            ref.model_id,
            lock_name(ref),
            describe,
            settings,
            progress=progress,
            status=status,
            after=lambda: cache.write_model_type(directory, ref.model_id, task_type, model_type),
        )
    checkpoint = resolve_checkpoint(
        directory, ref.model_id, api_key, settings, use_adapter=is_peft, progress=progress, status=status
    )
    if status:
        status(f"loading {ref.model_id}")
    return VLMModel(ref.model_id, task_type, model_type, family, checkpoint, settings, status)
