"""CLI commands of the model layer: ``infer``, ``models pull|list|clear|quantize``.

``register(subparsers)`` adds them to the main parser; every handler is stored as ``handler`` on the
parsed namespace and returns an exit code. EdgeAgentError becomes ``error: <message>`` on stderr
and exit status 2 when it is permanent (a bad id, a missing model offline), else 1.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from edge_agent.models.common.errors import EdgeAgentError, InvalidInputError
from edge_agent.pipelines.sinks.encoding import to_json

DEFAULT_MODEL = "builtin/shapes-v1"
PROGRESS_MIN_BYTES = 1 << 20  # smaller downloads finish before a bar would help

Handler = Callable[[argparse.Namespace], int]


def _guarded(fn: Handler) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except EdgeAgentError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2 if exc.permanent else 1

    handler.__name__ = fn.__name__
    handler.__doc__ = fn.__doc__
    return handler


def _megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


class ProgressBar:
    """A download progress bar on stderr: redrawn in place on a terminal, a line per quarter otherwise."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._last_quarter = -1
        self._drawn = False

    def __call__(self, done: int, total: int | None) -> None:
        if total is not None and total < PROGRESS_MIN_BYTES:
            return
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw < 0.1 and (total is None or done < total):
                return
            self._last_draw = now
            if total:
                filled = int(self.width * done / total)
                bar = "#" * filled + "-" * (self.width - filled)
                text = f"\r{self.label} [{bar}] {100 * done / total:5.1f}% {_megabytes(done)}/{_megabytes(total)}"
            else:
                text = f"\r{self.label} {_megabytes(done)}"
            self.stream.write(text)
            self.stream.flush()
            self._drawn = True
        elif total:
            quarter = int(4 * done / total)
            if quarter > self._last_quarter:
                self._last_quarter = quarter
                self.stream.write(f"{self.label}: {25 * quarter}% of {_megabytes(total)}\n")
                self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def _numbers(text: str, flag: str, counts: tuple[int, ...]) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        shapes = {2: "X,Y", 3: "X,Y,LABEL", 4: "X1,Y1,X2,Y2"}
        raise InvalidInputError(f"{flag} {text!r}: accepted {' or '.join(shapes[c] for c in counts)} in source pixels")
    return values


def _prompt_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--prompt``/``--box``/``--point``/``--mask-format`` as the model's request fields."""
    options: dict[str, Any] = {}
    if getattr(args, "prompt", None):
        options["prompts"] = list(args.prompt)
    if getattr(args, "box", None):
        options["boxes"] = [_numbers(b, "--box", (4,)) for b in args.box]
    if getattr(args, "point", None):
        points = [_numbers(p, "--point", (2, 3)) for p in args.point]
        for point in points:
            if len(point) == 3 and point[2] not in (0.0, 1.0):
                raise InvalidInputError("--point X,Y,LABEL: LABEL is 1 (object) or 0 (background)")
        options["points"] = points
    if getattr(args, "mask_format", None):
        options["mask_format"] = args.mask_format
    if getattr(args, "training_data", None):
        options["training_data"] = args.training_data
    return options


def _model_id_of(args: argparse.Namespace) -> str:
    """``--model``, else MODEL_ID as ``run`` reads and checks it."""
    from pydantic import ValidationError

    from edge_agent.agent.errors import ConfigError
    from edge_agent.agent.settings import AgentSettings, format_validation_error
    from edge_agent.agent.validation import check_model_id
    from edge_agent.models import get_model_settings

    if args.model is not None:
        return str(args.model)
    try:
        model_id = AgentSettings().model_id
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, AgentSettings)) from None
    check_model_id(model_id, "MODEL_ID", settings=get_model_settings())
    return model_id


@_guarded
def cmd_infer(args: argparse.Namespace) -> int:
    """Run a model on image files; one JSON response per readable image, one per line, in order (each
    task's Roboflow response: boxes, polygons, keypoints or classes). An image that cannot be read
    is reported on stderr and the others are still answered; the exit status is 2 if any failed."""
    from edge_agent.models import get_model

    model = get_model(_model_id_of(args))
    options: dict[str, Any] = {}
    if args.confidence is not None:
        options["confidence"] = args.confidence
    if args.iou_threshold is not None:
        options["iou_threshold"] = args.iou_threshold
    if args.keypoint_confidence is not None:
        options["keypoint_confidence"] = args.keypoint_confidence
    if args.max_new_tokens is not None:
        options["max_new_tokens"] = args.max_new_tokens
    if args.depth_map_format is not None:
        options["depth_map_format"] = args.depth_map_format
    if args.no_face_detection:
        options["face_detection"] = False
    options.update(_prompt_options(args))
    accepted = inspect.signature(model.inference_parameters).parameters
    flags = {
        "prompts": "--prompt",
        "boxes": "--box",
        "points": "--point",
        "training_data": "--training-data",
        "face_detection": "--no-face-detection",
    }
    for name in options:
        if name not in accepted:
            flag = flags.get(name, f"--{name.replace('_', '-')}")
            if name == "prompts" and "prompt" in accepted:
                continue  # a vision-language model: one answer per prompt, below
            raise InvalidInputError(f"{flag} does not apply to {model.task_type} models")
    runs: list[dict[str, Any]] = [options]
    if "prompts" in options and "prompt" in accepted:
        rest = {k: v for k, v in options.items() if k != "prompts"}
        runs = [{**rest, "prompt": prompt} for prompt in options["prompts"]]
    failed = 0
    pending: list[Any] = []

    def answer() -> None:
        if not pending:
            return
        for run in runs:  # a VLM: each image's answers, one per prompt
            for response in model.infer(pending, **run):
                sys.stdout.write(to_json(response.model_dump()) + "\n")
        sys.stdout.flush()
        pending.clear()

    step = max(1, model.max_batch_size)
    for path in args.images:
        try:
            pending.append(model.load_image(path))
        except EdgeAgentError as exc:
            answer()  # the images before it, so that stdout stays in the order given
            failed += 1
            print(f"error: {exc}", file=sys.stderr, flush=True)
            continue
        if len(pending) >= step:
            answer()
    if pending:
        answer()
    if failed:
        print(f"error: {failed} of {len(args.images)} images could not be read", file=sys.stderr)
        return 2
    return 0


@_guarded
def cmd_models_pull(args: argparse.Namespace) -> int:
    """Download a model into the cache (and check it loads), showing progress on stderr."""
    from edge_agent.models import get_model

    bar = ProgressBar(f"downloading {args.model_id}")
    try:
        model = get_model(args.model_id, progress=bar)
    finally:
        bar.close()
    from edge_agent.models import get_model_settings

    # a model of several packages (PP-OCR) has no one directory: the cache holds them all
    where = model.directory or get_model_settings().model_cache_dir
    print(f"{model.model_id}: {model.task_type}/{model.model_type} ready in {where}", file=sys.stderr)
    return 0


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _layout_note(layout: str) -> str:
    return "" if layout == "legacy" else layout


@_guarded
def cmd_models_list(args: argparse.Namespace) -> int:
    """List what is in MODEL_CACHE_DIR (both layouts): id, size, task, type."""
    from edge_agent.models import get_model_settings, list_cached_models

    entries = list_cached_models()
    if args.json:
        for entry in entries:
            record = {
                "model_id": entry.model_id,
                "size_bytes": entry.size_bytes,
                "task_type": entry.task_type,
                "model_type": entry.model_type,
                "complete": entry.complete,
                "path": str(entry.path),
                "layout": entry.layout,
            }
            sys.stdout.write(to_json(record) + "\n")
        return 0
    if not entries:
        print(f"no models cached in {get_model_settings().model_cache_dir}", file=sys.stderr)
        return 0
    rows = [("ID", "SIZE", "TASK", "TYPE", "")]
    for entry in entries:
        rows.append(
            (
                entry.model_id,
                _human_size(entry.size_bytes),
                entry.task_type or "?",
                entry.model_type or "?",
                " ".join(n for n in ("" if entry.complete else "incomplete", _layout_note(entry.layout)) if n),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + ("  " + row[4] if row[4] else "")
        sys.stdout.write(line.rstrip() + "\n")
    return 0


@_guarded
def cmd_models_clear(args: argparse.Namespace) -> int:
    """Delete one model from the cache (of a built-in or local model: the INT8 copies made of it)."""
    from edge_agent.models import clear_cache, parse_model_id
    from edge_agent.models.resolution.cached_models import clear_int8_copies

    ref = parse_model_id(args.model_id)
    canonical = ref.model_id
    if ref.read_only and clear_int8_copies(args.model_id):
        # only the INT8 copies made on this box go; the model itself is read in place
        print(f"cleared the INT8 copy of {canonical} ({canonical} itself stays)", file=sys.stderr)
    elif clear_cache(args.model_id):  # a built-in model or local directory without copies: refused
        print(f"cleared {canonical}", file=sys.stderr)
    else:
        print(f"{canonical} was not cached", file=sys.stderr)
    return 0


@_guarded
def cmd_models_quantize(args: argparse.Namespace) -> int:
    """Make a static INT8 copy of a model beside its fp32 weights, checked against fp32."""
    from edge_agent.models.common.errors import AccuracyGuardError
    from edge_agent.models.quantization.quantize import quantize_model

    def say(text: str) -> None:
        print(f"{args.model_id}: {text}", file=sys.stderr, flush=True)

    try:
        result = quantize_model(
            args.model_id,
            calibration=args.calibration,
            frames=args.frames,
            min_map50=args.min_map50,
            force=args.force,
            status=say,
        )
    except AccuracyGuardError as exc:
        if args.json and exc.record_path is not None:
            _print_record(exc.record_path)
        raise
    record = result.record
    acc, speed = record.accuracy, record.speed
    say(f"INT8 copy in {result.weights_path} ({_human_size(record.int8.size)}; fp32 {_human_size(record.source.size)})")
    verdict = "passed" if acc.passed else "below the threshold, activated because of --force"
    say(
        f"accuracy against fp32 on {acc.held_out_frames} held-out frames ({acc.truth_detections} fp32 detections): "
        f"mAP@0.5 {_figure(acc.map50)}, mAP@0.5:0.95 {_figure(acc.map50_95)} (threshold {acc.threshold}): {verdict}"
    )
    if speed is not None:
        say(
            f"speed on {speed.provider}: fp32 {speed.fp32_ms:.1f} ms, int8 {speed.int8_ms:.1f} ms per run "
            f"({speed.speedup:.2f}x)"
        )
    say(f"active; used by MODEL_PRECISION=auto when faster, always by MODEL_PRECISION=int8 or {record.model_id}@int8")
    if args.json:
        _print_record(result.record_path)
    return 0


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _print_record(path: Any) -> None:
    try:
        sys.stdout.write(json.dumps(json.loads(Path(path).read_text())) + "\n")
    except (OSError, ValueError):
        return


def register(subparsers: Any) -> None:
    """Add ``infer`` and ``models {pull,list,clear,quantize}`` to the main parser's subparsers."""
    infer = subparsers.add_parser(
        "infer",
        help="run a model on image files",
        description="Run a model on image files and print one JSON response per image, one per line.",
    )
    infer.add_argument("images", nargs="+", metavar="IMAGE", help="image file(s): JPEG, PNG, ...")
    infer.add_argument("--model", default=None, help=f"model id (default: MODEL_ID, else {DEFAULT_MODEL})")
    infer.add_argument("--confidence", type=float, help="minimum confidence 0..1 (default: CONFIDENCE)")
    infer.add_argument("--iou-threshold", type=float, help="NMS IoU threshold 0..1 (default: IOU_THRESHOLD)")
    infer.add_argument(
        "--keypoint-confidence", type=float, help="keypoint models: minimum keypoint confidence 0..1 (default: model's)"
    )
    infer.add_argument(
        "--depth-map-format",
        choices=("json", "png16", "png8"),
        help="depth models: normalized_depth as nested lists or a base64 grayscale PNG (default: json)",
    )
    infer.add_argument(
        "--no-face-detection",
        action="store_true",
        help="gaze models: the whole image is the face (Roboflow's do_run_face_detection=false)",
    )
    infer.add_argument(
        "--prompt",
        action="append",
        metavar="TEXT",
        help="text prompt (repeatable): CLIP / Perception Encoder zero-shot classes, class names for "
        "open-vocabulary detectors; vision-language models: one answer per prompt (Florence-2: a task "
        "token such as '<CAPTION>')",
    )
    infer.add_argument(
        "--box",
        action="append",
        metavar="X1,Y1,X2,Y2",
        help="SAM/SAM2: a box prompt in source pixels (repeatable: one mask per box)",
    )
    infer.add_argument(
        "--point",
        action="append",
        metavar="X,Y[,1|0]",
        help="SAM/SAM2: a point prompt in source pixels, 1 object (default) or 0 background (repeatable)",
    )
    infer.add_argument("--mask-format", choices=("json", "rle"), help="SAM2/SAM3: polygons (json, default) or COCO RLE")
    infer.add_argument(
        "--training-data",
        metavar="FILE.json",
        help="OWLv2: Roboflow's training_data list (example boxes on reference images; image paths "
        "relative to the file)",
    )
    infer.add_argument(
        "--max-new-tokens",
        type=int,
        metavar="N",
        help="vision-language models: most tokens of an answer (default: VLM_MAX_NEW_TOKENS or the family's)",
    )
    infer.set_defaults(handler=cmd_infer)

    models = subparsers.add_parser(
        "models", help="manage the model cache", description="Manage the model cache (MODEL_CACHE_DIR)."
    )
    sub = models.add_subparsers(dest="models_command", metavar="{pull,list,clear,quantize}")
    sub.required = True
    pull = sub.add_parser("pull", help="download a model into the cache (progress on stderr)")
    pull.add_argument("model_id", metavar="ID")
    pull.set_defaults(handler=cmd_models_pull)
    listing = sub.add_parser("list", help="list cached models: id, size, task, type")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=cmd_models_list)
    clear = sub.add_parser(
        "clear", help="delete a model from the cache (built-in and local models: their INT8 copies only)"
    )
    clear.add_argument("model_id", metavar="ID")
    clear.set_defaults(handler=cmd_models_clear)
    from edge_agent.models.speed.precision import DEFAULT_FRAMES, DEFAULT_MIN_MAP50

    quantize = sub.add_parser(
        "quantize",
        help="make a static INT8 copy of a model (faster on CPU and OpenVINO), checked against fp32",
        description="Quantize a cached, local or built-in ONNX model to static INT8 (QDQ, per-channel weights), "
        "calibrated on frames from a clip, a folder of images or a stream through the model's own "
        "pre-processing. The copy is written beside the fp32 weights (which are not touched) with a "
        "record of how it was made, and activated only if its mAP@0.5 against fp32 on held-out frames "
        "reaches --min-map50.",
    )
    quantize.add_argument("model_id", metavar="ID")
    quantize.add_argument(
        "--calibration",
        metavar="VIDEO|DIR|URL",
        help="frames to calibrate on: a video file, a folder of images or a stream URL (default: the bundled "
        "sample clip; use footage of the model's own cameras for real models)",
    )
    quantize.add_argument(
        "--frames",
        type=int,
        default=DEFAULT_FRAMES,
        metavar="N",
        help=f"frames to read; every 4th is held out for the accuracy check (default: {DEFAULT_FRAMES})",
    )
    quantize.add_argument(
        "--min-map50",
        type=float,
        default=DEFAULT_MIN_MAP50,
        metavar="X",
        help=f"accuracy threshold: mAP@0.5 of INT8 with fp32 as truth (default: {DEFAULT_MIN_MAP50})",
    )
    quantize.add_argument("--force", action="store_true", help="activate the copy even below --min-map50")
    quantize.add_argument("--json", action="store_true", help="print the copy's record as JSON on stdout")
    quantize.set_defaults(handler=cmd_models_quantize)
