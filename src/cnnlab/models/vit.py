"""Vision Transformer (Dosovitskiy et al., 2020), complete: patches → tokens → Transformer → head.

An image is cut into P x P patches, each linearly projected to a D-dimensional token (a P x P,
stride-P convolution, ``conv_proj``); a learnable class token is prepended, a learnable position
embedding added, and a stack of pre-norm Transformer encoder blocks (multi-head self-attention and an
MLP, each with a residual) mixes the tokens. The class token's final state feeds the linear head.
(The course's version stops after the patch embedding; this is the whole model.)

Module names follow torchvision (``conv_proj``, ``class_token``, ``encoder.pos_embedding``,
``encoder.layers.encoder_layer_N.{ln_1, self_attention, ln_2, mlp.0, mlp.3}``, ``encoder.ln``,
``heads.head``), so torchvision weights load strictly and give the same outputs.

Any input whose sides are multiples of the patch size works: when the patch grid differs from the
one the position embedding was made for, the embedding is resized bicubically (what fine-tuning at a
new resolution does), so one set of weights serves 224 px and 384 px alike.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from cnnlab.errors import InputShapeError
from cnnlab.models._base import ClassifierMixin, DefaultCfg
from cnnlab.models._registry import register_model


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names.

    Written on :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels) instead of
    wrapping ``nn.MultiheadAttention``, whose general query/key/value interface costs extra copies.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden dim {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.dropout = num_heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, s, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(n, s, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(n, s, d))


class EncoderBlock(nn.Module):
    """Pre-norm Transformer block: ``x + attn(ln_1(x))``, then ``+ mlp(ln_2(.))``."""

    def __init__(
        self, dim: int, num_heads: int, mlp_dim: int, dropout: float, attention_dropout: float
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = SelfAttention(dim, num_heads, attention_dropout)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_dim, dim),
            nn.Dropout(dropout),
        )
        for m in (self.mlp[0], self.mlp[3]):
            nn.init.xavier_uniform_(m.weight)
            nn.init.normal_(m.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.self_attention(self.ln_1(x)))
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    """Position embedding + dropout + N encoder blocks + final LayerNorm."""

    def __init__(
        self,
        seq_length: int,
        depth: int,
        num_heads: int,
        dim: int,
        mlp_dim: int,
        dropout: float,
        attention_dropout: float,
    ) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, dim).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(
            OrderedDict(
                (
                    f"encoder_layer_{i}",
                    EncoderBlock(dim, num_heads, mlp_dim, dropout, attention_dropout),
                )
                for i in range(depth)
            )
        )
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, pos_embedding: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(self.dropout(x + pos_embedding)))


def resize_pos_embedding(pos: torch.Tensor, old_grid: int, new_hw: tuple[int, int]) -> torch.Tensor:
    """Bicubically resize the patch part of a ``(1, 1 + g*g, D)`` position embedding to ``new_hw``.

    The class-token slot is kept as is; only the spatial grid is interpolated.
    """
    cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
    d = pos.shape[-1]
    grid = patch_pos.reshape(1, old_grid, old_grid, d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_hw, mode="bicubic", align_corners=False)
    patch_pos = grid.permute(0, 2, 3, 1).reshape(1, new_hw[0] * new_hw[1], d)
    return torch.cat([cls_pos, patch_pos], dim=1)


class VisionTransformer(ClassifierMixin, nn.Module):
    """ViT with a class token; ``image_size`` fixes the position-embedding grid it was built for."""

    classifier_name = "heads.head"

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        depth: int,
        num_heads: int,
        hidden_dim: int,
        mlp_dim: int,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(
                f"image_size {image_size} is not a multiple of patch_size {patch_size}"
            )
        self.in_chans, self.num_classes = in_chans, num_classes
        self.image_size, self.patch_size, self.hidden_dim = image_size, patch_size, hidden_dim
        self.grid_size = image_size // patch_size
        base = DefaultCfg(input_size=(3, image_size, image_size), min_size=patch_size)
        if mean is not None and std is not None:
            base = DefaultCfg(
                input_size=(len(mean), image_size, image_size),
                min_size=patch_size,
                mean=mean,
                std=std,
            )
        self.default_cfg = base.for_chans(in_chans)
        self.conv_proj = nn.Conv2d(in_chans, hidden_dim, kernel_size=patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.encoder = Encoder(
            self.grid_size**2 + 1, depth, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout
        )
        self.num_features = hidden_dim
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(hidden_dim, num_classes)))
        # Hugging Face's ViT checkpoints were trained with LayerNorm eps 1e-12 (torchvision: 1e-6).
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                m.eps = norm_eps
        fan_in = in_chans * patch_size * patch_size
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1.0 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        # A zero head starts every class at equal logits (the ViT paper's choice for fine-tuning).
        nn.init.zeros_(self.heads.head.weight)
        nn.init.zeros_(self.heads.head.bias)

    def check_input(self, x: torch.Tensor) -> None:
        """Also require sides that are multiples of the patch size (a one-line error otherwise)."""
        super().check_input(x)
        p = self.patch_size
        if x.shape[2] % p or x.shape[3] % p:
            raise InputShapeError(
                f"{type(self).__name__} with {p}x{p} patches needs height and width divisible by {p}; "
                f"got {x.shape[2]}x{x.shape[3]} (e.g. resize to {self.image_size}x{self.image_size})"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image → token sequence after the encoder, ``(N, 1 + h*w, D)``; token 0 is the class token."""
        x = self.conv_proj(x)
        n, d, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        pos = self.encoder.pos_embedding
        if h != self.grid_size or w != self.grid_size:
            pos = resize_pos_embedding(pos, self.grid_size, (h, w))
        return self.encoder(x, pos)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0]
        return x if pre_logits else self.heads(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


@register_model
def vit_b_16(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VisionTransformer:
    """ViT-B/16: 12 layers, 12 heads, dim 768, MLP 3072, 224 px (86,567,656 parameters)."""
    return VisionTransformer(224, 16, 12, 12, 768, 3072, num_classes, in_chans, **kwargs)


@register_model
def vit_b_32(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VisionTransformer:
    """ViT-B/32: as B/16 with 32 px patches (88,224,232 parameters)."""
    return VisionTransformer(224, 32, 12, 12, 768, 3072, num_classes, in_chans, **kwargs)


@register_model
def vit_l_16(*, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> VisionTransformer:
    """ViT-L/16: 24 layers, 16 heads, dim 1024, MLP 4096, 224 px (304,326,632 parameters)."""
    return VisionTransformer(224, 16, 24, 16, 1024, 4096, num_classes, in_chans, **kwargs)


@register_model
def vit_tiny(*, num_classes: int = 10, in_chans: int = 3, **kwargs) -> VisionTransformer:
    """A small ViT for 28-32 px images: 4 px patches, dim 192, 6 layers, 3 heads (~2.7 M parameters).

    Options: ``image_size`` (32), ``patch_size`` (4), ``depth`` (6), ``num_heads`` (3),
    ``hidden_dim`` (192), ``mlp_dim`` (4 x hidden), ``dropout``. 28 px inputs (MNIST) use the
    resized 7x7 position grid automatically.
    """
    image_size = kwargs.pop("image_size", 32)
    patch_size = kwargs.pop("patch_size", 4)
    depth = kwargs.pop("depth", 6)
    num_heads = kwargs.pop("num_heads", 3)
    hidden_dim = kwargs.pop("hidden_dim", 192)
    mlp_dim = kwargs.pop("mlp_dim", 4 * hidden_dim)
    kwargs.setdefault("mean", (0.5, 0.5, 0.5))
    kwargs.setdefault("std", (0.5, 0.5, 0.5))
    return VisionTransformer(
        image_size,
        patch_size,
        depth,
        num_heads,
        hidden_dim,
        mlp_dim,
        num_classes,
        in_chans,
        **kwargs,
    )
