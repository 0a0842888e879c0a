"""Meta's Perception Encoder (PE-Core) CLIP network, written for edge-agent in plain torch.

Meta's code is not on the package index (open-clip-torch and timm, which build PE-Core too, pull
torchvision). The modules here carry the parameter names of Meta's checkpoints (Roboflow's
``model.pt``), so its state dict loads as is: a vision tower under ``visual.`` (patch convolution
without bias, class token for B16/L14, absolute position embeddings, 2-D rotary embeddings in
every attention, attention pooling, projection) and the text tower at the top level (causal
transformer, end-of-text pooling, projection). Sizes come from the state dict's shapes; the head
counts and the text context, which shapes cannot tell, from the variant's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Heads:
    vision: int
    text: int
    pooler: int
    context_length: int


#: What a PE-Core variant's shapes do not tell (Meta's configuration of each).
VARIANT_HEADS: dict[str, Heads] = {
    "PE-Core-B16-224": Heads(vision=12, text=16, pooler=8, context_length=32),
    "PE-Core-L14-336": Heads(vision=16, text=16, pooler=8, context_length=32),
    "PE-Core-G14-448": Heads(vision=16, text=20, pooler=8, context_length=72),
}


def rope_angles(grid_h: int, grid_w: int, head_dim: int, with_cls: bool) -> torch.Tensor:
    """(tokens, head_dim) rotation angles of PE's 2-D RoPE: half of each head rotates with the
    column, half with the row; each frequency covers two adjacent channels; a class token sits at
    position 0 (no rotation) and the patches start at 1."""
    quarter = head_dim // 4
    freqs = 1.0 / (10000 ** (torch.arange(0, 2 * quarter, 2, dtype=torch.float32) / (head_dim // 2)))
    offset = 1 if with_cls else 0
    ys = torch.arange(grid_h, dtype=torch.float32) + offset
    xs = torch.arange(grid_w, dtype=torch.float32) + offset
    along_y = torch.repeat_interleave(ys[:, None] * freqs, 2, dim=-1)  # (H, hd/2)
    along_x = torch.repeat_interleave(xs[:, None] * freqs, 2, dim=-1)  # (W, hd/2)
    grid = torch.cat(
        [along_x[None, :, :].expand(grid_h, -1, -1), along_y[:, None, :].expand(-1, grid_w, -1)], dim=-1
    ).reshape(grid_h * grid_w, -1)
    if with_cls:
        grid = torch.cat([torch.zeros(1, grid.shape[1]), grid])
    return grid


def rotate(t: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs (x0, x1) by ``angles``: (x0 cos - x1 sin, x1 cos + x0 sin)."""
    pairs = t.unflatten(-1, (-1, 2))
    turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return t * angles.cos() + turned * angles.sin()


class Attention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names, optional RoPE."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, angles: torch.Tensor | None) -> torch.Tensor:
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        if angles is not None:
            q, k = rotate(q, angles), rotate(k, angles)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class Mlp(nn.Sequential):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, width)


class Block(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, angles: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, angles)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList([Block(width, heads, hidden) for _ in range(layers)])

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, angles: torch.Tensor | None = None
    ) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask, angles)
        return x


class AttentionPool(nn.Module):
    """One learned probe attends over the tokens, then a residual MLP (PE's pooling)."""

    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, width))
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.layernorm = nn.LayerNorm(width)
        self.mlp = Mlp(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probe = self.probe.expand(x.shape[0], -1, -1).to(x.dtype)
        pooled = self.attn(probe, x, x, need_weights=False)[0]
        return (pooled + self.mlp(self.layernorm(pooled)))[:, 0]


class VisionTower(nn.Module):
    def __init__(
        self,
        patch: int,
        width: int,
        layers: int,
        heads: int,
        hidden: int,
        grid: int,
        cls: bool,
        out: int,
        pool_heads: int,
    ) -> None:
        super().__init__()
        self.patch, self.width, self.heads, self.grid = patch, width, heads, grid
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.use_cls = cls
        if cls:
            self.class_embedding = nn.Parameter(torch.randn(width) * width**-0.5)
        self.positional_embedding = nn.Parameter(torch.randn(int(cls) + grid * grid, width) * width**-0.5)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, hidden)
        self.ln_post = nn.LayerNorm(width)
        self.attn_pool = AttentionPool(width, pool_heads, 4 * width)
        self.proj = nn.Parameter(torch.randn(width, out) * width**-0.5)
        self._angles: dict[tuple[int, int], torch.Tensor] = {}

    def _positions(self, grid_h: int, grid_w: int) -> torch.Tensor:
        table = self.positional_embedding
        if (grid_h, grid_w) == (self.grid, self.grid):
            return table
        head, cells = (table[:1], table[1:]) if self.use_cls else (table[:0], table)
        cells = cells.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        cells = F.interpolate(cells, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
        return torch.cat([head, cells.permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1)])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = images.shape
        grid_h, grid_w = height // self.patch, width // self.patch
        x = self.conv1(images).flatten(2).transpose(1, 2)  # (B, H*W, width), row by row
        if self.use_cls:
            x = torch.cat([self.class_embedding.to(x.dtype).expand(batch, 1, -1), x], dim=1)
        x = x + self._positions(grid_h, grid_w).to(x.dtype)
        key = (grid_h, grid_w)
        if key not in self._angles:
            self._angles[key] = rope_angles(grid_h, grid_w, self.width // self.heads, self.use_cls)
        angles = self._angles[key].to(x.device, x.dtype)
        x = self.ln_post(self.transformer(self.ln_pre(x), None, angles))
        return self.attn_pool(x) @ self.proj


class PECoreClip(nn.Module):
    """PE-Core's CLIP: ``encode_image`` and ``encode_text`` give L2-normalised embeddings."""

    def __init__(self, vision: VisionTower, context: int, vocab: int, width: int, layers: int, heads: int, out: int):
        super().__init__()
        self.visual = vision
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.randn(context, width) * 0.01)
        self.transformer = Transformer(width, layers, heads, 4 * width)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, out) * width**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.register_buffer("attn_mask", torch.full((context, context), float("-inf")).triu(1), persistent=False)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(images), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        causal: torch.Tensor = self.attn_mask  # type: ignore[assignment]
        x = self.ln_final(self.transformer(x, causal[:length, :length].to(x.dtype)))
        # the end-of-text token has the highest id of the vocabulary: its position holds the summary
        pooled = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
        return F.normalize(pooled @ self.text_projection, dim=-1)


def clean_state_dict(raw: Any) -> dict[str, torch.Tensor]:
    """Meta's checkpoint formats: a bare state dict, or under ``state_dict``/``weights``; ``module.`` dropped."""
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    elif isinstance(raw, dict) and isinstance(raw.get("weights"), dict):
        raw = raw["weights"]
    if not isinstance(raw, dict):
        raise ValueError("is not a state dict")
    return {k.replace("module.", "", 1) if k.startswith("module.") else k: v for k, v in raw.items()}


def build(state: dict[str, torch.Tensor], heads: Heads) -> PECoreClip:
    """A PECoreClip of the shapes in ``state`` (KeyError/ValueError when it is not PE-Core's)."""
    conv = state["visual.conv1.weight"]
    width, patch = int(conv.shape[0]), int(conv.shape[2])
    layers = len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")})
    hidden = int(state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0])
    cls = "visual.class_embedding" in state
    cells = int(state["visual.positional_embedding"].shape[0]) - int(cls)
    grid = math.isqrt(cells)
    if grid * grid != cells:
        raise ValueError(f"visual.positional_embedding has {cells} cells, not a square grid")
    out = int(state["visual.proj"].shape[1])
    vision = VisionTower(patch, width, layers, heads.vision, hidden, grid, cls, out, heads.pooler)
    vocab, text_width = (int(v) for v in state["token_embedding.weight"].shape)
    text_layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
    context = int(state["positional_embedding"].shape[0])
    return PECoreClip(
        vision, context, vocab, text_width, text_layers, heads.text, int(state["text_projection"].shape[1])
    )
