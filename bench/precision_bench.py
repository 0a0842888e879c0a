"""INT8 and OpenVINO benchmarks (issue: twice the cameras per CPU box), ratios against a baseline of the same run.

    python -m bench.precision_bench                       # throughput, threads, latency
    .venv-ov/bin/python -m bench.precision_bench          # with onnxruntime-openvino: adds the OpenVINO rows

1. throughput  every-frame agent fps on a 1280x720 H.264 clip, built-in model and the YOLOv8n-sized
               bench model, on four paths: fp32 CPU provider, INT8 CPU, OpenVINO fp32, OpenVINO INT8;
               baseline: a bare fp32 ``session.run`` loop of the same model (CPU provider, default
               session options), measured in the same rounds. Also the bare ``session.run`` rate of
               each path, to tell the model's gain from the agent's.
2. threads     the same agent throughput (bench model) for MODEL_CONCURRENCY 1 / 2,
               ORT_INTRA_OP_THREADS and ORT_ALLOW_SPINNING on each path, as a ratio to the
               defaults of that path.
3. latency     live 30 fps RTSP -> MQTT subscriber, fp32 and INT8 on the CPU provider (each with
               the default run plan and with MODEL_CONCURRENCY=1) and OpenVINO INT8: end-to-end
               p50/p95, inference step, peak RSS.

Rounds are interleaved (every path once per round, the baseline first) and the figure is the
median of the per-round ratios, so a burst of load from other processes hits one round, not
one path. The bench model has random weights, so its INT8 copy is made with --force (the guard
has no fp32 detections to compare against; the built-in model's copy passed it). All traffic
stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench.agent_bench import latency_and_footprint
from bench.common import OUT, ROOT, agent, bench_model, clip, median

BUILTIN_ID = "builtin/shapes-v1"
BUILTIN_WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "builtin" / "shapes-v1" / "weights.onnx"
CACHE = OUT / "precision-cache"
BARE_SECONDS = 3.0
CLIP_SECONDS = 8  # 240 frames of 1280x720: a few seconds of steady state even on the fastest path
OPENVINO = "OpenVINOExecutionProvider"
PATHS: dict[str, tuple[str, str]] = {  # name -> (precision, ONNXRUNTIME_EXECUTION_PROVIDERS)
    "fp32 CPU": ("fp32", "cpu"),
    "INT8 CPU": ("int8", "cpu"),
    "OpenVINO fp32": ("fp32", "openvino"),
    "OpenVINO INT8": ("int8", "openvino"),
}


def has_openvino() -> bool:
    return OPENVINO in ort.get_available_providers()


def paths() -> dict[str, tuple[str, str]]:
    return {k: v for k, v in PATHS.items() if has_openvino() or v[1] != "openvino"}


def int8_copy_of(model_dir: Path) -> Path:
    """The bench model's INT8 copy in the bench's cache (made once, on the CPU provider)."""
    from edge_agent.models.common.settings import load_model_settings, set_model_settings
    from edge_agent.models.speed.precision import find_int8_copy, int8_locations

    settings = load_model_settings(model_cache_dir=CACHE, onnxruntime_execution_providers="cpu")
    set_model_settings(settings)
    fp32 = model_dir / "weights.onnx"
    model_id = str(model_dir.resolve())
    found = find_int8_copy(model_id, fp32, int8_locations(model_id, model_dir, CACHE)).copy
    if found is None:
        from edge_agent.models.quantization.quantize import quantize_model

        started = time.monotonic()
        result = quantize_model(model_id, force=True)
        took = time.monotonic() - started
        print(f"   quantized {model_dir.name} in {took:.0f} s -> {result.weights_path}", flush=True)
        found = find_int8_copy(model_id, fp32, int8_locations(model_id, model_dir, CACHE)).copy
    set_model_settings(None)
    assert found is not None
    return found.weights_path


def _bare_loop(weights: str, seconds: float, provider: str) -> float:
    if provider == "openvino":
        providers: list[Any] = [(OPENVINO, {"device_type": "CPU"})]
    else:
        providers = ["CPUExecutionProvider"]
    session = ort.InferenceSession(weights, providers=providers)
    first = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in first.shape]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(5):
        session.run(None, {first.name: x})
    # A fixed time rather than a fixed count: a fast path gets as long a look as a slow one.
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or runs < 10:
        session.run(None, {first.name: x})
        runs += 1
    return runs / elapsed


def bare_fps(weights: Path, seconds: float = BARE_SECONDS, provider: str = "cpu") -> float:
    """``session.run`` on one ready tensor, in a fresh process as the agent is (no thread pools left
    over from earlier sessions); fp32 on the CPU provider with default options is the baseline."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.precision_bench", "--bare", str(weights), str(seconds), provider],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def agent_fps(model_id: str, providers: str, video: Path, workdir: Path, extra: dict[str, str] | None = None) -> float:
    env = {
        "STREAMS": f"clip={video}",
        "STREAM_CLIP_MODE": "every",
        "MODEL_ID": model_id,
        "STDOUT_SINK": "true",
        "MODEL_CACHE_DIR": str(CACHE),
        "ONNXRUNTIME_EXECUTION_PROVIDERS": providers,
        **(extra or {}),
    }
    with agent(env, workdir) as proc:
        rc = proc.wait(timeout=900)
        lines = [(t, p) for t, p in proc.lines if "predictions" in p]
    if rc != 0 or len(lines) < 12:
        log = proc.stderr_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"agent failed (rc={rc}, {len(lines)} predictions):\n{log}")
    # As in agent_bench: from the 10th result on, the spacing of decode times is the agent's pace.
    steady = [p["frame_time"] for _, p in lines[10:]]
    return (len(steady) - 1) / (steady[-1] - steady[0])


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def throughput_rows(
    label: str, model_for: Callable[[str], str], weights: dict[str, Path], video: Path, rounds: int
) -> list[str]:
    """One model. A round: bare fp32 CPU, every path through the agent, every path bare; the round's
    baseline is the mean of its two bare fp32 CPU runs, which bracket the agent runs."""
    chosen = paths()
    slug = label.split(" ")[0]
    ratios: dict[str, list[float]] = {name: [] for name in chosen}
    bare_ratios: dict[str, list[float]] = {name: [] for name in chosen}
    baseline: list[float] = []
    rates: dict[str, list[float]] = {name: [] for name in chosen}
    for r in range(rounds):
        before = bare_fps(weights["fp32"])
        for name, (precision, providers) in chosen.items():
            fps = agent_fps(model_for(precision), providers, video, OUT / f"prec-{slug}-{r}-{precision}-{providers}")
            rates[name].append(fps)
        bare = {name: bare_fps(weights[p], provider=providers) for name, (p, providers) in chosen.items()}
        base = (before + bare["fp32 CPU"]) / 2
        baseline.append(base)
        for name in chosen:
            ratios[name].append(rates[name][-1] / base)
            bare_ratios[name].append(bare[name] / base)
        print(
            f"   {label} round {r + 1}/{rounds}: baseline {base:.2f} fps ({before:.2f}, {bare['fp32 CPU']:.2f}); "
            + "; ".join(f"{n} agent {rates[n][-1]:.2f} bare {bare[n]:.2f}" for n in chosen),
            flush=True,
        )
    lines = [f"1. {label}: every-frame agent throughput / bare fp32 session.run (median of {rounds} rounds)"]
    lines.append(f"   baseline bare fp32 session.run: {_fmt(baseline)} fps (median {median(baseline):.2f})")
    for name in chosen:
        lines.append(
            f"   {name:14s} agent {median(ratios[name]):.3f}x (rounds {_fmt(sorted(ratios[name]))}; "
            f"{median(rates[name]):.2f} fps) | bare session.run of the path {median(bare_ratios[name]):.3f}x"
        )
    best = max(chosen, key=lambda n: median(ratios[n]))
    lines.append(f"   best path: {best} {median(ratios[best]):.3f}x (target >= 1.8x)")
    return lines


THREAD_SETTINGS: dict[str, dict[str, str]] = {
    "defaults (auto: CPU provider 2 runs x 1 thread; OpenVINO 1 run)": {},
    "MODEL_CONCURRENCY=1 (one run, onnxruntime's threads)": {"MODEL_CONCURRENCY": "1"},
    "MODEL_CONCURRENCY=2": {"MODEL_CONCURRENCY": "2"},
    "MODEL_CONCURRENCY=1, intra 1": {"MODEL_CONCURRENCY": "1", "ORT_INTRA_OP_THREADS": "1"},
    "spinning off": {"ORT_ALLOW_SPINNING": "false"},
    "MODEL_CONCURRENCY=1, spinning off": {"MODEL_CONCURRENCY": "1", "ORT_ALLOW_SPINNING": "false"},
}


def threads_rows(model_dir: Path, video: Path, rounds: int) -> list[str]:
    model_id = str(model_dir.resolve())
    chosen = paths()
    results: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):
        for name, (precision, providers) in chosen.items():
            default = None
            for index, (setting, extra) in enumerate(THREAD_SETTINGS.items()):
                workdir = OUT / f"threads-{r}-{precision}-{providers}-{index}"
                fps = agent_fps(f"{model_id}@{precision}", providers, video, workdir, extra)
                default = fps if default is None else default
                results.setdefault((name, setting), []).append(fps / default)
        print(f"   threads round {r + 1}/{rounds} done", flush=True)
    lines = [f"2. threads and spinning (bench model, agent every-frame fps / the path's defaults, median of {rounds})"]
    for name in chosen:
        cells = [f"{s}: {median(results[(name, s)]):.3f}x" for s in list(THREAD_SETTINGS)[1:]]
        lines.append(f"   {name:14s} " + "; ".join(cells))
    return lines


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--bare":
        print(f"{_bare_loop(sys.argv[2], float(sys.argv[3]), sys.argv[4]):.4f}")
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", default=["throughput", "threads", "latency"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--thread-rounds", type=int, default=3)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    model_dir = bench_model()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; onnxruntime {ort.__version__} "
        f"({', '.join(ort.get_available_providers())})",
        flush=True,
    )
    if not has_openvino():
        print(
            "   OpenVINO rows skipped: this onnxruntime has no OpenVINOExecutionProvider "
            "(pip install '.[openvino]', see the README)",
            flush=True,
        )
    bench_int8 = int8_copy_of(model_dir)
    builtin_int8 = BUILTIN_WEIGHTS.with_name("weights.int8.onnx")
    video = clip("throughput", seconds=CLIP_SECONDS)
    report: list[str] = []
    if "throughput" in args.which:
        for label, model_for, weights in (
            (
                "built-in model (shapes-v1, 640x384)",
                lambda p: f"{BUILTIN_ID}@{p}",
                {"fp32": BUILTIN_WEIGHTS, "int8": builtin_int8},
            ),
            (
                "bench model (YOLOv8n-sized, 640x640)",
                lambda p: f"{model_dir.resolve()}@{p}",
                {"fp32": model_dir / "weights.onnx", "int8": bench_int8},
            ),
        ):
            lines = throughput_rows(label, model_for, weights, video, args.rounds)
            report += lines
            print("\n".join(lines), flush=True)
    if "threads" in args.which:
        lines = threads_rows(model_dir, video, args.thread_rounds)
        report += lines
        print("\n".join(lines), flush=True)
    if "latency" in args.which:
        runs: list[tuple[str, str, dict[str, str]]] = [
            ("fp32", "cpu", {}),
            ("fp32", "cpu", {"MODEL_CONCURRENCY": "1"}),
            ("int8", "cpu", {}),
            ("int8", "cpu", {"MODEL_CONCURRENCY": "1"}),
        ]
        if has_openvino():
            runs.append(("int8", "openvino", {}))
        for precision, providers, setting in runs:
            extra = {"MODEL_CACHE_DIR": str(CACHE), "ONNXRUNTIME_EXECUTION_PROVIDERS": providers, **setting}
            lines = latency_and_footprint(model_dir, model_id=f"{model_dir.resolve()}@{precision}", extra_env=extra)
            tag = " ".join([precision, providers, *(f"{k}={v}" for k, v in setting.items())])
            lines = [f"3. [{tag}] " + line.split(". ", 1)[1] for line in lines]
            report += lines
            print("\n".join(lines), flush=True)
    (OUT / "precision_bench.txt").write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
