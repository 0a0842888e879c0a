"""CLIP per-frame cost on this box: a ViT-B/16-shaped image encoder (random weights, 224x224,
~86 M parameters, as Roboflow's default clip/ViT-B-16) through edge-agent's CLIP model.

    python -m bench.clip_bench [--rounds 5] [--layers 12]

Real CLIP weights cannot be had offline; cost depends on the shape, not the values, so the image
encoder is built here with CLIP's ViT-B/16 shape (patch 16, width 768, 12 layers, 12 heads,
projection to 512) and exported once to bench/_out. The text encoder is the small CLIP-shaped one
of the tests: prompt embeddings are computed once per prompt set and cached, so per frame only
the image encoder and a (1, 512) x (512, P) product run. Printed per frame, median of interleaved
rounds: pre-processing, embedding, zero-shot against 3 prompts; and the ratio to the YOLOv8n-sized
detector of bench/yolov8n_like.py measured in the same run (its full predict per frame).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from bench.common import OUT, bench_model

PROMPTS = ["a person at the door", "an empty porch", "a parcel on the ground"]


def export_visual(path: Path, layers: int) -> None:
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, width: int = 768, heads: int = 12) -> None:
            super().__init__()
            self.heads = heads
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, c = x.shape
            q, k, v = self.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            attention = torch.softmax(q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5, dim=-1)
            x = x + self.out((attention @ v).transpose(1, 2).reshape(b, n, c))
            return x + self.mlp(self.ln2(x))

    class VisualViTB16(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, 768, 16, 16, bias=False)
            self.cls = nn.Parameter(torch.randn(1, 1, 768) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, 197, 768) * 0.02)
            self.ln_pre, self.ln_post = nn.LayerNorm(768), nn.LayerNorm(768)
            self.blocks = nn.Sequential(*[Block() for _ in range(layers)])
            self.proj = nn.Linear(768, 512, bias=False)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = self.patch(images).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
            x = self.blocks(self.ln_pre(x))
            return self.proj(self.ln_post(x[:, 0]))

    torch.manual_seed(0)
    model = VisualViTB16().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, 224, 224),),
        str(path),
        input_names=["images"],
        output_names=["embeddings"],
        dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def clip_dir(layers: int) -> Path:
    directory = OUT / f"clip-vit-b16-shaped-{layers}l"
    if not (directory / "visual.onnx").is_file():
        export_visual(directory / "visual.onnx", layers)
    if not (directory / "textual.onnx").is_file():
        (directory / "textual.onnx").write_bytes(small_textual())
    return directory


def small_textual(width: int = 16, dim: int = 512) -> bytes:
    """Token lookup -> mean -> projection to the image encoder's 512 dims (text runs once per prompt set)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Gather", ["table", "tokens"], ["looked_up"], axis=0),
        helper.make_node("ReduceMean", ["looked_up"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "proj"], ["embeddings"]),
    ]
    graph = helper.make_graph(
        nodes,
        "clip_textual_bench",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", 77])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", dim])],
        initializer=[
            numpy_helper.from_array(rng.normal(0, 0.02, (49408, width)).astype(np.float32), "table"),
            numpy_helper.from_array(rng.normal(0, 0.2, (width, dim)).astype(np.float32), "proj"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def per_frame_ms(fn, seconds: float) -> float:  # type: ignore[no-untyped-def]
    fn()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        done += 1
    return (time.perf_counter() - started) / done * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--layers", type=int, default=12, help="transformer layers (12 = ViT-B/16)")
    args = parser.parse_args()

    from edge_agent.models import get_model
    from edge_agent.models.common.settings import reload_model_settings
    from edge_agent.models.foundation.clip import ClipModel, clip_preprocess

    settings = reload_model_settings()
    clip = ClipModel("clip/ViT-B-16", clip_dir(args.layers), settings)
    detector = get_model(str(bench_model()))
    frame = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    started = time.perf_counter()
    clip.embed_text(PROMPTS)
    first_text_ms = (time.perf_counter() - started) * 1000.0
    rows: dict[str, list[float]] = {k: [] for k in ("preprocess", "embed", "zero_shot", "detector", "ratio")}
    for _ in range(args.rounds):
        rows["preprocess"].append(per_frame_ms(lambda: clip_preprocess(frame, 224), args.seconds / 3))
        rows["embed"].append(per_frame_ms(lambda: clip.predict(frame), args.seconds))
        rows["zero_shot"].append(per_frame_ms(lambda: clip.predict(frame, prompts=PROMPTS), args.seconds))
        rows["detector"].append(per_frame_ms(lambda: detector.predict(frame), args.seconds))
        rows["ratio"].append(rows["zero_shot"][-1] / rows["detector"][-1])
    result = {k: round(statistics.median(v), 3) for k, v in rows.items()}
    result["first_prompt_set_ms"] = round(first_text_ms, 3)
    result["layers"] = args.layers
    print(
        f"CLIP ViT-B/16-shaped ({args.layers} layers), 1280x720 frame: pre-processing {result['preprocess']:.1f} ms, "
        f"embedding {result['embed']:.1f} ms, zero-shot vs {len(PROMPTS)} prompts {result['zero_shot']:.1f} ms; "
        f"YOLOv8n-sized detector {result['detector']:.1f} ms; CLIP zero-shot / detector {result['ratio']:.2f} "
        f"(median of {args.rounds} interleaved rounds)"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
