"""A YOLOv8n-sized detector with random weights, for benchmarks only (never shipped).

An independent torch rendering of the published YOLOv8n shape (widths 16-256, C2f blocks, SPPF,
PAN neck, decoupled DFL head; ~3.2 M parameters, ~8.7 GFLOPs at 640) so the agent is measured on
a model of the field's usual cost and output layout ``(1, 84, 8400)``.

    python -m bench.yolov8n_like --out bench/_out/yolov8n-like
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn


class ConvBnAct(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.a = ConvBnAct(c, c, 3)
        self.b = ConvBnAct(c, c, 3)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(self.a(x))
        return x + y if self.shortcut else y


class C2f(nn.Module):
    def __init__(self, c_in: int, c_out: int, n: int, shortcut: bool) -> None:
        super().__init__()
        self.hidden = c_out // 2
        self.stem = ConvBnAct(c_in, 2 * self.hidden)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden, shortcut) for _ in range(n))
        self.fuse = ConvBnAct((2 + n) * self.hidden, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.stem(x).chunk(2, 1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.fuse(torch.cat(parts, 1))


class SPPF(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.reduce = ConvBnAct(c, c // 2)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.fuse = ConvBnAct(c // 2 * 4, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        p1 = self.pool(x)
        p2 = self.pool(p1)
        return self.fuse(torch.cat([x, p1, p2, self.pool(p2)], 1))


class Head(nn.Module):
    def __init__(self, channels: tuple[int, ...], nc: int, reg_max: int = 16) -> None:
        super().__init__()
        self.nc, self.reg_max = nc, reg_max
        c2, c3 = max(16, channels[0] // 4, reg_max * 4), max(channels[0], min(nc, 100))
        self.box = nn.ModuleList(
            nn.Sequential(ConvBnAct(c, c2, 3), ConvBnAct(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for c in channels
        )
        self.cls = nn.ModuleList(
            nn.Sequential(ConvBnAct(c, c3, 3), ConvBnAct(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for c in channels
        )
        # The usual detector prior (YOLO, RetinaNet): start every class score near zero, so an
        # untrained network behaves like a trained one on an empty scene (the agent still
        # scores all 8400 x 80 cells) instead of sending 8400 boxes through NMS every frame.
        for branch in self.cls:
            nn.init.constant_(branch[-1].bias, -3.0)
        self.register_buffer("bins", torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1))

    def forward(self, feats: list[torch.Tensor], strides: tuple[int, ...]) -> torch.Tensor:
        outs = []
        for i, (f, stride) in enumerate(zip(feats, strides, strict=True)):
            b, _, h, w = f.shape
            dist = self.box[i](f).view(b, 4, self.reg_max, h, w).softmax(2)
            dist = (dist * self.bins.view(1, 1, self.reg_max, 1, 1)).sum(2)  # (b, 4, h, w) l,t,r,b
            ys, xs = torch.meshgrid(
                torch.arange(h, dtype=f.dtype) + 0.5, torch.arange(w, dtype=f.dtype) + 0.5, indexing="ij"
            )
            x1, y1 = xs - dist[:, 0], ys - dist[:, 1]
            x2, y2 = xs + dist[:, 2], ys + dist[:, 3]
            xywh = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1) * stride
            scores = self.cls[i](f).sigmoid()
            outs.append(torch.cat([xywh, scores], 1).view(b, 4 + self.nc, h * w))
        return torch.cat(outs, 2)


class YoloV8nLike(nn.Module):
    def __init__(self, nc: int = 80) -> None:
        super().__init__()
        self.b1 = nn.Sequential(ConvBnAct(3, 16, 3, 2), ConvBnAct(16, 32, 3, 2), C2f(32, 32, 1, True))
        self.b2 = nn.Sequential(ConvBnAct(32, 64, 3, 2), C2f(64, 64, 2, True))  # P3
        self.b3 = nn.Sequential(ConvBnAct(64, 128, 3, 2), C2f(128, 128, 2, True))  # P4
        self.b4 = nn.Sequential(ConvBnAct(128, 256, 3, 2), C2f(256, 256, 1, True), SPPF(256))  # P5
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n1 = C2f(384, 128, 1, False)
        self.n2 = C2f(192, 64, 1, False)
        self.d1 = ConvBnAct(64, 64, 3, 2)
        self.n3 = C2f(192, 128, 1, False)
        self.d2 = ConvBnAct(128, 128, 3, 2)
        self.n4 = C2f(384, 256, 1, False)
        self.head = Head((64, 128, 256), nc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.b2(self.b1(x))
        p4 = self.b3(p3)
        p5 = self.b4(p4)
        t4 = self.n1(torch.cat([self.up(p5), p4], 1))
        o3 = self.n2(torch.cat([self.up(t4), p3], 1))
        o4 = self.n3(torch.cat([self.d1(o3), t4], 1))
        o5 = self.n4(torch.cat([self.d2(o4), p5], 1))
        return self.head([o3, o4, o5], (8, 16, 32))


def export(out: Path, size: int = 640, nc: int = 80, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = YoloV8nLike(nc).eval()
    out.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, size, size)
    torch.onnx.export(
        model,
        (dummy,),
        str(out / "weights.onnx"),
        input_names=["images"],
        output_names=["output0"],
        dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    names = [f"class{i}" for i in range(nc)]
    (out / "class_names.txt").write_text("\n".join(names) + "\n")
    env = {
        "PREPROCESSING": {"resize": {"enabled": True, "width": size, "height": size, "format": "Fit (grey edges) in"}},
        "CLASS_MAP": {str(i): n for i, n in enumerate(names)},
    }
    (out / "environment.json").write_text(json.dumps(env))
    (out / "model_type.json").write_text(
        json.dumps({"project_task_type": "object-detection", "model_type": "yolov8n", "model_id": "bench/yolov8n-like"})
    )
    return out / "weights.onnx"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench/_out/yolov8n-like"))
    args = parser.parse_args()
    path = export(args.out)
    params = sum(p.numel() for p in YoloV8nLike().parameters())
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {params / 1e6:.2f} M params)")


if __name__ == "__main__":
    main()
