"""Multiply-accumulates (MACs) per layer and in total, for any model and input size.

One MAC is one multiply plus one add; FLOPs ≈ 2 x MACs. Counts come from PyTorch's own formulas
(``torch.utils.flop_counter``) applied to the aten ops a forward pass executes, so convolutions
(grouped, dilated, transposed), linear layers and functional matmuls (a ViT's attention) are all
counted, while cheap element-wise work (activations, BatchNorm, pooling, adds) counts as zero —
the usual convention of papers and of torchvision's "GFLOPS" column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from cnnlab.inspect._trace import run_trace
from cnnlab.inspect.geometry import check_input_size


@dataclass(frozen=True)
class LayerMacs:
    """MACs of one executed layer (a leaf module call or a functional op in a container)."""

    name: str
    kind: str
    macs: int


def count_macs(model: nn.Module, input_size: Sequence[int]) -> int:
    """Total MACs of one forward pass of ``model`` on one image of ``input_size`` (C, H, W).

    Example::

        >>> from torch import nn
        >>> count_macs(nn.Conv2d(3, 8, 3, padding=1), (3, 32, 32))   # 8*32*32 * 3*3*3
        221184
    """
    return run_trace(model, (1, *check_input_size(input_size))).total_macs


def layer_macs(model: nn.Module, input_size: Sequence[int]) -> list[LayerMacs]:
    """MACs of every executed layer, in execution order (they add up to :func:`count_macs`)."""
    trace = run_trace(model, (1, *check_input_size(input_size)))
    return [LayerMacs(r.name, r.kind, r.macs) for r in trace.rows]


def conv_macs(
    c_in: int, c_out: int, k: int | tuple[int, int], out_hw: tuple[int, int], groups: int = 1
) -> int:
    """Hand formula for a convolution: ``out_h * out_w * c_out * (c_in / groups) * kh * kw``.

    Example: ``conv_macs(3, 64, 7, (112, 112)) == 118_013_952`` (ResNet's stem).
    """
    kh, kw = (k, k) if isinstance(k, int) else k
    return out_hw[0] * out_hw[1] * c_out * (c_in // groups) * kh * kw


def linear_macs(in_features: int, out_features: int, tokens: int = 1) -> int:
    """Hand formula for a linear layer applied to ``tokens`` vectors: ``tokens * in * out``."""
    return tokens * in_features * out_features
