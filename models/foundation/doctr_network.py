"""DocTR's two networks, written for edge-agent in plain torch: ``db_resnet50`` (text detection) and
``crnn_vgg16_bn`` (text recognition).

python-doctr builds them on torchvision, whose wheels on the package index do not load beside
the CPU torch wheel. The modules here carry the parameter names of doctr's state dicts (Roboflow's
``model.pt`` / ``detection_weights.pt`` / ``recognition_weights.pt``), so those load as they are;
sizes (blocks per stage, widths, vocabulary) are read from the state dict's shapes.

- DBNet: a torchvision-style ResNet trunk (``feat_extractor.``: conv1, bn1, layer1..4 of
  bottleneck blocks), a feature pyramid (``fpn.in_branches``/``out_branches``, bilinear upsampling
  with aligned corners) and the probability head (``prob_head``: conv, BN, ReLU and two 2x
  transposed convolutions), sigmoid at the end: a map at the input's resolution.
- CRNN: VGG-16-BN features (``feat_extractor.N``) whose last three max-pools halve the height
  only, a 2-layer bidirectional LSTM (``decoder``) and a linear layer over the vocabulary + blank
  (``linear``): (N, T, vocab + 1) logits, T = width / 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, width: int, out: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out)) if downsample else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class ResNetTrunk(nn.Module):
    """conv1 -> bn1 -> relu -> maxpool -> layer1..4; the four stages' outputs."""

    def __init__(self, stem: int, stages: list[tuple[int, int, int]]) -> None:
        """``stages``: (blocks, bottleneck width, output channels) of layer1..4."""
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = stem
        for index, (blocks, width, out) in enumerate(stages):
            stride = 1 if index == 0 else 2
            layer = [Bottleneck(inplanes, width, out, stride, True)]
            layer += [Bottleneck(out, width, out, 1, False) for _ in range(1, blocks)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
            inplanes = out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
            feats.append(x)
        return feats


class Pyramid(nn.Module):
    def __init__(self, channels: list[int], out: int) -> None:
        super().__init__()
        part = out // len(channels)
        self.in_branches = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(c, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True))
                for c in channels
            ]
        )
        self.out_branches = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(out, part, 3, padding=1, bias=False), nn.BatchNorm2d(part), nn.ReLU(inplace=True)
                )
                for _ in channels
            ]
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        lateral = [branch(f) for branch, f in zip(self.in_branches, feats, strict=True)]
        merged = [lateral[-1]]  # top-down: the coarsest map, upsampled 2x and added to the next finer one
        for finer in lateral[:-1][::-1]:
            merged.append(F.interpolate(merged[-1], scale_factor=2, mode="bilinear", align_corners=True) + finer)
        outs = []
        for index, (branch, level) in enumerate(zip(self.out_branches, merged[::-1], strict=True)):
            y = branch(level)
            if index:
                y = F.interpolate(y, scale_factor=2**index, mode="bilinear", align_corners=True)
            outs.append(y)
        return torch.cat(outs, dim=1)


class DBNet(nn.Module):
    def __init__(self, stem: int, stages: list[tuple[int, int, int]], head: int) -> None:
        super().__init__()
        self.feat_extractor = ResNetTrunk(stem, stages)
        self.fpn = Pyramid([s[2] for s in stages], head)
        quarter = head // 4
        self.prob_head = nn.Sequential(
            nn.Conv2d(head, quarter, 3, padding=1, bias=False),
            nn.BatchNorm2d(quarter),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(quarter, quarter, 2, stride=2, bias=False),
            nn.BatchNorm2d(quarter),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(quarter, 1, 2, stride=2),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised -> (N, H, W) text probability."""
        return torch.sigmoid(self.prob_head(self.fpn(self.feat_extractor(images))))[:, 0]


VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg_features(widths: list[int | str]) -> nn.Sequential:
    """VGG-BN features; the last three max-pools are (2, 1): the sequence keeps width / 4 steps."""
    layers: list[nn.Module] = []
    channels = 3
    pools = [i for i, w in enumerate(widths) if w == "M"]
    for index, width in enumerate(widths):
        if width == "M":
            layers.append(nn.MaxPool2d((2, 1)) if index in pools[-3:] else nn.MaxPool2d(2, 2))
            continue
        assert isinstance(width, int)
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        channels = width
    return nn.Sequential(*layers)


class CRNN(nn.Module):
    def __init__(self, widths: list[int | str], lstm_in: int, units: int, classes: int) -> None:
        super().__init__()
        self.feat_extractor = vgg_features(widths)
        self.decoder = nn.LSTM(lstm_in, units, num_layers=2, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(2 * units, classes)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, 3, 32, 128) normalised -> (N, 32, vocab + 1) logits."""
        features = self.feat_extractor(crops)
        n, c, h, w = features.shape
        sequence = features.reshape(n, c * h, w).transpose(1, 2)
        return self.linear(self.decoder(sequence)[0])


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # type: ignore[assignment]
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def build_dbnet(state: dict[str, torch.Tensor]) -> DBNet:
    """A DBNet of the shapes in doctr's state dict (KeyError/ValueError when it is not one)."""
    stem = int(state["feat_extractor.conv1.weight"].shape[0])
    stages = []
    for index in range(1, 5):
        prefix = f"feat_extractor.layer{index}."
        blocks = len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})
        width = int(state[f"{prefix}0.conv1.weight"].shape[0])
        out = int(state[f"{prefix}0.conv3.weight"].shape[0])
        stages.append((blocks, width, out))
    head = int(state["fpn.in_branches.0.0.weight"].shape[0])
    return DBNet(stem, stages, head)


def build_crnn(state: dict[str, torch.Tensor]) -> CRNN:
    widths: list[int | str] = []
    convs = sorted(
        int(k.split(".")[1])
        for k in state
        if k.startswith("feat_extractor.") and k.endswith(".weight") and state[k].ndim == 4
    )
    # rebuild VGG's list: each conv is conv, BN, ReLU (3 modules); a gap of one index is a max-pool
    position = 0
    for index in convs:
        while position < index:
            widths.append("M")
            position += 1
        widths.append(int(state[f"feat_extractor.{index}.weight"].shape[0]))
        position = index + 3
    widths.append("M")  # VGG ends with a pool
    lstm_in = int(state["decoder.weight_ih_l0"].shape[1])
    units = int(state["decoder.weight_hh_l0"].shape[1])
    classes = int(state["linear.weight"].shape[0])
    return CRNN(widths, lstm_in, units, classes)


__all__ = ["CRNN", "VGG16", "DBNet", "_strip", "build_crnn", "build_dbnet"]
