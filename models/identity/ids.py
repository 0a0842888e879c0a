"""Model ids: parse every tier into a :class:`ModelRef` and map it to a directory safely.

Id forms, checked in this order:

* an absolute path or ``file://`` URL naming an existing directory of artifacts (read in place);
* an alias (``yolov8n-640`` -> ``coco/3``);
* ``builtin/<name>`` -> the packaged directory ``models/builtin/<name>/``;
* ``family/variant`` of a foundation family (``clip/ViT-B-16``);
* ``project/version`` or ``workspace/project/version`` (-> ``project/version``).

Cache-backed ids are made of ASCII slugs only, so no spelling (``..``, absolute parts, NUL,
fullwidth solidus/dots, other look-alikes) can name a path outside ``MODEL_CACHE_DIR``; the final
path is also checked after resolving symlinks.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from edge_agent.models.common.errors import InvalidModelIdError
from edge_agent.models.identity.aliases import resolve_alias
from edge_agent.models.identity.families import bare_variant, canonical_variant, find_family

BUILTIN_ROOT = Path(__file__).resolve().parent.parent / "builtin"
BUILTIN_PREFIX = "builtin"

MAX_MODEL_ID_LENGTH = 256
MAX_PART_LENGTH = 100
MAX_LOCAL_PATH_LENGTH = 4096

_PART_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ALLOWED_CHARS = "A-Z a-z 0-9 . _ -"
_ID_FORMS = (
    "expected project/version, workspace/project/version, an alias such as yolov8n-640, "
    "family/variant such as clip/ViT-B-16, builtin/<name>, or an absolute path to a model directory"
)

Kind = Literal["roboflow", "generic", "builtin", "local"]

# Directories of Roboflow's inference-models layout in MODEL_CACHE_DIR (models/artifacts/packages/layout.py).
_RESERVED_PROJECTS = frozenset({"models-cache", "shared-blobs", "offline-weights-registry", "auto-resolution-cache"})


@dataclass(frozen=True)
class ModelRef:
    """A parsed model id.

    ``model_id`` is canonical: ``project/version`` (workspace dropped, alias resolved),
    ``family/variant``, ``builtin/<name>`` or the real path of a local directory.
    """

    kind: Kind
    model_id: str
    requested_id: str
    project: str | None = None
    version: str | None = None
    local_dir: Path | None = None
    family: str | None = None

    @property
    def read_only(self) -> bool:
        """Local and built-in directories are read in place and never written or deleted."""
        return self.kind in ("local", "builtin")


def _describe_char(ch: str) -> str:
    name = unicodedata.name(ch, None)
    code = f"U+{ord(ch):04X}"
    return f"{code} {name}" if name else code


def _reject(model_id: str, reason: str) -> InvalidModelIdError:
    shown = model_id if len(model_id) <= 80 else model_id[:77] + "..."
    return InvalidModelIdError(f"invalid model id {shown!r}: {reason}")


def _check_part(model_id: str, part: str, what: str) -> None:
    if not part:
        raise _reject(model_id, f"empty {what} (doubled or trailing '/'?); {_ID_FORMS}")
    if part in (".", ".."):
        raise _reject(model_id, f"{what} {part!r} is a relative path component, not a name")
    if len(part) > MAX_PART_LENGTH:
        raise _reject(model_id, f"{what} is longer than {MAX_PART_LENGTH} characters")
    for ch in part:
        if not (ch.isascii() and (ch.isalnum() or ch in "._-")):
            raise _reject(
                model_id,
                f"{what} {part!r} contains {_describe_char(ch)}; only {_ALLOWED_CHARS} are allowed",
            )
    if not _PART_RE.fullmatch(part):
        raise _reject(model_id, f"{what} {part!r} must start with a letter or digit")


def _looks_local(text: str) -> bool:
    return text.startswith("/") or text.lower().startswith("file:")


def _parse_local(model_id: str, text: str) -> ModelRef:
    if len(text) > MAX_LOCAL_PATH_LENGTH:
        raise _reject(model_id, f"path is longer than {MAX_LOCAL_PATH_LENGTH} characters")
    if text.lower().startswith("file:"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise _reject(model_id, "file:// URLs must name a local path (file:///path/to/model)")
        if parts.query or parts.fragment:
            raise _reject(model_id, "file:// URL must not carry a query or fragment")
        path_text = unquote(parts.path)
    else:
        path_text = text
    if "\x00" in path_text:
        raise _reject(model_id, "path contains a NUL character")
    if not path_text.startswith("/"):
        raise _reject(model_id, "a local model directory must be given as an absolute path")
    path = Path(path_text)
    try:
        is_dir = path.is_dir()
        exists = is_dir or path.exists()
    except OSError as exc:
        raise _reject(model_id, f"cannot access {path}: {exc.strerror or exc}") from None
    if not exists:
        raise _reject(
            model_id,
            f"{path} does not exist; an absolute path is read as a local model directory "
            f"(holding weights.onnx, environment.json, class_names.txt)",
        )
    if not is_dir:
        raise _reject(
            model_id,
            f"{path} is not a directory; a local model id names a directory holding weights.onnx, "
            f"environment.json and class_names.txt",
        )
    has_weights = (
        (path / "weights.onnx").is_file()
        or any(path.glob("*.onnx"))
        or any(path.glob("*.torchscript"))
        or (path / "weights.pt").is_file()  # a Roboflow Instant model (serialized OWLv2)
    )
    # a Hugging Face checkpoint (vision-language models): config.json with safetensors, or a LoRA adapter
    has_weights = has_weights or ((path / "config.json").is_file() and any(path.glob("*.safetensors")))
    has_weights = has_weights or (path / "adapter_config.json").is_file()
    if not has_weights:
        raise _reject(
            model_id,
            f"directory {path} has no weights.onnx (nor any .onnx or .torchscript file, nor a Hugging Face "
            f"checkpoint): not a model directory",
        )
    real = Path(os.path.realpath(path))
    return ModelRef(kind="local", model_id=str(real), requested_id=model_id, local_dir=real)


def parse_model_id(model_id: object) -> ModelRef:
    """Parse ``model_id`` (any tier) or raise InvalidModelIdError saying why it is refused."""
    if not isinstance(model_id, str):
        raise InvalidModelIdError(f"model id must be a string, got {type(model_id).__name__}")
    text = model_id.strip(" \t\r\n")
    if not text:
        raise InvalidModelIdError(f"empty model id; {_ID_FORMS}")
    for ch in text:
        if ord(ch) < 32 or ord(ch) == 127:
            raise _reject(model_id, f"contains the control character {_describe_char(ch)}")
    if _looks_local(text):
        return _parse_local(model_id, text)
    if len(text) > MAX_MODEL_ID_LENGTH:
        raise _reject(model_id, f"longer than {MAX_MODEL_ID_LENGTH} characters")

    resolved = resolve_alias(text)
    parts = resolved.split("/")
    if len(parts) == 1:
        _check_part(model_id, parts[0], "id")
        variant = bare_variant(parts[0])
        if variant is not None:
            parts = [parts[0], variant]
            resolved = "/".join(parts)
        else:
            raise _reject(model_id, f"not a known alias and has no '/'; {_ID_FORMS}")
    names = ("workspace", "project", "version") if len(parts) == 3 else ("project", "version")
    for index, part in enumerate(parts):
        # every part is checked first, so a traversal attempt is reported as such whatever its length
        _check_part(model_id, part, names[index] if index < len(names) and len(parts) <= 3 else "part")
    if len(parts) > 3:
        raise _reject(model_id, f"too many '/'-separated parts ({len(parts)}); {_ID_FORMS}")

    if len(parts) == 2 and parts[0] == BUILTIN_PREFIX:
        name = parts[1]
        return ModelRef(
            kind="builtin",
            model_id=resolved,
            requested_id=model_id,
            project=BUILTIN_PREFIX,
            version=name,
            local_dir=BUILTIN_ROOT / name,
        )
    if len(parts) == 2:
        found = find_family(resolved)
        if found is not None:
            try:
                variant = canonical_variant(found[0], parts[1])
            except ValueError as exc:
                raise _reject(model_id, str(exc)) from None
            return ModelRef(
                kind="generic",
                model_id=f"{parts[0]}/{variant}",
                requested_id=model_id,
                project=parts[0],
                version=variant,
                family=found[0],
            )
    project, version = parts[-2], parts[-1]
    if project in _RESERVED_PROJECTS:
        raise _reject(model_id, f"{project!r} is a directory the model cache reserves, not a project name")
    return ModelRef(
        kind="roboflow",
        model_id=f"{project}/{version}",
        requested_id=model_id,
        project=project,
        version=version,
    )


def cache_dir_for(ref: ModelRef, cache_root: Path) -> Path:
    """``cache_root/<project>/<version>``, proven to stay inside ``cache_root``.

    Local and built-in models have no cache directory; ask for ``ref.local_dir`` instead.
    """
    if ref.read_only or ref.project is None or ref.version is None:
        raise InvalidModelIdError(f"{ref.model_id} is read in place and has no cache directory")
    root = Path(os.path.realpath(cache_root))
    candidate = Path(os.path.realpath(root / ref.project / ref.version))
    if candidate.parent.parent != root or not candidate.is_relative_to(root):
        raise _reject(
            ref.requested_id,
            f"its cache directory resolves to {candidate}, outside MODEL_CACHE_DIR {root} (a symlink in the cache?)",
        )
    return candidate


def lock_name(ref: ModelRef) -> str:
    """File name of the one lock guarding a model's cache directory (download, repair, clear).

    '@' cannot occur in a part, so distinct ids never share a lock.
    """
    return f"{ref.project}@{ref.version}.lock"
