"""YOLO-World checkpoints in Ultralytics' pickle layout, written without Ultralytics.

Ultralytics (AGPL, pulls torchvision) cannot be installed here, so the factory writes a throwaway
package named ``ultralytics`` into a temporary directory, with classes at the real import paths
(``ultralytics.nn.tasks.WorldModel``, ``ultralytics.nn.modules.conv.Conv``,
``...block.C2fAttn``, ``...head.WorldDetect`` ...) carrying Ultralytics' child and attribute
names and YOLO-World's forward maths, builds a model from a yaml the way Ultralytics'
``parse_model`` scales it, gives it random weights and BatchNorm statistics, and saves
``{"model": model.half(), "ema": None, ...}`` with ``torch.save`` as Ultralytics' trainer does.
The package is removed from ``sys.modules`` and ``sys.path`` afterwards, so the loader under test
must read the file without it. ``reference_output`` runs the factory's own forward (float32, the
weights rounded to half as saved), which the loaded network must reproduce.

CLIP: ``write_clip`` writes a tiny CLIP-shaped ViT-B-32 (token lookup + mean, then a fixed
projection to 512 dims: YOLO-World's text width) in Roboflow's legacy cache layout.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import math
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_CONV = """
import torch
from torch import nn


def autopad(k, p=None, d=1):
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


class Conv(nn.Module):
    default_act = nn.SiLU()

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, d=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = self.default_act if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x):
        return self.act(self.conv(x))

    @torch.no_grad()
    def fuse(self):
        # as Ultralytics' fuse(): BatchNorm folded into a biased conv, forward = forward_fuse
        scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        conv = nn.Conv2d(
            self.conv.in_channels, self.conv.out_channels, self.conv.kernel_size, self.conv.stride,
            self.conv.padding, self.conv.dilation, self.conv.groups, bias=True,
        )
        conv.weight.copy_(self.conv.weight * scale.view(-1, 1, 1, 1))
        conv.bias.copy_(self.bn.bias - self.bn.running_mean * scale)
        self.conv = conv
        delattr(self, "bn")
        self.forward = self.forward_fuse


class Concat(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)
"""

_BLOCK = """
import torch
import torch.nn.functional as F
from torch import nn

from ultralytics.nn.modules.conv import Conv


class DFL(nn.Module):
    def __init__(self, c1=16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        probs = x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)
        return self.conv(probs).view(b, 4, a)


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True, g=1, k=(3, 3), e=0.5):
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, k[0], 1)
        self.cv2 = Conv(hidden, c2, k[1], 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        out = self.cv2(self.cv1(x))
        return x + out if self.add else out


class C2f(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=False, g=1, e=0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=((3, 3), (3, 3)), e=1.0) for _ in range(n))

    def forward(self, x):
        parts = list(self.cv1(x).split((self.c, self.c), 1))
        for block in self.m:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        a = self.cv1(x)
        b = self.m(a)
        c = self.m(b)
        return self.cv2(torch.cat((a, b, c, self.m(c)), 1))


class MaxSigmoidAttnBlock(nn.Module):
    def __init__(self, c1, c2, nh=1, ec=128, gc=512, scale=False):
        super().__init__()
        self.nh = nh
        self.hc = c2 // nh
        self.ec = Conv(c1, ec, k=1, act=False) if c1 != ec else None
        self.gl = nn.Linear(gc, ec)
        self.bias = nn.Parameter(torch.zeros(nh))
        self.proj_conv = Conv(c1, c2, k=3, s=1, act=False)
        self.scale = nn.Parameter(torch.ones(1, nh, 1, 1)) if scale else 1.0

    def forward(self, x, guide):
        bs, _, h, w = x.shape
        guide = self.gl(guide).view(bs, -1, self.nh, self.hc)
        embed = (self.ec(x) if self.ec is not None else x).view(bs, self.nh, self.hc, h, w)
        # per head and pixel: the best prompt's dot product (loops, not einsum: an independent reference)
        best = (embed[:, :, None] * guide.permute(0, 2, 1, 3)[..., None, None]).sum(3).amax(2)
        gate = torch.sigmoid(best / self.hc ** 0.5 + self.bias.view(1, -1, 1, 1)) * self.scale
        out = self.proj_conv(x).view(bs, self.nh, -1, h, w) * gate.unsqueeze(2)
        return out.view(bs, -1, h, w)


class C2fAttn(nn.Module):
    def __init__(self, c1, c2, n=1, ec=128, nh=1, gc=512, shortcut=False, g=1, e=0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((3 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=((3, 3), (3, 3)), e=1.0) for _ in range(n))
        self.attn = MaxSigmoidAttnBlock(self.c, self.c, gc=gc, ec=ec, nh=nh)

    def forward(self, x, guide):
        parts = list(self.cv1(x).split((self.c, self.c), 1))
        for block in self.m:
            parts.append(block(parts[-1]))
        parts.append(self.attn(parts[-1], guide))
        return self.cv2(torch.cat(parts, 1))


class ImagePoolingAttn(nn.Module):
    def __init__(self, ec=256, ch=(), ct=512, nh=8, k=3, scale=False):
        super().__init__()
        nf = len(ch)
        self.query = nn.Sequential(nn.LayerNorm(ct), nn.Linear(ct, ec))
        self.key = nn.Sequential(nn.LayerNorm(ec), nn.Linear(ec, ec))
        self.value = nn.Sequential(nn.LayerNorm(ec), nn.Linear(ec, ec))
        self.proj = nn.Linear(ec, ct)
        self.scale = nn.Parameter(torch.tensor([0.0]), requires_grad=True) if scale else 1.0
        self.projections = nn.ModuleList([nn.Conv2d(c, ec, kernel_size=1) for c in ch])
        self.im_pools = nn.ModuleList([nn.AdaptiveMaxPool2d((k, k)) for _ in range(nf)])
        self.ec, self.nh, self.nf, self.hc, self.k = ec, nh, nf, ec // nh, k

    def forward(self, x, text):
        bs = x[0].shape[0]
        feats = torch.cat(
            [pool(proj(f)).flatten(2) for f, proj, pool in zip(x, self.projections, self.im_pools)], -1
        ).transpose(1, 2)
        q = self.query(text).view(bs, -1, self.nh, self.hc).transpose(1, 2)  # b m n c
        k = self.key(feats).view(bs, -1, self.nh, self.hc).transpose(1, 2)
        v = self.value(feats).view(bs, -1, self.nh, self.hc).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-1, -2) / self.hc ** 0.5, -1)
        out = (attn @ v).transpose(1, 2).reshape(bs, -1, self.ec)
        return self.proj(out) * self.scale + text


class ContrastiveHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([-10.0]))
        self.logit_scale = nn.Parameter(torch.ones([]) * torch.tensor(1 / 0.07).log())

    def forward(self, x, w):
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        w = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return torch.einsum("bchw,bkc->bkhw", x, w) * self.logit_scale.exp() + self.bias


class BNContrastiveHead(nn.Module):
    def __init__(self, embed_dims):
        super().__init__()
        self.norm = nn.BatchNorm2d(embed_dims)
        self.bias = nn.Parameter(torch.tensor([-10.0]))
        self.logit_scale = nn.Parameter(-1.0 * torch.ones([]))

    def forward(self, x, w):
        x = self.norm(x)
        w = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return torch.einsum("bchw,bkc->bkhw", x, w) * self.logit_scale.exp() + self.bias
"""

_HEAD = """
import torch
from torch import nn

from ultralytics.nn.modules.block import DFL, BNContrastiveHead, ContrastiveHead
from ultralytics.nn.modules.conv import Conv


class Detect(nn.Module):
    def __init__(self, nc=80, ch=()):
        super().__init__()
        self.nc = nc
        self.nl = len(ch)
        self.reg_max = 16
        self.no = nc + self.reg_max * 4
        self.stride = torch.zeros(self.nl)
        c2, c3 = max((16, ch[0] // 4, self.reg_max * 4)), max(ch[0], min(self.nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * self.reg_max, 1)) for x in ch
        )
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, self.nc, 1)) for x in ch)
        self.dfl = DFL(self.reg_max)


class WorldDetect(Detect):
    def __init__(self, nc=80, embed=512, with_bn=False, ch=()):
        super().__init__(nc, ch)
        c3 = max(ch[0], min(self.nc, 100))
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, embed, 1)) for x in ch)
        self.cv4 = nn.ModuleList(BNContrastiveHead(embed) if with_bn else ContrastiveHead() for _ in ch)

    def forward(self, x, text):
        nc = text.shape[1]
        outs = [torch.cat((self.cv2[i](x[i]), self.cv4[i](self.cv3[i](x[i]), text)), 1) for i in range(self.nl)]
        b = outs[0].shape[0]
        flat = torch.cat([o.view(b, 4 * self.reg_max + nc, -1) for o in outs], 2)
        box, cls = flat.split((4 * self.reg_max, nc), 1)
        anchors, strides = [], []
        for o, s in zip(outs, self.stride.tolist()):
            h, w = o.shape[2:]
            ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            anchors.append(torch.stack((xs.flatten(), ys.flatten()), 0))
            strides.append(torch.full((1, h * w), s))
        anchors, strides = torch.cat(anchors, 1)[None], torch.cat(strides, 1)[None]
        d = self.dfl(box)
        x1y1, x2y2 = anchors - d[:, :2], anchors + d[:, 2:]
        xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
        return torch.cat((xywh, cls.sigmoid()), 1), outs
"""

_TASKS = """
import copy
import math

import torch
from torch import nn

from ultralytics.nn.modules.block import C2f, C2fAttn, ImagePoolingAttn, SPPF
from ultralytics.nn.modules.conv import Concat, Conv
from ultralytics.nn.modules.head import WorldDetect


def make_divisible(x, divisor):
    return math.ceil(x / divisor) * divisor


def parse_model(d, ch):
    depth, width, max_channels = d["scales"][d["scale"]]
    nc = d["nc"]
    chs, layers, save = [ch], [], []
    for i, (f, n, name, args) in enumerate(d["backbone"] + d["head"]):
        args = [nc if a == "nc" else a for a in args]
        n = max(round(n * depth), 1) if n > 1 else n
        if name in ("Conv", "C2f", "C2fAttn", "SPPF"):
            c1, c2 = chs[f], make_divisible(min(args[0], max_channels) * width, 8)
            if name == "C2fAttn":
                args[1] = make_divisible(min(args[1], max_channels // 2) * width, 8)
                args[2] = int(max(round(min(args[2], max_channels // 2 // 32)) * width, 1) if args[2] > 1 else args[2])
            args = [c1, c2, *args[1:]]
            if name in ("C2f", "C2fAttn"):
                args.insert(2, n)
            module = {"Conv": Conv, "C2f": C2f, "C2fAttn": C2fAttn, "SPPF": SPPF}[name](*args)
        elif name == "nn.Upsample":
            c2 = chs[f]
            module = nn.Upsample(*args)
        elif name == "Concat":
            c2 = sum(chs[x] for x in f)
            module = Concat(*args)
        elif name == "ImagePoolingAttn":
            c2 = chs[f[0]] if isinstance(f, list) else chs[f]
            module = ImagePoolingAttn(args[0], [chs[x] for x in f], *args[1:])
        elif name == "WorldDetect":
            module = WorldDetect(*args, [chs[x] for x in f])
            c2 = None
        else:
            raise ValueError(name)
        module.i, module.f, module.type = i, f, name
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
        if i == 0:
            chs = []
        chs.append(c2)
    return nn.Sequential(*layers), sorted(save)


class BaseModel(nn.Module):
    pass


class DetectionModel(BaseModel):
    def __init__(self, cfg, ch=3, nc=None):
        super().__init__()
        self.yaml = cfg
        self.model, self.save = parse_model(copy.deepcopy(cfg), ch)
        self.names = {i: f"{i}" for i in range(cfg["nc"])}
        head = self.model[-1]
        head.stride = torch.tensor([8.0, 16.0, 32.0])
        self.stride = head.stride
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = 1e-3
                m.momentum = 0.03


class WorldModel(DetectionModel):
    def __init__(self, cfg, ch=3, nc=None):
        self.txt_feats = torch.randn(1, nc or 80, 512)
        self.clip_model = None
        super().__init__(cfg, ch, nc)

    def predict(self, x, txt_feats):
        txt_feats = txt_feats.to(x.dtype)
        ori = txt_feats.clone()
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            if isinstance(m, C2fAttn):
                x = m(x, txt_feats)
            elif isinstance(m, WorldDetect):
                x = m(x, ori)
            elif isinstance(m, ImagePoolingAttn):
                txt_feats = m(x, txt_feats)
            else:
                x = m(x)
            y.append(x if m.i in self.save else None)
        return x[0]
"""

_PACKAGE = {
    "ultralytics/__init__.py": "",
    "ultralytics/nn/__init__.py": "",
    "ultralytics/nn/modules/__init__.py": "",
    "ultralytics/nn/modules/conv.py": _CONV,
    "ultralytics/nn/modules/block.py": _BLOCK,
    "ultralytics/nn/modules/head.py": _HEAD,
    "ultralytics/nn/tasks.py": _TASKS,
    "ultralytics/utils/__init__.py": "class IterableSimpleNamespace:\n    def __init__(self, **kw):\n"
    "        self.__dict__.update(kw)\n",
}

_BACKBONE = [
    [-1, 1, "Conv", [64, 3, 2]],
    [-1, 1, "Conv", [128, 3, 2]],
    [-1, 3, "C2f", [128, True]],
    [-1, 1, "Conv", [256, 3, 2]],
    [-1, 6, "C2f", [256, True]],
    [-1, 1, "Conv", [512, 3, 2]],
    [-1, 6, "C2f", [512, True]],
    [-1, 1, "Conv", [1024, 3, 2]],
    [-1, 3, "C2f", [1024, True]],
    [-1, 1, "SPPF", [1024, 5]],
]


def world_yaml(version: int = 2, scale: str = "s", tiny: bool = False) -> dict[str, Any]:
    """Ultralytics' yolov8-world.yaml (v1) / yolov8-worldv2.yaml (v2) as parsed; ``tiny`` adds a
    scale ``t`` (depth 0.33, width 0.25, 512 channels at most: two attention heads still)."""
    head: list[list[Any]] = [
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 6], 1, "Concat", [1]],
        [-1, 3, "C2fAttn", [512, 256, 8]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 4], 1, "Concat", [1]],
        [-1, 3, "C2fAttn", [256, 128, 4]],
    ]
    p3, p4 = 15, 18
    if version == 1:
        head.append([[15, 12, 9], 1, "ImagePoolingAttn", [256]])
        p4 = 19
    head += [
        [15, 1, "Conv", [256, 3, 2]],
        [[-1, 12], 1, "Concat", [1]],
        [-1, 3, "C2fAttn", [512, 256, 8]],
        [-1, 1, "Conv", [512, 3, 2]],
        [[-1, 9], 1, "Concat", [1]],
        [-1, 3, "C2fAttn", [1024, 512, 16]],
        [[p3, p4, p4 + 3], 1, "WorldDetect", ["nc", 512, version == 2]],
    ]
    scales = {
        "n": [0.33, 0.25, 1024],
        "s": [0.33, 0.50, 1024],
        "m": [0.67, 0.75, 768],
        "l": [1.00, 1.00, 512],
        "x": [1.00, 1.25, 512],
        "t": [0.33, 0.25, 512],
    }
    return {
        "nc": 80,
        "scales": scales,
        "backbone": copy.deepcopy(_BACKBONE),
        "head": head,
        "scale": "t" if tiny else scale,
        "yaml_file": f"yolov8{scale}-world{'v2' if version == 2 else ''}.yaml",
        "ch": 3,
    }


@contextlib.contextmanager
def fake_ultralytics() -> Iterator[Any]:
    """The throwaway ``ultralytics`` package, importable inside the block only."""
    with tempfile.TemporaryDirectory(prefix="fake-ultralytics-") as root:
        for name, source in _PACKAGE.items():
            path = Path(root) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
        sys.path.insert(0, root)
        try:
            yield importlib.import_module("ultralytics.nn.tasks")
        finally:
            sys.path.remove(root)
            for name in [m for m in sys.modules if m == "ultralytics" or m.startswith("ultralytics.")]:
                del sys.modules[name]
            importlib.invalidate_caches()


def _randomise(model: Any, seed: int) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("dfl.conv.weight") or name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith("logit_scale"):
                tensor.fill_(math.log(4.0))
            elif name.endswith(".bias") and tensor.numel() == 1 and "cv4" in name:
                tensor.fill_(-1.0)
            elif tensor.dim() == 1 and name.endswith(".weight"):  # norm scales near 1
                tensor.copy_(1.0 + 0.1 * torch.randn(tensor.shape, generator=generator))
            elif tensor.dim() >= 2:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (1.5 / math.sqrt(fan_in)))
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)


def rig(model: Any, logit: float = 2.0) -> Any:
    """Every box scores every prompt sigmoid(``logit``) (logit_scale ~ 0): the first prompt wins."""
    import torch

    with torch.no_grad():
        for head in model.model[-1].cv4:
            head.logit_scale.fill_(-30.0)
            head.bias.fill_(logit)
    return model


def write_checkpoint(
    path: Path,
    version: int = 2,
    scale: str = "s",
    *,
    tiny: bool = True,
    seed: int = 0,
    rigged: float | None = None,
    extra: Any = None,
    fused: bool = False,
) -> dict[str, Any]:
    """Save a checkpoint like Ultralytics' trainer; returns the float32 state (half-rounded) and yaml."""
    import torch

    with fake_ultralytics() as tasks:
        torch.manual_seed(seed)
        model = tasks.WorldModel(world_yaml(version, scale, tiny))
        _randomise(model, seed)
        if rigged is not None:
            rig(model, rigged)
        model.eval()
        if fused:  # a model saved after Ultralytics' fuse(): no BatchNorm in the convolutions
            for module in model.modules():
                if type(module).__name__ == "Conv":
                    module.fuse()
        from ultralytics.utils import IterableSimpleNamespace

        args = IterableSimpleNamespace(task="detect", imgsz=640, model=f"yolov8{scale}-world.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        content = {
            "date": "2024-03-28T00:00:00",
            "version": "8.1.44",
            "license": "AGPL-3.0 License (https://ultralytics.com/license)",
            "epoch": -1,
            "best_fitness": None,
            "model": copy.deepcopy(model).half(),
            "ema": None,
            "updates": None,
            "optimizer": None,
            "train_args": args,
            **({"extra": extra} if extra is not None else {}),
        }
        torch.save(content, path)
        reference = copy.deepcopy(model).half().float()
        return {"model": reference, "yaml": model.yaml, "tasks": tasks}


def reference_output(model: Any, images: Any, text: Any) -> Any:
    """The factory model's own forward, (B, 4 + N, A) (its classes outlive the removed package)."""
    import torch

    with torch.no_grad():
        return model.predict(images, text)


# -- a tiny CLIP ViT-B-32 with 512-dimensional embeddings --------------------------------------------

CLIP_DIM = 512


def _projection(seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1.0, (15, CLIP_DIM)).astype(np.float32)


def write_clip(cache: Path) -> Path:
    """``clip/ViT-B-32``'s textual.onnx + visual.onnx (tests/clip_factory's models, projected to 512)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge_agent.models.artifacts.core_cache import core_model_dir
    from edge_agent.models.identity.ids import parse_model_id
    from tests.clip_factory import _save, colour_tokens, text_table, visual_model

    directory = core_model_dir(parse_model_id("clip/ViT-B-32"), cache)
    directory.mkdir(parents=True, exist_ok=True)
    projection = numpy_helper.from_array(_projection(), "projection")
    text = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "tokens"], ["looked_up"], axis=0),
            helper.make_node("ReduceMean", ["looked_up"], ["mean"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["mean", "projection"], ["embeddings"]),
        ],
        "clip_textual_512",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", 77])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", CLIP_DIM])],
        initializer=[numpy_helper.from_array(text_table(colour_tokens()), "table"), projection],
    )
    (directory / "textual.onnx").write_bytes(_save(text))
    visual = onnx.load_from_string(visual_model(32))
    visual.graph.node.append(helper.make_node("MatMul", ["embeddings", "projection"], ["embeddings512"]))
    visual.graph.initializer.append(projection)
    del visual.graph.output[:]
    visual.graph.output.append(helper.make_tensor_value_info("embeddings512", TensorProto.FLOAT, ["batch", CLIP_DIM]))
    (directory / "visual.onnx").write_bytes(visual.SerializeToString())
    return directory


def write_legacy(cache: Path, variant: str = "v2-s", **kw: Any) -> Path:
    """``MODEL_CACHE_DIR/yolo_world/<variant>/yolo-world.pt`` and the CLIP it needs."""
    directory = cache / "yolo_world" / variant
    write_checkpoint(directory / "yolo-world.pt", version=1 if not variant.startswith("v2") else 2, **kw)
    write_clip(cache)
    return directory
