"""Which weights a model runs: its fp32 ONNX file or the INT8 copy ``edge-agent models quantize`` made.

``MODEL_PRECISION`` (fp32 | int8 | auto) applies to every model; a model id may carry its own
choice as a suffix (``yolov8n-640@int8``, ``/opt/models/door@fp32``), which is how a stream gets
its own (``STREAM_<NAME>_MODEL_PRECISION`` is folded into the stream's model id).

An INT8 copy is ``<weights stem>.int8.onnx`` with a JSON record ``<weights stem>.int8.json`` of how
it was made and how it scored against fp32. It lives beside the fp32 weights in the model's cache
directory; for built-in and local models (read in place, never written) a copy made on this box
lives under ``MODEL_CACHE_DIR/.quantized/`` and wins over one shipped inside the directory. A copy
is used only while its record is readable, marked active (it passed the accuracy check, or was
forced), and names the fp32 weights it was made from (same size and MD5).
"""

from __future__ import annotations

import hashlib
import logging
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from edge_agent.models.artifacts import cache
from edge_agent.models.common.errors import Int8CopyMissingError

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "int8", "auto"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "auto")
RECORD_FORMAT: Literal["edge-agent-int8/1"] = "edge-agent-int8/1"
# `edge-agent models quantize` defaults: frames read (a quarter held out) and the accuracy threshold.
DEFAULT_FRAMES = 200
DEFAULT_MIN_MAP50 = 0.98
QUANTIZED_DIR = ".quantized"

# Providers whose kernels run QDQ INT8 graphs as integer arithmetic (VNNI/AMX on x86, OpenVINO's
# low-precision transformations). CUDA dequantizes QDQ back to float (slower than fp32), CoreML
# likewise; TensorRT gets its speed from FP16 engines here. Used by ``auto`` when the copy's record
# holds no speed figure measured on this CPU and provider.
INT8_FAST_PROVIDERS = frozenset({"CPUExecutionProvider", "OpenVINOExecutionProvider"})
# ``auto`` takes a measured copy only when it is clearly faster, not within noise.
MIN_MEASURED_SPEEDUP = 1.05


def split_precision(model_id: str) -> tuple[str, Precision | None]:
    """``"coco/3@int8"`` -> ``("coco/3", "int8")``; an id without a precision suffix -> ``(id, None)``.

    A local directory whose name really ends in ``@int8`` (it exists as given) keeps its name.
    """
    text = model_id.strip()
    head, sep, tail = text.rpartition("@")
    if not sep or tail.lower() not in PRECISIONS or not head:
        return text, None
    if text.startswith("/") and Path(text).is_dir():
        return text, None
    return head, tail.lower()  # type: ignore[return-value]


def with_precision(model_id: str, precision: str | None) -> str:
    """The id with ``precision`` as its suffix (None leaves it unchanged)."""
    if precision is None:
        return model_id
    base, _ = split_precision(model_id)
    return f"{base}@{precision}"


def check_precision(value: str, where: str) -> Precision:
    """``value`` as a precision, or ValueError naming ``where`` and the accepted values."""
    text = value.strip().lower()
    if text not in PRECISIONS:
        raise ValueError(f"{where}={value!r} is invalid; accepted: {', '.join(PRECISIONS)}")
    return text  # type: ignore[return-value]


def int8_file_names(weights_file: str) -> tuple[str, str]:
    """(INT8 weights, record) file names for a family's fp32 weights file name."""
    stem = weights_file[: -len(".onnx")] if weights_file.endswith(".onnx") else weights_file
    return f"{stem}.int8.onnx", f"{stem}.int8.json"


def keyed_dir(root: Path, key: str) -> Path:
    """A readable, collision-free directory name under ``root`` for an arbitrary key (a path, an id)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key.strip("/"))[-80:] or "model"
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return root / f"{slug}-{digest}"


def quantized_dir(cache_root: Path, model_id: str) -> Path:
    """Where INT8 copies of a read-in-place (built-in or local) model are kept on this box."""
    return keyed_dir(cache_root / QUANTIZED_DIR, model_id)


def cpu_name() -> str:
    """The CPU model, so a speed figure measured on one box is not trusted on another."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- the record ----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class FileDigest(_Strict):
    file: str
    size: int
    md5: str


class QuantizationRecipe(_Strict):
    format: Literal["QDQ"] = "QDQ"
    activations: str
    weights: str
    calibration_method: str
    reduce_range: bool
    excluded_nodes: list[str]
    #: inner-axis Softmax nodes of the fp32 tail written out as ReduceMax/Sub/Exp/ReduceSum/Div
    #: (models/quantization/softmax_rewrite.py); empty in copies made before that rewrite
    decomposed_softmax: list[str] = []
    tool: dict[str, str]


class CalibrationRecord(_Strict):
    source: str
    frames: int
    calibration_frames: int
    held_out_frames: int
    preprocessing: str


class AccuracyRecord(_Strict):
    """mAP of the INT8 copy's detections on held-out frames, taking the fp32 model's as the truth."""

    metric: str
    map50: float | None
    map50_95: float | None
    threshold: float
    truth_confidence: float
    truth_detections: int
    int8_detections: int
    held_out_frames: int
    passed: bool
    note: str = ""


class SpeedRecord(_Strict):
    provider: str
    cpu: str
    fp32_ms: float
    int8_ms: float

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.int8_ms if self.int8_ms > 0 else 0.0


class Int8Record(_Strict):
    """What ``<stem>.int8.json`` holds: how the copy was made, how it scored, whether it is used."""

    format: Literal["edge-agent-int8/1"] = RECORD_FORMAT
    model_id: str
    created_at: float
    duration_s: float
    source: FileDigest
    int8: FileDigest
    quantization: QuantizationRecipe
    calibration: CalibrationRecord
    accuracy: AccuracyRecord
    speed: SpeedRecord | None = None
    active: bool
    forced: bool = False


def read_record(path: Path) -> Int8Record | None:
    content = cache.read_json_file(path)
    if content is None:
        return None
    try:
        return Int8Record.model_validate(content)
    except ValidationError as exc:
        logger.warning("%s is not a valid INT8 record (%s); ignoring that INT8 copy", path, exc.errors()[0]["msg"])
        return None


# --- finding a usable copy ------------------------------------------------------------------------


@dataclass(frozen=True)
class Int8Copy:
    weights_path: Path
    record: Int8Record


@dataclass(frozen=True)
class Int8Lookup:
    """A usable copy, or why there is none (for ``int8``'s error and ``auto``'s log line)."""

    copy: Int8Copy | None
    problems: tuple[str, ...]
    looked_in: tuple[Path, ...]


def int8_locations(model_id: str, directory: Path, cache_root: Path) -> list[Path]:
    """Directories that may hold ``model_id``'s INT8 copy, best first."""
    derived = quantized_dir(cache_root, model_id)
    return [derived, directory] if derived != directory else [directory]


def find_int8_copy(model_id: str, fp32_path: Path, locations: list[Path]) -> Int8Lookup:
    """The first active INT8 copy made from ``fp32_path``'s current contents, if any."""
    int8_name, record_name = int8_file_names(fp32_path.name)
    problems: list[str] = []
    fp32_digest: tuple[int, str] | None = None
    for directory in locations:
        weights, record_path = directory / int8_name, directory / record_name
        if not weights.is_file() and not record_path.is_file():
            continue
        record = read_record(record_path)
        if record is None:
            problems.append(f"{record_path} is missing or unreadable")
            continue
        if not weights.is_file() or weights.stat().st_size != record.int8.size:
            problems.append(f"{weights} is missing or not the size its record says ({record.int8.size} bytes)")
            continue
        size = fp32_path.stat().st_size
        if fp32_digest is None and size == record.source.size:
            fp32_digest = (size, cache.md5_of(fp32_path))
        if record.source.size != size or fp32_digest is None or record.source.md5 != fp32_digest[1]:
            problems.append(f"{weights} was made from other fp32 weights than the current {fp32_path.name} (stale)")
            continue
        if not record.active:
            figure = record.accuracy.map50
            shown = "could not be measured" if figure is None else f"{figure:.4f}"
            problems.append(
                f"{weights} failed its accuracy check (mAP@0.5 against fp32 {shown}, threshold "
                f"{record.accuracy.threshold}) and was not activated"
            )
            continue
        return Int8Lookup(Int8Copy(weights, record), tuple(problems), tuple(locations))
    return Int8Lookup(None, tuple(problems), tuple(locations))


# --- choosing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionChoice:
    """The weights to load and why (logged, and shown in stats)."""

    precision: Literal["fp32", "int8"]
    requested: Precision
    weights_path: Path
    reason: str
    record: Int8Record | None = None


def quantize_command(model_id: str) -> str:
    return f"edge-agent models quantize {model_id}"


def choose_precision(
    model_id: str,
    requested: Precision,
    fp32_path: Path,
    lookup: Int8Lookup,
    provider: str,
    cpu: str,
) -> PrecisionChoice:
    """fp32 or INT8 for ``model_id`` on ``provider`` (the first of the session's providers)."""
    if requested == "fp32":
        return PrecisionChoice("fp32", requested, fp32_path, "fp32 requested")
    found = lookup.copy
    if found is None:
        why = "; ".join(lookup.problems) or "no INT8 copy in " + ", ".join(str(p) for p in lookup.looked_in)
        if requested == "int8":
            raise Int8CopyMissingError(
                model_id,
                f"precision int8 was asked for {model_id} but it has no usable INT8 copy ({why}). Make one "
                f"with `{quantize_command(model_id)}` (add --force to use a copy below the accuracy "
                f"threshold), or run it as fp32 (MODEL_PRECISION=fp32 or the id suffix @fp32)",
            )
        return PrecisionChoice("fp32", requested, fp32_path, f"auto: {why}; `{quantize_command(model_id)}` makes one")
    if requested == "int8":
        return PrecisionChoice("int8", requested, found.weights_path, "int8 requested", found.record)
    speed = found.record.speed
    if speed is not None and speed.provider == provider and speed.cpu == cpu:
        if speed.speedup >= MIN_MEASURED_SPEEDUP:
            reason = f"auto: the INT8 copy ran {speed.speedup:.2f}x the fp32 speed on {provider} on this CPU"
            return PrecisionChoice("int8", requested, found.weights_path, reason, found.record)
        reason = f"auto: the INT8 copy ran only {speed.speedup:.2f}x the fp32 speed on {provider} on this CPU"
        return PrecisionChoice("fp32", requested, fp32_path, reason, found.record)
    if provider in INT8_FAST_PROVIDERS:
        reason = f"auto: {provider} runs INT8 (QDQ) graphs with integer kernels"
        return PrecisionChoice("int8", requested, found.weights_path, reason, found.record)
    reason = f"auto: {provider} gains nothing from INT8 (QDQ) graphs; @int8 or MODEL_PRECISION=int8 forces the copy"
    return PrecisionChoice("fp32", requested, fp32_path, reason, found.record)


def canonical_key(model_id: str) -> str:
    """One key per (model, precision): the canonical id plus the precision suffix, if any."""
    from edge_agent.models.identity.ids import parse_model_id

    base, precision = split_precision(model_id)
    return with_precision(parse_model_id(base).model_id, precision)
