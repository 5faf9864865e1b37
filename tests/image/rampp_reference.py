"""A literal, slow RAM++ forward written from the spec (rampp-spec.md 1.2-1.6), for parity tests.

It reads an upstream-layout state dict of plain tensors, loops over images and windows, and uses
neither timm nor freqscan.image.rampp, so it checks the port rather than repeating it. It builds
the Swin relative-position index and shifted-window mask itself from the window geometry.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

SWIN_EPS = 1e-5
HEAD_EPS = 1e-12
MASKED = -100.0


@functools.cache
def relative_position_index(ws: int) -> torch.Tensor:
    """(ws², ws²) row of the bias table for each (query, key) pair of a window."""
    index = torch.empty(ws * ws, ws * ws, dtype=torch.int64)
    for p in range(ws * ws):
        for q in range(ws * ws):
            dy = p // ws - q // ws + ws - 1
            dx = p % ws - q % ws + ws - 1
            index[p, q] = dy * (2 * ws - 1) + dx
    return index


@functools.cache
def shifted_window_mask(grid: int, ws: int, shift: int) -> torch.Tensor:
    """(windows, ws², ws²): -100 where query and key come from different regions, else 0.

    In the rolled frame, each axis has three regions: [0, grid-ws), [grid-ws, grid-shift) and
    [grid-shift, grid); tokens of different regions were not neighbours before the roll.
    """

    def region(i: int) -> int:
        return 0 if i < grid - ws else (1 if i < grid - shift else 2)

    labels = torch.tensor([[3 * region(y) + region(x) for x in range(grid)] for y in range(grid)])
    masks = []
    for wy in range(grid // ws):
        for wx in range(grid // ws):
            win = labels[wy * ws : (wy + 1) * ws, wx * ws : (wx + 1) * ws].reshape(-1)
            different = win[:, None] != win[None, :]
            masks.append(torch.where(different, MASKED, 0.0))
    return torch.stack(masks)


def _ln(x: torch.Tensor, sd: dict[str, torch.Tensor], prefix: str, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[prefix + "weight"], sd[prefix + "bias"], eps)


def _linear(x: torch.Tensor, sd: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    y = x @ sd[prefix + "weight"].T
    bias = sd.get(prefix + "bias")
    return y if bias is None else y + bias


def _swin_block(
    x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, heads: int, ws: int, shift: int
) -> torch.Tensor:
    """One Swin block on one image's (H, W, C) grid."""
    grid, _, dim = x.shape
    head_dim = dim // heads
    y = _ln(x, sd, p + "norm1.", SWIN_EPS)
    if shift:
        y = torch.roll(y, shifts=(-shift, -shift), dims=(0, 1))
    table = sd[p + "attn.relative_position_bias_table"]
    bias = table[relative_position_index(ws).reshape(-1)].reshape(ws * ws, ws * ws, heads)
    mask = shifted_window_mask(grid, ws, shift) if shift else None
    out = torch.empty_like(y)
    n = 0
    for wy in range(grid // ws):
        for wx in range(grid // ws):
            rows, cols = slice(wy * ws, (wy + 1) * ws), slice(wx * ws, (wx + 1) * ws)
            tokens = y[rows, cols].reshape(ws * ws, dim)
            qkv = _linear(tokens, sd, p + "attn.qkv.")
            q, k, v = qkv[:, :dim], qkv[:, dim : 2 * dim], qkv[:, 2 * dim :]
            head_outs = []
            for h in range(heads):
                hs = slice(h * head_dim, (h + 1) * head_dim)
                att = (q[:, hs] * head_dim**-0.5) @ k[:, hs].T + bias[:, :, h]
                if mask is not None:
                    att = att + mask[n]
                head_outs.append(att.softmax(dim=-1) @ v[:, hs])
            merged = _linear(torch.cat(head_outs, dim=-1), sd, p + "attn.proj.")
            out[rows, cols] = merged.reshape(ws, ws, dim)
            n += 1
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(0, 1))
    x = x + out
    hidden = F.gelu(_linear(_ln(x, sd, p + "norm2.", SWIN_EPS), sd, p + "mlp.fc1."))
    return x + _linear(hidden, sd, p + "mlp.fc2.")


def _patch_merge(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    x = torch.cat([x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]], dim=-1)
    return _linear(_ln(x, sd, p + "norm.", SWIN_EPS), sd, p + "reduction.")


def reference_image_embeds(
    sd: dict[str, torch.Tensor],
    image: torch.Tensor,
    *,
    patch_size: int,
    depths: tuple[int, ...],
    num_heads: tuple[int, ...],
    window_size: int,
) -> torch.Tensor:
    """One normalised (3, S, S) image -> (1 + T, embed_width) image embeddings."""
    ve = "visual_encoder."
    x = F.conv2d(
        image[None],
        sd[ve + "patch_embed.proj.weight"],
        sd[ve + "patch_embed.proj.bias"],
        stride=patch_size,
    )[0].permute(1, 2, 0)
    x = _ln(x, sd, ve + "patch_embed.norm.", SWIN_EPS)
    for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
        grid = x.shape[0]
        # A grid no larger than the window is one unshifted window.
        ws = min(window_size, grid)
        for j in range(depth):
            shift = ws // 2 if j % 2 == 1 and grid > window_size else 0
            x = _swin_block(x, sd, f"{ve}layers.{i}.blocks.{j}.", heads, ws, shift)
        if i < len(depths) - 1:
            x = _patch_merge(x, sd, f"{ve}layers.{i}.downsample.")
    tokens = _ln(x, sd, ve + "norm.", SWIN_EPS).reshape(-1, x.shape[-1])
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens])
    return _linear(tokens, sd, "image_proj.")


def _cross_attention_layer(
    x: torch.Tensor, memory: torch.Tensor, sd: dict[str, torch.Tensor], p: str, heads: int
) -> torch.Tensor:
    q = _linear(x, sd, p + "crossattention.self.query.")
    k = _linear(memory, sd, p + "crossattention.self.key.")
    v = _linear(memory, sd, p + "crossattention.self.value.")
    head_dim = q.shape[-1] // heads
    ctx = []
    for h in range(heads):
        hs = slice(h * head_dim, (h + 1) * head_dim)
        att = (q[:, hs] @ k[:, hs].T / head_dim**0.5).softmax(dim=-1)
        ctx.append(att @ v[:, hs])
    h1 = _linear(torch.cat(ctx, dim=-1), sd, p + "crossattention.output.dense.") + x
    h1 = _ln(h1, sd, p + "crossattention.output.LayerNorm.", HEAD_EPS)
    ff = _linear(F.gelu(_linear(h1, sd, p + "intermediate.dense.")), sd, p + "output.dense.")
    return _ln(ff + h1, sd, p + "output.LayerNorm.", HEAD_EPS)


def reference_logits(
    sd: dict[str, torch.Tensor],
    embeds: torch.Tensor,
    *,
    head_heads: int,
    descriptions_per_tag: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, 1 + T, embed_width) reference image embeddings -> (B, K) logits, one image at a time.

    ``mask`` (K, D) marks real descriptions; masked ones get -inf before the per-tag softmax.
    """
    label = sd["label_embed"]
    d = descriptions_per_tag
    k_tags = label.shape[0] // d
    head_layers = len({key.split(".")[3] for key in sd if key.startswith("tagging_head.")})
    logits = []
    for image_embeds in embeds:
        cls = image_embeds[0] / image_embeds[0].norm()
        scores = (torch.exp(sd["reweight_scale"]) * (label @ cls)).reshape(k_tags, d)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=1)
        tag_embeds = (weights[:, :, None] * label.reshape(k_tags, d, -1)).sum(dim=1)
        x = torch.relu(_linear(tag_embeds, sd, "wordvec_proj."))
        for layer in range(head_layers):
            x = _cross_attention_layer(
                x, image_embeds, sd, f"tagging_head.encoder.layer.{layer}.", head_heads
            )
        logits.append(_linear(x, sd, "fc.")[:, 0])
    return torch.stack(logits)
