"""SAM3 on this box: per-frame CPU latency at real model size (random weights) against the built-in
detector measured in the same run, and what changing a stream's text prompts costs.

    python -m bench.sam3_bench [--rounds 2] [--prompts 1,4] [--tiny]

Real weights cannot be had offline; cost depends on the shapes, not the values, so the network is
transformers' ``Sam3Model`` at ``Sam3Config()``'s size (Meta's SAM3: ViT 1024 x 32 blocks at
1008x1008, CLIP text 1024 x 24, 200 queries), written as Roboflow's ``weights.pt`` (Meta's key
names) into a private model cache and loaded through edge-agent's real loader (the vocabulary is
the tests' small one: tokenising is not what costs). Printed, medians of interleaved rounds on a
1280x720 frame, each a new frame: the whole ``predict`` with 1 and with 4 prompts (the prompts'
text features cached, as on a stream), its image-encoder part alone, and the YOLOv8n-sized detector
of bench/yolov8n_like.py; then a prompt change: encoding a new prompt set once (the first frame
after ``PATCH /streams/NAME``). ``--tiny`` runs the tests' tiny network (checks the script quickly).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import bench_model

_CPU: list[float] = []  # CPU seconds (all threads) of each timed call, beside its wall time


def _ms(fn) -> float:  # type: ignore[no-untyped-def]
    started, cpu = time.perf_counter(), time.process_time()
    fn()
    _CPU.append(time.process_time() - cpu)
    return (time.perf_counter() - started) * 1000


def write_cache(cache: Path, tiny: bool) -> float:
    """Roboflow's legacy layout of sam3/sam3_final with random weights; seconds it took."""
    from tests.sam3_factory import (
        original_sam3_state,
        real_sam3_config,
        sam3_model,
        tiny_sam3_config,
        vocabulary_gz,
        write_checkpoint,
    )

    started = time.perf_counter()
    directory = cache / "sam3" / "sam3_final"
    directory.mkdir(parents=True, exist_ok=True)
    model = sam3_model(tiny_sam3_config() if tiny else real_sam3_config())
    write_checkpoint(original_sam3_state(model), directory / "weights.pt")
    (directory / "bpe_simple_vocab_16e6.txt.gz").write_bytes(vocabulary_gz())
    del model
    gc.collect()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prompts", default="1,4", help="prompt counts to time, comma-separated")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny network instead of the real size")
    args = parser.parse_args()
    counts = [int(n) for n in args.prompts.split(",")]
    words = ["cat", "dog", "person", "car", "ca", "do", "pe", "per", "pers", "perso", "t"]
    with tempfile.TemporaryDirectory(prefix="sam3-bench-") as tmp:
        cache = Path(tmp) / "cache"
        os.environ["MODEL_CACHE_DIR"] = str(cache)
        os.environ["OFFLINE_MODE"] = "true"
        import torch

        from edge_agent.models import get_model
        from edge_agent.models.foundation.sam3 import sam3_input

        built = write_cache(cache, args.tiny)
        started = time.perf_counter()
        model = get_model("sam3/sam3_final")
        loaded = time.perf_counter() - started
        size = "tiny" if args.tiny else "real size"
        params = sum(p.numel() for p in model.network.parameters()) / 1e6  # type: ignore[attr-defined]
        print(
            f"sam3/sam3_final ({size}, {params:.0f} M parameters): written in {built:.0f} s, loaded in {loaded:.0f} s"
        )
        detector = get_model(str(bench_model()))
        rng = np.random.default_rng(0)
        frame = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
        detector.predict([frame])
        sets = {n: words[:n] for n in counts}
        model.predict([frame], prompts=sets[counts[0]])  # warm-up (and the sets' text features)
        for prompts in sets.values():
            model.text_features(tuple(prompts))  # type: ignore[attr-defined]
        det_ms: list[float] = []
        vision_ms: list[float] = []
        frame_ms: dict[int, list[float]] = {n: [] for n in counts}
        change_ms: list[float] = []
        frame_cpu: dict[int, list[float]] = {n: [] for n in counts}
        for r in range(args.rounds):  # interleaved, so load changes on the box hit every figure alike
            det_ms.append(_ms(lambda: detector.predict([frame])))
            for n, prompts in sets.items():
                shifted = frame.copy()
                shifted[0, 0, 0] ^= 1 + r
                frame_ms[n].append(_ms(lambda p=prompts, f=shifted: model.predict([f], prompts=p)))
                frame_cpu[n].append(_CPU[-1])
            pixels = torch.from_numpy(sam3_input(shifted))[None]
            with torch.inference_mode():
                vision_ms.append(_ms(lambda x=pixels: model.network.get_vision_features(pixel_values=x)))  # type: ignore[attr-defined]
            fresh = tuple(f"{w} {r}" for w in words[:4])
            change_ms.append(_ms(lambda p=fresh: model.text_features(p)))  # type: ignore[attr-defined]
        det = statistics.median(det_ms)
        vision = statistics.median(vision_ms)
        print(f"YOLOv8n-sized detector, full predict 1280x720: {det:.1f} ms")
        print(f"SAM3 image encoder alone (1008x1008): {vision:.0f} ms ({vision / det:.0f}x the detector)")
        for n in counts:
            ms = statistics.median(frame_ms[n])
            print(
                f"SAM3 per 1280x720 frame, {n} prompt(s), text features cached: {ms:.0f} ms = {ms / 1000:.1f} s "
                f"({ms / det:.0f}x the detector; {(ms - vision) / n:.0f} ms per prompt after the image encoder); "
                f"{statistics.median(frame_cpu[n]):.1f} CPU seconds (all threads; {torch.get_num_threads()} threads)"
            )
        change = statistics.median(change_ms)
        print(f"a prompt change (4 new prompts through the text encoder, once per set): {change:.0f} ms")


if __name__ == "__main__":
    main()
