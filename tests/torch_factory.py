"""A small YOLOv8-layout detector in torch with fixed weights, exported to ONNX and TorchScript.

Both files hold the same network, so the ONNX Runtime engine and the torch engine must give the
same detections on the same frames. Output ``(B, 4 + C, N)``: cx, cy, w, h in input pixels from a
stride-16 grid, then sigmoid class scores, like a YOLOv8 export.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

STRIDE = 16


class TinyDetector(nn.Module):
    def __init__(self, classes: int = 2, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1),
            nn.SiLU(),
            nn.Conv2d(8, 16, 3, 2, 1),
            nn.SiLU(),
            nn.Conv2d(16, 16, 3, 2, 1),
            nn.SiLU(),
            nn.Conv2d(16, 16, 3, 2, 1),
            nn.SiLU(),
        )
        self.head = nn.Conv2d(16, 4 + classes, 1)
        with torch.no_grad():
            # Variance-preserving random weights, like a trained network's scale: a pixel level of
            # difference moves the outputs by about as much, not tens of times more.
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                    module.bias.zero_()
            self.head.bias[4:] = 0.5  # some anchors score above the default confidence

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.head(self.body(images))  # (B, 4 + C, H/16, W/16)
        b, channels, gh, gw = out.shape
        ys = torch.arange(gh, dtype=out.dtype, device=out.device).view(1, gh, 1).expand(1, gh, gw)
        xs = torch.arange(gw, dtype=out.dtype, device=out.device).view(1, 1, gw).expand(1, gh, gw)
        cx = (xs + torch.sigmoid(out[:, 0])) * STRIDE
        cy = (ys + torch.sigmoid(out[:, 1])) * STRIDE
        w = torch.sigmoid(out[:, 2]) * 4 * STRIDE
        h = torch.sigmoid(out[:, 3]) * 4 * STRIDE
        boxes = torch.stack([cx, cy, w, h], dim=1)
        scores = torch.sigmoid(out[:, 4:])
        return torch.cat([boxes, scores], dim=1).reshape(b, channels, gh * gw)


def export_both(directory: Path, size: int = 160, classes: int = 2, seed: int = 0) -> tuple[Path, Path]:
    """(weights.onnx, weights.torchscript) of the same TinyDetector, dynamic batch."""
    directory.mkdir(parents=True, exist_ok=True)
    model = TinyDetector(classes, seed).eval()
    example = torch.zeros(1, 3, size, size)
    onnx_path, script_path = directory / "weights.onnx", directory / "weights.torchscript"
    torch.onnx.export(
        model,
        (example,),
        str(onnx_path),
        input_names=["images"],
        output_names=["output0"],
        dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    with torch.no_grad():
        torch.jit.trace(model, example).save(str(script_path))
    return onnx_path, script_path
