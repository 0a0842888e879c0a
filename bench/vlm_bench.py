"""Vision-language models on the CPU: one answer's latency at real size, and the detector beside a VLM.

    python -m bench.vlm_bench                      # latency of florence2 + smolvlm, then the detector
    python -m bench.vlm_bench latency --families florence2,smolvlm,paligemma,qwen --tokens 32
    python -m bench.vlm_bench detector --rounds 3
    python -m bench.vlm_bench moondream             # Moondream2 detect at real size (~11 GB of memory)

1. latency   the smallest variant of each family at its real size, random weights (built from
             transformers' config classes, saved as a local checkpoint, loaded with ``get_model``):
             time to first token (the prompt's prefill, vision tower included), tokens/s of the decode,
             and the whole ``ask`` (pictures in, answer out) against a bare ``model.generate`` on
             ready tensors of the same run (the ratio is what edge-agent adds around the model).
             Florence-2-base 0.23 B and SmolVLM2-256M fit a small box; PaliGemma-3B (~12 GB in
             float32) and Qwen2.5-VL-3B (~15 GB) need --families and the memory.
2. detector  every-frame throughput of the detector through the real agent (the built-in
             builtin/shapes-v1, or --model yolov8n: the YOLOv8n-sized bench model) alone, and with a
             real-size Florence-2-base (or --vlm smolvlm: SmolVLM2-256M) asked about the same stream
             every second (VLM_INTERVAL=1, so the VLM is never idle) at VLM_NICE / VLM_THREADS /
             VLM_CPU_SHARE; target >= 0.9x. Median of interleaved rounds.

Pictures are 640x480 frames. All traffic stays on 127.0.0.1; checkpoints go to bench/_out/vlm/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import OUT, bench_model, clip, median

VLM_OUT = OUT / "vlm"
# family -> (factory name, factory kwargs, Roboflow model type, prompt)
FAMILIES: dict[str, tuple[str, dict[str, Any], str, str]] = {
    "florence2": ("florence_checkpoint", {}, "florence-2-base", "<CAPTION>"),
    "smolvlm": ("smolvlm_checkpoint", {}, "smolvlm-2.2b-instruct", "Describe what's in this image."),
    "paligemma": ("paligemma_checkpoint", {"version": 1}, "paligemma-3b-pt-224", "caption en"),
    "qwen": ("qwen25vl_checkpoint", {}, "qwen25-vl-7b", "Describe what's in this image."),
}


def checkpoint(family: str) -> Path:
    """A real-size random-weight checkpoint of ``family`` as a local model directory (built once)."""
    import tests.vlm_factory as factory

    name, kwargs, model_type, _ = FAMILIES[family]
    directory = VLM_OUT / family
    if not (directory / "model_type.json").is_file():
        print(f"   building a real-size {family} checkpoint in {directory} ...", flush=True)
        getattr(factory, name)(directory, real=True, **kwargs)
        (directory / "model_type.json").write_text(
            json.dumps({"project_task_type": "text-image-pairs", "model_type": model_type})
        )
    return directory


def _frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)


def latency(families: list[str], tokens: int, repeats: int) -> list[str]:
    os.environ["LMM_ENABLED"] = "true"
    from edge_agent.models import get_model
    from edge_agent.models.common.settings import reload_model_settings
    from edge_agent.models.engines.transformers import GenerationSettings

    reload_model_settings()
    lines = [f"1. one answer on the CPU, real size, random weights ({tokens} new tokens forced, median of {repeats}):"]
    frame = _frame()
    for family in families:
        directory = checkpoint(family)
        started = time.perf_counter()
        model: Any = get_model(str(directory))
        load_s = time.perf_counter() - started
        prompt = FAMILIES[family][3]
        config = model.engine.model.generation_config
        config.min_new_tokens = tokens  # random weights may pick <eos> at once: the decode must run
        picture = model.preprocess([frame])[0][0]
        inputs = model.family.inputs(model.processor, picture, prompt)
        prompt_tokens = int(inputs["input_ids"].shape[1])

        class Clock:
            """A generate streamer noting when each token comes (the first call is the prompt)."""

            def __init__(self) -> None:
                self.times: list[float] = []

            def put(self, value: Any) -> None:
                self.times.append(time.perf_counter())

            def end(self) -> None:
                pass

        def bare(
            n: int, inputs: dict[str, Any] = inputs, model: Any = model, config: Any = config
        ) -> tuple[float, ...]:
            """(time to first token, decode tokens/s, whole generate s) of one generate call."""
            config.min_new_tokens = n
            clock = Clock()
            t0 = time.perf_counter()
            model.engine.generate(inputs, GenerationSettings(max_new_tokens=n), streamer=clock)
            end = time.perf_counter()
            tokens = clock.times[1:]  # after the prompt (or the decoder's start token)
            rate = (len(tokens) - 1) / (tokens[-1] - tokens[0]) if len(tokens) > 1 else float("nan")
            return tokens[0] - t0, rate, end - t0

        bare(2)  # warm-up
        runs = [bare(tokens) for _ in range(repeats)]
        first = [r[0] for r in runs]
        rates = [r[1] for r in runs]
        whole = [r[2] for r in runs]
        config.min_new_tokens = tokens
        asked = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            answer = model.ask(frame, prompt=prompt, max_new_tokens=tokens)
            asked.append(time.perf_counter() - t0)
        ttft, total, ask, rate = median(first), median(whole), median(asked), median(rates)
        params = sum(p.numel() for p in model.engine.model.parameters()) / 1e9
        lines.append(
            f"   {family:10s} {params:.2f} B params, {prompt_tokens} prompt tokens: time to first token "
            f"{ttft * 1000:.0f} ms, {rate:.1f} tokens/s, one {answer.new_tokens}-token answer {ask:.2f} s "
            f"= {ask / total:.3f}x a bare generate ({total:.2f} s); load {load_s:.1f} s"
        )
        model.close()
        del model
    return lines


def moondream_latency(repeats: int, objects: int, directory: Path | None = None) -> list[str]:
    """Moondream2's detect at its real size (random weights, so it never stops on its own: ``objects``
    boxes are decoded): the wait for the first box (vision tower over the crops, the 730-token prefix,
    the prompt) and the rate of the boxes after it (3 decoder steps each), median of ``repeats``."""
    import time as clock

    from edge_agent.models.common.settings import ModelSettings
    from edge_agent.models.foundation.moondream import Moondream2Model

    if directory is None:
        from tests.moondream_factory import moondream_checkpoint

        directory = VLM_OUT / "moondream2"
        if not (directory / "model.safetensors").is_file():
            print(f"   building a real-size moondream2 checkpoint in {directory} ...", flush=True)
            moondream_checkpoint(directory, real=True)
    started = clock.perf_counter()
    model = Moondream2Model("moondream2/moondream2_2b_jul24", "moondream2", directory, ModelSettings())
    load_s = clock.perf_counter() - started
    runner = model.runner
    assert runner is not None
    first, whole, rates = [], [], []
    for _ in range(repeats):
        t0 = clock.perf_counter()
        model.detect(_frame(), "person", max_objects=0)  # the picture, then the prompt: the first box's wait
        first.append(clock.perf_counter() - t0)
        t0 = clock.perf_counter()
        found = model.detect(_frame(), "person", max_objects=objects)
        whole.append(clock.perf_counter() - t0)
        rates.append(len(found) / max(whole[-1] - first[-1], 1e-6))
    params = sum(p.numel() for p in runner.network.parameters()) / 1e9
    model.close()
    return [
        f"   moondream2 {params:.2f} B params, 640x480: picture and prompt {median(first):.2f} s (time to the "
        f"first box), then {median(rates):.2f} boxes/s (3 decoder steps each); one {objects}-box detect "
        f"{median(whole):.2f} s; load {load_s:.1f} s"
    ]


def _children_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) so far of each child process of ``pid`` (Linux /proc)."""
    out: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            try:
                stat = Path(f"/proc/{child}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            out[int(child)] = (int(fields[11]) + int(fields[12])) / tick  # fields 14, 15: utime, stime
    return out


def _every_fps(
    model_id: str, video: Path, workdir: Path, extra: dict[str, str], mode: str = "every"
) -> tuple[float, int, float]:
    """The detector's every-frame pace (as bench.agent_bench measures it), the VLM answers given and
    the CPU seconds the VLM's process used while the detector ran (0 without one)."""
    import threading

    from bench.common import agent

    env = {"STREAMS": f"clip={video}", "STREAM_CLIP_MODE": mode, "MODEL_ID": model_id}
    env |= {"STDOUT_SINK": "true", "STATS_INTERVAL": "1", **extra}
    cpu: dict[int, float] = {}
    loaded: dict[int, float] = {}  # at the first prediction: the VLM has loaded (streams start after it)
    with agent(env, workdir) as proc:
        done = threading.Event()

        def sample() -> None:  # the child is gone once the agent stops: keep its last reading
            while not done.wait(0.25):
                try:
                    cpu.update(_children_cpu_s(proc.proc.pid))
                except OSError:
                    return
                if not loaded and proc.predictions():
                    loaded.update(cpu)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = proc.wait(timeout=900)
        done.set()
        sampler.join(2)
        lines = [p for _, p in proc.lines if "predictions" in p]
        answers = [p for _, p in proc.lines if p.get("type") == "vlm_answer"]
    if rc != 0 or len(lines) < 10:
        raise RuntimeError(f"agent failed (rc={rc}, {len(lines)} predictions); see {workdir}")
    steady = [p["frame_time"] for p in lines[10:]]
    return (len(steady) - 1) / (steady[-1] - steady[0]), len(answers), sum(cpu.values()) - sum(loaded.values())


def detector(
    rounds: int,
    cpu_share: float,
    seconds: float,
    vlm: str,
    model: str,
    nice: int,
    threads: int,
    in_agent: bool,
    mode: str = "every",
) -> list[str]:
    model_id = str(bench_model()) if model == "yolov8n" else "builtin/shapes-v1"
    vlm_dir = checkpoint(vlm)
    video = clip("vlm-detector", seconds=seconds, width=640, height=480)
    prompt = {"florence2": "<MORE_DETAILED_CAPTION>", "smolvlm": "Describe this image in detail."}[vlm]
    with_vlm = {
        "LMM_ENABLED": "true",
        "VLM_MODEL_ID": str(vlm_dir),
        "STREAM_CLIP_VLM_PROMPT": prompt,
        "STREAM_CLIP_VLM_INTERVAL": "1",  # an answer takes longer: the VLM is never idle
        "VLM_MAX_NEW_TOKENS": "64",
        "VLM_CPU_SHARE": str(cpu_share),
        "VLM_NICE": str(nice),
        "VLM_THREADS": str(threads),
        "VLM_PROCESS": "false" if in_agent else "true",
    }
    alone: list[float] = []
    beside: list[float] = []
    answered = []
    vlm_cpu = []
    for i in range(rounds):
        alone.append(_every_fps(model_id, video, OUT / f"vlm-detector-{i}-alone", {}, mode)[0])
        fps, answers, cpu_s = _every_fps(model_id, video, OUT / f"vlm-detector-{i}-vlm", with_vlm, mode)
        beside.append(fps)
        answered.append(answers)
        vlm_cpu.append(cpu_s)
    ratios = sorted(b / a for a, b in zip(alone, beside, strict=True))
    return [
        f"2. detector ({model_id}) {'every-frame' if mode == 'every' else mode + '-paced'} throughput with a "
        f"real-size {vlm} answering beside it "
        f"(target >= 0.9x), median of {rounds} interleaved rounds: {median(ratios):.3f}x; "
        f"round ratios {', '.join(f'{r:.2f}' for r in ratios)}",
        f"   alone {', '.join(f'{v:.1f}' for v in alone)} fps; "
        f"with the VLM {', '.join(f'{v:.1f}' for v in beside)} fps (640x480 H.264, {os.cpu_count()} CPUs); "
        f"VLM answers per run {', '.join(str(a) for a in answered)}, VLM process CPU "
        f"{', '.join(f'{c:.1f}' for c in vlm_cpu)} s while the detector ran "
        f"(VLM_PROCESS={'false' if in_agent else 'true'}, VLM_NICE={nice}, VLM_THREADS={threads}, "
        f"VLM_CPU_SHARE={cpu_share:g})",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", choices=["latency", "moondream", "detector"], default=[])
    parser.add_argument("--families", default="florence2,smolvlm", help="comma list of " + ", ".join(FAMILIES))
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per answer (forced)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--objects", type=int, default=5, help="moondream: boxes decoded per detect")
    parser.add_argument("--rounds", type=int, default=3, help="detector: interleaved rounds")
    parser.add_argument("--cpu-share", type=float, default=0.25, help="detector: VLM_CPU_SHARE of the VLM")
    parser.add_argument("--seconds", type=float, default=30, help="detector: clip length (30 fps, every frame)")
    parser.add_argument("--vlm", choices=["florence2", "smolvlm"], default="florence2", help="detector: the VLM beside")
    parser.add_argument(
        "--model",
        choices=["builtin", "yolov8n"],
        default="builtin",
        help="detector: builtin/shapes-v1 or YOLOv8n-sized",
    )
    parser.add_argument("--nice", type=int, default=19, help="detector: VLM_NICE of the VLM's threads")
    parser.add_argument("--threads", type=int, default=1, help="detector: VLM_THREADS")
    parser.add_argument(
        "--mode",
        choices=["every", "live"],
        default="every",
        help="detector: every frame as fast as it goes (the target's measure), or live (the clip's 30 fps, "
        "so the VLM gets the idle time: its answers show it kept going)",
    )
    parser.add_argument(
        "--in-agent", action="store_true", help="detector: VLM_PROCESS=false (the VLM on a thread of the agent)"
    )
    args = parser.parse_args()
    parts = args.parts or ["latency", "detector"]
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    import torch

    print(
        f"vlm_bench on {platform.node()} ({os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)"
    )
    lines: list[str] = []
    if "latency" in parts:
        lines += latency(families, args.tokens, args.repeats)
        print("\n".join(lines), flush=True)
    if "moondream" in parts:
        more = moondream_latency(args.repeats, args.objects)
        print("\n".join(more), flush=True)
    if "detector" in parts:
        more = detector(
            args.rounds,
            args.cpu_share,
            args.seconds,
            args.vlm,
            args.model,
            args.nice,
            args.threads,
            args.in_agent,
            args.mode,
        )
        print("\n".join(more), flush=True)


if __name__ == "__main__":
    main()
