"""Runs in and out of the two hubs everyone uses: timm and Hugging Face ``transformers``, offline.

* :func:`import_foreign` turns a timm folder/file, a Hugging Face image-classification folder, a
  torchvision state dict or a bare safetensors file (with ``arch``) into a cnnlab run directory:
  ``model.safetensors`` + a ``config.json`` shaped like a trained run's, with the source's labels and
  preprocessing, so eval / predict / export / serve / ``--pretrained`` take it like any run.
* :func:`export_timm` / :func:`export_hf` write a folder that the other library loads with none of
  cnnlab's code (``timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": …})``,
  ``AutoModelForImageClassification.from_pretrained(folder)``), with labels and preprocessing, and
  prove it: the folder is loaded back through that library and its logits compared with cnnlab's.

Reading needs only safetensors and torch (:mod:`cnnlab.models.foreign`); timm and transformers are
imported inside the export functions only, because ``import cnnlab`` must work without the
``interop`` extra.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from cnnlab.errors import ConfigError, RunError
from cnnlab.models import get_model, list_models
from cnnlab.models.foreign import (
    ForeignReport,
    Preprocessing,
    convert,
    foreign_state,
    from_run_config,
    hf_config_for,
    read_foreign,
    supported_timm,
    timm_arch_for,
)
from cnnlab.models.foreign.specs import hf_target, timm_target
from cnnlab.run import CONFIG_FILE, MODEL_FILE, load_model_from_run, save_json, save_weights

DEFAULT_ATOL = 1e-4
INTEROP_HINT = "pip install -e '.[interop]'"


@dataclass
class ImportResult:
    """The run directory written by :func:`import_foreign` and the key report."""

    run_dir: Path
    report: ForeignReport
    config: dict[str, Any]


@dataclass
class InteropExport:
    """A folder written for timm or Hugging Face, with the parity check's figure."""

    folder: Path
    library: str
    architecture: str
    max_abs_diff: float
    load_snippet: str
    files: list[str] = field(default_factory=list)


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional package, or a one-line :class:`ConfigError` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{purpose} needs the '{module}' package: {INTEROP_HINT}") from None


def _run_config(ckpt, model: nn.Module, pre: Preprocessing, report: ForeignReport) -> dict:
    # The shape of train.loop.run_config_dict, so every reader of runs takes an imported one.
    from cnnlab import __version__

    num_classes = int(model.num_classes)  # type: ignore[arg-type]
    classes = ckpt.labels or [str(i) for i in range(num_classes)]
    return {
        "cnnlab_version": __version__,
        "model": {"name": ckpt.target.name, "kwargs": dict(ckpt.target.kwargs)},
        "classes": list(classes),
        "input_size": list(pre.input_size),
        "mean": list(pre.mean),
        "std": list(pre.std),
        "preprocessing": pre.run_config_part(),
        "dataset": {"name": f"imported-{ckpt.flavour}", "train_size": 0, "class_counts": {}},
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "train_config": {},
        "metrics": {},
        "source": {
            "flavour": ckpt.flavour,
            "path": str(ckpt.path),
            "architecture": ckpt.architecture,
            "container": ckpt.container,
            "copied": len(report.copied),
            "adapted": report.adapted,
            "ignored": report.ignored,
            "notes": report.notes,
        },
    }


def import_foreign(path: str | Path, out_dir: str | Path, arch: str | None = None) -> ImportResult:
    """Make the run directory ``out_dir`` from the foreign weights at ``path``.

    Example::

        res = import_foreign("hub/resnet50.a1_in1k", "runs/resnet50-timm")
        print(res.report)  # timm resnet50 -> cnnlab resnet50: copied 320, adapted 0, ...
    """
    out = Path(out_dir)
    if (out / CONFIG_FILE).exists() or (out / MODEL_FILE).exists():
        raise RunError(f"{out} already holds a run; choose another --out")
    ckpt = read_foreign(path, arch)
    if ckpt.target.name not in list_models():
        raise RunError(
            f"unknown architecture '{ckpt.target.name}': neither a cnnlab model (see `cnnlab "
            f"models`) nor a supported timm architecture ({supported_timm()})"
        )
    model, report = convert(ckpt, get_model(ckpt.target.name, **ckpt.target.kwargs))
    pre = ckpt.preprocessing
    if pre is None:
        cfg = model.default_cfg  # type: ignore[union-attr]
        pre = Preprocessing(tuple(cfg.input_size), tuple(cfg.mean), tuple(cfg.std))
        report.notes.append(
            f"{Path(path).name} carries no preprocessing: recorded {ckpt.target.name}'s defaults "
            f"(input {tuple(cfg.input_size)}, ImageNet mean/std); edit config.json if it was "
            "trained otherwise"
        )
    if len(ckpt.labels or []) not in (0, int(model.num_classes)):  # type: ignore[arg-type]
        raise RunError(f"{path} has {len(ckpt.labels)} labels for {model.num_classes} outputs")
    out.mkdir(parents=True, exist_ok=True)
    config = _run_config(ckpt, model, pre, report)
    save_weights(model, out / MODEL_FILE)
    save_json(out / CONFIG_FILE, config)
    return ImportResult(out, report, config)


# -- export -----------------------------------------------------------------------------------


def _check(name: str, ours: nn.Module, theirs, x: torch.Tensor, atol: float) -> float:
    with torch.inference_mode():
        a = ours(x)
        b = theirs(x)
    b = getattr(b, "logits", b)
    diff = float((a - b).abs().max())
    # atol for logits up to 1 in size, relative beyond: float32 alone moves logits of 20 by ~1e-4.
    limit = atol * max(1.0, float(a.abs().max()))
    if not diff <= limit:
        raise RunError(
            f"{name} does not reproduce cnnlab's logits (max |diff| {diff:.2e} > {limit:.2g})"
        )
    return diff


def _probe(cfg: dict[str, Any]) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, *[int(v) for v in cfg["input_size"]], generator=g)


def _prepare_out(out: str | Path) -> Path:
    folder = Path(out)
    if folder.exists() and any(folder.iterdir()):
        raise RunError(f"{folder} is not empty; choose another output folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def export_timm(run_dir: str | Path, out: str | Path, atol: float = DEFAULT_ATOL) -> InteropExport:
    """Write ``out/`` (``config.json`` + ``model.safetensors``, timm's own ``save_for_hf`` layout)
    for the run's model, loadable by timm alone; raises if timm's logits differ by more than atol.

    Example::

        res = export_timm("runs/resnet18-pets", "export/resnet18-pets")
        print(res.load_snippet)
    """
    # timm only here: the core package must import without the interop extra.
    timm = require("timm", "exporting to timm")
    from timm.models import save_for_hf

    model, cfg = load_model_from_run(run_dir)
    spec = cfg["model"]
    arch = timm_arch_for(spec["name"], spec.get("kwargs", {}))
    c, n = int(model.in_chans), int(model.num_classes)  # type: ignore[arg-type]
    theirs = timm.create_model(arch, pretrained=False, num_classes=n, in_chans=c).eval()
    state = foreign_state("timm", timm_target(arch, n, c), model, theirs.state_dict())
    theirs.load_state_dict(state, strict=True)
    x = _probe(cfg)
    _check(f"timm {arch}", model, theirs, x, atol)
    folder = _prepare_out(out)
    pre = from_run_config(cfg)
    save_for_hf(
        theirs,
        str(folder),
        model_config={"label_names": list(cfg["classes"])},
        safe_serialization=True,
        data_config=pre.to_timm(),
    )
    weights = folder / "model.safetensors"
    # Prove the folder the way a user loads it: timm, a file overlay, nothing from cnnlab.
    reloaded = timm.create_model(
        arch,
        pretrained=True,
        num_classes=n,
        in_chans=c,
        pretrained_cfg_overlay={"file": str(weights), "num_classes": n},
    ).eval()
    diff = _check(f"the timm folder {folder}", model, reloaded, x, atol)
    snippet = (
        f'timm.create_model("{arch}", pretrained=True, num_classes={n}, '
        f'pretrained_cfg_overlay={{"file": "{weights}", "num_classes": {n}}})'
        f'  # or timm.create_model("local-dir:{folder}")'
    )
    return InteropExport(
        folder, "timm", arch, diff, snippet, sorted(p.name for p in folder.iterdir())
    )


def export_hf(run_dir: str | Path, out: str | Path, atol: float = DEFAULT_ATOL) -> InteropExport:
    """Write ``out/`` (``config.json``, ``model.safetensors``, ``preprocessor_config.json``) that
    ``transformers.AutoModelForImageClassification.from_pretrained(out)`` and
    ``AutoImageProcessor.from_pretrained(out)`` load; raises if the logits differ by more than atol.
    """
    # transformers only here: the core package must import without the interop extra.
    transformers = require("transformers", "exporting to Hugging Face")

    model, cfg = load_model_from_run(run_dir)
    spec = cfg["model"]
    model_type, cfg_cls, cfg_args = hf_config_for(spec["name"], spec.get("kwargs", {}), model)
    classes = list(cfg["classes"])
    hf_cfg = getattr(transformers, cfg_cls)(
        **cfg_args,
        id2label=dict(enumerate(classes)),
        label2id={c: i for i, c in enumerate(classes)},
    )
    hf_cfg.architectures = [_HF_CLASSES[model_type]]
    theirs = getattr(transformers, _HF_CLASSES[model_type])(hf_cfg).eval()
    target = hf_target(hf_cfg.to_dict())
    theirs.load_state_dict(foreign_state("hf", target, model, theirs.state_dict()), strict=True)
    x = _probe(cfg)
    _check(f"transformers {_HF_CLASSES[model_type]}", model, theirs, x, atol)
    folder = _prepare_out(out)
    theirs.save_pretrained(str(folder), safe_serialization=True)
    proc_cls, proc_args = from_run_config(cfg).to_hf(model_type)
    getattr(transformers, proc_cls)(**proc_args).save_pretrained(str(folder))
    reloaded = transformers.AutoModelForImageClassification.from_pretrained(str(folder)).eval()
    diff = _check(f"the Hugging Face folder {folder}", model, reloaded, x, atol)
    snippet = (
        f'AutoModelForImageClassification.from_pretrained("{folder}"); '
        f'AutoImageProcessor.from_pretrained("{folder}")'
    )
    return InteropExport(
        folder, "transformers", _HF_CLASSES[model_type], diff, snippet,
        sorted(p.name for p in folder.iterdir()),
    )  # fmt: skip


_HF_CLASSES = {
    "resnet": "ResNetForImageClassification",
    "convnext": "ConvNextForImageClassification",
    "vit": "ViTForImageClassification",
    "mobilenet_v2": "MobileNetV2ForImageClassification",
    "efficientnet": "EfficientNetForImageClassification",
}
