"""L2CS-Net with random weights, built from torch modules (no torchvision): a ResNet of bottleneck
blocks and two 90-bin heads, exported to ONNX as Roboflow exported it.

Roboflow's ``L2CSNet_gaze360_resnet50_90bins.onnx`` has input ``input`` (N, 3, 448, 448) and
outputs ``output_yaw``, ``output_pitch`` in radians: the export wrapper decodes the bins (softmax,
expectation of the bin index, 4 degrees per bin, -180). ``raw_bins=True`` exports the two heads'
logits instead, for the decoding done outside the graph.
"""

from __future__ import annotations

import io
import math
from typing import Any

import torch
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class L2CS(nn.Module):
    """L2CS-Net (Abdelrahman et al.): ResNet trunk, fc_yaw_gaze and fc_pitch_gaze of ``bins`` each."""

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), width: int = 64, bins: int = 90) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._layer(width, layers[0])
        self.layer2 = self._layer(width * 2, layers[1], 2)
        self.layer3 = self._layer(width * 4, layers[2], 2)
        self.layer4 = self._layer(width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc_yaw_gaze = nn.Linear(width * 8 * 4, bins)
        self.fc_pitch_gaze = nn.Linear(width * 8 * 4, bins)

    def _layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self.inplanes, planes, stride)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc_yaw_gaze(x), self.fc_pitch_gaze(x)


class Decoded(nn.Module):
    """Roboflow's export wrapper: bins -> radians inside the graph."""

    def __init__(self, net: L2CS) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("index", torch.arange(90, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        yaw, pitch = self.net(x)
        yaw = (torch.softmax(yaw, 1) * self.index).sum(1) * 4 - 180
        pitch = (torch.softmax(pitch, 1) * self.index).sum(1) * 4 - 180
        return yaw * math.pi / 180, pitch * math.pi / 180


def network(tiny: bool = True, seed: int = 0) -> L2CS:
    torch.manual_seed(seed)
    net = L2CS((1, 1, 1, 1), 8) if tiny else L2CS()
    with torch.no_grad():  # wide heads: random faces give angles spread over the range, not all near 0
        net.fc_yaw_gaze.weight.mul_(20)
        net.fc_pitch_gaze.weight.mul_(20)
    return net.eval()


def onnx_bytes(net: L2CS, raw_bins: bool = False) -> bytes:
    module: Any = net if raw_bins else Decoded(net).eval()
    names = ["output_yaw", "output_pitch"]
    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        (torch.zeros(1, 3, 448, 448),),
        buffer,
        input_names=["input"],
        output_names=names,
        dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}},
        opset_version=17,
        dynamo=False,
    )
    return buffer.getvalue()


def drawn_face(
    size: tuple[int, int] = (320, 240), centre: tuple[int, int] = (160, 120), scale: float = 1.0
) -> tuple[Any, Any]:
    """A BGR picture of a face drawn with ellipses (skin, brows, eyes, nose, mouth) on grey, blurred,
    and its eye centres ((right x, y), (left x, y): the subject's right eye on the image's left).

    OpenCV's frontal-face cascade finds it (checked against cv2.CascadeClassifier of opencv 4.13);
    the head ellipse spans (cx +- 62 s, cy +- 80 s), the eyes sit at (cx -+ 26 s, cy - 14 s)."""
    import cv2
    import numpy as np

    width, height = size
    cx, cy = centre
    grey = np.full((height, width), 60, np.uint8)

    def at(x: float, y: float) -> tuple[int, int]:
        return int(cx + x * scale), int(cy + y * scale)

    def axes(a: float, b: float) -> tuple[int, int]:
        return int(a * scale), int(b * scale)

    cv2.ellipse(grey, at(0, 0), axes(62, 80), 0, 0, 360, 200, -1)
    for side in (-1, 1):
        cv2.ellipse(grey, at(side * 26, -30), axes(17, 5), 0, 0, 360, 50, -1)
        cv2.ellipse(grey, at(side * 26, -14), axes(14, 8), 0, 0, 360, 30, -1)
    cv2.ellipse(grey, at(0, 12), axes(7, 16), 0, 0, 360, 165, -1)
    cv2.ellipse(grey, at(0, 42), axes(22, 7), 0, 0, 360, 60, -1)
    grey = cv2.GaussianBlur(grey, (0, 0), 2.0 * scale)
    eyes = np.array([[cx - 26 * scale, cy - 14 * scale], [cx + 26 * scale, cy - 14 * scale]])
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), eyes
