"""The arithmetic of CNNs: convolution by hand, classic kernels, output sizes, parameter counts,
receptive fields, MACs, summary tables and pictures — for any ``nn.Module`` and every zoo model.

Pictures live in :mod:`cnnlab.inspect.viz` (imported on demand: it pulls in matplotlib).
"""

from cnnlab.inspect.conv import (
    COURSE_EDGE_KERNEL,
    COURSE_IMAGE,
    ConvExplanation,
    conv2d_numpy,
    explain_conv,
)
from cnnlab.inspect.flops import LayerMacs, conv_macs, count_macs, layer_macs, linear_macs
from cnnlab.inspect.geometry import (
    PADDING_MODES,
    check_input_size,
    output_size,
    padding_for,
    parse_input_size,
    same_padding,
)
from cnnlab.inspect.kernels import KERNELS, apply_kernel, get_kernel, list_kernels
from cnnlab.inspect.params import (
    Comparison,
    batchnorm_params,
    compare_5x5_vs_two_3x3,
    compare_inception_naive_vs_reduced,
    compare_standard_vs_separable,
    conv_params,
    depthwise_separable_params,
    inception_params,
    linear_params,
)
from cnnlab.inspect.receptive import (
    LayerRF,
    PlainLayerRF,
    ReceptiveFieldReport,
    parse_layers,
    receptive_field,
    receptive_field_layers,
)
from cnnlab.inspect.summary import FORMATS, ModelSummary, SummaryRow, format_summary, summarize

__all__ = [
    "COURSE_EDGE_KERNEL",
    "COURSE_IMAGE",
    "FORMATS",
    "KERNELS",
    "PADDING_MODES",
    "Comparison",
    "ConvExplanation",
    "LayerMacs",
    "LayerRF",
    "ModelSummary",
    "PlainLayerRF",
    "ReceptiveFieldReport",
    "SummaryRow",
    "apply_kernel",
    "batchnorm_params",
    "check_input_size",
    "compare_5x5_vs_two_3x3",
    "compare_inception_naive_vs_reduced",
    "compare_standard_vs_separable",
    "conv2d_numpy",
    "conv_macs",
    "conv_params",
    "count_macs",
    "depthwise_separable_params",
    "explain_conv",
    "format_summary",
    "get_kernel",
    "inception_params",
    "layer_macs",
    "linear_macs",
    "linear_params",
    "list_kernels",
    "output_size",
    "padding_for",
    "parse_input_size",
    "parse_layers",
    "receptive_field",
    "receptive_field_layers",
    "same_padding",
    "summarize",
]
