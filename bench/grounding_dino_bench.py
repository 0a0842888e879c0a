"""Grounding DINO on this box: Swin-T OGC at real size (random weights) per frame against the
YOLOv8n-sized detector measured in the same run, and what a text prompt change costs.

    python -m bench.grounding_dino_bench [--rounds 3]

Real weights cannot be had offline; cost depends on the shapes, not the values, so the network is
transformers' ``GroundingDinoConfig()`` (Swin-T backbone, BERT-base text encoder, 900 queries,
6+6 layers: groundingdino_swint_ogc's shape), written as Roboflow's legacy artifact
(``groundingdino_swint_ogc.pth`` in the original key names, BERT in the hub cache layout) into a
private model cache and loaded through edge-agent's real loader. Printed, medians of interleaved
rounds on a 1280x720 frame (resized to 1333x750): the detector's full predict; Grounding DINO's
full predict with an unchanged prompt set (BERT's output cached); the first frame after a prompt
change (BERT runs once for the new set) and the difference, which is the cost of a change; and that
text side alone (tokenizer + BERT on the new caption), which a noisy box measures more steadily.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import bench_model

MODEL_ID = "grounding_dino/groundingdino_swint_ogc"
PROMPTS = [["dog", "cat"], ["person", "car"], ["truck", "bird"], ["red", "shirt"], ["a", "t"]]


def _ms(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def run(rounds: int) -> list[str]:
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection

    from edge_agent.models import get_model
    from tests.gdino_factory import write_legacy

    network = GroundingDinoForObjectDetection(GroundingDinoConfig()).eval()
    write_legacy(Path(os.environ["MODEL_CACHE_DIR"]), network)
    del network
    model = get_model(MODEL_ID)
    detector = get_model(str(bench_model()))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8) for _ in range(rounds + 1)]
    detector.predict([frames[0]])  # warm-up
    model.predict([frames[0]], prompts=PROMPTS[0])
    det_ms, steady_ms, change_ms, text_ms = [], [], [], []
    # each a new set of two prompts, as many as the steady set
    sets = [[PROMPTS[1 + i % (len(PROMPTS) - 1)][0], f"thing {i}"] for i in range(2 * rounds)]
    for i in range(rounds):  # interleaved, so load changes on the box hit every figure alike
        frame = frames[1 + i]
        det_ms.append(_ms(lambda f=frame: detector.predict([f])))
        steady_ms.append(_ms(lambda f=frame: model.predict([f], prompts=PROMPTS[0])))
        runs = model.text_runs
        change_ms.append(_ms(lambda f=frame, s=sets[i]: model.predict([f], prompts=s)))
        assert model.text_runs == runs + 1  # the new set's text side ran once, on that frame
        text_ms.append(_ms(lambda s=sets[rounds + i]: _text_side(model, s)))
    det, steady, change, text = (statistics.median(v) for v in (det_ms, steady_ms, change_ms, text_ms))
    return [
        f"YOLOv8n-sized detector, full predict 1280x720: {det:.1f} ms",
        f"{MODEL_ID} (real size, random weights, 1333x750 input): {steady:.0f} ms per frame with 2 prompts "
        f"({steady / det:.1f}x the detector)",
        f"first frame after a prompt change: {change:.0f} ms ({change - steady:+.0f} ms: BERT and the tokenizer "
        f"run once for the new set; later frames cost the steady figure)",
        f"the text side of a new prompt set alone (tokenizer + BERT-base): {text:.0f} ms",
    ]


def _text_side(model, prompts: list[str]) -> None:  # type: ignore[no-untyped-def]
    import torch

    found = model.prompt_set(prompts)
    with torch.inference_mode():
        model.text_backbone.inner(found.input_ids, found.attention_mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gdino-bench-") as tmp:
        os.environ["MODEL_CACHE_DIR"] = str(Path(tmp) / "cache")
        os.environ["OFFLINE_MODE"] = "true"
        for line in run(args.rounds):
            print(line, flush=True)


if __name__ == "__main__":
    main()
