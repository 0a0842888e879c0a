"""Promptable segmentation on this box: SAM2 and SAM at real model size (random weights), and a
detector + SAM2 chain on a stream against the detector alone.

    python -m bench.foundation_bench [--sam2 t] [--sam vit_b] [--owlv2 base] [--rounds 3] [--chain-seconds 4]

Real weights cannot be had offline; cost depends on the shapes, not the values, so each network
is built from transformers' config classes at the variant's published size (``--sam2 t|s|b+|l``,
``--sam vit_b|vit_l|vit_h``), written as Roboflow's artifact (``weights.pt`` / ``encoder.pth``)
into a private model cache and loaded through edge-agent's real loader. Printed, medians of
interleaved rounds on a 1280x720 frame: the image embedding, the prompt decoder for 1 and for 5
boxes, and each against the YOLOv8n-sized detector of bench/yolov8n_like.py measured in the same
run; OWLv2 base per frame and the cost of changing a stream's example set (its visual prompt).
Then the chain: the agent (MODE=every, stdout sink) on the same synthetic clip with the
bundled shape detector alone and with ``STREAM_<NAME>_SECOND_MODEL_ID=sam2/...``: frames per
second and the ratio. Use ``--chain-seconds 0`` to skip it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import agent, bench_model, clip

LETTERS = {"t": "hiera_tiny", "s": "hiera_small", "b+": "hiera_b_plus", "l": "hiera_large"}


def _cache_with(directory: Path, family: str, variant: str, name: str, payload: bytes) -> None:
    target = directory / family / variant
    target.mkdir(parents=True, exist_ok=True)
    (target / name).write_bytes(payload)


def build_caches(cache: Path, sam2_letter: str | None, sam_variant: str | None) -> dict[str, str]:
    """Real-size random checkpoints in Roboflow's legacy layout; model ids by family."""
    from tests.sam_factory import (
        checkpoint_bytes,
        original_sam2_state,
        original_sam_state,
        real_sam2_config,
        sam2_model,
        sam_model,
        sam_state_bytes,
    )

    ids = {}
    if sam2_letter:
        variant = LETTERS[sam2_letter]
        model = sam2_model(real_sam2_config(sam2_letter))
        _cache_with(cache, "sam2", variant, "weights.pt", checkpoint_bytes(original_sam2_state(model)))
        ids["sam2"] = f"sam2/{variant}"
    if sam_variant:
        from transformers import SamConfig, SamVisionConfig

        vision = {
            "vit_b": SamVisionConfig(),
            "vit_l": SamVisionConfig(
                hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, global_attn_indexes=[5, 11, 17, 23]
            ),
            "vit_h": SamVisionConfig(
                hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, global_attn_indexes=[7, 15, 23, 31]
            ),
        }[sam_variant]
        model = sam_model(SamConfig(vision_config=vision))
        _cache_with(cache, "sam", sam_variant, "encoder.pth", sam_state_bytes(original_sam_state(model)))
        ids["sam"] = f"sam/{sam_variant}"
    return ids


def _ms(fn, rounds: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def latency(ids: dict[str, str], rounds: int) -> list[str]:
    from edge_agent.models import get_model

    frame = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    detector = get_model(str(bench_model()))
    detector.predict([frame])  # warm-up
    boxes5 = [[100 + 150 * i, 100, 220 + 150 * i, 300] for i in range(5)]
    lines = []
    models = {family: get_model(model_id) for family, model_id in ids.items()}
    for model in models.values():
        model.predict([frame], boxes=[boxes5[0]])  # warm-up
    results: dict[str, dict[str, list[float]]] = {f: {"embed": [], "one": [], "five": []} for f in models}
    det_times: list[float] = []
    for _ in range(rounds):  # interleaved, so load changes on the box hit every figure alike
        det_times.append(_ms(lambda: detector.predict([frame]), 1))
        for family, model in models.items():
            shifted = frame.copy()
            shifted[0, 0, 0] ^= 1  # a new frame: the embedding is not reused
            results[family]["embed"].append(_ms(lambda m=model, f=shifted: m._embed(f), 1))
            # the frame's embedding is kept: these are the prompt decoder and the masks alone
            results[family]["one"].append(_ms(lambda m=model, f=shifted: m.predict([f], boxes=[boxes5[0]]), 1))
            results[family]["five"].append(_ms(lambda m=model, f=shifted: m.predict([f], boxes=boxes5), 1))
    det = statistics.median(det_times)
    lines.append(f"YOLOv8n-sized detector, full predict 1280x720: {det:.1f} ms")
    for family, figures in results.items():
        embed = statistics.median(figures["embed"])
        one = statistics.median(figures["one"])
        five = statistics.median(figures["five"])
        lines.append(
            f"{ids[family]} (real size, random weights): embedding {embed:.0f} ms ({embed / det:.1f}x the detector); "
            f"decoder + masks 1 box {one:.0f} ms, 5 boxes {five:.0f} ms"
        )
    return lines


def owlv2(cache: Path, rounds: int) -> list[str]:
    """OWLv2 base (ViT-B/16 at 960x960, Owlv2Config's defaults = google/owlv2-base-patch16-ensemble's
    shape) from the hub cache layout: a frame against two example boxes, and what changing the
    example set costs (embedding the new reference image + the class queries)."""
    import json

    import cv2
    from transformers import Owlv2Config, Owlv2ForObjectDetection

    from edge_agent.models.common.settings import reload_model_settings
    from edge_agent.models.foundation.owlv2 import load_owlv2
    from tests.owl_factory import write_hub_snapshot

    version = "owlv2-base-patch16-ensemble"
    write_hub_snapshot(cache / "hf_home" / "hub", version, Owlv2ForObjectDetection(Owlv2Config()).eval())
    model = load_owlv2(f"owlv2/{version}", version, reload_model_settings())
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8) for _ in range(rounds + 1)]
    sets = []
    for i in range(rounds + 1):
        reference = cache / f"reference-{i}.png"
        cv2.imwrite(str(reference), rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
        path = cache / f"training-{i}.json"
        boxes = [
            {"x": 200, "y": 200, "w": 80, "h": 80, "cls": "a"},
            {"x": 400, "y": 300, "w": 120, "h": 90, "cls": "b"},
        ]
        path.write_text(json.dumps([{"image": str(reference), "boxes": boxes}]))
        sets.append(path)
    model.predict([frames[0]], training_data=str(sets[0]))  # warm-up
    frame_ms, change_ms = [], []
    for i in range(1, rounds + 1):
        frame_ms.append(_ms(lambda i=i: model.predict([frames[i]], training_data=str(sets[0])), 1))
        change_ms.append(_ms(lambda i=i: model._queries_of_file(sets[i], 0.3), 1))
    frame, change = statistics.median(frame_ms), statistics.median(change_ms)
    return [
        f"owlv2/{version} (real size, random weights): {frame:.0f} ms per 1280x720 frame with 2 example boxes; "
        f"changing the example set {change:.0f} ms once (its reference embedded, then kept on disk)"
    ]


def chain(cache: Path, sam2_id: str, seconds: float, workdir: Path) -> list[str]:
    video = clip("chain", seconds=seconds, fps=10)

    def fps(extra: dict[str, str], name: str) -> tuple[float, int]:
        env = {
            "STREAMS": f"cam={video}",
            "STREAM_CAM_MODE": "every",
            "STDOUT_SINK": "true",
            "OFFLINE_MODE": "true",
            "MODEL_CACHE_DIR": str(cache),
            **extra,
        }
        with agent(env, workdir / name) as proc:
            rc = proc.wait(timeout=1800)
            lines = [p for _, p in proc.lines if "predictions" in p]
        if rc != 0 or len(lines) < 4:
            raise RuntimeError(f"agent failed (rc={rc}, {len(lines)} predictions)")
        steady = [p["frame_time"] for p in lines[2:]]  # the first results carry the warm-up
        boxes = sum(len(p["predictions"]) for p in lines) / len(lines)
        return (len(steady) - 1) / (steady[-1] - steady[0]), round(boxes, 1)

    alone, boxes = fps({}, "alone")
    both, _ = fps({"STREAM_CAM_SECOND_MODEL_ID": sam2_id}, "chain")
    return [
        f"stream {video.name}, MODE=every: bundled detector alone {alone:.2f} fps ({boxes} boxes/frame); "
        f"+ {sam2_id} on its boxes {both:.3f} fps ({both / alone:.4f}x)"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sam2", default="t", choices=[*LETTERS, "none"])
    parser.add_argument("--sam", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "none"])
    parser.add_argument("--owlv2", default="base", choices=["base", "none"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chain-seconds", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="foundation-bench-") as tmp:
        cache = Path(tmp) / "cache"
        os.environ["MODEL_CACHE_DIR"] = str(cache)
        os.environ["OFFLINE_MODE"] = "true"
        ids = build_caches(cache, None if args.sam2 == "none" else args.sam2, None if args.sam == "none" else args.sam)
        for line in latency(ids, args.rounds):
            print(line, flush=True)
        if args.owlv2 != "none":
            for line in owlv2(cache, args.rounds):
                print(line, flush=True)
        if args.chain_seconds > 0 and "sam2" in ids:
            for line in chain(cache, ids["sam2"], args.chain_seconds, Path(tmp)):
                print(line, flush=True)


if __name__ == "__main__":
    main()
