"""YOLO-World on this box: v2-s at real size (random weights) per frame against the YOLOv8n-sized
detector measured in the same run, and what a text prompt change costs.

    python -m bench.yolo_world_bench [--rounds 5]

Real weights cannot be had offline; cost depends on the shapes, not the values. The checkpoint is
written by tests/yolo_world_factory from Ultralytics' yolov8-worldv2.yaml at scale s (the
throwaway ``ultralytics`` package, saved half precision as Ultralytics does) into a private model
cache, and CLIP ViT-B/32's text tower is built at its real shape (width 512, 12 layers, 8 heads,
77 tokens, causal mask) and exported to ONNX; both load through edge-agent's real loader. Printed,
medians of interleaved rounds on a 1280x720 frame (a 640x384 input after Ultralytics' letterbox):
the detector's full predict; YOLO-World's full predict with an unchanged prompt set (text features
cached); the first frame after a prompt change (CLIP's text tower runs once for the new set) and the
difference, which is the cost of a change; and that text side alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import OUT, bench_model

MODEL_ID = "yolo_world/v2-s"
STEADY = ["person", "car"]


def _ms(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def export_text_tower(path: Path) -> None:
    """CLIP ViT-B/32's text transformer shape, random weights: (B, 77) tokens -> (B, 512)."""
    import torch
    from torch import nn

    width, heads, layers, context = 512, 8, 12, 77

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
            self.register_buffer("mask", torch.full((context, context), float("-inf")).triu(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, c = x.shape
            q, k, v = self.qkv(self.ln1(x)).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            scores = q @ k.transpose(-2, -1) * (c // heads) ** -0.5 + self.mask
            x = x + self.out((torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, n, c))
            return x + self.mlp(self.ln2(x))

    class TextTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.token = nn.Embedding(49408, width)
            self.pos = nn.Parameter(torch.randn(1, context, width) * 0.01)
            self.blocks = nn.Sequential(*[Block() for _ in range(layers)])
            self.ln_final = nn.LayerNorm(width)
            self.proj = nn.Linear(width, 512, bias=False)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            x = self.ln_final(self.blocks(self.token(tokens) + self.pos))
            end = tokens.argmax(dim=-1)  # the end-of-text token has the largest id
            return self.proj(x[torch.arange(x.shape[0]), end])

    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        TextTower().eval(),
        (torch.zeros(1, context, dtype=torch.int64),),
        str(path),
        input_names=["tokens"],
        output_names=["embeddings"],
        dynamic_axes={"tokens": {0: "batch"}, "embeddings": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def run(rounds: int) -> list[str]:
    from edge_agent.models import get_model
    from tests.yolo_world_factory import write_clip, write_legacy

    cache = Path(os.environ["MODEL_CACHE_DIR"])
    write_legacy(cache, "v2-s", tiny=False, scale="s")
    tower = OUT / "clip-vit-b32-text-tower.onnx"
    if not tower.is_file():
        export_text_tower(tower)
    (write_clip(cache) / "textual.onnx").write_bytes(tower.read_bytes())
    model = get_model(MODEL_ID)
    detector = get_model(str(bench_model()))
    params = sum(p.numel() for p in model.network.parameters())  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8) for _ in range(rounds + 1)]
    detector.predict([frames[0]])  # warm-up
    model.predict([frames[0]], prompts=STEADY)
    det_ms, steady_ms, change_ms, text_ms = [], [], [], []
    sets = [[f"thing {i}", f"object {i}"] for i in range(2 * rounds)]  # each a new set of two prompts
    for i in range(rounds):  # interleaved, so load changes on the box hit every figure alike
        frame = frames[1 + i]
        det_ms.append(_ms(lambda f=frame: detector.predict([f])))
        steady_ms.append(_ms(lambda f=frame: model.predict([f], prompts=STEADY)))
        computed = model.text_sets_computed  # type: ignore[attr-defined]
        change_ms.append(_ms(lambda f=frame, s=sets[i]: model.predict([f], prompts=s)))
        assert model.text_sets_computed == computed + 1  # type: ignore[attr-defined]
        text_ms.append(_ms(lambda s=sets[rounds + i]: model.class_features(tuple(s))))  # type: ignore[attr-defined]
    det, steady, change, text = (statistics.median(v) for v in (det_ms, steady_ms, change_ms, text_ms))
    return [
        f"YOLOv8n-sized detector, full predict 1280x720: {det:.1f} ms",
        f"{MODEL_ID} (real size: {params / 1e6:.1f} M parameters, random weights; 640x384 input): {steady:.0f} ms "
        f"per frame with 2 prompts ({steady / det:.1f}x the detector)",
        f"first frame after a prompt change: {change:.0f} ms ({change - steady:+.0f} ms: CLIP's text tower runs "
        f"once for the new set; later frames cost the steady figure)",
        f"the text side of a new 2-prompt set alone (tokenizer + CLIP ViT-B/32 text tower): {text:.0f} ms",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="yolo-world-bench-") as tmp:
        os.environ["MODEL_CACHE_DIR"] = str(Path(tmp) / "cache")
        os.environ["OFFLINE_MODE"] = "true"
        for line in run(args.rounds):
            print(line, flush=True)


if __name__ == "__main__":
    main()
