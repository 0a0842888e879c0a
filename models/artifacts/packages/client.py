"""Client of Roboflow's package registry: ``/models/v1/external/stat`` and ``/weights``.

Both take the key as ``Authorization: Bearer`` (never in the URL). ``/weights`` is asked at
ROBOFLOW_API_HOST (default API_BASE_URL) and answers page by page: ``modelMetadata.nextPage`` goes
back as ``startAfter``, at most :data:`MAX_PAGES` pages, packages of every page merged. Retries,
timeouts and the stall guard are those of :class:`models.api.RoboflowApi`. File downloads carry
no key: their URLs authorise themselves (they are signed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from edge_agent.models.artifacts.api import RoboflowApi
from edge_agent.models.artifacts.packages.manifest import ModelMetadata, ModelPackage, metadata_from_pages, parse_page
from edge_agent.models.common.errors import ModelDownloadError
from edge_agent.models.common.settings import ModelSettings

logger = logging.getLogger(__name__)

STAT_PATH = "/models/v1/external/stat"
WEIGHTS_PATH = "/models/v1/external/weights"
MAX_PAGES = 10


@dataclass(frozen=True)
class ModelStat:
    """What ``/stat`` says a model is."""

    model_id: str
    architecture: str
    task_type: str | None
    variant: str | None


class PackageRegistry:
    def __init__(self, settings: ModelSettings, api: RoboflowApi | None = None) -> None:
        self.settings = settings
        self.api = api or RoboflowApi(settings)

    def stat(self, model_id: str, api_key: str | None) -> ModelStat:
        url = f"{self.settings.api_base_url}{STAT_PATH}?{urlencode({'modelId': model_id})}"
        answer = self.api.fetch_api_json(url, model_id, api_key)
        metadata = answer.get("modelMetadata") if isinstance(answer, dict) else None
        if not isinstance(metadata, dict) or not isinstance(metadata.get("modelArchitecture"), str):
            raise ModelDownloadError(f"the Roboflow API's /stat answer for {model_id} names no modelArchitecture")

        def text(key: str) -> str | None:
            value = metadata.get(key)
            return value if isinstance(value, str) and value else None

        return ModelStat(model_id, metadata["modelArchitecture"], text("taskType"), text("modelVariant"))

    def weights(self, model_id: str, api_key: str | None) -> ModelMetadata:
        """Every package of ``model_id`` (all pages), parsed; unusable ones are dropped with a warning."""
        pages: list[tuple[dict[str, Any], list[ModelPackage]]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            query = {"modelId": model_id}
            if cursor is not None:
                query["startAfter"] = cursor
            url = f"{self.settings.package_api_host}{WEIGHTS_PATH}?{urlencode(query)}"
            answer = self.api.fetch_api_json(url, model_id, api_key)
            metadata, packages, cursor = parse_page(answer, model_id)
            pages.append((metadata, packages))
            if cursor is None:
                break
        else:
            logger.warning("%s: the package registry has more than %d pages; using the first ones", model_id, MAX_PAGES)
        result = metadata_from_pages(model_id, pages)
        if not result.packages:
            raise ModelDownloadError(f"the package registry lists no usable package for {model_id}")
        return result
