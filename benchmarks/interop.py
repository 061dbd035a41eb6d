"""Issue 18 benchmark: imported models in cnnlab against the same model in timm / transformers.

For every architecture ``cnnlab import`` supports, the foreign model is built with random weights
(nothing is downloaded), saved the way its library saves it, imported through ``import_foreign``
(the path users take) and rebuilt from the run directory, so both sides hold the same weights. Then,
in one run and interleaved (foreign, cnnlab, rotated each repetition, medians compared, so contention
on a shared CPU hits both alike):

- batch-1 and batch-32 inference latency: eval mode, ``torch.inference_mode``;
- training-step throughput: forward + cross-entropy + backward + SGD(momentum 0.9), batch 32.

cnnlab runs *as configured* (channels-last where ``default_cfg.extra["channels_last"]`` is set);
the foreign model runs as its library builds it (NCHW).

Run:  .venv/bin/python benchmarks/interop.py [--reps 3] [--size 224] [--only resnet18 hf:vit ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _report import machine_line, write_section  # noqa: E402

from cnnlab.deploy.interop import import_foreign  # noqa: E402
from cnnlab.layers.memory_format import prepare_model  # noqa: E402
from cnnlab.run import load_model_from_run  # noqa: E402

TIMM = ["resnet18", "resnet34", "resnet50", "mobilenetv2_100", "mobilenetv3_large_100",
        "efficientnet_b0", "convnext_tiny", "vit_base_patch16_224"]  # fmt: skip
HF = ["hf:resnet", "hf:convnext", "hf:vit", "hf:mobilenet_v2", "hf:efficientnet"]


def hf_model(kind: str) -> nn.Module:
    """Hugging Face classifiers of the zoo's sizes (resnet-18, convnext-tiny, ViT-B/16, B0)."""
    import transformers as T  # optional: the interop extra

    cfg, cls = {
        "resnet": (T.ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2],
                                  hidden_sizes=[64, 128, 256, 512]), T.ResNetForImageClassification),
        "convnext": (T.ConvNextConfig(), T.ConvNextForImageClassification),
        "vit": (T.ViTConfig(), T.ViTForImageClassification),
        "mobilenet_v2": (T.MobileNetV2Config(tf_padding=False), T.MobileNetV2ForImageClassification),
        "efficientnet": (T.EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0,
                                              image_size=224, hidden_dim=1280),
                         T.EfficientNetForImageClassification),
    }[kind]  # fmt: skip
    cfg.num_labels = 1000
    return cls(cfg)


class Logits(nn.Module):
    """transformers returns an output object; the benchmark wants the tensor (as timm gives)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def build_pair(name: str, tmp: Path) -> tuple[nn.Module, nn.Module, str]:
    """(foreign model, cnnlab model imported from it, cnnlab's name) with the same weights."""
    torch.manual_seed(0)
    if name.startswith("hf:"):
        theirs = hf_model(name[3:])
        folder = tmp / name.replace(":", "-")
        theirs.save_pretrained(str(folder))
        theirs = Logits(theirs)
    else:
        import timm  # optional: the interop extra
        from timm.models import save_for_hf

        theirs = timm.create_model(name, pretrained=False)
        folder = tmp / name
        save_for_hf(theirs, str(folder), safe_serialization=True)
    run = import_foreign(folder, tmp / "runs" / folder.name).run_dir
    ours, cfg = load_model_from_run(run)
    return theirs.eval(), prepare_model(ours), cfg["model"]["name"]


def time_train(model: nn.Module, opt, x, y, iters: int) -> float:
    model.train()
    t0 = time.perf_counter()
    for _ in range(iters):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - t0) / iters


def time_infer(model: nn.Module, x, iters: int) -> float:
    model.eval()
    with torch.inference_mode():
        t0 = time.perf_counter()
        for _ in range(iters):
            model(x)
        return (time.perf_counter() - t0) / iters


def interleaved(fns: dict, reps: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    for r in range(reps):
        k = r % len(order)
        for v in order[k:] + order[:k]:
            times[v].append(fns[v]())
    return {k: statistics.median(t) for k, t in times.items()}


def bench(name: str, args, tmp: Path) -> dict:
    theirs, ours, zoo = build_pair(name, tmp)
    models = {"foreign": theirs, "cnnlab": ours}
    # ViT-B/16's position embedding is made for 224 px in both libraries: its rows stay at 224.
    s, b = (224 if zoo.startswith("vit") else args.size), args.batch
    x1, xb = torch.randn(1, 3, s, s), torch.randn(b, 3, s, s)
    y = torch.randint(0, 1000, (b,))
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()}
    for k, m in models.items():  # warm-up: oneDNN primitives, allocator
        time_infer(m, x1, 2)
        time_infer(m, xb, 1)
        time_train(m, opts[k], xb, y, 1)
    b1 = interleaved(
        {k: (lambda m=m: time_infer(m, x1, args.iters)) for k, m in models.items()}, args.reps
    )
    bb = interleaved({k: (lambda m=m: time_infer(m, xb, 1)) for k, m in models.items()}, args.reps)
    tr = interleaved(
        {k: (lambda k=k, m=m: time_train(m, opts[k], xb, y, 1)) for k, m in models.items()},
        args.reps,
    )
    return {"name": name, "zoo": zoo, "size": s, "b1": b1, "bb": bb, "train": tr}


def render(rows: list[dict], args, command: str, skipped: list[str] = ()) -> str:
    lines = [
        "## Interop: imported timm / Hugging Face models, cnnlab vs the source library (issue 18)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_line()}",
        "",
        "Each foreign model (random weights, as its library builds it) is saved, imported with "
        "`cnnlab import`'s code path and rebuilt from the run, so both sides hold the same weights. "
        f"{args.size} px (ViT-B/16: 224 px, its position grid); inference in eval mode under `torch.inference_mode`; training step = "
        f"forward + cross-entropy + backward + SGD(momentum 0.9), batch {args.batch}. cnnlab runs as "
        "configured (NHWC where `default_cfg` says so), the foreign model as its library builds it. "
        f"Medians of {args.reps} interleaved repetitions on a CPU shared with other work (see the "
        "load average): modest repetitions, so ratios within ~±10 % are noise. Ratio = cnnlab speed "
        "/ foreign speed (> 1: cnnlab faster; goal ≥ 1.0).",
        "",
        "| source | cnnlab model | px | b1 ms foreign | b1 ms cnnlab | **b1 ratio** | "
        f"b{args.batch} ms foreign | b{args.batch} ms cnnlab | **b{args.batch} ratio** | "
        "train img/s foreign | train img/s cnnlab | **train ratio** |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b1, bb, tr = r["b1"], r["bb"], r["train"]
        src = (
            r["name"].replace("hf:", "transformers ")
            if r["name"].startswith("hf:")
            else f"timm {r['name']}"
        )
        lines.append(
            f"| {src} | {r['zoo']} | {r['size']} | {b1['foreign'] * 1e3:.1f} | {b1['cnnlab'] * 1e3:.1f} | "
            f"**{b1['foreign'] / b1['cnnlab']:.2f}** | {bb['foreign'] * 1e3:.0f} | "
            f"{bb['cnnlab'] * 1e3:.0f} | **{bb['foreign'] / bb['cnnlab']:.2f}** | "
            f"{args.batch / tr['foreign']:.1f} | {args.batch / tr['cnnlab']:.1f} | "
            f"**{tr['foreign'] / tr['cnnlab']:.2f}** |"
        )
    if skipped:
        lines += [
            "",
            f"Not measured in this run: {', '.join(skipped)}. On a 2-core CPU shared with other "
            "work one ViT-B/16 batch-32 training step at 224 px takes minutes; run "
            "`python benchmarks/interop.py --only vit_base_patch16_224 hf:vit` on a quieter machine.",
        ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--iters", type=int, default=5, help="batch-1 forwards per repetition")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--only", nargs="*", help="subset, e.g. resnet18 hf:vit")
    p.add_argument("--no-write", action="store_true", help="print, do not update BENCHMARKS.md")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.only or TIMM + HF
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            t0 = time.perf_counter()
            rows.append(bench(name, args, Path(d)))
            print(
                render(rows[-1:], args, "").splitlines()[-1],
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    command = "python benchmarks/interop.py " + " ".join(sys.argv[1:])
    md = render(rows, args, command.strip(), [n for n in TIMM + HF if n not in names])
    print(md)
    if not args.no_write:
        write_section("interop", md)


if __name__ == "__main__":
    main()
