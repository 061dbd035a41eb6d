"""Deployment benchmark: batch-1 latency at 224x224 (2 threads) and int8 agreement on Fashion-MNIST.

For resnet18, mobilenet_v2 and efficientnet_b0 it times, interleaved (A, B, C… repeated) with
medians so CPU contention hits every variant alike:
  torchvision eager · plain ONNX Runtime export (torch.onnx.export defaults, ORT defaults) ·
  cnnlab's backends (eager, channels_last, jit-frozen, ONNX Runtime) · int8 U8S8 and S8S8.
Then a small Fashion-MNIST model (trained here, or ``--run``) is exported with ``--int8`` to report
the test-set accuracy drop, the top-1 agreement, and the course's budgets (>90 %, <100 ms, <100 MB).

    .venv/bin/python benchmarks/deploy.py [--run runs/fmnist] [--rounds 7]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, write_section  # noqa: E402

from cnnlab.deploy.backends import OnnxBackend, TorchBackend, onnx_bytes, time_backend  # noqa: E402
from cnnlab.deploy.quantize import CANDIDATES, quantize_onnx  # noqa: E402
from cnnlab.models import get_model  # noqa: E402

MODELS = ("resnet18", "mobilenet_v2", "efficientnet_b0")


def plain_ort(model: torch.nn.Module, x: torch.Tensor):
    """What a user gets from torch.onnx.export + a default InferenceSession."""
    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    s = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda t: s.run(None, {name: t.numpy()})[0]


def latency_table(rounds: int) -> tuple[str, list[str]]:
    lines = [
        "| model | torchvision eager | plain ORT fp32 | cnnlab eager | channels_last | jit | "
        "cnnlab ORT | int8 U8S8 | int8 S8S8 | cnnlab best fp32 | best / tv eager | best / plain ORT | int8 / plain ORT |",
        "|---|" + "---:|" * 12,
    ]
    notes = []
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    calib = torch.randn(16, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    for name in MODELS:
        tv = getattr(torchvision.models, name)(weights=None).eval()
        ours = get_model(name, num_classes=1000).eval()
        data = onnx_bytes(ours, (3, 224, 224))
        variants = {
            "tv": lambda t, m=tv: m(t),
            "plain_ort": plain_ort(tv, x),
            "torch": TorchBackend(ours),
            "channels_last": TorchBackend(ours, "channels_last"),
            "jit": TorchBackend(ours, "jit", example=x),
            "onnx": OnnxBackend(data),
        }
        for c in (CANDIDATES[0], CANDIDATES[2]):
            variants[c.name] = OnnxBackend(quantize_onnx(data, calib, config=c), c.name)
        times = {k: [] for k in variants}
        with torch.inference_mode():
            for fn in variants.values():
                fn(x)
                fn(x)
            for _ in range(rounds):
                for k, fn in variants.items():
                    times[k] += time_backend(fn, x, warmup=0, iters=3)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        best_k = min(("torch", "channels_last", "jit", "onnx"), key=med.get)
        best = med[best_k]
        int8 = min(med["U8S8-per-channel"], med["S8S8-per-channel"])
        lines.append(
            f"| {name} | {med['tv']:.1f} | {med['plain_ort']:.1f} | {med['torch']:.1f} | "
            f"{med['channels_last']:.1f} | {med['jit']:.1f} | {med['onnx']:.1f} | "
            f"{med['U8S8-per-channel']:.1f} | {med['S8S8-per-channel']:.1f} | {best:.1f} ({best_k}) | "
            f"{best / med['tv']:.2f}× | {best / med['plain_ort']:.2f}× | {int8 / med['plain_ort']:.2f}× |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines), notes


def fmnist_int8(run: str | None, epochs: int | None) -> str:
    from dataclasses import replace

    from cnnlab.deploy.export import export_run
    from cnnlab.train import fit, load_recipe

    if run is None:
        out = tempfile.mkdtemp(prefix="cnnlab-bench-")
        cfg = load_recipe("fmnist-fast")  # the shipped recipe: fastnet, ~91.8 % after 4 epochs
        cfg = replace(
            cfg,
            epochs=epochs or cfg.epochs,
            out_dir=out,
            name="fastnet-fmnist",
            progress=False,
            report=False,
        )
        t0 = time.time()
        res = fit(cfg)
        epochs = cfg.epochs
        run = str(res.run_dir)
        trained = (
            f"fastnet trained here with `--recipe fmnist-fast --epochs {epochs}` "
            f"({time.time() - t0:.0f} s)"
        )
    else:
        trained = f"run {run}"
    rep = export_run(run, "onnx", Path(run) / "model.onnx", int8=True)
    q = rep.int8
    fp32, int8 = rep.rows[0], rep.rows[1]
    lines = [
        f"Fashion-MNIST int8 ({trained}; calibrated on {q['calibration_images']} training images; "
        f"{q['test_images']} test images):",
        "",
        "| recipe | batch-1 ms | test acc % | drop (points) | top-1 agreement with fp32 % |",
        "|---|---:|---:|---:|---:|",
        f"| fp32 (ORT) | {q['fp32_ms']:.3f} | {q['fp32_acc']:.2f} | – | 100 |",
    ]
    for name, c in q["candidates"].items():
        lines.append(
            f"| {name}{' (chosen)' if name == q['config'] else ''} | {c['latency_ms']:.3f} | "
            f"{c['int8_acc']:.2f} | {c['accuracy_drop']:.2f} | {c['agreement']:.2f} |"
        )
    ok = q["fp32_acc"] > 90 and fp32["latency_ms"] < 100 and fp32["size_mb"] < 100
    lines += [
        "",
        f"Course budgets for this model: test accuracy {q['fp32_acc']:.2f} % (> 90 %), "
        f"{fp32['latency_ms']:.2f} ms per image fp32 / {int8['latency_ms']:.2f} ms int8 (< 100 ms), "
        f"{fp32['size_mb']:.2f} MB fp32 / {int8['size_mb']:.2f} MB int8 (< 100 MB): "
        f"{'met' if ok else 'NOT met'}. Export parity: max |diff| {fp32['max_abs_diff']:.1e}, "
        f"top-1 agreement {fp32['top1_agreement']:.0%}.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", help="a Fashion-MNIST run directory (default: train fastnet here)")
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cmd = "python benchmarks/deploy.py " + " ".join(sys.argv[1:])
    parts = [
        "## Deployment (`benchmarks/deploy.py`)",
        "",
        f"Reproduce: `{cmd.strip()}` · {machine_line()}",
        "",
        "Every variant is timed interleaved "
        f"({args.rounds} rounds × 3 calls each, A,B,C… order) and the tables show medians, so "
        "any contention on the shared CPU (load average above) hits each alike; compare ratios, "
        "not absolute milliseconds.",
        "",
    ]
    if not args.skip_latency:
        table, _ = latency_table(args.rounds)
        parts += [
            "Batch-1 latency at 224×224, 2 threads, ms (random weights; 1000 classes):",
            "",
            table,
            "",
        ]
    parts.append(fmnist_int8(args.run, args.epochs))
    text = "\n".join(parts)
    print(text)
    write_section("deploy", text)


if __name__ == "__main__":
    main()
