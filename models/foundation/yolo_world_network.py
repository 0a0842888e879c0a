"""YOLO-World v1/v2 as our own torch network, built from an Ultralytics checkpoint's module tree.

The checkpoint's stand-in tree (:mod:`.yolo_world_checkpoint`) names each layer's class
(``Conv``, ``C2f``, ``SPPF``, ``nn.Upsample``, ``Concat``, ``C2fAttn``, ``ImagePoolingAttn``,
``WorldDetect``) with its attributes (``f``: where its input comes from, ``nh``, ``eps``, ...) and
its tensors. Each layer is rebuilt here with the same child names, so the checkpoint's state dict
(``model.12.attn.gl.weight`` ...) loads strictly. Building from the tree rather than by re-running
Ultralytics' ``parse_model`` on the yaml keeps every size and option exactly what was trained
(BatchNorm's eps of 1e-3, the head's widths, fused convolutions) whatever Ultralytics version
wrote the file; the yaml (``backbone`` + ``head`` rows of [from, repeats, module, args]) is checked
against the tree layer by layer, so a file whose two halves disagree is refused.

The maths follows YOLO-World as Ultralytics runs it: C2f blocks whose last branch is gated by a
max-sigmoid attention over the text embeddings (``C2fAttn``), v1's image-pooling attention that
refreshes the text embeddings from the image (``ImagePoolingAttn``), and a head whose class
scores are region-text similarities (``ContrastiveHead``: L2-normalised; v2's
``BNContrastiveHead``: BatchNorm) and whose boxes are DFL distributions.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edge_agent.models.common.errors import ModelArtifactsError
from edge_agent.models.foundation.yolo_world_checkpoint import Checkpoint, Inert

# -- torch's own layers, rebuilt from their recorded attributes --------------------------------------


def _tuple2(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def conv2d(node: Inert) -> nn.Conv2d:
    weight = node.get("_parameters")["weight"]
    padding = node.get("padding", 0)
    return nn.Conv2d(
        int(node.get("in_channels", weight.shape[1] * int(node.get("groups", 1)))),
        int(node.get("out_channels", weight.shape[0])),
        _tuple2(node.get("kernel_size", tuple(weight.shape[2:]))),
        stride=_tuple2(node.get("stride", 1)),
        padding=padding if isinstance(padding, str) else _tuple2(padding),
        dilation=_tuple2(node.get("dilation", 1)),
        groups=int(node.get("groups", 1)),
        bias=node.get("_parameters").get("bias") is not None,
    )


def batch_norm(node: Inert) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(int(node.get("num_features")), eps=float(node.get("eps", 1e-5)))


def linear(node: Inert) -> nn.Linear:
    weight = node.get("_parameters")["weight"]
    return nn.Linear(int(weight.shape[1]), int(weight.shape[0]), bias=node.get("_parameters").get("bias") is not None)


def layer_norm(node: Inert) -> nn.LayerNorm:
    shape = node.get("normalized_shape")
    return nn.LayerNorm(
        tuple(shape), eps=float(node.get("eps", 1e-5)), elementwise_affine=bool(node.get("elementwise_affine", True))
    )


def activation(node: Any) -> nn.Module:
    if node is None or not isinstance(node, Inert) or node.name == "Identity":
        return nn.Identity()
    if node.name == "SiLU":
        return nn.SiLU()
    if node.name == "ReLU":
        return nn.ReLU()
    if node.name == "LeakyReLU":
        return nn.LeakyReLU(float(node.get("negative_slope", 0.01)))
    raise ModelArtifactsError("yolo-world.pt", f"activation {node.qualname} is not one this network has")


# -- Ultralytics' building blocks -----------------------------------------------------------------


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm + activation; a fused checkpoint has no ``bn`` and a conv bias."""

    def __init__(self, node: Inert) -> None:
        super().__init__()
        self.conv = conv2d(node.child("conv"))
        bn = node.child("bn")
        self.bn = batch_norm(bn) if bn is not None else None
        self.act = activation(node.child("act"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold BatchNorm into the convolution (inference only; Ultralytics' predict does the same)."""
        if self.bn is None:
            return
        bn, conv = self.bn, self.conv
        assert bn.running_var is not None and bn.running_mean is not None
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            conv.stride,  # type: ignore[arg-type]
            conv.padding,  # type: ignore[arg-type]
            conv.dilation,  # type: ignore[arg-type]
            conv.groups,
            bias=True,
        )
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        base = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((base - bn.running_mean) * scale + bn.bias)  # type: ignore[union-attr]
        self.conv, self.bn = fused, None


class Bottleneck(nn.Module):
    def __init__(self, node: Inert) -> None:
        super().__init__()
        self.cv1 = Conv(node.child("cv1"))
        self.cv2 = Conv(node.child("cv2"))
        self.add = bool(node.get("add", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """Split cv1's output in two; chain bottlenecks on the second half; concatenate every stage."""

    def __init__(self, node: Inert) -> None:
        super().__init__()
        self.cv1 = Conv(node.child("cv1"))
        self.cv2 = Conv(node.child("cv2"))
        self.m = nn.ModuleList(Bottleneck(b) for b in node.child("m").children.values())

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            y.append(block(y[-1]))
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(torch.cat(self.branches(x), 1))


class MaxSigmoidAttnBlock(nn.Module):
    """Gate each head's channels by sigmoid(max over prompts of <pixel embedding, text embedding>)."""

    def __init__(self, node: Inert) -> None:
        super().__init__()
        self.nh = int(node.get("nh"))
        self.hc = int(node.get("hc"))
        ec = node.child("ec")
        self.ec = Conv(ec) if ec is not None else None
        self.gl = linear(node.child("gl"))
        self.bias = nn.Parameter(torch.zeros(self.nh))
        self.proj_conv = Conv(node.child("proj_conv"))
        if "scale" in (node.get("_parameters") or {}):
            self.scale: Any = nn.Parameter(torch.ones(1, self.nh, 1, 1))
        else:
            self.scale = float(node.get("scale", 1.0))

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        bs, _, h, w = x.shape
        text = self.gl(guide).view(bs, -1, self.nh, self.hc)  # (B, N, heads, hc)
        embed = (self.ec(x) if self.ec is not None else x).view(bs, self.nh, self.hc, h, w)
        weights = torch.einsum("bmchw,bnmc->bmhwn", embed, text).max(dim=-1)[0]
        weights = (weights / math.sqrt(self.hc) + self.bias[None, :, None, None]).sigmoid() * self.scale
        out = self.proj_conv(x).view(bs, self.nh, -1, h, w) * weights.unsqueeze(2)
        return out.view(bs, -1, h, w)


class C2fAttn(C2f):
    def __init__(self, node: Inert) -> None:
        super().__init__(node)
        self.attn = MaxSigmoidAttnBlock(node.child("attn"))

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = self.branches(x)
        y.append(self.attn(y[-1], guide))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, node: Inert) -> None:
        super().__init__()
        self.cv1 = Conv(node.child("cv1"))
        self.cv2 = Conv(node.child("cv2"))
        pool = node.child("m")
        self.kernel = int(_tuple2(pool.get("kernel_size", 5))[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(F.max_pool2d(y[-1], self.kernel, 1, self.kernel // 2))
        return self.cv2(torch.cat(y, 1))


class Upsample(nn.Module):
    def __init__(self, node: Inert) -> None:
        super().__init__()
        factor = node.get("scale_factor")
        self.scale_factor = float(factor[0] if isinstance(factor, (tuple, list)) else factor or 2.0)
        self.mode = str(node.get("mode", "nearest"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode)


class Concat(nn.Module):
    def __init__(self, node: Inert) -> None:
        super().__init__()
        self.d = int(node.get("d", 1))

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


class ImagePoolingAttn(nn.Module):
    """v1 only: the text embeddings attend to max-pooled patches of three feature maps."""

    def __init__(self, node: Inert) -> None:
        super().__init__()

        def norm_linear(part: Inert) -> nn.Sequential:
            first, second = part.children["0"], part.children["1"]
            return nn.Sequential(layer_norm(first), linear(second))

        self.query = norm_linear(node.child("query"))
        self.key = norm_linear(node.child("key"))
        self.value = norm_linear(node.child("value"))
        self.proj = linear(node.child("proj"))
        self.projections = nn.ModuleList(conv2d(c) for c in node.child("projections").children.values())
        self.ec, self.nh, self.k = int(node.get("ec")), int(node.get("nh")), int(node.get("k", 3))
        self.hc = self.ec // self.nh
        if "scale" in (node.get("_parameters") or {}):
            self.scale: Any = nn.Parameter(torch.zeros(1))
        else:
            self.scale = float(node.get("scale", 1.0))

    def forward(self, x: list[torch.Tensor], text: torch.Tensor) -> torch.Tensor:
        bs = x[0].shape[0]
        pooled = [
            F.adaptive_max_pool2d(proj(level), (self.k, self.k)).view(bs, -1, self.k * self.k)
            for level, proj in zip(x, self.projections, strict=True)
        ]
        patches = torch.cat(pooled, dim=-1).transpose(1, 2)  # (B, levels*k*k, ec)
        q = self.query(text).reshape(bs, -1, self.nh, self.hc)
        k = self.key(patches).reshape(bs, -1, self.nh, self.hc)
        v = self.value(patches).reshape(bs, -1, self.nh, self.hc)
        weights = (torch.einsum("bnmc,bkmc->bmnk", q, k) / math.sqrt(self.hc)).softmax(dim=-1)
        out = torch.einsum("bmnk,bkmc->bnmc", weights, v).reshape(bs, -1, self.ec)
        return self.proj(out) * self.scale + text


class ContrastiveHead(nn.Module):
    """v1: cosine similarity of each pixel's embedding with each prompt, scaled and shifted."""

    def __init__(self, node: Inert) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))
        self.logit_scale = nn.Parameter(torch.zeros(()))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1, p=2)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("bchw,bkc->bkhw", self.normalise(x), F.normalize(w, dim=-1, p=2))
        return scores * self.logit_scale.exp() + self.bias


class BNContrastiveHead(ContrastiveHead):
    """v2: BatchNorm on the pixel embeddings instead of L2 normalisation."""

    def __init__(self, node: Inert) -> None:
        super().__init__(node)
        self.norm = batch_norm(node.child("norm"))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class DFL(nn.Module):
    """Distribution focal loss integral: a box side is the expectation of a softmax over reg_max bins."""

    def __init__(self, node: Inert) -> None:
        super().__init__()
        self.c1 = int(node.get("c1", 16))
        self.conv = nn.Conv2d(self.c1, 1, 1, bias=False).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(shapes: list[tuple[int, int]], strides: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres (A, 2) in grid units (cell centre: +0.5) and each anchor's stride (A, 1)."""
    points, stride_of = [], []
    for (h, w), stride in zip(shapes, strides, strict=True):
        sy, sx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_of.append(torch.full((h * w, 1), float(stride)))
    return torch.cat(points), torch.cat(stride_of)


def distances_to_boxes(distances: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """(B, 4, A) left/top/right/bottom distances + (A, 2) anchors -> (B, 4, A) cx, cy, w, h."""
    lt, rb = distances.chunk(2, 1)
    anchor = anchors.T.unsqueeze(0)
    x1y1, x2y2 = anchor - lt, anchor + rb
    return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1)


class WorldDetect(nn.Module):
    def __init__(self, node: Inert) -> None:
        super().__init__()
        self.reg_max = int(node.get("reg_max", 16))
        stride = node.get("stride")
        self.strides = [float(s) for s in (stride.tolist() if stride is not None else (8, 16, 32))]
        self.cv2 = nn.ModuleList(self._branch(b) for b in node.child("cv2").children.values())
        self.cv3 = nn.ModuleList(self._branch(b) for b in node.child("cv3").children.values())
        self.cv4 = nn.ModuleList(
            BNContrastiveHead(h) if h.name == "BNContrastiveHead" else ContrastiveHead(h)
            for h in node.child("cv4").children.values()
        )
        dfl = node.child("dfl")
        self.dfl = DFL(dfl) if dfl is not None and dfl.name == "DFL" else None

    @staticmethod
    def _branch(node: Inert) -> nn.Sequential:
        parts = list(node.children.values())
        return nn.Sequential(Conv(parts[0]), Conv(parts[1]), conv2d(parts[2]))

    def forward(self, x: list[torch.Tensor], text: torch.Tensor) -> torch.Tensor:
        """(B, 4 + N, A): boxes cx, cy, w, h in input pixels, then each prompt's sigmoid score."""
        b, n = x[0].shape[0], text.shape[1]
        box_logits, class_logits = [], []
        for i, level in enumerate(x):
            box_logits.append(self.cv2[i](level).view(b, 4 * self.reg_max, -1))
            class_logits.append(self.cv4[i](self.cv3[i](level), text).view(b, n, -1))
        box, cls = torch.cat(box_logits, 2), torch.cat(class_logits, 2)
        anchors, strides = make_anchors([(t.shape[2], t.shape[3]) for t in x], self.strides)
        distances = self.dfl(box) if self.dfl is not None else box
        boxes = distances_to_boxes(distances, anchors) * strides.T.unsqueeze(0)
        return torch.cat((boxes, cls.sigmoid()), 1)


_LAYERS: dict[str, type[nn.Module]] = {
    "Conv": Conv,
    "C2f": C2f,
    "C2fAttn": C2fAttn,
    "SPPF": SPPF,
    "Upsample": Upsample,
    "Concat": Concat,
    "ImagePoolingAttn": ImagePoolingAttn,
    "WorldDetect": WorldDetect,
}


class YoloWorldNetwork(nn.Module):
    """The whole detector; ``forward(images (B,3,H,W) in 0..1 RGB, text (B or 1, N, D))``."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__()
        sequence = checkpoint.model.child("model")
        if not isinstance(sequence, Inert):
            raise ModelArtifactsError("yolo-world.pt", "the model has no layer list (model.model)")
        layers, sources = [], []
        for key, node in sequence.children.items():
            kind = _LAYERS.get(node.name) if isinstance(node, Inert) else None
            if kind is None:
                raise ModelArtifactsError(
                    "yolo-world.pt",
                    f"layer {key} is a {getattr(node, 'qualname', type(node).__name__)}, which is not part of "
                    f"YOLO-World v1/v2 ({', '.join(_LAYERS)})",
                )
            layers.append(kind(node))
            source = node.get("f", -1)
            sources.append(list(source) if isinstance(source, (list, tuple)) else int(source))
        _check_against_yaml(checkpoint.yaml, list(sequence.children.values()))
        if not isinstance(layers[-1], WorldDetect):
            raise ModelArtifactsError("yolo-world.pt", "the last layer is not a WorldDetect head")
        self.model = nn.ModuleList(layers)
        self.sources = sources
        saved = checkpoint.model.get("save")
        self.save = set(saved) if saved is not None else {j for f in sources for j in _as_list(f) if j != -1}
        head = layers[-1]
        assert isinstance(head, WorldDetect)
        first: Any = head.cv3[0]
        first = first[2]
        self.embed_dim = int(first.out_channels) if isinstance(first, nn.Conv2d) else 512
        missing, unexpected = self.load_state_dict(checkpoint.state, strict=False)
        if missing or unexpected:
            raise ModelArtifactsError(
                "yolo-world.pt",
                f"its tensors do not fit the network it describes (missing {missing[:5]}, unexpected {unexpected[:5]})",
            )
        self.eval()
        for module in self.modules():
            if isinstance(module, Conv):
                module.fuse()

    @property
    def stride(self) -> int:
        head = self.model[-1]
        assert isinstance(head, WorldDetect)
        return int(max(head.strides))

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        text = text.to(images.dtype)
        if text.shape[0] != images.shape[0]:
            text = text.expand(images.shape[0], -1, -1)
        original = text
        outputs: list[Any] = []
        x: Any = images
        for i, (layer, source) in enumerate(zip(self.model, self.sources, strict=True)):
            if source != -1:
                x = outputs[source] if isinstance(source, int) else [x if j == -1 else outputs[j] for j in source]
            if isinstance(layer, C2fAttn):
                x = layer(x, text)
            elif isinstance(layer, WorldDetect):
                x = layer(x, original)
            elif isinstance(layer, ImagePoolingAttn):
                text = layer(x, text)  # x stays the inputs list: the next layer names its own source
            else:
                x = layer(x)
            outputs.append(x if i in self.save else None)
        return x


def _check_against_yaml(yaml: dict[str, Any], nodes: list[Any]) -> None:
    """The module tree and the yaml it was parsed from must agree, layer by layer (module and inputs)."""
    rows = list(yaml.get("backbone") or []) + list(yaml.get("head") or [])
    if len(rows) != len(nodes):
        raise ModelArtifactsError(
            "yolo-world.pt", f"its yaml lists {len(rows)} layers and its model holds {len(nodes)}"
        )
    for i, (row, node) in enumerate(zip(rows, nodes, strict=True)):
        source, _, module = row[0], row[1], str(row[2]).rsplit(".", 1)[-1]
        found = node.get("f", -1)
        if module != node.name or _as_list(source) != _as_list(found):
            raise ModelArtifactsError(
                "yolo-world.pt",
                f"layer {i} is a {node.name} from {found} in the model but a {module} from {source} in its yaml",
            )


def _as_list(value: Any) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [int(value)]


__all__ = ["YoloWorldNetwork", "distances_to_boxes", "make_anchors"]
