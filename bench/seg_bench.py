"""Instance segmentation benchmarks, each measured against a baseline of the same run.

    python -m bench.seg_bench                 # all three (~5 minutes on a 2-core machine)
    python -m bench.seg_bench masks sizes

1. masks       per-frame cost of mask decoding (prototypes x coefficients, resample into source
               pixels, crop, threshold) and of polygons (full and simplified) for 10 masks on a
               1280x720 frame, against the model's own ``session.run`` time on that frame
2. throughput  every-frame agent fps with the segmentation model (polygons in every message) on a
               1280x720 H.264 file / a bare ``session.run`` loop of the same model
3. sizes       prediction message bytes per mask output mode (polygon, simplified 1 px / 2 px,
               none) on the frames of that file

Model: the built-in ``builtin/shapes-seg-v1`` (YOLOv8-seg layout, 640x384 input, 96x160 prototypes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.agent_bench import agent_every_fps
from bench.common import OUT, ROOT, clip, median

SEG_MODEL = ROOT / "models" / "builtin" / "shapes-seg-v1"


def _timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Median wall time of ``fn()`` in milliseconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return median(times)


def ten_object_frame(seed: int = 11) -> tuple[np.ndarray, int]:
    """A 1280x720 frame of the synthetic world with (as near as the placement rules allow) 10 shapes."""
    from tools import synthworld as sw

    best: tuple[np.ndarray, int] | None = None
    for s in range(seed, seed + 50):
        img, gts = sw.render_frame(np.random.default_rng(s), 1280, 720, n_objects=10, size_range=(60.0, 220.0))
        if best is None or abs(len(gts) - 10) < abs(best[1] - 10):
            best = (img, len(gts))
        if len(gts) == 10:
            break
    assert best is not None
    return best


def mask_cost(repeat: int = 30) -> list[str]:
    from edge_agent.models import get_model
    from edge_agent.models.maths.masks import masks_from_prototypes
    from edge_agent.models.maths.polygons import MaskOutput

    model = get_model(str(SEG_MODEL))
    img, n_objects = ten_object_frame()
    inputs, metas = model.preprocess([img])
    outputs = model.run(inputs)
    params = model.inference_parameters(confidence=0.01)
    raw = model.candidates(outputs, 0, params).select(np.arange(10))  # the 10 best candidates
    seg = model.finish(raw, metas[0], outputs, 0)
    boxes, protos = seg.boxes, outputs[1][0]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    run_ms = _timed(lambda: model.run(inputs), repeat)
    decode_ms = _timed(lambda: masks_from_prototypes(raw.extras, protos, boxes, metas[0], model.input_size), repeat)
    full_ms = _timed(lambda: seg.with_mask_output(MaskOutput("polygon")), repeat)
    simple_ms = _timed(lambda: seg.with_mask_output(MaskOutput("simplified", 2.0)), repeat)
    predict_ms = _timed(lambda: model.predict(img, confidence=0.4), repeat)
    total = decode_ms + full_ms
    return [
        f"1. 10 masks on a 1280x720 frame ({n_objects} shapes drawn; boxes {areas.min():.0f}..{areas.max():.0f} px^2,"
        f" median {np.median(areas):.0f}), medians of {repeat} runs:",
        f"   mask decoding {decode_ms:.2f} ms + polygons {full_ms:.2f} ms (simplified 2 px: {simple_ms:.2f} ms)"
        f" = {total:.2f} ms per frame = {total / run_ms:.3f}x the model's session.run ({run_ms:.1f} ms);"
        f" whole predict() at confidence 0.4: {predict_ms:.1f} ms",
    ]


def bare_session_fps(model_dir: Path, frames: int) -> float:
    """``session.run`` on one ready input tensor of the model's own input shape (default options)."""
    session = ort.InferenceSession(str(model_dir / "weights.onnx"), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    x = np.random.default_rng(0).random((1, 3, spec.shape[2], spec.shape[3]), dtype=np.float32)
    for _ in range(3):
        session.run(None, {spec.name: x})
    started = time.perf_counter()
    for _ in range(frames):
        session.run(None, {spec.name: x})
    return frames / (time.perf_counter() - started)


def throughput(rounds: int = 3) -> list[str]:
    video = clip("throughput", seconds=4)  # 120 frames, 1280x720
    bare, agents = [], []
    for i in range(rounds):
        bare.append(bare_session_fps(SEG_MODEL, 110))
        fps, n = agent_every_fps(SEG_MODEL, video, OUT / f"seg-throughput-{i}")
        agents.append(fps)
    ratios = sorted(a / b for a, b in zip(agents, bare, strict=True))
    return [
        f"2. every-frame throughput, segmentation: median of {rounds} interleaved pairs {median(ratios):.3f}x a bare "
        f"session.run loop of the same model; pair ratios {', '.join(f'{r:.2f}' for r in ratios)}",
        f"   bare {', '.join(f'{v:.2f}' for v in bare)} fps; agent {', '.join(f'{v:.2f}' for v in agents)} fps"
        f" ({n} frames of 1280x720 H.264 each: decode + pre + model + masks + polygons + JSON out)",
    ]


def message_sizes(max_frames: int = 60) -> list[str]:
    import av

    from edge_agent.models import get_model
    from edge_agent.models.maths.polygons import MaskOutput
    from edge_agent.pipelines.sinks.message import build_prediction_message

    model = get_model(str(SEG_MODEL))
    modes = {
        "polygon": MaskOutput("polygon"),
        "simplified 1 px": MaskOutput("simplified", 1.0),
        "simplified 2 px": MaskOutput("simplified", 2.0),
        "none (boxes only)": MaskOutput("none"),
    }
    sizes: dict[str, list[int]] = {k: [] for k in modes}
    points: dict[str, list[int]] = {k: [] for k in modes}
    objects = 0
    with av.open(str(clip("throughput", seconds=4))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= max_frames:
                break
            (seg,) = model.predict(frame.to_ndarray(format="bgr24"))
            objects += len(seg)
            for name, output in modes.items():
                message = build_prediction_message(
                    prediction=seg.with_mask_output(output),
                    agent_id="bench",
                    stream="cam",
                    seq=i,
                    frame_id=i,
                    frame_time=time.time(),
                    model_id="builtin/shapes-seg-v1",
                    inference_ms=30.0,
                    frame_age_ms=5.0,
                    latency_ms=40.0,
                )
                sizes[name].append(len(json.dumps(message)))
                points[name].append(sum(len(p.get("points", [])) for p in message["predictions"]))
    n = len(sizes["polygon"])
    base = median(sizes["none (boxes only)"])
    lines = [f"3. message size per mask output ({n} frames of 1280x720, {objects / n:.1f} objects per frame):"]
    for name in modes:
        lines.append(
            f"   {name:18s} median {median(sizes[name]):7.0f} B, max {max(sizes[name]):6d} B, "
            f"{median(points[name]):5.0f} points/frame = {median(sizes[name]) / base:.2f}x boxes only"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", default=["masks", "throughput", "sizes"])
    parser.add_argument("--rounds", type=int, default=3, help="throughput: interleaved pairs")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; onnxruntime {ort.__version__}")
    report: list[str] = []
    runs = {"masks": mask_cost, "throughput": lambda: throughput(args.rounds), "sizes": message_sizes}
    for name, fn in runs.items():
        if name in args.which:
            lines = fn()
            report += lines
            print("\n".join(lines), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "seg_bench.txt").write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
