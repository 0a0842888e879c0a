"""EasyOCR's two networks, written for edge-agent in plain torch: CRAFT (text detection) and the
"generation 2" recogniser (VGG features, two bidirectional LSTMs, a linear layer over blank +
characters).

The easyocr package builds them on torchvision; these modules carry the parameter names of
EasyOCR's state dicts (``craft_mlt_25k.pth``, ``english_g2.pth``/Roboflow's ``weights.pt``, both
saved from DataParallel with a ``module.`` prefix), so those load as they are.

- CRAFT: VGG-16-BN split in five slices (``basenet.slice1..4`` = torchvision's features 0-11,
  12-18, 19-28, 29-38; ``slice5`` = 3x3 max-pool stride 1, dilated 3x3 conv to 1024, 1x1 conv),
  a U-net of four ``upconv`` double convolutions with bilinear upsampling, and ``conv_cls``:
  (N, H/2, W/2, 2) region and affinity scores.
- Recogniser: ``FeatureExtraction.ConvNet`` (VGG of output/8, /4, /2, output channels; its last
  pools halve the height only), average over the height, ``SequenceModeling`` (two
  BidirectionalLSTM: LSTM then linear) and ``Prediction``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _vgg16_bn_features(scale: int) -> list[nn.Module]:
    """torchvision's vgg16_bn ``features`` (widths divided by ``scale``), as a flat list of modules."""
    layers: list[nn.Module] = []
    channels = 3
    for width in _VGG16:
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        assert isinstance(width, int)
        out = width // scale
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        channels = out
    return layers


class Backbone(nn.Module):
    def __init__(self, scale: int) -> None:
        super().__init__()
        features = _vgg16_bn_features(scale)
        bounds = {"slice1": (0, 12), "slice2": (12, 19), "slice3": (19, 29), "slice4": (29, 39)}
        for name, (start, stop) in bounds.items():
            piece = nn.Sequential()
            for index in range(start, stop):
                piece.add_module(str(index), features[index])
            setattr(self, name, piece)
        wide = 512 // scale
        self.slice5 = nn.Sequential(
            nn.MaxPool2d(3, 1, 1),
            nn.Conv2d(wide, 2 * wide, 3, padding=6, dilation=6),
            nn.Conv2d(2 * wide, 2 * wide, 1),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        slices: list[nn.Module] = [getattr(self, f"slice{i}") for i in range(1, 5)]
        relu2_2 = slices[0](x)
        relu3_2 = slices[1](relu2_2)
        relu4_3 = slices[2](relu3_2)
        relu5_3 = slices[3](relu4_3)
        fc7 = self.slice5(relu5_3)
        return [fc7, relu5_3, relu4_3, relu3_2, relu2_2]


class DoubleConv(nn.Module):
    def __init__(self, in_ch: int, mid: int, out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch + mid, mid, 1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out, 3, padding=1),
            nn.BatchNorm2d(out),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


class CRAFT(nn.Module):
    def __init__(self, scale: int = 1) -> None:
        """``scale`` divides every width (1 = EasyOCR's network; tests use smaller ones)."""
        super().__init__()
        s = scale
        self.basenet = Backbone(s)
        self.upconv1 = DoubleConv(1024 // s, 512 // s, 256 // s)
        self.upconv2 = DoubleConv(512 // s, 256 // s, 128 // s)
        self.upconv3 = DoubleConv(256 // s, 128 // s, 64 // s)
        self.upconv4 = DoubleConv(128 // s, 64 // s, 32 // s)
        c = 32 // s
        self.conv_cls = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, 16 // s, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16 // s, 16 // s, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16 // s, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised RGB -> (N, H/2, W/2, 2): region score, affinity score."""
        fc7, relu5_3, relu4_3, relu3_2, relu2_2 = self.basenet(x)
        y = self.upconv1(torch.cat([fc7, relu5_3], dim=1))
        for upconv, skip in ((self.upconv2, relu4_3), (self.upconv3, relu3_2), (self.upconv4, relu2_2)):
            y = F.interpolate(y, size=skip.shape[2:], mode="bilinear", align_corners=False)
            y = upconv(torch.cat([y, skip], dim=1))
        scores: torch.Tensor = self.conv_cls(y)
        return scores.permute(0, 2, 3, 1)


class BidirectionalLSTM(nn.Module):
    def __init__(self, size_in: int, hidden: int, size_out: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(size_in, hidden, bidirectional=True, batch_first=True)
        self.linear = nn.Linear(2 * hidden, size_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(self.rnn(x)[0])
        return out


class FeatureExtractor(nn.Module):
    def __init__(self, channels_in: int, out: int) -> None:
        super().__init__()
        c = [out // 8, out // 4, out // 2, out]
        self.ConvNet = nn.Sequential(
            nn.Conv2d(channels_in, c[0], 3, 1, 1),
            nn.ReLU(True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(c[0], c[1], 3, 1, 1),
            nn.ReLU(True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(c[1], c[2], 3, 1, 1),
            nn.ReLU(True),
            nn.Conv2d(c[2], c[2], 3, 1, 1),
            nn.ReLU(True),
            nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(c[2], c[3], 3, 1, 1, bias=False),
            nn.BatchNorm2d(c[3]),
            nn.ReLU(True),
            nn.Conv2d(c[3], c[3], 3, 1, 1, bias=False),
            nn.BatchNorm2d(c[3]),
            nn.ReLU(True),
            nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(c[3], c[3], 2, 1, 0),
            nn.ReLU(True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.ConvNet(x)
        return out


class Recognizer(nn.Module):
    def __init__(self, channels_in: int, out: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.FeatureExtraction = FeatureExtractor(channels_in, out)
        self.SequenceModeling = nn.Sequential(
            BidirectionalLSTM(out, hidden, hidden), BidirectionalLSTM(hidden, hidden, hidden)
        )
        self.Prediction = nn.Linear(hidden, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, W) grey in [-1, 1] -> (N, W / 4 - 1, classes) logits."""
        features = self.FeatureExtraction(images).permute(0, 3, 1, 2)  # (N, W', C, H')
        sequence = features.mean(dim=3)  # average over the height
        out: torch.Tensor = self.Prediction(self.SequenceModeling(sequence))
        return out


def strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DataParallel's ``module.`` prefix dropped (EasyOCR saves both networks with it)."""
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def build_craft(state: dict[str, torch.Tensor]) -> CRAFT:
    first = int(state["basenet.slice1.0.weight"].shape[0])
    if 64 % first:
        raise ValueError(f"basenet.slice1.0 has {first} channels, not a VGG-16 width")
    return CRAFT(64 // first)


def build_recognizer(state: dict[str, torch.Tensor]) -> Recognizer:
    first = state["FeatureExtraction.ConvNet.0.weight"]
    out = int(first.shape[0]) * 8
    hidden = int(state["SequenceModeling.0.linear.weight"].shape[0])
    return Recognizer(int(first.shape[1]), out, hidden, int(state["Prediction.weight"].shape[0]))
