"""Course chapter 000 — the CNN architecture guide, reproduced with cnnlab.

Covers: the 5x5 convolution example, output sizes, conv parameters, pooling (max, average, global,
adaptive), the receptive field with (kernel, stride, dilation), the 3x3-stacking savings, LeNet-5,
AlexNet (+LRN), VGG16/19 (+BN), the Inception block, ResNet-18/50, DenseNet, MobileNet's separable
convolution, the EfficientNet B0-B7 scaling table, ConvNeXt, ViT (complete, unlike the course's),
the YOLO head, U-Net (complete, unlike the course's), transfer learning and the comparison table.

    python examples/ch000_architecture_guide.py          # full: forward passes at the real sizes
    python examples/ch000_architecture_guide.py --fast   # seconds: small inputs, parameters on meta
"""

from __future__ import annotations

import numpy as np
import torch
from _companion import check, course, note, parse_args, section
from torch import nn

from cnnlab.data import load_dataset
from cnnlab.evaluate.dense_report import evaluate_dense_run
from cnnlab.inspect import (
    compare_5x5_vs_two_3x3,
    compare_inception_naive_vs_reduced,
    compare_standard_vs_separable,
    conv2d_numpy,
    conv_params,
    output_size,
    receptive_field_layers,
)
from cnnlab.inspect.model_table import model_info
from cnnlab.models import get_model
from cnnlab.train import fit
from cnnlab.train.config import DataConfig, OptimConfig, TrainConfig


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def basics(out_dir) -> None:
    section("1. Convolution: the 5x5 example with the [[1,0,1],[0,1,0],[1,0,1]] kernel")
    image = np.array(
        [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]], float
    )
    kernel = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], float)
    out = conv2d_numpy(image, kernel).astype(int)
    print(out)
    check("conv_5x5_example", out)
    course("conv_5x5_example", [[4, 3, 4], [2, 4, 3], [2, 3, 4]], out)
    edge = conv2d_numpy(
        image, np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], float), padding=1
    )
    check("edge_padding1_shape", list(edge.shape))
    from cnnlab.inspect.viz import plot_kernels

    path = plot_kernels(image, ["edge", "identity"], out_dir / "ch000_edge.png")
    print(f"wrote {path}")

    section("Output size formula")
    for key, args, theirs in [
        ("224_k3_s1_p1", (224, 3, 1, 1), 224),
        ("224_k3_s2_p1", (224, 3, 2, 1), 112),
        ("224_k7_s2_p3", (224, 7, 2, 3), 112),
    ]:
        ours = output_size(*args)
        check(f"out_size_{key}", ours)
        course(f"out_size_{key}", theirs, ours)
    alex = output_size(224, 11, 4, 2)
    check("out_size_alexnet_conv1", alex)
    note(
        "the course labels the 7x7/stride-2/pad-3 layer 'AlexNet's first layer'; that is the stem of "
        f"ResNet and GoogLeNet. AlexNet starts with 11x11/stride 4 (224 -> {alex} with padding 2)"
    )
    p = conv_params(3, 64, 3)
    check("conv_3_64_3_params", p)
    course("conv_3_64_3_params", 1792, p)

    section("Pooling: max, average, global average, adaptive")
    x = torch.randn(1, 64, 28, 28)
    shapes = {
        "max": list(nn.MaxPool2d(2, 2)(x).shape),
        "avg": list(nn.AvgPool2d(2, 2)(x).shape),
        "gap": list(nn.AdaptiveAvgPool2d(1)(x).flatten(1).shape),
        "adaptive7": list(nn.AdaptiveAvgPool2d((7, 7))(x).shape),
    }
    for k, v in shapes.items():
        check(f"pool_{k}", v)
    check("pool_out_size", output_size(28, 2, 2))


def receptive_and_savings() -> None:
    section("Receptive field with (kernel, stride, dilation): the VGG-style 6-layer stack")
    steps = receptive_field_layers(
        [(3, 1, 1), (3, 1, 1), (2, 2, 1), (3, 1, 1), (3, 1, 1), (2, 2, 1)]
    )
    check("rf_vgg6", steps[-1].rf)
    course("rf_vgg6", 16, steps[-1].rf)
    dil = receptive_field_layers([(3, 1, 1), (3, 1, 2), (3, 1, 4)])
    check("rf_dilated_1_2_4", [s.rf for s in dil])

    section("Stacked 3x3 convolutions vs one large kernel")
    c = compare_5x5_vs_two_3x3(64)
    print(c)
    check("saving_two_3x3_vs_5x5", round(c.saving, 4))
    course("saving_two_3x3_vs_5x5", "28%", f"{c.saving:.0%}")
    seven = conv_params(64, 64, 7, bias=False)
    three = 3 * conv_params(64, 64, 3, bias=False)
    check("saving_three_3x3_vs_7x7", round(1 - three / seven, 4))
    course("saving_three_3x3_vs_7x7", "45%", f"{1 - three / seven:.0%}")
    check("rf_three_3x3", receptive_field_layers([(3, 1)] * 3)[-1].rf)


def classic_models(fast: bool) -> None:
    section("LeNet-5 (1998)")
    model = get_model("lenet5", num_classes=10)
    out = model(torch.randn(4, 1, 32, 32))
    check("lenet5_output", list(out.shape))
    check("lenet5_params", n_params(model))
    course("lenet5_params", "~60,000", f"{n_params(model):,}", "OK (course rounds)")

    section("AlexNet (2012), with and without local response normalisation")
    for name in ("alexnet", "alexnet_lrn"):
        info = model_info(name, macs=False)
        check(f"{name}_params", info.params)
    course(
        "alexnet_params",
        "~61M",
        f"{model_info('alexnet', macs=False).params:,}",
        "OK (course rounds)",
    )
    note(
        "LRN has no parameters; alexnet_lrn is the original two-tower layout (grouped conv2/4/5 "
        "differ), hence its different count"
    )

    section("VGG16/19 (2014), with and without batch norm")
    for name in ("vgg16", "vgg19", "vgg16_bn", "vgg19_bn"):
        check(f"{name}_params", model_info(name, macs=False).params)
    course(
        "vgg16_params", "~138M", f"{model_info('vgg16', macs=False).params:,}", "OK (course rounds)"
    )

    section("Inception block (GoogLeNet 3a: 192 -> 64 + 128 + 32 + 32)")
    comp = compare_inception_naive_vs_reduced()
    print(comp)
    check("inception_3a_reduced_params", comp.b_params)
    check("inception_3a_naive_params", comp.a_params)
    g = get_model("googlenet", num_classes=10)
    g.eval()
    size = 96 if fast else 224
    with torch.no_grad():
        feats = _inception_3a_output(g, torch.randn(2, 3, size, size))
    if feats is not None:
        check("inception_3a_channels", feats.shape[1])
        course("inception_3a_channels", 256, feats.shape[1])

    section("ResNet-18 / ResNet-50 (2015)")
    for name, theirs in (("resnet18", 11_689_512), ("resnet50", 25_557_032)):
        params = model_info(name, macs=False).params
        check(f"{name}_params", params)
        course(f"{name}_params", theirs, params)
    m = get_model("resnet18", num_classes=1000)
    m.eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, size, size))
    check("resnet18_output", list(y.shape))

    section("DenseNet-121 (2017)")
    check("densenet121_params", model_info("densenet121", macs=False).params)


def efficient_models(fast: bool) -> None:
    section("MobileNet: depthwise-separable convolution, 512 -> 512, 3x3")
    c = compare_standard_vs_separable(512, 512, 3)
    print(c)
    check("dwsep_512_standard", c.a_params)
    check("dwsep_512_separable", c.b_params)
    course("dwsep_512_standard", 2_359_296, c.a_params)
    course("dwsep_512_separable", 3 * 3 * 512 + 512 * 512, c.b_params)
    check("dwsep_512_saving", round(c.saving, 4))

    section("EfficientNet B0-B7 compound scaling (width, depth, resolution, dropout)")
    from cnnlab.models.efficientnet import EFFICIENTNET_PARAMS

    course_table = {
        "b0": (1.0, 1.0, 224, 0.2),
        "b1": (1.0, 1.1, 240, 0.2),
        "b2": (1.1, 1.2, 260, 0.3),
        "b3": (1.2, 1.4, 300, 0.3),
        "b4": (1.4, 1.8, 380, 0.4),
        "b5": (1.6, 2.2, 456, 0.4),
        "b6": (1.8, 2.6, 528, 0.5),
        "b7": (2.0, 3.1, 600, 0.5),
    }
    rows = {}
    for v, theirs in course_table.items():
        p = EFFICIENTNET_PARAMS[v]
        ours = (p.width, p.depth, p.resolution, p.dropout)
        info = model_info(f"efficientnet_{v}", macs=False)
        rows[v] = info.params
        print(
            f"B{v[1]}: width={p.width:.1f} depth={p.depth:.1f} res={p.resolution} drop={p.dropout} params={info.params:,} input={info.input_size}"
        )
        course(f"efficientnet_{v}_scaling", list(theirs), list(ours))
    check("efficientnet_params", rows)

    section("ConvNeXt-T (2022)")
    check("convnext_tiny_params", model_info("convnext_tiny", macs=False).params)


def transformer_detector_unet(fast: bool) -> None:
    section("ViT: the course stops after the patch embedding; cnnlab's ViT is complete")
    info = model_info("vit_b_16", macs=False)
    check("vit_b_16_params", info.params)
    course(
        "vit_b_16_params",
        "no encoder (patch embedding + norm + head only)",
        f"{info.params:,}",
        "WRONG IN COURSE",
    )
    note(
        "the course's VisionTransformer defines depth=12 and num_heads=12 but never builds a transformer encoder; the model is a linear classifier on patch embeddings"
    )
    vit = get_model("vit_tiny", num_classes=10)
    n_blocks = sum(
        1
        for m in vit.modules()
        if isinstance(m, nn.MultiheadAttention) or type(m).__name__.lower().endswith("block")
    )
    check("vit_tiny_has_encoder_blocks", n_blocks > 0)
    y = vit(torch.randn(2, 3, 32, 32))
    check("vit_tiny_output", list(y.shape))
    y.sum().backward()  # trainable end to end
    check(
        "vit_tiny_trainable", all(p.grad is not None for p in vit.parameters() if p.requires_grad)
    )

    section("YOLO head: (x, y, w, h, objectness, classes) per anchor and cell")
    yolo = get_model("yolo_tiny", num_classes=20)
    yolo.eval()
    with torch.no_grad():
        out = yolo(torch.randn(1, 3, 128 if fast else 416, 128 if fast else 416))
    shape = list(out.shape) if isinstance(out, torch.Tensor) else [list(o.shape) for o in out]
    print(f"yolo_tiny output: {shape}")
    check("yolo_last_dim", (out if isinstance(out, torch.Tensor) else out[0]).shape[-1])

    section("U-Net: the course builds only the encoder; cnnlab's has the decoder and skips")
    unet = get_model("unet", num_classes=2, in_chans=1)
    x = torch.randn(1, 1, 64, 64) if fast else torch.randn(1, 1, 256, 256)
    y = unet(x)
    check("unet_output", list(y.shape))
    check("unet_params", n_params(unet))
    course("unet_output", "encoder only: no output map", list(y.shape), "WRONG IN COURSE")


# What a short run reliably reaches (measured on 1 CPU core, fixed seeds; the fast run trains each
# model for ~25 s): an untrained detector scores mAP50 ~0.0005 and predicting background everywhere
# gives mIoU ~0.08 and a digit-vs-background IoU of 0, so these bars can only be passed by learning.
FAST_BARS = {"yolo_tiny_map50": 0.015, "unet_miou": 0.1, "unet_foreground_iou": 0.5}


def foreground_iou(confusion: torch.Tensor) -> float:
    """IoU of "some digit" against background (class 0), whatever digit: from the confusion matrix."""
    fg_true, fg_pred = confusion[1:].sum(), confusion[:, 1:].sum()
    inter = confusion[1:, 1:].sum()
    return float(inter / (fg_true + fg_pred - inter).clamp_min(1))


def train_detector_and_unet(fast: bool, out_dir) -> None:
    """The course builds the YOLO head and U-Net; here both learn from labelled scenes."""
    section("Training them: yolo_tiny and U-Net on digits-scenes (boxes and masks from the pixels)")
    det_size, seg_size = (128, 64) if fast else (128, 128)
    amount = {"num_test": 64} if fast else {}
    det_splits = load_dataset(
        "digits-scenes", image_size=det_size, **({"num_train": 256} if fast else {}), **amount
    )
    seg_splits = load_dataset(
        "digits-scenes", image_size=seg_size, **({"num_train": 512} if fast else {}), **amount
    )
    n_boxes = sum(len(b) for b in det_splits.train.boxes)
    note(
        f"{len(det_splits.train)} train canvases with {n_boxes} digits; "
        f"{len(det_splits.test)} test canvases"
    )
    common = dict(
        batch_size=16 if fast else 32,
        device="cpu",
        out_dir=str(out_dir),
        progress=not fast,
        report=False,
        amp="off",
        seed=0,
    )
    det = fit(
        TrainConfig(
            model="yolo_tiny", task="detection", model_kwargs={"width": 4 if fast else 8}, epochs=8 if fast else 12,
            monitor="test_map", optim=OptimConfig(name="adamw", lr=3e-3, weight_decay=1e-4),
            data=DataConfig(name="digits-scenes", image_size=det_size, augment="flip,scale:0.8:1.2"),
            name="ch000-yolo_tiny", **common,
        ),
        splits=det_splits,
    ).metrics  # fmt: skip
    check("yolo_tiny_trained", round(det["test_map50"], 4))
    note(
        f"yolo_tiny: COCO mAP {det['test_map']:.3f}, mAP50 {det['test_map50']:.3f}, AR@100 "
        f"{det['test_ar100']:.3f} (pycocotools); a short run's bar: mAP50 >= "
        f"{FAST_BARS['yolo_tiny_map50']} (untrained ~0.0005)"
    )
    run = fit(
        TrainConfig(
            model="unet", task="segmentation",
            model_kwargs={"base_channels": 8 if fast else 16, "depth": 2 if fast else 3},
            epochs=5 if fast else 12, monitor="test_miou",
            optim=OptimConfig(name="adamw", lr=1e-2 if fast else 3e-3, weight_decay=1e-4),
            data=DataConfig(name="digits-scenes", image_size=seg_size, augment="flip,scale:0.8:1.2"),
            name="ch000-unet", **common,
        ),
        splits=seg_splits,
    )  # fmt: skip
    seg = run.metrics
    ev = evaluate_dense_run(run.run_dir, dataset=seg_splits.test, write=False)
    fg = foreground_iou(ev.details.confusion)
    check("unet_trained", round(seg["test_miou"], 4))
    check("unet_foreground_iou", round(fg, 4))
    note(
        f"U-Net: mIoU {seg['test_miou']:.3f} over background + 10 digits, pixel accuracy "
        f"{seg['test_pixel_acc']:.3f}, digit-vs-background IoU {fg:.3f}; a short run's bars: "
        f"mIoU >= {FAST_BARS['unet_miou']} (all background: ~0.08), digit-vs-background IoU >= "
        f"{FAST_BARS['unet_foreground_iou']}"
    )
    course("unet_trains", "never trained (no data, no loss)", f"mIoU {seg['test_miou']:.3f}")


def transfer_learning() -> None:
    section("Transfer learning: freeze the backbone, replace the head (resnet50, 10 classes)")
    note(
        "no weights are downloaded: pass a local file with get_model(name, pretrained=PATH) or `cnnlab train --pretrained PATH`"
    )
    model = get_model("resnet50", num_classes=10)
    for p in model.parameters():
        p.requires_grad = False
    in_features = model.get_classifier().in_features
    model.fc = nn.Sequential(
        nn.Dropout(0.5), nn.Linear(in_features, 256), nn.ReLU(), nn.Linear(256, 10)
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = n_params(model)
    print(f"trainable: {trainable:,} / {total:,} ({trainable / total:.1%})")
    check("transfer_resnet50_trainable", trainable)
    check("transfer_resnet50_total", total)


def comparison_table(fast: bool) -> None:
    section("Accuracy / parameters / FLOPs table (parameters and MACs computed, accuracy quoted)")
    rows = [
        ("lenet5", "60K", "-"),
        ("alexnet", "61M", "724M"),
        ("vgg16", "138M", "15.5G"),
        ("googlenet", "6.8M", "1.5G"),
        ("resnet50", "25M", "4.1G"),
        ("densenet121", "8M", "2.9G"),
        ("mobilenet_v2", "3.4M", "300M"),
        ("efficientnet_b0", "5.3M", "390M"),
        ("convnext_tiny", "28M", "4.5G"),
        ("vit_b_16", "86M", "17.6G"),
    ]
    params = {}
    for name, p_course, f_course in rows:
        info = model_info(name, macs=not fast)
        params[name] = info.params
        if info.macs is None:
            macs = "-"
        else:
            macs = f"{info.macs / 1e9:.2f}G" if info.macs >= 1e8 else f"{info.macs / 1e6:.2f}M"
        if info.macs is not None:
            check(f"macs_{name}", info.macs)
        print(
            f"{name:16s} params {info.params:>12,} (course {p_course:>5s})  MACs {macs:>7s} (course FLOPs {f_course})"
        )
    check("table_params", params)
    note("the course's 'FLOPs' column counts multiply-accumulates (MACs), as most papers do")
    note(
        "googlenet's count includes its two auxiliary classifiers (training-only); the course's 6.8M is without them"
    )


def _inception_3a_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The output of GoogLeNet's first Inception block, captured with a forward hook."""
    target = next((m for n, m in model.named_modules() if n.endswith("3a")), None)
    if target is None:
        return None
    seen: list[torch.Tensor] = []
    handle = target.register_forward_hook(lambda _m, _i, o: seen.append(o))
    model(x)
    handle.remove()
    return seen[0] if seen else None


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.manual_seed(0)
    basics(args.out)
    receptive_and_savings()
    classic_models(args.fast)
    efficient_models(args.fast)
    transformer_detector_unet(args.fast)
    train_detector_and_unet(args.fast, args.out)
    transfer_learning()
    comparison_table(args.fast)


if __name__ == "__main__":
    main()
