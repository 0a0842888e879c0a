"""EasyOCR state dicts with random weights in EasyOCR's layout (CRAFT, generation-2 recogniser),
built with edge-agent's own networks (easyocr's need torchvision), saved as DataParallel saves them
(``module.`` prefix). ``rigged``: CRAFT's last layer scores every pixel 1.0 as text and 0 as link
(the whole picture is one box) and the recogniser's last layer always prefers one character.
"""

from __future__ import annotations

import io

import torch

from edge_agent.models.foundation.easy_ocr import CHARACTERS
from edge_agent.models.foundation.easyocr_network import CRAFT, Recognizer

ENGLISH = CHARACTERS["english_g2"]
RIG_LOGIT = 12.0


def craft(tiny: bool = True, rigged: bool = True, seed: int = 0) -> CRAFT:
    torch.manual_seed(seed)
    net = CRAFT(8 if tiny else 1)
    if rigged:
        with torch.no_grad():
            last = net.conv_cls[8]
            last.weight.zero_()
            last.bias.copy_(torch.tensor([1.0, 0.0]))
    return net.eval()


def recognizer(
    tiny: bool = True,
    rigged: str | None = "A",
    seed: int = 0,
    network: str = "english_g2",
    runner_up: tuple[str, float] | None = None,
) -> Recognizer:
    """A recogniser of ``network``'s real class count (blank + its characters); rigged: every step's
    logits are RIG_LOGIT for ``rigged``, ``runner_up``'s logit for that character, 0 elsewhere."""
    characters = CHARACTERS[network]
    torch.manual_seed(seed)
    net = Recognizer(1, 32 if tiny else 256, 16 if tiny else 256, len(characters) + 1)
    if rigged is not None:
        with torch.no_grad():
            net.Prediction.weight.zero_()
            net.Prediction.bias.zero_()
            net.Prediction.bias[1 + characters.index(rigged)] = RIG_LOGIT
            if runner_up is not None:
                net.Prediction.bias[1 + characters.index(runner_up[0])] = runner_up[1]
    return net.eval()


def state_bytes(net: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, buffer)
    return buffer.getvalue()
