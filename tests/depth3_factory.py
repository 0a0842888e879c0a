"""Depth Anything 3 checkpoints with random weights in ByteDance's layout, as Roboflow's
``depth-anything-v3/*`` packages hold them (``config.json``, ``model.safetensors``,
``preprocessor_config.json``).

DA3 has no library on the package index (its code is ByteDance's repository, vendored by
Roboflow): the network is edge-agent's own module (models/foundation/depth_v3_network.py), built
from the config and saved under DA3's key names (``model.backbone.pretrained.*``,
``model.head.*``), with the camera, Gaussian-splatting and auxiliary heads' tensors that a real
checkpoint also holds and that loading drops.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from tests.depth_factory import PROCESSOR

# DA3-small and DA3-base as ByteDance's configs describe them; tiny for tests
CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "net": {"name": "vits", "out_layers": [0, 1, 2, 3], "alt_start": 2, "qknorm_start": 2, "rope_start": 2},
        "head": {"dim_in": 64, "output_dim": 2, "features": 16, "out_channels": [8, 16, 16, 32]},
    },
    "small": {
        "net": {"name": "vits", "out_layers": [5, 7, 9, 11], "alt_start": 4, "qknorm_start": 4, "rope_start": 4},
        "head": {"dim_in": 768, "output_dim": 2, "features": 64, "out_channels": [48, 96, 192, 384]},
    },
    "base": {
        "net": {"name": "vitb", "out_layers": [5, 7, 9, 11], "alt_start": 4, "qknorm_start": 4, "rope_start": 4},
        "head": {"dim_in": 1536, "output_dim": 2, "features": 128, "out_channels": [96, 192, 384, 768]},
    },
}
#: ViT width, depth and heads of each
SIZES = {"tiny": (32, 4, 2), "small": (384, 12, 6), "base": (768, 12, 12)}
# DA3's processor: the longer side to 504, multiples of 14 (a DPT image processor config)
DA3_PROCESSOR = {**PROCESSOR, "size": {"height": 504, "width": 504}}


def network(size: str = "tiny", seed: int = 0) -> Any:
    import torch

    from edge_agent.models.foundation.depth_v3_network import DepthAnything3, parse_config

    torch.manual_seed(seed)
    dim, depth, heads = SIZES[size]
    net = DepthAnything3(dim, depth, heads, parse_config({"config": CONFIGS[size]}))
    with torch.no_grad():  # tokens, embeddings and layer scales start at constants: make them random too
        for name, param in net.named_parameters():
            if name.endswith(("cls_token", "camera_token", "pos_embed")):
                param.normal_(0, 0.5)
            elif name.endswith("gamma"):
                param.uniform_(0.5, 1.5)
    return net.eval()


def checkpoint_files(size: str = "tiny", seed: int = 0, net: Any = None) -> dict[str, bytes]:
    import torch
    from safetensors.torch import save_file
    from transformers import DPTImageProcessor

    net = network(size, seed) if net is None else net
    state = {f"model.{k}": v.contiguous() for k, v in net.state_dict().items()}
    dim = SIZES[size][0]
    # what a real DA3 checkpoint also holds and a depth-only loader drops
    state["model.cam_enc.proj.weight"] = torch.zeros(dim, 9)
    state["model.cam_dec.fc.weight"] = torch.zeros(9, dim)
    state["model.gs_head.norm.weight"] = torch.zeros(dim)
    state["model.head.scratch.refinenet1_aux.out_conv.weight"] = torch.zeros(4, 4, 1, 1)
    state["model.head.scratch.output_conv2_aux.0.0.weight"] = torch.zeros(4, 4, 3, 3)
    with tempfile.TemporaryDirectory() as folder:
        save_file(state, str(Path(folder) / "model.safetensors"))
        DPTImageProcessor(**DA3_PROCESSOR).save_pretrained(folder)
        (Path(folder) / "config.json").write_text(json.dumps({"model_name": f"da3-{size}", "config": CONFIGS[size]}))
        return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
