"""Hugging Face-format checkpoints of vision-language models, in Roboflow's legacy cache layouts.

Where the files come from (Roboflow's ``TransformerModel.download_model_artifacts_from_roboflow_api``):

* a versioned id (``florence-pretrains/3``): ``GET /ort/{project}/{version}`` -> ``ort.weights``,
  ``{key: URL}``, into ``MODEL_CACHE_DIR/<project>/<version>/``;
* a ``family/variant`` id (``smolvlm2/smolvlm-2.2b-instruct``): ``GET /core_model/...`` -> ``weights``,
  into the core-model directory (:func:`..core_cache.core_model_dir`).

Each file is saved under the last segment of its URL; ``*.npz`` files are skipped and ``*.tar.gz``
archives are unpacked in place, as Roboflow does. An adapter package (``adapter_config.json``) finds
its base in its own ``base/`` folder (the current stack's packages), else asks
``GET /lora_bases?repoAndRevision=<repo>/<revision>`` for a tar.gz unpacked into
``MODEL_CACHE_DIR/lora-bases/<repo>/<revision>/`` (or Roboflow's ``~lora-bases-...`` slug directory,
where a newer Roboflow may have put it). The guarantees are the cache's: one lock per directory,
atomic writes, sizes and md5 recorded in the manifest and checked at every load, nothing fetched
or deleted offline.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_agent.models.artifacts import cache
from edge_agent.models.artifacts.api import ProgressCallback, RoboflowApi
from edge_agent.models.artifacts.core_cache import download_files, file_name_of
from edge_agent.models.artifacts.packages.layout import legacy_slug
from edge_agent.models.common.errors import (
    CacheIntegrityError,
    CacheWriteError,
    InvalidModelIdError,
    ModelDownloadError,
    ModelNotCachedError,
)
from edge_agent.models.common.settings import ModelSettings

logger = logging.getLogger(__name__)

StatusCallback = Callable[[str], None]
CONFIG_FILE = "config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
BASE_FOLDER = "base"
LORA_BASES = "lora-bases"
_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Checkpoint:
    """Where a model's weights are: the full checkpoint and, for an adapter package, the adapter."""

    model_dir: Path
    adapter_dir: Path | None = None


def hf_state(directory: Path) -> cache.CacheState:
    """Every file the manifest recorded is present with its size, and a checkpoint is there."""
    manifest = cache.read_manifest(directory)
    recorded = (manifest or {}).get("files")
    if not isinstance(recorded, dict) or not recorded:
        # A directory Roboflow filled has no manifest of ours: a checkpoint with its weights is used as is.
        root = checkpoint_root(directory) if directory.is_dir() else None
        if root is not None and any(root.glob("*.safetensors")):
            return cache.CacheState(missing=(), corrupt=())
        return cache.CacheState(missing=("manifest",), corrupt=())
    missing, corrupt = [], []
    for name, entry in recorded.items():
        path = directory / name
        if not path.is_file():
            missing.append(name)
            continue
        expected = entry.get("size") if isinstance(entry, dict) else None
        size = path.stat().st_size
        if isinstance(expected, int) and expected != size:
            corrupt.append(f"{name}: {size} bytes on disk, {expected} recorded at download")
    if not missing and checkpoint_root(directory) is None:
        corrupt.append(f"no {CONFIG_FILE} or {ADAPTER_CONFIG_FILE} after unpacking")
    return cache.CacheState(missing=tuple(missing), corrupt=tuple(corrupt))


def checkpoint_root(directory: Path) -> Path | None:
    """The folder holding the checkpoint: ``directory`` itself, or its one sub-folder that does
    (an archive packed with its top folder)."""
    if (directory / CONFIG_FILE).is_file() or (directory / ADAPTER_CONFIG_FILE).is_file():
        return directory
    subdirs = (
        [p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")] if directory.is_dir() else []
    )
    found = [p for p in subdirs if (p / CONFIG_FILE).is_file() or (p / ADAPTER_CONFIG_FILE).is_file()]
    return found[0] if len(found) == 1 else None


def unpack(archive: Path, directory: Path) -> None:
    """Unpack a tar.gz into ``directory``, refusing members that would land outside it or links."""
    root = Path(os.path.realpath(directory))
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                target = Path(os.path.realpath(root / member.name))
                if not target.is_relative_to(root) or member.issym() or member.islnk() or member.isdev():
                    raise CacheIntegrityError(f"{archive.name} holds {member.name!r}, which may not be unpacked")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(root, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4; members were checked above
                tar.extractall(root, members=members)
    except (tarfile.TarError, EOFError) as exc:
        raise CacheIntegrityError(f"{archive} is not a readable tar.gz archive: {exc}") from exc


def ensure_hf_files(
    directory: Path,
    what: str,
    lock_name: str,
    describe: Callable[[], dict[str, str]],
    settings: ModelSettings,
    *,
    progress: ProgressCallback | None = None,
    status: StatusCallback | None = None,
    after: Callable[[], None] | None = None,
) -> Path:
    """``directory`` holding the files ``describe()`` lists (fetched and unpacked if needed)."""
    state = hf_state(directory)
    if state.complete:
        return directory
    problem = "; ".join([*(f"missing {m}" for m in state.missing), *state.corrupt])
    if settings.offline_mode:
        if state.missing:
            raise ModelNotCachedError(
                f"OFFLINE_MODE is on and {what} is not (completely) in the model cache ({directory}: {problem}). "
                f"Fetch it on a connected machine with `edge-agent models pull` and copy the directory"
            )
        raise CacheIntegrityError(f"the cached {what} in {directory} is damaged ({problem}) and OFFLINE_MODE is on")
    with cache.named_lock(lock_name, what, settings):
        state = hf_state(directory)
        if state.complete:
            return directory
        logger.info("fetching %s into %s (%s)", what, directory, problem)
        try:
            _download(directory, what, describe(), settings, progress, status)
            if after is not None:
                after()
        except OSError as exc:
            raise CacheWriteError(f"cannot write {what} into {directory}: {exc.strerror or exc}") from None
    state = hf_state(directory)
    if not state.complete:
        raise ModelDownloadError(f"{what} was downloaded but is not a usable checkpoint ({'; '.join(state.corrupt)})")
    return directory


def _download(
    directory: Path,
    what: str,
    urls: dict[str, str],
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
) -> None:
    api = RoboflowApi(settings)
    names = {file_name_of(url, key): url for key, url in urls.items()}
    names = {n: u for n, u in names.items() if not n.endswith(".npz")}  # Roboflow skips them too
    if not names:
        raise ModelDownloadError(f"the Roboflow API lists no weights files for {what}")
    if status:
        status(f"downloading {what}")

    def unpack_archive(path: Path) -> None:
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            unpack(path, directory)

    recorded = download_files(api, names, directory, what, progress, on_file=unpack_archive)
    cache.atomic_write_json(
        directory / cache.MANIFEST_FILE, {"model_id": what, "downloaded_at": time.time(), "files": recorded}
    )
    logger.info("downloaded %s (%s)", what, ", ".join(f"{n} {r['size']} bytes" for n, r in recorded.items()))


# -- adapters and their bases --------------------------------------------------------------------


def adapter_base(adapter_dir: Path) -> tuple[str, str]:
    """(base repository, revision) named by an adapter's ``adapter_config.json``."""
    config = cache.read_json_file(adapter_dir / ADAPTER_CONFIG_FILE)
    if not isinstance(config, dict):
        raise CacheIntegrityError(f"{adapter_dir / ADAPTER_CONFIG_FILE} is not a JSON object")
    repo = config.get("base_model_name_or_path")
    revision = config.get("revision") or "main"
    if not isinstance(repo, str) or not repo.strip():
        raise CacheIntegrityError(f"{adapter_dir / ADAPTER_CONFIG_FILE} names no base_model_name_or_path")
    return repo.strip(), str(revision)


def lora_base_dirs(repo: str, revision: str, root: Path) -> tuple[Path, Path]:
    """Roboflow's two possible homes of a LoRA base: ``lora-bases/<repo>/<revision>`` and its slug."""
    parts = [*repo.split("/"), *revision.split("/")]
    if not all(_REPO_PART.fullmatch(p) and p not in (".", "..") for p in parts):
        raise InvalidModelIdError(f"the adapter's base {repo}@{revision} is not a usable repository name")
    plain = root.joinpath(LORA_BASES, *parts)
    slugged = root / legacy_slug(f"{LORA_BASES}/{repo}/{revision}")
    return plain, slugged


def resolve_checkpoint(
    directory: Path,
    what: str,
    api_key: str | None,
    settings: ModelSettings,
    *,
    use_adapter: bool,
    progress: ProgressCallback | None = None,
    status: StatusCallback | None = None,
) -> Checkpoint:
    """The checkpoint in ``directory``: a full model, or an adapter with its base found or fetched.

    ``use_adapter`` False: an adapter package's base is used alone (Roboflow's non-PEFT Qwen2.5-VL
    class ships its pretrained model as an adapter package and never attaches the adapter).
    """
    root = checkpoint_root(directory)
    if root is None:
        raise CacheIntegrityError(f"{directory} holds no {CONFIG_FILE} nor {ADAPTER_CONFIG_FILE}")
    if not (root / ADAPTER_CONFIG_FILE).is_file():
        return Checkpoint(root)
    bundled = root / BASE_FOLDER
    if (bundled / CONFIG_FILE).is_file():
        return Checkpoint(bundled, root if use_adapter else None)
    repo, revision = adapter_base(root)
    plain, slugged = lora_base_dirs(repo, revision, settings.model_cache_dir)
    for candidate in (plain, slugged):
        if hf_state(candidate).complete or (candidate / CONFIG_FILE).is_file():
            base_root = checkpoint_root(candidate)
            if base_root is not None:
                return Checkpoint(base_root, root if use_adapter else None)
    name = f"{repo}/{revision}"
    base_dir = ensure_hf_files(
        plain,
        f"LoRA base {name} of {what}",
        f"lora-base@{name.replace('/', '@')}.lock",
        lambda: RoboflowApi(settings).describe_lora_base(name, api_key),
        settings,
        progress=progress,
        status=status,
    )
    base_root = checkpoint_root(base_dir)
    if base_root is None:
        raise CacheIntegrityError(f"the LoRA base in {base_dir} holds no {CONFIG_FILE}")
    return Checkpoint(base_root, root if use_adapter else None)
