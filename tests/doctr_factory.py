"""DocTR state dicts with random weights in doctr's layout (db_resnet50, crnn_vgg16_bn), built with
edge-agent's own networks (doctr's need torchvision). ``rigged`` makes the outputs known by hand:
the detector's last layer gives probability sigmoid(10) everywhere (the whole page is one word) and
the recogniser's last layer always prefers one character (every word reads as that character).
"""

from __future__ import annotations

import io

import torch

from edge_agent.models.foundation.doctr import VOCABULARIES
from edge_agent.models.foundation.doctr_network import CRNN, VGG16, DBNet

FRENCH = VOCABULARIES[126]


def dbnet(tiny: bool = True, rigged: bool = True, seed: int = 0) -> DBNet:
    torch.manual_seed(seed)
    if tiny:
        net = DBNet(8, [(1, 4, 16), (1, 4, 16), (1, 4, 16), (1, 4, 16)], 16)
    else:  # db_resnet50: ResNet-50 stages, 256-channel pyramid
        net = DBNet(64, [(3, 64, 256), (4, 128, 512), (6, 256, 1024), (3, 512, 2048)], 256)
    if rigged:
        with torch.no_grad():
            net.prob_head[6].weight.zero_()
            net.prob_head[6].bias.fill_(10.0)
    return net.eval()


def crnn(tiny: bool = True, rigged: str | None = "A", seed: int = 0) -> CRNN:
    torch.manual_seed(seed)
    widths: list[int | str] = [8, "M", 8, "M", 16, "M", 16, "M", 16, "M"] if tiny else list(VGG16)
    net = CRNN(widths, 16 if tiny else 512, 8 if tiny else 128, len(FRENCH) + 1)
    if rigged is not None:
        with torch.no_grad():
            net.linear.weight.zero_()
            net.linear.bias.zero_()
            net.linear.bias[FRENCH.index(rigged)] = 5.0
    return net.eval()


def state_bytes(net: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return buffer.getvalue()
