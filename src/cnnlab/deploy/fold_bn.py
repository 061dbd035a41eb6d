"""Fold BatchNorm into the convolution before it: one fewer pass over every feature map.

In eval mode ``bn(conv(x)) = conv'(x)`` with ``w' = w * g / sqrt(var + eps)`` and
``b' = (b - mean) * g / sqrt(var + eps) + beta``. Pairs are found by running the model once and
watching which BatchNorm receives a convolution's output directly, so it works for any architecture
(Sequential stems, ResNet ``conv1``/``bn1`` attributes, conv-bn-act blocks) without tracing Python.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def conv_bn_pairs(model: nn.Module, input_size: Sequence[int]) -> list[tuple[str, str]]:
    """(conv name, bn name) pairs where the BN's only input is that conv's output, each called once."""
    produced: dict[int, tuple[torch.Tensor, str]] = {}
    calls: dict[str, int] = {}
    consumers: dict[str, list[str]] = {}
    pairs: list[tuple[str, str]] = []
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):

            def conv_hook(m, inp, out, name=name):
                calls[name] = calls.get(name, 0) + 1
                produced[id(out)] = (out, name)  # keep the tensor alive so ids stay unique

            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.BatchNorm2d):

            def bn_hook(m, inp, name=name):
                calls[name] = calls.get(name, 0) + 1
                hit = produced.get(id(inp[0]))
                if hit is not None and hit[0] is inp[0]:
                    consumers.setdefault(hit[1], []).append(name)
                    pairs.append((hit[1], name))

            handles.append(mod.register_forward_pre_hook(bn_hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        for h in handles:
            h.remove()
    return [
        (c, b)
        for c, b in pairs
        if calls.get(c) == 1 and calls.get(b) == 1 and len(consumers.get(c, [])) == 1
    ]


def fold_batchnorm(model: nn.Module, input_size: Sequence[int]) -> tuple[nn.Module, int]:
    """A copy of ``model`` (eval mode) with every conv→BN pair folded; returns (model, pairs folded).

    A convolution whose output is also used elsewhere (e.g. before the BN on a skip path) would change
    that other use, so the export's parity check is what proves the folded model right.
    """
    folded = copy.deepcopy(model).eval()
    pairs = conv_bn_pairs(folded, input_size)
    for conv_name, bn_name in pairs:
        conv = folded.get_submodule(conv_name)
        bn = folded.get_submodule(bn_name)
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        _set_submodule(folded, conv_name, fuse_conv_bn_eval(conv, bn))
        _set_submodule(folded, bn_name, nn.Identity())
    return folded, len(pairs)
