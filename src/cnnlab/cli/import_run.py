"""`cnnlab import`: make a run directory from timm / Hugging Face / torchvision weights, offline."""

from __future__ import annotations

import argparse

NAME = "import"
HELP = (
    "make a run directory from a timm folder, a Hugging Face folder or a weights file "
    "(offline), ready for eval / predict / export / serve / --pretrained"
)
EXAMPLE = "cnnlab import ~/hub/convnext_tiny.fb_in1k --out runs/convnext-timm"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "path",
        help="timm folder (config.json + model.safetensors), Hugging Face folder "
        "(config.json, preprocessor_config.json, model.safetensors) or a .safetensors/.pth file",
    )
    p.add_argument("--out", required=True, help="run directory to create, e.g. runs/NAME")
    p.add_argument(
        "--arch",
        help="architecture of a bare weights file: a cnnlab model or a timm name (resnet50, "
        "mobilenetv3_large_100, …)",
    )


def run(args: argparse.Namespace) -> int:
    from cnnlab.deploy.interop import import_foreign

    res = import_foreign(args.path, args.out, arch=args.arch)
    for line in res.report.lines():
        print(line)
    cfg = res.config
    pre = cfg["preprocessing"]
    print(
        f"preprocessing: input {tuple(cfg['input_size'])}, mean {tuple(cfg['mean'])}, "
        f"std {tuple(cfg['std'])}, {pre['interpolation']}, crop_pct {pre['crop_pct']:g} "
        f"({pre['crop_mode']})"
    )
    print(f"{len(cfg['classes'])} classes; wrote {res.run_dir}")
    return 0
