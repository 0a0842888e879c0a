"""Whether a model id can be fetched without a Roboflow API key, said before any request.

Roboflow's API serves a fine-tuned model (``project/version``) only with a key of the workspace
that owns it: asking without one costs the retries of a download and ends in a 401. A public
alias (``yolov8n-640``) and a model some cache holds already need none; neither does another API
(a mirror, a gateway, a test server), which may serve models without a key.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from edge_agent.models.common.errors import ApiAuthError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.identity.aliases import MODEL_ALIASES, resolve_alias
from edge_agent.models.identity.ids import ModelRef

ROBOFLOW_DOMAIN = "roboflow.com"
_PUBLIC = frozenset(MODEL_ALIASES.values())


def is_roboflow_api(url: str) -> bool:
    """Is ``url`` Roboflow's own API (``api.roboflow.com`` or another host of roboflow.com)?"""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return host == ROBOFLOW_DOMAIN or host.endswith("." + ROBOFLOW_DOMAIN)


def _apis(settings: ModelSettings) -> list[str]:
    """The APIs a model id may be asked of under MODEL_REGISTRY."""
    if settings.model_registry == "ort":
        return [settings.api_base_url]
    if settings.model_registry == "packages":
        return [settings.package_api_host]
    return [settings.api_base_url, settings.package_api_host]


def _cached(ref: ModelRef, settings: ModelSettings) -> bool:
    from edge_agent.models.artifacts.packages.store import PackageStore
    from edge_agent.models.resolution.package_loader import legacy_holds_weights

    return legacy_holds_weights(ref, settings) or bool(PackageStore(settings).cached_packages(ref.model_id))


def missing_key_message(ref: ModelRef) -> str:
    return (
        f"{ref.requested_id} is a fine-tuned model and the Roboflow API serves it only with an API key: set "
        f"ROBOFLOW_API_KEY (or API_KEY) to a key of the workspace that owns it (Roboflow app: Settings, API Keys)"
    )


def check_api_key(ref: ModelRef, api_key: str | None, settings: ModelSettings) -> None:
    """:class:`ApiAuthError` at once when fetching ``ref`` would ask Roboflow's API without a key."""
    if ref.kind != "roboflow" or api_key or settings.offline_mode:
        return  # offline, the cache answers and says what it lacks itself
    requested = ref.requested_id.strip()
    if resolve_alias(requested) != requested or ref.model_id in _PUBLIC:
        return  # a public model, under its alias or its own id (coco/3)
    if not all(is_roboflow_api(url) for url in _apis(settings)):
        return
    if _cached(ref, settings):
        return
    raise ApiAuthError(missing_key_message(ref))


__all__ = ["check_api_key", "is_roboflow_api", "missing_key_message"]
