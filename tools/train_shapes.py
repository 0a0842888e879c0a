"""Train and export the built-in shapes detector ``builtin/shapes-v1`` (pure torch, no ultralytics).

The model is a small anchor-free detector written here from the published ideas (not from any
AGPL code): a conv/BN/SiLU backbone with residual blocks, strides 8/16/32, a light PAN neck, a
decoupled head per level with distribution-focal box regression (DFL, 16 bins) and sigmoid class
scores; targets come from task-aligned assignment (TOOD's alignment metric s^0.5 * IoU^6,
top-10 candidates per box), losses are BCE on IoU-aware soft targets, CIoU and DFL.

Training data is generated on the fly by ``tools.synthworld`` (frame sizes 640x360..1280x720,
letterboxed "Fit (grey edges) in" to the model input exactly as the agent does at inference).
The exported ONNX graph does the decode inside: output ``(batch, 4 + 3, N)`` with cx, cy, w, h in
input pixels and sigmoid scores (YOLOv8 layout), input ``images`` float32 RGB/255 NCHW, dynamic
batch, static 384x640 (HxW).

Reproduce the shipped model (CPU, 2 threads, one data worker, batch 8). The shipped weights came
from these exact commands (48 min wall on a shared 2-core box): a run planned for 4000 iterations
was stopped after its iteration-800 checkpoint when the box got busy and resumed with a shorter
cosine schedule of 2000 iterations in all:

    python -m tools.train_shapes --seed 0 --out tools/_train_out/run0 --iters 4000 --batch 8 \
        --eval-every 500                      # stopped after "it 800" was saved
    python -m tools.train_shapes --seed 0 --out tools/_train_out/run0 --iters 2000 --batch 8 \
        --eval-every 500 --resume
    python -m tools.train_shapes --export-only --out tools/_train_out/run0 \
        --package models/builtin/shapes-v1

A single ``--iters 2000`` run gives an equivalent model (same data stream for the first 800
iterations, a slightly different learning-rate curve).
The last command exports the EMA weights of the last checkpoint as weights.onnx and writes
environment.json, class_names.txt and model_type.json next to it. ``--resume`` continues from
``OUT/last.pt``. Accuracy: ``python -m bench.accuracy``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_agent.models.maths.nms import non_max_suppression
from edge_agent.models.maths.preprocessing import letterbox_geometry
from tools import synthworld as sw

INPUT_W, INPUT_H = 640, 384
STRIDES = (8, 16, 32)
REG_MAX = 16
NUM_CLASSES = 3
PAD_VALUE = 114


# --------------------------------------------------------------------------------------------
# Data


def letterbox(img: np.ndarray, width: int, height: int, interp: int = cv2.INTER_LINEAR):
    """Centred "Fit (grey edges) in" resize: returns (canvas, scale, pad_x, pad_y)."""
    h, w = img.shape[:2]
    nw, nh, px, py = letterbox_geometry(w, h, width, height)  # the agent's own geometry
    out = np.full((height, width, 3), PAD_VALUE, np.uint8)
    out[py : py + nh, px : px + nw] = cv2.resize(img, (nw, nh), interpolation=interp)
    return out, min(width / w, height / h), px, py


def training_sample(rng: np.random.Generator, width: int = INPUT_W, height: int = INPUT_H, mask_stride: int = 0):
    """One letterboxed training image (HxWx3 RGB uint8) and its boxes (n, 5): x1,y1,x2,y2,cls.

    Ranges are a little wider than the contract (sizes, contrast, overlap, cut, noise) so the
    model holds up at the contract's edges. With ``mask_stride`` > 0 a third item holds each box's
    visible-pixel mask on the grid of that stride, (n, height / stride, width / stride) uint8, the
    area each cell covers scaled to 0..255 (the segmentation model's targets; same random stream).
    """
    fw, fh = sw.random_frame_size(rng)
    s = min(width / fw, height / fh)
    nw, nh, px, py = letterbox_geometry(fw, fh, width, height)  # the agent's own geometry
    direct = rng.random() < 0.5
    # Half the samples are rendered straight at the letterboxed scale (4x cheaper at s=0.5),
    # half at full size and resized like at inference; shapes and rules are scale-invariant.
    k = s if direct else 1.0
    img, gts, shapes = sw.render_frame(
        rng,
        nw if direct else fw,
        nh if direct else fh,
        n_objects=int(rng.integers(0, 8)),
        noise_sigma=float(rng.uniform(0, 10)) * (float(rng.uniform(s, 1.0)) if direct else 1.0),
        size_range=(20.0 * k, 240.0 * k),
        min_contrast=45.0,
        max_overlap=0.35,
        max_edge_cut=0.35,
        noise_on_shapes=bool(rng.random() < 0.75),
        return_shapes=True,
    )
    boxes = np.array(gts, np.float32).reshape(-1, 5)
    masks = _letterboxed_masks(shapes, img.shape[1], img.shape[0], nw, nh, px, py, width, height, mask_stride)
    if direct:
        lb = np.full((height, width, 3), PAD_VALUE, np.uint8)
        lb[py : py + nh, px : px + nw] = img
        boxes[:, [0, 2]] += px
        boxes[:, [1, 3]] += py
    else:
        interp = (cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_CUBIC)[
            int(rng.choice(4, p=[0.55, 0.25, 0.1, 0.1]))
        ]
        lb, _, px, py = letterbox(img, width, height, interp)
        # per-axis scales, as the agent maps boxes (the fit rounds one side down to whole pixels)
        boxes[:, [0, 2]] = boxes[:, [0, 2]] * (nw / fw) + px
        boxes[:, [1, 3]] = boxes[:, [1, 3]] * (nh / fh) + py
    r = rng.random()
    if r < 0.15:  # codec-like softening
        lb = cv2.GaussianBlur(lb, (0, 0), float(rng.uniform(0.4, 1.0)))
    elif r < 0.35:
        q = int(rng.integers(40, 95))
        lb = cv2.imdecode(cv2.imencode(".jpg", lb, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_COLOR)
    if rng.random() < 0.5:
        lb = lb[:, ::-1]
        x1 = width - boxes[:, 2]
        boxes[:, 2] = width - boxes[:, 0]
        boxes[:, 0] = x1
        if masks is not None:
            masks = masks[:, :, ::-1]
    if masks is not None:
        return np.ascontiguousarray(lb[..., ::-1]), boxes, np.ascontiguousarray(masks)
    return np.ascontiguousarray(lb[..., ::-1]), boxes


def _letterboxed_masks(shapes, rw, rh, nw, nh, px, py, width, height, stride):
    """Visible-pixel masks of a frame rendered at (rw, rh), placed like the letterboxed image and
    area-averaged onto the stride grid; None when ``stride`` is 0."""
    if not stride:
        return None
    ids, order = sw.instance_ids(shapes, rw, rh)
    out = np.zeros((len(order), height // stride, width // stride), np.uint8)
    for j, k in enumerate(order):
        canvas = np.zeros((height, width), np.float32)
        m = (ids == k + 1).astype(np.float32)
        if (rw, rh) != (nw, nh):
            m = cv2.resize(m, (nw, nh), interpolation=cv2.INTER_AREA)
        canvas[py : py + nh, px : px + nw] = m
        small = cv2.resize(canvas, (width // stride, height // stride), interpolation=cv2.INTER_AREA)
        out[j] = np.clip(small * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


class SynthStream(torch.utils.data.IterableDataset):
    def __init__(self, seed: int, batch: int) -> None:
        self.seed, self.batch = seed, batch

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, wid, 12345])
        while True:
            imgs, boxes = [], []
            for _ in range(self.batch):
                im, bx = training_sample(rng)
                imgs.append(im)
                boxes.append(bx)
            m = max(1, max(len(b) for b in boxes))
            gt = np.zeros((self.batch, m, 5), np.float32)
            valid = np.zeros((self.batch, m), bool)
            for i, b in enumerate(boxes):
                gt[i, : len(b)] = b
                valid[i, : len(b)] = True
            x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
            yield x, torch.from_numpy(gt), torch.from_numpy(valid)


# --------------------------------------------------------------------------------------------
# Network


class ConvBN(nn.Sequential):
    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03), nn.SiLU()
        )


class Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = ConvBN(c, c // 2, 1)
        self.b = ConvBN(c // 2, c, 3)

    def forward(self, x):
        return x + self.b(self.a(x))


class ShapesNet(nn.Module):
    def __init__(self, w: tuple[int, ...] = (16, 32, 64, 96, 128), neck: int = 64) -> None:
        super().__init__()
        c0, c1, c2, c3, c4 = w
        self.stem = nn.Sequential(ConvBN(3, c0, 3, 2), ConvBN(c0, c1, 3, 2))
        self.s3 = nn.Sequential(ConvBN(c1, c2, 3, 2), Res(c2), Res(c2))
        self.s4 = nn.Sequential(ConvBN(c2, c3, 3, 2), Res(c3), Res(c3))
        self.s5 = nn.Sequential(ConvBN(c3, c4, 3, 2), Res(c4))
        self.spp = ConvBN(c4 * 4, c4, 1)
        self.l5 = ConvBN(c4, neck, 1)
        self.t4 = ConvBN(c3 + neck, neck, 3)
        self.t3 = ConvBN(c2 + neck, neck, 3)
        self.d3 = ConvBN(neck, neck, 3, 2)
        self.b4 = ConvBN(2 * neck, neck, 3)
        self.d4 = ConvBN(neck, neck, 3, 2)
        self.b5 = ConvBN(2 * neck, neck, 3)
        self.cls_convs = nn.ModuleList(ConvBN(neck, neck, 3) for _ in STRIDES)
        self.reg_convs = nn.ModuleList(ConvBN(neck, neck, 3) for _ in STRIDES)
        self.cls_out = nn.ModuleList(nn.Conv2d(neck, NUM_CLASSES, 1) for _ in STRIDES)
        self.reg_out = nn.ModuleList(nn.Conv2d(neck, 4 * REG_MAX, 1) for _ in STRIDES)
        for m in self.cls_out:
            nn.init.constant_(m.bias, -math.log((1 - 0.01) / 0.01))
        for m in self.reg_out:
            nn.init.constant_(m.bias, 1.0)
        self.register_buffer("proj", torch.arange(REG_MAX, dtype=torch.float32), persistent=False)
        self.export_anchors: torch.Tensor | None = None

    def features(self, x):
        x = self.stem(x)
        c3 = self.s3(x)
        c4 = self.s4(c3)
        c5 = self.s5(c4)
        p1 = F.max_pool2d(c5, 5, 1, 2)
        p2 = F.max_pool2d(p1, 5, 1, 2)
        p3 = F.max_pool2d(p2, 5, 1, 2)
        c5 = self.spp(torch.cat([c5, p1, p2, p3], 1))
        p5 = self.l5(c5)
        p4 = self.t4(torch.cat([F.interpolate(p5, scale_factor=2.0, mode="nearest"), c4], 1))
        p3 = self.t3(torch.cat([F.interpolate(p4, scale_factor=2.0, mode="nearest"), c3], 1))
        n4 = self.b4(torch.cat([self.d3(p3), p4], 1))
        n5 = self.b5(torch.cat([self.d4(n4), p5], 1))
        return [p3, n4, n5]

    def head(self, feats):
        """Per level: class logits (B, C, h*w) and DFL logits (B, 4*REG_MAX, h*w), concatenated."""
        cls, reg = [], []
        for i, f in enumerate(feats):
            cls.append(self.cls_out[i](self.cls_convs[i](f)).flatten(2))
            reg.append(self.reg_out[i](self.reg_convs[i](f)).flatten(2))
        return torch.cat(cls, 2), torch.cat(reg, 2)

    def dfl_decode(self, reg):
        """(B, 4*R, A) logits -> (B, 4, A) expected distances in stride units."""
        b, _, a = reg.shape
        p = reg.view(b, 4, REG_MAX, a).softmax(2)
        return (p * self.proj.view(1, 1, REG_MAX, 1)).sum(2)

    def forward(self, x):
        cls, reg = self.head(self.features(x))
        if self.export_anchors is None:
            return cls, reg
        # Export path: YOLOv8 layout (B, 4 + C, A): cx, cy, w, h in input pixels + sigmoid scores.
        anchors = self.export_anchors  # (3, A): x, y, stride
        d = self.dfl_decode(reg) * anchors[2:3]
        x1y1 = anchors[:2] - d[:, :2]
        x2y2 = anchors[:2] + d[:, 2:]
        return torch.cat([(x1y1 + x2y2) / 2, x2y2 - x1y1, cls.sigmoid()], 1)


def make_anchors(width: int, height: int) -> torch.Tensor:
    """(3, A): anchor centre x, y and stride, level by level, row-major like the head's flatten."""
    out = []
    for s in STRIDES:
        h, w = math.ceil(height / s), math.ceil(width / s)
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        out.append(torch.stack([(xs.flatten() + 0.5) * s, (ys.flatten() + 0.5) * s, torch.full((h * w,), s)]))
    return torch.cat(out, 1).float()


# --------------------------------------------------------------------------------------------
# Assignment and loss


def box_iou_pairs(a, b, eps=1e-7):
    """IoU of broadcastable xyxy boxes (..., 4)."""
    ix = (torch.min(a[..., 2], b[..., 2]) - torch.max(a[..., 0], b[..., 0])).clamp(min=0)
    iy = (torch.min(a[..., 3], b[..., 3]) - torch.max(a[..., 1], b[..., 1])).clamp(min=0)
    inter = ix * iy
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area_a + area_b - inter + eps)


def ciou(a, b, eps=1e-7):
    iou = box_iou_pairs(a, b, eps)
    cw = torch.max(a[..., 2], b[..., 2]) - torch.min(a[..., 0], b[..., 0])
    ch = torch.max(a[..., 3], b[..., 3]) - torch.min(a[..., 1], b[..., 1])
    c2 = cw**2 + ch**2 + eps
    dx = a[..., 0] + a[..., 2] - b[..., 0] - b[..., 2]
    dy = a[..., 1] + a[..., 3] - b[..., 1] - b[..., 3]
    rho2 = (dx**2 + dy**2) / 4
    wa, ha = a[..., 2] - a[..., 0], (a[..., 3] - a[..., 1]).clamp(min=eps)
    wb, hb = b[..., 2] - b[..., 0], (b[..., 3] - b[..., 1]).clamp(min=eps)
    v = (4 / math.pi**2) * (torch.atan(wb / hb) - torch.atan(wa / ha)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


@torch.no_grad()
def assign(scores, boxes, anchors, gt, valid, topk=10, alpha=0.5, beta=6.0):
    """Task-aligned assignment. scores (B,A,C) sigmoid, boxes (B,A,4) xyxy, anchors (3,A),
    gt (B,M,5), valid (B,M). Returns target boxes (B,A,4), target scores (B,A,C), fg (B,A)."""
    b, a, c = scores.shape
    m = gt.shape[1]
    gxy = gt[..., :4]
    ax, ay, st = anchors[0], anchors[1], anchors[2]
    inside = (
        (ax[None, None] > gxy[..., 0:1])
        & (ax[None, None] < gxy[..., 2:3])
        & (ay[None, None] > gxy[..., 1:2])
        & (ay[None, None] < gxy[..., 3:4])
    )
    # Tiny boxes may hold no anchor centre: also allow anchors within one stride of the centre.
    gcx = (gxy[..., 0:1] + gxy[..., 2:3]) / 2
    gcy = (gxy[..., 1:2] + gxy[..., 3:4]) / 2
    near = ((ax[None, None] - gcx).abs() < st) & ((ay[None, None] - gcy).abs() < st)
    cand = (inside | near) & valid[..., None]  # (B,M,A)
    labels = gt[..., 4].long().clamp(0, c - 1)
    s = scores.gather(2, labels[:, None, :].expand(b, a, m)).permute(0, 2, 1)  # (B,M,A)
    iou = box_iou_pairs(gxy[:, :, None, :], boxes[:, None, :, :]).clamp(min=0)  # (B,M,A)
    metric = (s.pow(alpha) * iou.pow(beta)) * cand
    k = min(topk, a)
    top = metric.topk(k, dim=2).indices
    pos = torch.zeros_like(cand)
    pos.scatter_(2, top, True)
    pos &= cand
    # A zero metric (no overlap yet) still gets its topk slot; keep them (they are candidates).
    multi = pos.sum(1) > 1  # (B,A)
    if multi.any():
        best = (iou * pos).argmax(1)  # (B,A)
        one = F.one_hot(best, m).permute(0, 2, 1).bool()
        pos = torch.where(multi[:, None, :], one & pos, pos)
    fg = pos.any(1)
    gidx = pos.float().argmax(1)  # (B,A)
    tbox = gxy.gather(1, gidx[..., None].expand(b, a, 4))
    tlab = labels.gather(1, gidx)
    metric = metric * pos
    iou_p = iou * pos
    norm = (metric * (iou_p.amax(2, keepdim=True) / (metric.amax(2, keepdim=True) + 1e-9))).amax(1)  # (B,A)
    tsc = F.one_hot(tlab, c).float() * (norm * fg)[..., None]
    return tbox, tsc, fg


class DetLoss:
    def __init__(self, anchors: torch.Tensor, w_box=7.5, w_cls=1.0, w_dfl=1.5) -> None:
        self.anchors = anchors
        self.w_box, self.w_cls, self.w_dfl = w_box, w_cls, w_dfl

    def __call__(self, model: ShapesNet, cls, reg, gt, valid):
        anchors = self.anchors
        b = cls.shape[0]
        cls = cls.permute(0, 2, 1)  # (B,A,C)
        dist = model.dfl_decode(reg)  # (B,4,A) in stride units
        st = anchors[2]
        x1 = anchors[0] - dist[:, 0] * st
        y1 = anchors[1] - dist[:, 1] * st
        x2 = anchors[0] + dist[:, 2] * st
        y2 = anchors[1] + dist[:, 3] * st
        pbox = torch.stack([x1, y1, x2, y2], 2)  # (B,A,4)
        tbox, tsc, fg = assign(cls.detach().sigmoid(), pbox.detach(), anchors, gt, valid)
        tss = max(tsc.sum().item(), 1.0)
        l_cls = F.binary_cross_entropy_with_logits(cls, tsc, reduction="sum") / tss
        if fg.any():
            w = tsc.sum(2)[fg]
            l_box = ((1 - ciou(pbox[fg], tbox[fg])) * w).sum() / tss
            # DFL on the ltrb distances in stride units.
            ax = anchors[0][None].expand(b, -1)[fg]
            ay = anchors[1][None].expand(b, -1)[fg]
            s = st[None].expand(b, -1)[fg]
            tb = tbox[fg]
            tl = torch.stack([(ax - tb[:, 0]) / s, (ay - tb[:, 1]) / s, (tb[:, 2] - ax) / s, (tb[:, 3] - ay) / s], 1)
            tl = tl.clamp(0, REG_MAX - 1 - 0.01)
            logits = reg.view(b, 4, REG_MAX, -1).permute(0, 3, 1, 2)[fg]  # (P,4,R)
            lo = tl.long()
            wr = tl - lo
            logp = logits.log_softmax(2)
            lp_lo = logp.gather(2, lo[..., None]).squeeze(2)
            lp_hi = logp.gather(2, (lo + 1)[..., None]).squeeze(2)
            l_dfl = -(lp_lo * (1 - wr) + lp_hi * wr)
            l_dfl = (l_dfl.mean(1) * w).sum() / tss
        else:
            l_box = l_dfl = cls.sum() * 0
        total = self.w_box * l_box + self.w_cls * l_cls + self.w_dfl * l_dfl
        return total * b, (l_box.item(), l_cls.item(), l_dfl.item())


# --------------------------------------------------------------------------------------------
# EMA, decode/NMS for quick evaluation


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.9995, tau: float = 1000.0) -> None:
        import copy

        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)


def nms_numpy(out: np.ndarray, conf: float, iou_thr: float = 0.5, max_det: int = 100):
    """out (4+C, A) YOLOv8 layout -> (n, 6) x1,y1,x2,y2,score,cls with per-class NMS."""
    scores = out[4:]
    cls = scores.argmax(0)
    sc = scores.max(0)
    keep = sc >= conf
    if not keep.any():
        return np.zeros((0, 6), np.float32)
    b = out[:4, keep].T
    sc, cls = sc[keep], cls[keep]
    xyxy = np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)
    order = np.argsort(-sc)[:3000]
    xyxy, sc, cls = xyxy[order], sc[order], cls[order]
    idx = non_max_suppression(xyxy, sc, cls, iou_thr, max_det)  # the agent's own per-class NMS
    return np.concatenate([xyxy[idx], sc[idx, None], cls[idx, None]], 1).astype(np.float32)


def quick_eval(model: ShapesNet, n: int = 100, seed: int = 999_001) -> tuple[float, float]:
    """mAP@0.5 and @0.5:0.95 on n held-out frames (own letterbox + NMS), for progress checks."""
    from edge_agent.models.maths.evaluation import evaluate_map

    rng = np.random.default_rng(seed)
    anchors = make_anchors(INPUT_W, INPUT_H)
    was = model.export_anchors
    model.export_anchors = anchors
    model.eval()
    preds, gts = [], []
    with torch.no_grad():
        for _ in range(n):
            w, h = sw.random_frame_size(rng)
            img, gt = sw.render_frame(rng, w, h)
            lb, s, px, py = letterbox(img, INPUT_W, INPUT_H)
            x = torch.from_numpy(np.ascontiguousarray(lb[..., ::-1])).permute(2, 0, 1)[None].float() / 255
            out = model(x)[0].numpy()
            det = nms_numpy(out, 0.01)
            det[:, [0, 2]] = (det[:, [0, 2]] - px) / s
            det[:, [1, 3]] = (det[:, [1, 3]] - py) / s
            preds.append(det)
            gts.append(np.array(gt, np.float32).reshape(-1, 5))
    model.export_anchors = was
    return evaluate_map(preds, gts, NUM_CLASSES)


# --------------------------------------------------------------------------------------------
# Export


def export_onnx(model: ShapesNet, path: Path) -> None:
    model = model.eval()
    model.export_anchors = make_anchors(INPUT_W, INPUT_H)
    x = torch.zeros(1, 3, INPUT_H, INPUT_W)
    torch.onnx.export(
        model,
        (x,),
        str(path),
        input_names=["images"],
        output_names=["output0"],
        dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    model.export_anchors = None
    import onnx

    m = onnx.load(str(path))
    dims = m.graph.output[0].type.tensor_type.shape.dim
    dims[1].Clear()
    dims[1].dim_value = 4 + NUM_CLASSES
    dims[2].Clear()
    dims[2].dim_value = int(make_anchors(INPUT_W, INPUT_H).shape[1])
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def write_package(model: ShapesNet, pkg: Path) -> None:
    pkg.mkdir(parents=True, exist_ok=True)
    export_onnx(model, pkg / "weights.onnx")
    env = {
        "PREPROCESSING": {
            "resize": {"enabled": True, "width": INPUT_W, "height": INPUT_H, "format": "Fit (grey edges) in"}
        },
        "CLASS_MAP": {str(i): n for i, n in enumerate(sw.CLASS_NAMES)},
        "COLORS": {"circle": "#FF4040", "square": "#40C040", "triangle": "#4080FF"},
    }
    (pkg / "environment.json").write_text(json.dumps(env, indent=2) + "\n")
    (pkg / "class_names.txt").write_text("\n".join(sw.CLASS_NAMES) + "\n")
    mt = {"project_task_type": "object-detection", "model_type": "yolov8n", "model_id": "builtin/shapes-v1"}
    (pkg / "model_type.json").write_text(json.dumps(mt, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# Training loop


def train(args) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = ShapesNet()
    start = 0
    ema = EMA(model)
    opt = torch.optim.AdamW(
        [
            {"params": [p for n, p in model.named_parameters() if p.ndim > 1], "weight_decay": 5e-4},
            {"params": [p for n, p in model.named_parameters() if p.ndim <= 1], "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.999),
    )
    ck = out / "last.pt"
    if args.resume and ck.exists():
        start = resume_checkpoint(ck, model, ema, opt)
    loader = stream_loader(SynthStream(args.seed * 1000 + start, args.batch), args.workers)
    loss_fn = DetLoss(make_anchors(INPUT_W, INPUT_H))
    log = open(out / "log.txt", "a")
    t0 = time.time()
    model.train()
    it = start
    acc = np.zeros(3)
    for x, gt, valid in loader:
        if it >= args.iters:
            break
        frac = it / args.iters
        warm = min(1.0, (it + 1) / args.warmup)
        lr = args.lr * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        x = x.float() / 255
        cls, reg = model(x)
        loss, parts = loss_fn(model, cls, reg, gt, valid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        ema.update(model)
        acc += parts
        it += 1
        if it % 25 == 0:
            el = time.time() - t0
            msg = (
                f"it {it} lr {lr:.5f} box {acc[0] / 25:.4f} cls {acc[1] / 25:.4f} dfl {acc[2] / 25:.4f} "
                f"{(it - start) * args.batch / el:.1f} img/s elapsed {el / 60:.1f} min"
            )
            acc[:] = 0
            log_line(log, msg)
        if it % args.save_every == 0 or it == args.iters:
            save_checkpoint(ck, model, ema, opt, it)
            if args.eval_every and it % args.eval_every == 0:
                m50, m5095 = quick_eval(ema.ema, args.eval_n)
                msg = f"EVAL it {it} mAP50 {m50:.4f} mAP50-95 {m5095:.4f}"
                log_line(log, msg)
    log.close()


def save_checkpoint(path: Path, model: nn.Module, ema: EMA, opt: torch.optim.Optimizer, it: int) -> None:
    state = {
        "model": model.state_dict(),
        "ema": ema.ema.state_dict(),
        "ema_updates": ema.updates,
        "opt": opt.state_dict(),
        "iter": it,
    }
    torch.save(state, path)


def resume_checkpoint(path: Path, model: nn.Module, ema: EMA, opt: torch.optim.Optimizer) -> int:
    """Load what :func:`save_checkpoint` wrote; the iteration to continue from."""
    st = torch.load(path, map_location="cpu")
    model.load_state_dict(st["model"])
    ema.ema.load_state_dict(st["ema"])
    ema.updates = st["ema_updates"]
    opt.load_state_dict(st["opt"])
    return int(st["iter"])


def stream_loader(stream: torch.utils.data.IterableDataset, workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        persistent_workers=bool(workers),
    )


def log_line(log: TextIO, msg: str) -> None:
    print(msg, flush=True)
    log.write(msg + "\n")
    log.flush()


def load_ema(out: Path, model: nn.Module | None = None) -> nn.Module:
    """The EMA weights of ``OUT/last.pt`` in ``model`` (a fresh ShapesNet by default), in eval mode."""
    st = torch.load(Path(out) / "last.pt", map_location="cpu")
    model = ShapesNet() if model is None else model
    model.load_state_dict(st["ema"])
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--iters", type=int, default=6000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--eval-n", type=int, default=100)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--export-only", action="store_true")
    p.add_argument("--package", default=None, help="write the model package here after training")
    args = p.parse_args(argv)
    if not args.export_only:
        train(args)
    if args.package:
        write_package(load_ema(Path(args.out)), Path(args.package))


if __name__ == "__main__":
    main()
