"""Depth Anything 3's monocular depth network, written for edge-agent in plain torch.

Roboflow's current stack runs ``depth-anything-v3/{small,base}`` with ByteDance's DA3 code
(``DepthAnything3Net``, vendored; transformers has no DA3 class). These modules carry the
parameter names of its ``model.safetensors`` (``model.backbone.pretrained.*``, ``model.head.*``;
the ``model.`` prefix optional, ``net.`` read as ``backbone.``), so those load as they are; the
camera encoder/decoder, the Gaussian-splatting heads and the auxiliary (ray) fusion chain are
dropped on load: a single image's depth does not use them.

- Backbone: DINOv2 ViT with patch 14, learned position embeddings for 518 x 518 (37 x 37 patches,
  bicubic-interpolated to the input with DINOv2's +0.1 offset), layer scale, LayerNorm on queries
  and keys from block ``qknorm_start``, 2-D rotary embeddings (frequency 100, rows then columns,
  patch positions from 1, the class token at 0) from ``rope_start``; from ``alt_start`` the class
  token is replaced by the reference camera token and odd blocks attend "globally" (for one
  image: the same tokens, every patch at position (1, 1)). Blocks ``out_layers`` give
  ``[last local output, output]`` concatenated (``cat_token``), the second half through the
  final LayerNorm, class token dropped.
- Head (DualDPT's main branch): LayerNorm, 1x1 projections to ``out_channels``, a sin/cos
  position embedding (x 0.1) on a UV grid scaled by the aspect ratio, resizing (x4, x2, x1,
  /2), DPT fusion (residual conv units, bilinear upsampling with aligned corners), upsampling to
  the input size, the embedding again, two convolutions; depth = exp(channel 0).

The ViT's width and depth are read from the weights (DINOv2's 64-wide heads, or the width of the
query norm), the rest from ``config.json`` (``net``: name, out_layers, alt_start, qknorm_start,
rope_start, cat_token; ``head``: dim_in, output_dim, features, out_channels; Roboflow's defaults).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PATCH = 14
POS_GRID = 37  # 518 / 14: the position embeddings' grid
ROPE_FREQUENCY = 100.0
HEAD_WIDTH = 64  # DINOv2 ViT-S/B attention head size
DROPPED = ("cam_enc.", "cam_dec.", "gs_head.", "gs_adapter.", "_aux", "mask_token")


@dataclass(frozen=True)
class DA3Architecture:
    """What ``config.json`` says (Roboflow's defaults where it is silent)."""

    out_layers: tuple[int, ...] = (5, 7, 9, 11)
    alt_start: int = 4
    qknorm_start: int = 4
    rope_start: int = 4
    cat_token: bool = True
    head_dim_in: int = 1536
    head_output_dim: int = 2
    head_features: int = 128
    head_out_channels: tuple[int, ...] = (96, 192, 384, 768)


def parse_config(raw: dict[str, Any]) -> DA3Architecture:
    """DA3's ``config.json`` (``{"config": {"net": {...}, "head": {...}}}`` or the inner part)."""
    config = raw.get("config", raw)
    net, head = config.get("net", {}), config.get("head", {})
    if not isinstance(net, dict) or not isinstance(head, dict):
        raise ValueError("net and head must be objects")
    name = net.get("name", "vitb")
    if name not in ("vits", "vitb"):
        raise ValueError(f"net.name is {name!r}; Depth Anything 3 small and base are vits and vitb")
    out_layers = tuple(int(v) for v in net.get("out_layers", (5, 7, 9, 11)))
    channels = tuple(int(v) for v in head.get("out_channels", (96, 192, 384, 768)))
    if len(out_layers) != 4 or len(channels) != 4:
        raise ValueError("net.out_layers and head.out_channels must have 4 entries each")
    return DA3Architecture(
        out_layers=out_layers,
        alt_start=int(net.get("alt_start", 4)),
        qknorm_start=int(net.get("qknorm_start", 4)),
        rope_start=int(net.get("rope_start", 4)),
        cat_token=bool(net.get("cat_token", True)),
        head_dim_in=int(head.get("dim_in", 1536)),
        head_output_dim=int(head.get("output_dim", 2)),
        head_features=int(head.get("features", 128)),
        head_out_channels=channels,
    )


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DA3's keys -> this module's: ``model.`` dropped, ``net.`` read as ``backbone.``, unused heads dropped."""
    out = {}
    for key, value in state.items():
        name = key[len("model.") :] if key.startswith("model.") else key
        if name.startswith("net."):
            name = "backbone." + name[len("net.") :]
        if any(part in name for part in DROPPED):
            continue
        out[name] = value
    return out


# -- backbone -------------------------------------------------------------------------------


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_2d(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """2-D rotary embedding: (B, heads, N, d) tokens, (B, N, 2) integer (row, column) positions.

    The first half of the features turns with the row, the second with the column; each half is
    a 1-D RoPE of frequencies 100 ** (-2k / (d / 2)), its two quarters paired (rotate_half)."""
    dim = tokens.shape[-1] // 2
    inv_freq = 1.0 / (ROPE_FREQUENCY ** (torch.arange(0, dim, 2, device=tokens.device).float() / dim))
    steps = torch.arange(int(positions.max()) + 1, device=tokens.device, dtype=inv_freq.dtype)
    angles = torch.einsum("i,j->ij", steps, inv_freq).to(tokens.dtype)
    angles = torch.cat((angles, angles), dim=-1)
    cos, sin = angles.cos(), angles.sin()
    halves = []
    for part, axis in zip(tokens.chunk(2, dim=-1), (0, 1), strict=True):
        c = F.embedding(positions[..., axis], cos)[:, None]
        s = F.embedding(positions[..., axis], sin)[:, None]
        halves.append(part * c + rotate_half(part) * s)
    return torch.cat(halves, dim=-1)


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool, rope: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm: nn.Module = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        batch, count, dim = x.shape
        qkv = self.qkv(x).reshape(batch, count, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = self.q_norm(qkv[0]), self.k_norm(qkv[1]), qkv[2]
        if self.rope and positions is not None:
            q, k = rope_2d(q, positions), rope_2d(k, positions)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, count, dim)
        result: torch.Tensor = self.proj(out)
        return result


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool, rope: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, qk_norm, rope)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), positions))
        out: torch.Tensor = x + self.ls2(self.mlp(self.norm2(x)))
        return out


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH, PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.proj(x).flatten(2).transpose(1, 2)
        return out


class VisionTransformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, arch: DA3Architecture) -> None:
        super().__init__()
        self.dim, self.arch = dim, arch
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if arch.alt_start != -1:
            self.camera_token = nn.Parameter(torch.zeros(1, 2, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + POS_GRID * POS_GRID, dim))
        self.blocks = nn.ModuleList(
            Block(
                dim,
                heads,
                qk_norm=arch.qknorm_start != -1 and i >= arch.qknorm_start,
                rope=arch.rope_start != -1 and i >= arch.rope_start,
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def position_embedding(self, rows: int, cols: int) -> torch.Tensor:
        """(1, 1 + rows * cols, dim): DINOv2's embeddings bicubic-resized with its +0.1 offset."""
        if rows == cols == POS_GRID:
            return self.pos_embed
        table = self.pos_embed.float()
        grid = table[:, 1:].reshape(1, POS_GRID, POS_GRID, self.dim).permute(0, 3, 1, 2)
        scale = ((rows + 0.1) / POS_GRID, (cols + 0.1) / POS_GRID)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
        if tuple(grid.shape[-2:]) != (rows, cols):
            raise ValueError(f"position embeddings resized to {tuple(grid.shape[-2:])}, not {(rows, cols)}")
        patches = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, self.dim)
        return torch.cat((table[:, :1], patches), dim=1).to(self.pos_embed.dtype)

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> one (B, H/14 * W/14, 2 dim or dim) feature per out layer."""
        batch, _, height, width = pixels.shape
        rows, cols = height // PATCH, width // PATCH
        x = self.patch_embed(pixels)
        x = torch.cat((self.cls_token.expand(batch, -1, -1), x), dim=1)
        x = x + self.position_embedding(rows, cols)
        grid = torch.cartesian_prod(torch.arange(rows), torch.arange(cols)).to(pixels.device) + 1
        local_pos = torch.cat((torch.zeros(1, 2, dtype=grid.dtype, device=grid.device), grid))[None]
        local_pos = local_pos.expand(batch, -1, -1)
        global_pos = torch.ones_like(local_pos)
        global_pos[:, 0] = 0
        outputs, local_x = [], x
        for i, block in enumerate(self.blocks):
            if self.arch.alt_start != -1 and i == self.arch.alt_start:
                x = torch.cat((self.camera_token[:, :1].expand(batch, -1, -1), x[:, 1:]), dim=1)
            is_global = self.arch.alt_start != -1 and i >= self.arch.alt_start and i % 2 == 1
            x = block(x, global_pos if is_global else local_pos)
            if not is_global:
                local_x = x
            if i in self.arch.out_layers:
                if self.arch.cat_token:
                    out = torch.cat((local_x, self.norm(x)), dim=-1)
                else:
                    out = self.norm(x)
                outputs.append(out[:, 1:])
        return outputs


class Backbone(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, arch: DA3Architecture) -> None:
        super().__init__()
        self.pretrained = VisionTransformer(dim, depth, heads, arch)

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        out: list[torch.Tensor] = self.pretrained(pixels)
        return out


# -- head -----------------------------------------------------------------------------------


def uv_embedding(channels: int, rows: int, cols: int, aspect: float, dtype: torch.dtype) -> torch.Tensor:
    """(channels, rows, cols): sin/cos of a UV grid spanning +-aspect/diag, +-1/diag (diag =
    sqrt(aspect^2 + 1)), pixel centres; x in the first half of the channels, y in the second."""
    diag = math.sqrt(aspect * aspect + 1.0)
    span_x, span_y = aspect / diag, 1.0 / diag
    xs = torch.linspace(-span_x * (cols - 1) / cols, span_x * (cols - 1) / cols, cols, dtype=dtype)
    ys = torch.linspace(-span_y * (rows - 1) / rows, span_y * (rows - 1) / rows, rows, dtype=dtype)
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")  # (rows, cols)
    half = channels // 2
    omega = 1.0 / 100.0 ** (torch.arange(half // 2, dtype=torch.float32) / (half / 2.0))

    def sincos(values: torch.Tensor) -> torch.Tensor:
        angles = values.reshape(-1, 1).float() * omega[None]
        return torch.cat((angles.sin(), angles.cos()), dim=1)

    embed = torch.cat((sincos(uu), sincos(vv)), dim=-1).reshape(rows, cols, channels)
    return embed.permute(2, 0, 1)


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv2 = nn.Conv2d(features, features, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv2(F.relu(self.conv1(F.relu(x)))) + x
        return out


class FusionBlock(nn.Module):
    def __init__(self, features: int, residual: bool = True) -> None:
        super().__init__()
        if residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.residual = residual
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size: Any = None) -> torch.Tensor:
        if self.residual and skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        out: torch.Tensor = self.out_conv(x)
        return out


class Head(nn.Module):
    """DualDPT's main (depth) branch."""

    def __init__(self, arch: DA3Architecture) -> None:
        super().__init__()
        channels, features = arch.head_out_channels, arch.head_features
        self.norm = nn.LayerNorm(arch.head_dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(arch.head_dim_in, c, 1) for c in channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(channels[0], channels[0], 4, 4),
                nn.ConvTranspose2d(channels[1], channels[1], 2, 2),
                nn.Identity(),
                nn.Conv2d(channels[3], channels[3], 3, 2, 1),
            ]
        )
        scratch = nn.Module()
        for i, c in enumerate(channels, start=1):
            setattr(scratch, f"layer{i}_rn", nn.Conv2d(c, features, 3, 1, 1, bias=False))
        for i in (1, 2, 3):
            setattr(scratch, f"refinenet{i}", FusionBlock(features))
        scratch.refinenet4 = FusionBlock(features, residual=False)
        scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, 1, 1)
        scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, arch.head_output_dim, 1)
        )
        self.scratch = scratch

    @staticmethod
    def _with_position(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        embed = uv_embedding(x.shape[1], x.shape[2], x.shape[3], width / height, x.dtype).to(x.device)
        return x + 0.1 * embed[None].to(x.dtype)

    def forward(self, features: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
        rows, cols = height // PATCH, width // PATCH
        levels = []
        for stage, feature in enumerate(features):
            x = self.norm(feature)
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[2], rows, cols)
            x = self._with_position(self.projects[stage](x), height, width)
            levels.append(self.resize_layers[stage](x))
        s: Any = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{i}_rn")(x) for i, x in enumerate(levels, start=1))
        out = s.refinenet4(l4, size=l3.shape[2:])
        out = s.refinenet3(out, l3, size=l2.shape[2:])
        out = s.refinenet2(out, l2, size=l1.shape[2:])
        out = s.refinenet1(out, l1)
        out = s.output_conv1(out)
        out = F.interpolate(out, size=(rows * PATCH, cols * PATCH), mode="bilinear", align_corners=True)
        out = s.output_conv2(self._with_position(out, height, width))
        depth: torch.Tensor = torch.exp(out[:, 0])  # channel 1 is the confidence, not used
        return depth


class DepthAnything3(nn.Module):
    """(B, 3, H, W) normalised RGB, H and W multiples of 14 -> (B, H, W) depth (larger = farther)."""

    def __init__(self, dim: int, depth: int, heads: int, arch: DA3Architecture) -> None:
        super().__init__()
        if arch.head_dim_in != (2 * dim if arch.cat_token else dim):
            raise ValueError(f"head.dim_in {arch.head_dim_in} does not match a ViT of width {dim}")
        self.backbone = Backbone(dim, depth, heads, arch)
        self.head = Head(arch)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[-2:]
        if height % PATCH or width % PATCH:
            raise ValueError(f"Depth Anything 3 reads sizes that are multiples of 14, not {width}x{height}")
        out: torch.Tensor = self.head(self.backbone(pixels), height, width)
        return out


def build(arch: DA3Architecture, state: dict[str, torch.Tensor]) -> DepthAnything3:
    """The network whose ViT width/depth/heads the converted ``state`` has."""
    prefix = "backbone.pretrained."
    dim = int(state[prefix + "cls_token"].shape[-1])
    depth = 1 + max(int(k[len(prefix + "blocks.") :].split(".")[0]) for k in state if k.startswith(prefix + "blocks."))
    norms = [k for k in state if k.startswith(prefix + "blocks.") and k.endswith("attn.q_norm.weight")]
    heads = dim // int(state[norms[0]].shape[0]) if norms else max(1, dim // HEAD_WIDTH)
    return DepthAnything3(dim, depth, heads, arch)
