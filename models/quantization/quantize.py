"""``edge-agent models quantize``: a static INT8 (QDQ) copy of a model, checked against its fp32 weights.

1. The fp32 model is loaded as the agent loads it (downloaded into the cache if needed).
2. Frames come from a clip, a folder or a stream (the bundled sample by default); every
   ``HELD_OUT_EVERY``-th is held out, the rest go through the model's own pre-processing
   (letterbox/stretch, static crop, normalisation) to calibrate activation ranges.
3. The graph is simplified (onnxruntime's basic optimisations: constant folding, identity
   removal) and quantized with onnxruntime's tooling: QDQ format, uint8 activations (asymmetric,
   MinMax ranges), int8 weights per output channel. The decode tail after the last learned layers
   (box decoding, score sigmoid, the concatenation of pixel boxes with 0..1 scores) stays fp32: one
   8-bit scale cannot hold 640 px and a 0.01 score step at once.
4. The accuracy guard: the INT8 copy's detections on the held-out frames are scored against the
   fp32 model's (mAP@0.5, fp32 as truth at the working CONFIDENCE, INT8 ranked down to 0.01).
   Below the threshold the copy is not activated unless forced; the figure is stored either way.
5. The copy and its record land beside the fp32 weights (read-in-place models: under
   MODEL_CACHE_DIR/.quantized/), atomically, under the model's cache lock; the fp32 files are
   never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.artifacts import cache
from edge_agent.models.common.errors import AccuracyGuardError, CalibrationSourceError, QuantizationError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.identity.ids import parse_model_id
from edge_agent.models.maths.evaluation import evaluate_map
from edge_agent.models.quantization.calibration import open_frames
from edge_agent.models.quantization.softmax_rewrite import decompose_softmax
from edge_agent.models.speed.precision import (
    DEFAULT_FRAMES,
    DEFAULT_MIN_MAP50,
    AccuracyRecord,
    CalibrationRecord,
    FileDigest,
    Int8Record,
    QuantizationRecipe,
    SpeedRecord,
    cpu_name,
    find_int8_copy,
    int8_file_names,
    quantized_dir,
    split_precision,
    with_precision,
)

logger = logging.getLogger(__name__)

MIN_FRAMES = 8
HELD_OUT_EVERY = 4  # frames 3, 7, 11, ... are kept out of calibration for the accuracy check
EVAL_CONFIDENCE = 0.01

WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
SHAPE_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"})
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class QuantizeResult:
    record: Int8Record
    weights_path: Path
    record_path: Path
    kept_previous: bool = False  # the new copy failed and an active older one was left in place


# --- the graph ---------------------------------------------------------------------------------


def decode_tail(model: Any) -> list[str]:
    """Names of the nodes that run after the network's last learned layers (kept fp32).

    Walking back from the graph outputs, every node is tail until a weighted layer (Conv, Gemm,
    MatMul with constant weights) is reached. A weighted layer fed by a Softmax (through reshapes
    only) is a fixed reduction such as YOLOv8's DFL expectation, not a learned layer: it is tail too.
    """
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}

    def fed_by_softmax(node: Any) -> bool:
        tensor = node.input[0]
        for _ in range(16):
            source = producer.get(tensor)
            if source is None:
                return False
            if source.op_type == "Softmax":
                return True
            if source.op_type not in SHAPE_OPS:
                return False
            tensor = source.input[0]
        return False

    def learned(node: Any) -> bool:
        return (
            node.op_type in WEIGHTED_OPS
            and len(node.input) > 1
            and node.input[1] in constants
            and not fed_by_softmax(node)
        )

    tail: dict[str, None] = {}
    seen: set[str] = set()
    stack = [out.name for out in graph.output]
    while stack:
        tensor = stack.pop()
        node = producer.get(tensor)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if learned(node):
            continue
        tail[node.name] = None
        stack.extend(name for name in node.input if name)
    return [node.name for node in graph.node if node.name in tail]


def prepare_graph(source: Path, target: Path) -> Any:
    """onnxruntime's basic optimisations (folding, identity removal), every node named; returns the model."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
    model = onnx.load(str(target))
    used = {node.name for node in model.graph.node if node.name}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
    onnx.save(model, str(target))
    return model


def needs_reduce_range() -> bool:
    """7-bit weights on x86 CPUs without VNNI, where u8 x s8 products can saturate (onnxruntime's advice)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return not any(flag in text for flag in VNNI_FLAGS)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantization tooling logs advice through the root logger; keep it out of ours."""

    def drop(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def quantize_graph(
    prepared: Path,
    target: Path,
    input_name: str,
    tensors: Iterator[np.ndarray],
    excluded: list[str],
    reduce_range: bool,
) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = tensors

        def get_next(self) -> dict[str, np.ndarray] | None:
            tensor = next(self._items, None)
            return None if tensor is None else {input_name: tensor}

    with _quiet_root_logger():
        quantize_static(
            str(prepared),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            # MinMax keeps only each tensor's min and max per frame (the augmented graph reduces
            # them), so memory stays small without chunking; CalibMaxIntermediateOutputs would
            # drop every full chunk's ranges in onnxruntime <= 1.32.
            calibrate_method=CalibrationMethod.MinMax,
        )


# --- the accuracy guard ---------------------------------------------------------------------------


def _boxes_of(prediction: Any, model_id: str) -> np.ndarray:
    """(n, 6) x1, y1, x2, y2, score, class of a prediction with boxes."""
    boxes = getattr(prediction, "boxes", None)
    scores = getattr(prediction, "confidences", None)
    classes = getattr(prediction, "class_ids", None)
    if boxes is None or scores is None or classes is None:
        raise QuantizationError(
            f"{model_id}: the accuracy check compares boxes, and this model's predictions "
            f"({type(prediction).__name__}) have none; --force activates the copy unchecked"
        )
    out = np.zeros((len(scores), 6), np.float64)
    if len(scores):
        out[:, :4] = np.asarray(boxes, np.float64).reshape(-1, 4)
        out[:, 4] = np.asarray(scores, np.float64)
        out[:, 5] = np.asarray(classes, np.float64)
    return out


@dataclass(frozen=True)
class AccuracyFigures:
    map50: float | None
    map50_95: float | None
    truth_detections: int
    int8_detections: int


def compare_detections(truth: list[np.ndarray], candidate: list[np.ndarray], num_classes: int) -> AccuracyFigures:
    """mAP of ``candidate`` (n, 6) taking ``truth`` (m, 6; score ignored) as ground truth, per image."""
    gts = [t[:, [0, 1, 2, 3, 5]] for t in truth]
    n_truth = sum(len(g) for g in gts)
    n_candidate = sum(len(c) for c in candidate)
    if n_truth == 0:
        return AccuracyFigures(None, None, 0, n_candidate)
    classes = max(num_classes, int(max(max((g[:, 4].max() for g in gts if len(g)), default=0), 0)) + 1)
    map50, map5095 = evaluate_map(candidate, gts, classes)
    return AccuracyFigures(map50, map5095, n_truth, n_candidate)


def _time_runs(run: Callable[[], Any], runs: int) -> float:
    started = time.perf_counter()
    for _ in range(runs):
        run()
    return (time.perf_counter() - started) * 1000.0 / runs


def measure_speed(fp32_engine: Any, int8_engine: Any, tensor: np.ndarray, rounds: int = 5) -> tuple[float, float]:
    """Median ms per run of each engine on ``tensor``, interleaved so that load hits both alike."""
    for _ in range(2):
        fp32_engine.run(tensor)
        int8_engine.run(tensor)
    fp32_ms, int8_ms = [], []
    for _ in range(rounds):
        fp32_ms.append(_time_runs(lambda: fp32_engine.run(tensor), 2))
        int8_ms.append(_time_runs(lambda: int8_engine.run(tensor), 2))
    return statistics.median(fp32_ms), statistics.median(int8_ms)


# --- the command ----------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime as ort

    try:
        agent = metadata.version("edge-agent")
    except metadata.PackageNotFoundError:
        agent = "source"
    return {"edge-agent": agent, "onnxruntime": ort.__version__, "onnx": onnx.__version__}


def _digest(path: Path) -> FileDigest:
    return FileDigest(file=path.name, size=path.stat().st_size, md5=cache.md5_of(path))


def _describe_preprocessing(model: Any) -> str:
    """The pre-processing the calibration frames went through, as the agent applies it."""
    width, height = model.input_size
    pre, norm = model.preprocessing, model.normalization
    steps = [f"{'letterbox (pad ' + str(pre.pad_value) + ')' if pre.letterbox else 'stretch'} to {width}x{height}"]
    if pre.static_crop is not None:
        steps.insert(0, f"static crop {pre.static_crop}")
    if pre.grayscale:
        steps.append("grayscale")
    if pre.contrast:
        steps.append(f"contrast {pre.contrast}")
    steps.append(f"{norm.channels.upper()}, x*{norm.scale:.6g} - mean {norm.mean} / std {norm.std}")
    return "the model's own: " + ", ".join(steps)


def _load_fp32(model_id: str) -> tuple[Any, Any, Any]:
    """(ref, fp32 model, its OnnxEngine), checked to be quantizable here."""
    from edge_agent.models.engines.onnx import OnnxEngine
    from edge_agent.models.resolution.registry import get_model
    from edge_agent.models.tasks.base import VisionModel

    ref = parse_model_id(split_precision(model_id)[0])
    if ref.kind == "generic":
        raise QuantizationError(f"{ref.model_id} is a foundation model; only ONNX detector weights can be quantized")
    fp32 = get_model(with_precision(ref.model_id, "fp32"))
    engine = getattr(fp32, "engine", None)
    if not isinstance(fp32, VisionModel) or not isinstance(engine, OnnxEngine):
        raise QuantizationError(f"{ref.model_id} does not run on an ONNX image engine, so it cannot be quantized here")
    if engine.input.dtype != "float32":
        raise QuantizationError(
            f"{ref.model_id} takes {engine.input.dtype} input; only fp32 ONNX models can be quantized to INT8"
        )
    return ref, fp32, engine


@dataclass(frozen=True)
class _Check:
    figures: AccuracyFigures
    speed: SpeedRecord


def _check_against_fp32(ref: Any, fp32: Any, engine: Any, int8_path: Path, held_out: list[np.ndarray]) -> _Check:
    """The INT8 copy built as the agent would build it, scored and timed against the fp32 model."""
    from edge_agent.models.engines.onnx import OnnxEngine
    from edge_agent.models.resolution.build import get_family

    settings = fp32.settings
    int8_engine = OnnxEngine(int8_path, ref.model_id, settings, precision="int8")
    try:
        family = get_family(fp32.task_type, fp32.model_type, ref.model_id)
        int8 = family.build(dataclasses.replace(fp32.context, engine=int8_engine))
        truth = [_boxes_of(p, ref.model_id) for p in fp32.predict(held_out, confidence=settings.confidence)]
        ranked = [_boxes_of(p, ref.model_id) for p in int8.predict(held_out, confidence=EVAL_CONFIDENCE)]
        figures = compare_detections(truth, ranked, getattr(fp32, "num_classes", 0))
        fp32_ms, int8_ms = measure_speed(engine, int8_engine, fp32.preprocess([held_out[0]])[0].copy())
        provider = int8_engine.providers[0] if int8_engine.providers else "unknown"
    finally:
        int8_engine.close()
    speed = SpeedRecord(provider=provider, cpu=cpu_name(), fp32_ms=round(fp32_ms, 3), int8_ms=round(int8_ms, 3))
    return _Check(figures, speed)


def _accuracy_record(
    figures: AccuracyFigures, threshold: float, truth_confidence: float, held_out: int
) -> AccuracyRecord:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 5)

    note = (
        ""
        if figures.map50 is not None
        else (
            "the fp32 model found nothing on the held-out frames at CONFIDENCE, so there is nothing to compare: "
            "calibrate on frames of the scenes the model is for"
        )
    )
    return AccuracyRecord(
        metric="mAP of the INT8 copy's detections with the fp32 model's as ground truth",
        map50=rounded(figures.map50),
        map50_95=rounded(figures.map50_95),
        threshold=threshold,
        truth_confidence=truth_confidence,
        truth_detections=figures.truth_detections,
        int8_detections=figures.int8_detections,
        held_out_frames=held_out,
        passed=figures.map50 is not None and figures.map50 >= threshold,
        note=note,
    )


def quantize_model(
    model_id: str,
    *,
    calibration: str | None = None,
    frames: int = DEFAULT_FRAMES,
    min_map50: float = DEFAULT_MIN_MAP50,
    force: bool = False,
    status: Callable[[str], None] | None = None,
    destination: Path | None = None,
) -> QuantizeResult:
    """Make, check and store the INT8 copy of ``model_id``. AccuracyGuardError when it is not activated.

    ``destination`` overrides where the copy goes (tools/quantize_builtin.py ships the built-in's copy
    inside its package directory); by default it is the model's cache directory.
    """
    if not 0.0 < min_map50 <= 1.0:
        raise QuantizationError(f"--min-map50 must be in (0, 1], got {min_map50}")
    try:
        import onnx  # onnxruntime.quantization needs it too
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        raise QuantizationError(f"quantizing needs the onnx package ({exc}); pip install 'onnx>=1.15'") from None
    if frames < MIN_FRAMES:
        raise CalibrationSourceError(f"--frames must be at least {MIN_FRAMES}, got {frames}")
    say = status or (lambda _text: None)
    started = time.time()
    ref, fp32, engine = _load_fp32(model_id)
    settings = fp32.settings
    fp32_path = engine.weights_path
    source = _digest(fp32_path)
    if destination is None:
        destination = quantized_dir(settings.model_cache_dir, ref.model_id) if ref.read_only else fp32_path.parent
    int8_name, record_name = int8_file_names(fp32_path.name)

    source_frames = open_frames(calibration, frames)
    held_out: list[np.ndarray] = []
    calibrating = 0

    def tensors() -> Iterator[np.ndarray]:
        """Calibration tensors made as frames are decoded; every HELD_OUT_EVERY-th frame is kept aside."""
        nonlocal calibrating
        for index, frame in enumerate(source_frames):
            if index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1:
                held_out.append(frame)
                continue
            calibrating += 1
            yield fp32.preprocess([frame])[0].copy()

    def too_few() -> CalibrationSourceError:
        return CalibrationSourceError(
            f"--calibration {source_frames.describe()}: at least {MIN_FRAMES} frames are needed"
        )

    reduce_range = needs_reduce_range()
    with tempfile.TemporaryDirectory(prefix="edge-agent-quantize-") as tmp:
        prepared_path, int8_tmp = Path(tmp) / "prepared.onnx", Path(tmp) / int8_name
        prepared = prepare_graph(fp32_path, prepared_path)
        if any(node.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv") for node in prepared.graph.node):
            raise QuantizationError(f"{fp32_path} is already quantized; quantize the fp32 export instead")
        excluded = decode_tail(prepared)
        # The tail stays fp32; its inner-axis softmaxes (DFL) are spelled out, 4-12x faster.
        decomposed = decompose_softmax(prepared, among=set(excluded))
        if decomposed:
            onnx.save(prepared, str(prepared_path))
            excluded = [new for name in excluded for new in decomposed.get(name, [name])]
        say(
            f"calibrating on up to {frames - frames // HELD_OUT_EVERY} frames of "
            f"{source_frames.label} ({len(excluded)} decode nodes kept fp32)"
        )
        try:
            quantize_graph(prepared_path, int8_tmp, engine.input.name, tensors(), excluded, reduce_range)
        except CalibrationSourceError:
            raise
        except Exception as exc:
            if source_frames.read < MIN_FRAMES:
                raise too_few() from None
            raise QuantizationError(f"onnxruntime could not quantize {ref.model_id}: {exc}") from exc
        if source_frames.read < MIN_FRAMES:
            raise too_few()

        say(f"checking the INT8 copy against fp32 on {len(held_out)} held-out frames")
        check = _check_against_fp32(ref, fp32, engine, int8_tmp, held_out)
        accuracy = _accuracy_record(check.figures, min_map50, settings.confidence, len(held_out))
        record = Int8Record(
            model_id=ref.model_id,
            created_at=started,
            duration_s=round(time.time() - started, 2),
            source=source,
            int8=FileDigest(file=int8_name, size=int8_tmp.stat().st_size, md5=cache.md5_of(int8_tmp)),
            quantization=QuantizationRecipe(
                activations="uint8, asymmetric, per tensor",
                weights="int8, symmetric, per output channel" + (" (7-bit range: no VNNI)" if reduce_range else ""),
                calibration_method="MinMax",
                reduce_range=reduce_range,
                excluded_nodes=excluded,
                decomposed_softmax=list(decomposed),
                tool=_versions(),
            ),
            calibration=CalibrationRecord(
                source=source_frames.describe(),
                frames=source_frames.read,
                calibration_frames=calibrating,
                held_out_frames=len(held_out),
                preprocessing=_describe_preprocessing(fp32),
            ),
            accuracy=accuracy,
            speed=check.speed,
            active=accuracy.passed or force,
            forced=force and not accuracy.passed,
        )
        kept = _store(ref, settings, destination, fp32_path, source, int8_tmp, int8_name, record_name, record)

    result = QuantizeResult(record, destination / int8_name, destination / record_name, kept_previous=kept)
    if not record.active:
        shown = "could not be measured" if accuracy.map50 is None else f"{accuracy.map50:.4f}"
        where = "the active INT8 copy already there was kept" if kept else f"stored inactive in {destination}"
        raise AccuracyGuardError(
            ref.model_id,
            accuracy.map50,
            min_map50,
            result.record_path,
            f"the INT8 copy of {ref.model_id} scored mAP@0.5 {shown} against fp32 on {len(held_out)} held-out "
            f"frames (threshold {min_map50}); it was not activated ({where}). "
            f"{accuracy.note + '. ' if accuracy.note else ''}Calibrate on frames of the model's own scenes "
            f"(--calibration), lower --min-map50, or --force to use it anyway",
        )
    return result


def _store(
    ref: Any,
    settings: ModelSettings,
    destination: Path,
    fp32_path: Path,
    source: FileDigest,
    int8_tmp: Path,
    int8_name: str,
    record_name: str,
    record: Int8Record,
) -> bool:
    """Write the copy, then its record, under the model's lock; True when an older active copy was kept."""
    lock = (
        cache.named_lock(f"{destination.name}.quantize.lock", ref.model_id, settings)
        if ref.read_only
        else cache.model_lock(ref, settings)
    )
    with lock:
        try:
            current = _digest(fp32_path)
        except OSError:
            current = None
        if current != source:
            raise QuantizationError(
                f"the fp32 weights of {ref.model_id} ({fp32_path}) changed or vanished while quantizing "
                f"(another process fetched or cleared the model); nothing was written. Run the command again"
            )
        if not record.active:
            previous = find_int8_copy(ref.model_id, fp32_path, [destination]).copy
            if previous is not None:
                return True
        try:
            destination.mkdir(parents=True, exist_ok=True)
            # The old record goes first: a crash after it leaves a copy without a record, which
            # is never used, rather than an old record vouching for new weights.
            with contextlib.suppress(FileNotFoundError):
                (destination / record_name).unlink()
            temp = cache.temp_path_in(destination, int8_name)
            try:
                shutil.copyfile(int8_tmp, temp)
                cache.commit_temp(temp, destination / int8_name)
            finally:
                with contextlib.suppress(OSError):
                    temp.unlink()
            cache.atomic_write_json(destination / record_name, record.model_dump(mode="json"))
        except OSError as exc:
            raise QuantizationError(
                f"cannot write the INT8 copy of {ref.model_id} into {destination}: {exc.strerror or exc}"
            ) from None
    logger.info("INT8 copy of %s written to %s (active: %s)", ref.model_id, destination / int8_name, record.active)
    return False
