"""A thread-safe LRU of loaded models (at most MAX_ACTIVE_MODELS)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

from edge_agent.models.artifacts.api import ProgressCallback
from edge_agent.models.common.settings import get_model_settings
from edge_agent.models.resolution.registry import get_model
from edge_agent.models.speed.precision import canonical_key
from edge_agent.models.tasks.model import Model

logger = logging.getLogger(__name__)


class ModelManager:
    """Loads models on demand and keeps the ``max_active`` most recently used ones.

    Two threads asking for the same id share one load; loads of different ids run in parallel.
    Aliases and workspace-qualified ids share an entry with their canonical ``project/version``;
    a precision suffix (``@int8``) makes its own entry.
    """

    def __init__(self, max_active: int | None = None) -> None:
        if max_active is None:
            max_active = get_model_settings().max_active_models
        if max_active < 1:
            raise ValueError("max_active must be >= 1")
        self.max_active = max_active
        self._models: OrderedDict[str, Model] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(
        self,
        model_id: str,
        api_key: str | None = None,
        *,
        progress: ProgressCallback | None = None,
        status: Callable[[str], None] | None = None,
    ) -> Model:
        """The loaded model for ``model_id``, loading it (see ``get_model``) when needed."""
        key = canonical_key(model_id)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:
            with self._lock:
                model = self._models.get(key)
                if model is not None:
                    self._models.move_to_end(key)
                    return model
            try:
                model = get_model(key, api_key, progress=progress, status=status)
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            with self._lock:
                self._loading.pop(key, None)
                self._models[key] = model
                self._models.move_to_end(key)
                while len(self._models) > self.max_active:
                    evicted, _ = self._models.popitem(last=False)
                    logger.info(
                        "unloaded model %s (least recently used; MAX_ACTIVE_MODELS=%d)", evicted, self.max_active
                    )
            return model

    def remove(self, model_id: str) -> bool:
        key = canonical_key(model_id)
        with self._lock:
            return self._models.pop(key, None) is not None

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    def model_ids(self) -> list[str]:
        """Loaded ids, least recently used first."""
        with self._lock:
            return list(self._models)

    def __contains__(self, model_id: object) -> bool:
        if not isinstance(model_id, str):
            return False
        key = canonical_key(model_id)
        with self._lock:
            return key in self._models

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)
