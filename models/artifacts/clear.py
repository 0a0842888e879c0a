"""Deleting a model from the cache: both layouts (and a foundation model's core-model folder),
under the model's one lock, never a built-in model or a local directory."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from edge_agent.models.artifacts.cache import _fsync_dir, model_lock
from edge_agent.models.artifacts.core_cache import core_model_dir
from edge_agent.models.artifacts.packages.store import PackageStore
from edge_agent.models.common.errors import InvalidModelIdError
from edge_agent.models.common.settings import ModelSettings, get_model_settings
from edge_agent.models.identity.ids import cache_dir_for, parse_model_id

logger = logging.getLogger(__name__)


def clear_cache(model_id: str, settings: ModelSettings | None = None) -> bool:
    """Delete a model's cache directory under its lock; True when something was removed.

    Local directories and built-in models are never deleted (InvalidModelIdError says so).
    """
    settings = settings or get_model_settings()
    ref = parse_model_id(model_id)
    if ref.read_only:
        raise InvalidModelIdError(
            f"{ref.model_id} is a {'built-in model' if ref.kind == 'builtin' else 'local directory'}; "
            f"it is read in place and never deleted by edge-agent (`models clear` removes only the INT8 copies "
            f"made of it, and there is no INT8 copy to clear)"
        )
    if ref.kind == "generic":
        directory = core_model_dir(ref, settings.model_cache_dir)
    else:
        directory = cache_dir_for(ref, settings.model_cache_dir)
    with model_lock(ref, settings):
        # Both layouts of the model go, under its one lock; blobs other models use are kept.
        removed_packages = PackageStore(settings).clear(ref.model_id)
        if not directory.exists():
            return removed_packages
        # Rename first so readers never see a half-deleted directory, then delete at leisure.
        trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=settings.model_cache_dir))
        target = trash / "model"
        os.replace(directory, target)
        _fsync_dir(directory.parent)
    shutil.rmtree(trash, ignore_errors=True)
    logger.info("cleared cache of %s (%s)", ref.model_id, directory)
    return True
