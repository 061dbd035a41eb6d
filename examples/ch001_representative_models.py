"""Course chapter 001 — representative models for transfer learning, reproduced with cnnlab.

Covers: 7x7 vs three 3x3 convolutions (shapes and parameters), VGG16's torchsummary-style table,
the Inception parameter arithmetic (5x5 vs naive vs 1x1-reduced), global average pooling, ResNet-18
and ResNet-50 tables, He initialisation, depthwise-separable convolution (270 vs 57), and MobileNet —
where the course's model (unpadded stride-1 stem, 7x7 map flattened into a 50 M-parameter Linear,
53,383,976 parameters) is not MobileNet v1 as published (about 4.2 M parameters, global pooling).

    python examples/ch001_representative_models.py          # full: summaries at 224x224
    python examples/ch001_representative_models.py --fast   # seconds: summaries at 64x64
"""

from __future__ import annotations

import math

import torch
from _companion import check, cli, course, note, parse_args, section
from torch import nn

from cnnlab.inspect import (
    conv_params,
    depthwise_separable_params,
    format_summary,
    linear_params,
    output_size,
    summarize,
)
from cnnlab.inspect.model_table import model_info
from cnnlab.models import get_model


def vgg_section(fast: bool) -> None:
    section("VGG: one 7x7 conv vs three 3x3 convs (16 -> 32 channels, no bias, 32x32 input)")
    size7 = output_size(32, 7)
    sizes3 = [32]
    for _ in range(3):
        sizes3.append(output_size(sizes3[-1], 3))
    p7 = conv_params(16, 32, 7, bias=False)
    # The course writes 3x3x16x32x3, but the 2nd and 3rd convs read 32 channels, not 16.
    p3_course_formula = 3 * 3 * 16 * 32 * 3
    p3 = conv_params(16, 32, 3, bias=False) + 2 * conv_params(32, 32, 3, bias=False)
    check("vgg_7x7_out", size7)
    check("vgg_3x3_outs", sizes3)
    check("vgg_7x7_params", p7)
    check("vgg_three_3x3_params", p3)
    course("vgg_7x7_params", 25_088, p7)
    course("vgg_three_3x3_params", 13_824, p3, "WRONG IN COURSE")
    note(
        "three 3x3 convs 16->32->32->32 have 4,608 + 9,216 + 9,216 = 23,040 weights; the course's "
        f"3x3x16x32x3 = {p3_course_formula:,} counts 16 input channels for all three. The saving is "
        f"{1 - p3 / p7:.0%}, not 'about half'"
    )

    section("VGG16 summary (torchsummary-style table)")
    size = 64 if fast else 224
    model = get_model("vgg16")
    s = summarize(model, (3, size, size), name="vgg16")
    print(
        "\n".join(
            format_summary(s).splitlines()[:8] + ["..."] + format_summary(s).splitlines()[-10:]
        )
    )
    check("vgg16_params", s.total_params)
    course("vgg16_params", 138_357_544, s.total_params)
    check("vgg16_first_conv_params", s.rows[0].params)
    course("vgg16_first_conv_params", 1_792, s.rows[0].params)


def inception_section() -> None:
    section("Inception: parameter arithmetic (192 channels in, 96 out, no bias)")
    plain5 = conv_params(192, 96, 5, bias=False)
    naive = sum(conv_params(192, 24, k, bias=False) for k in (1, 3, 5))
    reduced = (
        conv_params(192, 24, 1, bias=False)
        + conv_params(192, 16, 1, bias=False)
        + conv_params(16, 24, 3, bias=False)
        + conv_params(192, 16, 1, bias=False)
        + conv_params(16, 24, 5, bias=False)
        + conv_params(192, 24, 1, bias=False)
    )
    check("inception_plain_5x5", plain5)
    check("inception_naive", naive)
    check("inception_reduced", reduced)
    course("inception_plain_5x5", 460_800, plain5)
    course("inception_naive", 161_280, naive)
    course("inception_reduced", 28_416, reduced)
    note("the naive count leaves out the pooling branch, which has no parameters in block (a)")

    section("Global average pooling replaces flatten + big Linear")
    m = get_model("resnet18", num_classes=10)
    m.eval()
    with torch.no_grad():
        f = m.forward_features(torch.randn(1, 3, 64, 64))
        pooled = m.forward_head(f, pre_logits=True)
    check("gap_features_shape", list(f.shape))
    check("gap_pooled_shape", list(pooled.shape))
    flat = linear_params(512 * 7 * 7, 1000)
    gap = linear_params(512, 1000)
    check("gap_head_params", gap)
    check("flatten_head_params", flat)
    print(f"head on a 7x7x512 map: flatten {flat:,} vs GAP {gap:,} parameters")


def resnet_section(fast: bool) -> None:
    section("ResNet-18 / ResNet-50 summaries")
    size = 64 if fast else 224
    for name, theirs in (("resnet18", 11_689_512), ("resnet50", 25_557_032)):
        s = summarize(get_model(name), (3, size, size), name=name)
        check(f"{name}_params", s.total_params)
        course(f"{name}_params", theirs, s.total_params)
        check(f"{name}_stem_out", list(s.rows[0].output_shape[1:]))
    cli(
        "summary",
        "resnet18",
        "--input",
        f"3x{size}x{size}",
        "--format",
        "markdown",
        "-o",
        "/dev/null",
    )

    section("He (Kaiming) initialisation: std = sqrt(2 / fan_out) for ReLU networks")
    torch.manual_seed(0)
    conv = get_model("resnet50").conv1 if hasattr(get_model("resnet50"), "conv1") else None
    if isinstance(conv, nn.Conv2d):
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        expected = math.sqrt(2 / fan_out)
        std = conv.weight.std().item()
        print(f"conv1 weight std {std:.4f}, He (fan_out) {expected:.4f}")
        check("he_init_ratio", round(std / expected, 1))


def mobilenet_section(fast: bool) -> None:
    section("Depthwise-separable convolution: 3 -> 10 channels, 3x3, no bias")
    standard = conv_params(3, 10, 3, bias=False)
    separable = depthwise_separable_params(3, 10, 3, bias=False)
    check("dwsep_standard", standard)
    check("dwsep_separable", separable)
    course("dwsep_standard", 270, standard)
    course("dwsep_separable", 57, separable)

    section("MobileNet v1: the course's model vs the published one")
    info = model_info("mobilenet_v1", macs=False)
    check("mobilenet_v1_params", info.params)
    course("mobilenet_v1_params", 53_383_976, info.params, "WRONG IN COURSE")
    course_stem = output_size(224, 3, stride=1, padding=0)
    paper_stem = output_size(224, 3, stride=2, padding=1)
    check("mobilenet_stem_out", paper_stem)
    course("mobilenet_stem_out", course_stem, paper_stem, "WRONG IN COURSE")
    course_fc = linear_params(1024 * 7 * 7, 1000)
    check("course_mobilenet_fc_params", course_fc)
    note(
        "the course's stem is a 3x3 conv with stride 1 and no padding (224 -> 222), and its last "
        f"7x7x1024 map is flattened into a Linear layer of {course_fc:,} parameters — 94 % of its "
        "53,383,976. MobileNet v1 (Howard et al. 2017) has a stride-2 padded stem (224 -> 112), ends "
        f"with global average pooling and a 1024 -> 1000 Linear: {info.params:,} parameters"
    )
    size = 64 if fast else 224
    s = summarize(get_model("mobilenet_v1"), (3, size, size), name="mobilenet_v1")
    check("mobilenet_v1_summary_params", s.total_params)
    check("mobilenet_v1_stem_shape", list(s.rows[0].output_shape[1:]))


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.manual_seed(0)
    vgg_section(args.fast)
    inception_section()
    resnet_section(args.fast)
    mobilenet_section(args.fast)


if __name__ == "__main__":
    main()
