"""The arithmetic of CNNs: convolution by hand, classic kernels, output sizes, parameter counts,
receptive fields, MACs, summary tables and pictures — for any ``nn.Module`` and every zoo model.

The names below are loaded on first use (PEP 562), so ``from cnnlab.inspect import output_size``
imports only :mod:`cnnlab.inspect.geometry`: the pure arithmetic (``geometry``, ``params``,
``rf_stack``; ``conv`` and ``kernels`` need only NumPy) never imports torch, which keeps
``cnnlab arith`` and ``cnnlab rf --layers`` well under a second. Model tracing (``flops``,
``receptive``, ``summary``) imports torch when first touched. Pictures live in
:mod:`cnnlab.inspect.viz` (imported on demand: it pulls in matplotlib).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the submodule that defines it
_WHERE = {
    "COURSE_EDGE_KERNEL": "conv",
    "COURSE_IMAGE": "conv",
    "ConvExplanation": "conv",
    "conv2d_numpy": "conv",
    "explain_conv": "conv",
    "LayerMacs": "flops",
    "conv_macs": "flops",
    "count_macs": "flops",
    "layer_macs": "flops",
    "linear_macs": "flops",
    "PADDING_MODES": "geometry",
    "check_input_size": "geometry",
    "output_size": "geometry",
    "padding_for": "geometry",
    "parse_input_size": "geometry",
    "same_padding": "geometry",
    "KERNELS": "kernels",
    "apply_kernel": "kernels",
    "get_kernel": "kernels",
    "list_kernels": "kernels",
    "Comparison": "params",
    "batchnorm_params": "params",
    "compare_5x5_vs_two_3x3": "params",
    "compare_inception_naive_vs_reduced": "params",
    "compare_standard_vs_separable": "params",
    "conv_params": "params",
    "depthwise_separable_params": "params",
    "inception_params": "params",
    "linear_params": "params",
    "LayerRF": "receptive",
    "ReceptiveFieldReport": "receptive",
    "receptive_field": "receptive",
    "PlainLayerRF": "rf_stack",
    "parse_layers": "rf_stack",
    "receptive_field_layers": "rf_stack",
    "FORMATS": "summary",
    "ModelSummary": "summary",
    "SummaryRow": "summary",
    "format_summary": "summary",
    "summarize": "summary",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'cnnlab.inspect' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cnnlab.inspect.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
