"""Torch engine vs ONNX Runtime engine on the same YOLOv8n-sized model (CPU), same process, same frames.

    python -m bench.torch_vs_onnx [--rounds 7] [--batch 1 4]

The model of ``bench/yolov8n_like.py`` (random weights, 640x640, (1, 84, 8400) output) is exported
once to ONNX and, with the same seed, traced to TorchScript; both run through ``get_model`` on
local directories, so pre-processing (numpy vs torch), engine and decoding are what production
runs. Rounds alternate between the engines; the figure is the median of per-round ratios
(torch frames/s over ONNX frames/s). Also printed: the largest difference between the two
engines' raw outputs (boxes in pixels, scores) on the bench frame: they run the same weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from bench.common import OUT, bench_model


def torchscript_model() -> Path:
    import torch

    from bench.yolov8n_like import YoloV8nLike

    onnx_dir = bench_model()
    target = OUT / "yolov8n-like-torchscript"
    if not (target / "weights.torchscript").is_file():
        target.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)  # bench.yolov8n_like.export seeds the same way: identical weights
        model = YoloV8nLike(80).eval()
        with torch.no_grad():
            torch.jit.trace(model, torch.zeros(1, 3, 640, 640)).save(str(target / "weights.torchscript"))
        for name in ("class_names.txt", "environment.json", "model_type.json"):
            shutil.copy(onnx_dir / name, target / name)
    return target


def frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.full((720, 1280, 3), 90, np.uint8)
    for _ in range(12):
        x, y = int(rng.integers(0, 1180)), int(rng.integers(0, 620))
        image[y : y + 100, x : x + 100] = rng.integers(0, 255, 3)
    return image


def fps(model, frames: list[np.ndarray], seconds: float) -> float:
    model.predict(frames)  # warm
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.predict(frames)
        done += len(frames)
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=3.0, help="per engine per round")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads of both engines (0: their defaults)")
    args = parser.parse_args()
    if args.threads:
        import os

        import torch

        os.environ["ORT_INTRA_OP_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)

    from edge_agent.models import get_model
    from edge_agent.models.common.settings import reload_model_settings

    reload_model_settings()
    onnx_model = get_model(str(bench_model()))
    torch_model = get_model(str(torchscript_model()))
    image = frame()
    # Same weights: the raw outputs on the same frame, each through its engine's own pre-processing.
    raw_onnx = onnx_model.run(onnx_model.preprocess([image])[0])[0]
    raw_torch = torch_model.run(torch_model.preprocess([image])[0])[0]
    results = {
        "threads": args.threads or "default",
        "engines": [onnx_model.providers, torch_model.providers],
        "max_output_difference": float(np.abs(raw_onnx - raw_torch).max()),
        "max_score_difference": float(np.abs(raw_onnx[:, 4:] - raw_torch[:, 4:]).max()),
        "batches": {},
    }
    for batch in args.batch:
        frames = [image] * batch
        onnx_fps, torch_fps, ratios = [], [], []
        for _ in range(args.rounds):
            o = fps(onnx_model, frames, args.seconds)
            t = fps(torch_model, frames, args.seconds)
            onnx_fps.append(o)
            torch_fps.append(t)
            ratios.append(t / o)
        results["batches"][batch] = {
            "onnx_fps_median": round(statistics.median(onnx_fps), 2),
            "torch_fps_median": round(statistics.median(torch_fps), 2),
            "torch_over_onnx_median_ratio": round(statistics.median(ratios), 3),
        }
        print(
            f"batch {batch}: onnx {statistics.median(onnx_fps):.2f} fps, torch {statistics.median(torch_fps):.2f} "
            f"fps, torch/onnx {statistics.median(ratios):.3f} (median of {args.rounds} interleaved rounds)"
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
