"""PE-Core checkpoints with random weights in Meta's state-dict layout (Roboflow's ``model.pt``).

Built with edge-agent's own PE network (Meta's code is not on the package index); the tiny one
keeps the real variant's head counts (they come from the variant's name) with small widths.
"""

from __future__ import annotations

import io
import json

import torch

from edge_agent.models.foundation.pe_network import VARIANT_HEADS, PECoreClip, VisionTower


def network(variant: str = "PE-Core-B16-224", tiny: bool = True, seed: int = 0) -> PECoreClip:
    torch.manual_seed(seed)
    heads = VARIANT_HEADS[variant]
    if tiny:  # width 48 = 12 heads of 4 channels; text 64 = 16 heads of 4
        vision = VisionTower(16, 48, 2, heads.vision, 96, 4, True, 24, heads.pooler)
        return PECoreClip(vision, heads.context_length, 49408, 64, 2, heads.text, 24).eval()
    assert variant == "PE-Core-B16-224"
    vision = VisionTower(16, 768, 12, 12, 3072, 14, True, 1024, 8)
    return PECoreClip(vision, 32, 49408, 1024, 24, 16, 1024).eval()


def model_pt(net: PECoreClip, wrap: bool = False) -> bytes:
    """``torch.save`` of the state dict as Meta ships it (``wrap``: under ``state_dict`` with ``module.``)."""
    state = net.state_dict()
    if wrap:
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def package_config(variant: str) -> bytes:
    return json.dumps({"vision_encoder_config": variant}).encode()
