"""RAM++ (recognize-anything-plus) for inference: Swin backbone, per-tag description reweighting,
and a cross-attention-only tagging head.

A clean-room port of the upstream ``ram_plus`` model (xinyu1205/recognize-anything). The forward
pass follows the spec in the project notes (rampp-spec.md, sections 1.2-1.6):

1. ``visual_encoder`` (timm Swin) gives the final-norm tokens; their mean goes in front as token 0.
2. ``image_proj`` maps every token to the label-embedding width (``image_embeds``).
3. Each tag's D description embeddings are mixed with softmax weights from the normalised token 0
   (``reweight_scale``), then ``wordvec_proj`` + ReLU turns them into one query per tag.
4. ``tagging_head`` lets each query cross-attend to the image tokens (no self-attention, so tags
   are independent), and ``fc`` gives one logit per tag.

Parameter names equal upstream's after the one key transform in ``rampp_checkpoint``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformer
from torch import nn

# The BERT config of the upstream tagging head (q2l_config.json) uses this epsilon.
HEAD_LAYER_NORM_EPS = 1e-12
# reweight_scale is a log temperature initialised like CLIP's logit scale; the released
# checkpoint is reported not to override it (spec 3.4).
DEFAULT_REWEIGHT_SCALE = math.log(1 / 0.07)


@dataclass(frozen=True)
class RamPlusArch:
    """Shapes of a RAM++ model.

    Args:
        name: Registry name.
        img_size: Input side in pixels; the backbone only accepts exactly this size.
        patch_size: Swin patch size.
        embed_dim: Swin stage-0 width; stage i has ``embed_dim * 2**i``.
        depths: Swin blocks per stage.
        num_heads: Swin attention heads per stage.
        window_size: Swin window side (stages whose grid is not larger use the grid, no shift).
        embed_width: ``image_proj`` output = label-embedding width (CLIP ViT-B/16 text width).
        head_width: Width of the tagging-head queries.
        head_layers: Cross-attention layers in the tagging head.
        head_heads: Attention heads in the tagging head.
        head_intermediate: Hidden width of the tagging head's feed-forward.
        num_tags: Closed-set tags held in the checkpoint's ``label_embed``.
        descriptions_per_tag: Description embeddings per closed-set tag.
    """

    name: str
    img_size: int = 384
    patch_size: int = 4
    embed_dim: int = 192
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (6, 12, 24, 48)
    window_size: int = 12
    embed_width: int = 512
    head_width: int = 768
    head_layers: int = 2
    head_heads: int = 4
    head_intermediate: int = 3072
    num_tags: int = 4585
    descriptions_per_tag: int = 51

    def __post_init__(self) -> None:
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"{self.name}: depths and num_heads differ in length")
        if self.head_width % self.head_heads:
            raise ValueError(f"{self.name}: head_width must be a multiple of head_heads")
        if self.img_size % (self.patch_size * 2 ** (len(self.depths) - 1)):
            raise ValueError(f"{self.name}: img_size must halve evenly at every Swin stage")

    @property
    def num_features(self) -> int:
        """Width of the last Swin stage (the backbone's token width)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)


RAMPP_ARCHS: dict[str, RamPlusArch] = {
    # ram_plus_swin_large_14m.pth: Swin-L at 384, 4,585 tags x 51 descriptions.
    "swin_l": RamPlusArch("swin_l"),
    # Same code paths at CPU-test cost: the grid goes 48 -> 24 -> 12 -> 6 with window 6, so stages
    # 0-2 shift and stage 3 (grid == window) does not, like 96 -> 48 -> 24 -> 12 with window 12;
    # head_dim stays 32 in every stage as in Swin-L.
    "tiny": RamPlusArch(
        "tiny",
        img_size=192,
        embed_dim=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        window_size=6,
        embed_width=32,
        head_width=64,
        head_layers=2,
        head_heads=4,
        head_intermediate=128,
        # The real tag count, so a tiny checkpoint also runs closed set with the bundled tag list.
        num_tags=4585,
        descriptions_per_tag=3,
    ),
}


def get_arch(name: str) -> RamPlusArch:
    """The registered architecture called ``name``."""
    try:
        return RAMPP_ARCHS[name]
    except KeyError:
        raise ValueError(
            f"unknown RAM++ architecture {name!r}; known: {', '.join(sorted(RAMPP_ARCHS))}"
        ) from None


class CrossAttentionLayer(nn.Module):
    """One tagging-head layer: cross-attention to the image tokens, then a feed-forward.

    Submodule names mirror upstream's BERT layer (``crossattention.self.query`` ...) so that the
    state dict needs no renaming; upstream deleted the self-attention, so there is none here.
    """

    def __init__(self, width: int, memory_width: int, heads: int, intermediate: int) -> None:
        super().__init__()
        self.heads = heads
        self.crossattention = nn.ModuleDict(
            {
                "self": nn.ModuleDict(
                    {
                        "query": nn.Linear(width, width),
                        "key": nn.Linear(memory_width, width),
                        "value": nn.Linear(memory_width, width),
                    }
                ),
                "output": nn.ModuleDict(
                    {
                        "dense": nn.Linear(width, width),
                        "LayerNorm": nn.LayerNorm(width, eps=HEAD_LAYER_NORM_EPS),
                    }
                ),
            }
        )
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(width, intermediate)})
        self.output = nn.ModuleDict(
            {
                "dense": nn.Linear(intermediate, width),
                "LayerNorm": nn.LayerNorm(width, eps=HEAD_LAYER_NORM_EPS),
            }
        )

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """(B, K, width) queries, (B, T, memory_width) image tokens -> (B, K, width)."""
        proj = self.crossattention["self"]
        q = self._split_heads(proj["query"](x))
        k = self._split_heads(proj["key"](memory))
        v = self._split_heads(proj["value"](memory))
        # The upstream encoder mask is all ones, so there is no attention mask.
        ctx = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        out = self.crossattention["output"]
        h = out["LayerNorm"](out["dense"](ctx) + x)
        ff = self.output["dense"](F.gelu(self.intermediate["dense"](h)))
        return self.output["LayerNorm"](ff + h)


class TaggingHead(nn.Module):
    """The stack of cross-attention layers (upstream: ``tagging_head.encoder.layer.L``)."""

    def __init__(self, arch: RamPlusArch) -> None:
        super().__init__()
        layers = [
            CrossAttentionLayer(
                arch.head_width, arch.embed_width, arch.head_heads, arch.head_intermediate
            )
            for _ in range(arch.head_layers)
        ]
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(layers)})

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = queries
        for layer in self.encoder["layer"]:
            x = layer(x, memory)
        return x


class RamPlus(nn.Module):
    """RAM++ tagger: normalised images -> one logit per tag.

    The tag set is ``label_embed``: the checkpoint's closed set, or an open set installed with
    :meth:`set_label_embeddings`. Tags never interact, so any subset or order of tags gives the
    same per-tag logits.
    """

    label_mask: torch.Tensor | None

    def __init__(self, arch: RamPlusArch) -> None:
        super().__init__()
        self.arch = arch
        self._descriptions_per_tag = arch.descriptions_per_tag
        self.visual_encoder = SwinTransformer(
            img_size=arch.img_size,
            patch_size=arch.patch_size,
            embed_dim=arch.embed_dim,
            depths=arch.depths,
            num_heads=arch.num_heads,
            window_size=arch.window_size,
            num_classes=0,
            drop_path_rate=0.0,  # inference only; upstream's 0.1 is a training setting
        )
        self.image_proj = nn.Linear(arch.num_features, arch.embed_width)
        # Random unit rows stand in for the CLIP text embeddings a checkpoint brings. Frozen, as
        # upstream trained it.
        rows = arch.num_tags * arch.descriptions_per_tag
        self.label_embed = nn.Parameter(
            F.normalize(torch.randn(rows, arch.embed_width), dim=-1), requires_grad=False
        )
        self.reweight_scale = nn.Parameter(torch.tensor(DEFAULT_REWEIGHT_SCALE))
        self.wordvec_proj = nn.Linear(arch.embed_width, arch.head_width)
        self.tagging_head = TaggingHead(arch)
        self.fc = nn.Linear(arch.head_width, 1)
        # Padding mask of open-set descriptions; None means every description is real.
        self.register_buffer("label_mask", None, persistent=False)

    @property
    def num_tags(self) -> int:
        return self.label_embed.shape[0] // self._descriptions_per_tag

    @property
    def descriptions_per_tag(self) -> int:
        return self._descriptions_per_tag

    def set_label_embeddings(
        self, embeddings: torch.Tensor, mask: torch.Tensor | None = None
    ) -> None:
        """Replace the tag set (open set).

        Args:
            embeddings: (K, D, embed_width) description embeddings, tag-major. Tags with fewer
                than D descriptions are padded by the caller and masked out.
            mask: (K, D) bool, True where a description is real; None means all real. A masked
                description gets softmax weight exactly 0, so its padding value never matters.

        Raises:
            ValueError: wrong shapes, or a tag without any real description.
        """
        if embeddings.ndim != 3 or embeddings.shape[-1] != self.arch.embed_width:
            raise ValueError(
                f"embeddings must be (K, D, {self.arch.embed_width}), got {tuple(embeddings.shape)}"
            )
        k, d, width = embeddings.shape
        if k == 0 or d == 0:
            raise ValueError(f"embeddings must have K, D >= 1, got {tuple(embeddings.shape)}")
        if mask is not None:
            if mask.dtype != torch.bool or mask.shape != (k, d):
                raise ValueError(
                    f"mask must be bool of shape ({k}, {d}), got {mask.dtype} {tuple(mask.shape)}"
                )
            empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
            if empty:
                raise ValueError(f"tags without any real description: {empty[:10]}")
            mask = mask.to(self.label_embed.device)
        old = self.label_embed
        self.label_embed = nn.Parameter(
            embeddings.reshape(k * d, width).to(device=old.device, dtype=old.dtype),
            requires_grad=False,
        )
        self._descriptions_per_tag = d
        self.label_mask = mask

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised (B, 3, S, S) images -> (B, 1 + T, embed_width).

        Token 0 is the mean of the T final-norm tokens, which follow row-major; all after
        ``image_proj``, not normalised.
        """
        tokens = self.visual_encoder.forward_features(images).flatten(1, 2)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        return self.image_proj(tokens)

    def _tag_queries(self, embeds: torch.Tensor) -> torch.Tensor:
        """(B, 1 + T, embed_width) -> (B, K, head_width) queries of the tagging head."""
        batch = embeds.shape[0]
        labels = self.label_embed.view(self.num_tags, self._descriptions_per_tag, -1)
        if self._descriptions_per_tag == 1:
            # A softmax over one description is 1: the queries do not depend on the image, so
            # project them once and broadcast instead of B times.
            queries = F.relu(self.wordvec_proj(labels[:, 0]))
            return queries.unsqueeze(0).expand(batch, -1, -1)
        # Only the image side is normalised; the scale multiplies the (B, W) side, not (B, K, D).
        cls = embeds[:, 0]
        cls = cls / cls.norm(dim=-1, keepdim=True) * self.reweight_scale.exp()
        scores = torch.einsum("bw,kdw->bkd", cls, labels)
        if self.label_mask is not None:
            scores = scores.masked_fill(~self.label_mask, float("-inf"))
        # The einsum output is in the compute dtype (autocast, half), like upstream's
        # `.to(image.dtype)` reweight buffer.
        mixed = torch.einsum("bkd,kdw->bkw", scores.softmax(dim=-1), labels)
        return F.relu(self.wordvec_proj(mixed))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised (B, 3, S, S) images -> (B, K) logits (apply sigmoid for probabilities)."""
        embeds = self.image_embeds(images)
        hidden = self.tagging_head(self._tag_queries(embeds), embeds)
        return self.fc(hidden).squeeze(-1)


def create_rampp(arch: str | RamPlusArch) -> RamPlus:
    """A randomly initialised RAM++ in eval mode (load weights with ``rampp_checkpoint``)."""
    if isinstance(arch, str):
        arch = get_arch(arch)
    return RamPlus(arch).eval()
