"""Load local weights into a cnnlab model: safetensors, torchvision ``.pth`` files, cnnlab runs,
timm folders and Hugging Face image-classification folders.

:func:`load_pretrained` is what ``get_model(name, pretrained=PATH)`` and ``--pretrained PATH`` call.
Nothing is ever downloaded, and pickles are opened with ``torch.load(weights_only=True)`` so a file
cannot run code. Transfer learning usually changes two things, and both are adapted rather than
refused:

* a different ``num_classes``: the classifier (and any auxiliary classifier) keeps the model's
  freshly initialised weights, reported as re-initialised;
* a different ``in_chans``: the stem convolution's kernels are averaged over the RGB channels for a
  1-channel model (``stem="mean"``, or summed with ``stem="sum"``, which keeps the activation scale
  of a gray image whose three channels would be equal), or repeated cyclically and rescaled by
  ``old/new`` channels for any other count.

A timm or Hugging Face folder is first mapped onto cnnlab's names by :mod:`cnnlab.models.foreign`
(which reads its ``config.json`` to know the architecture), then loaded like any other file; its
BatchNorm ``eps`` is folded into the running variance when the model's differs.

Everything else must match: any other shape mismatch, missing or unexpected key raises a one-line
:class:`~cnnlab.errors.RunError` listing the offending keys (with both shapes for mismatches).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from cnnlab.errors import ConfigError, RunError
from cnnlab.models.foreign import detect_flavour, mapped_state, read_foreign, read_target
from cnnlab.models.foreign.files import read_tensor_file

_MAX_LISTED = 8
# Builder options that make a zoo model compute exactly what a foreign checkpoint computed (TF
# padding, another eps); get_model() fills them from the checkpoint unless the caller chose.
EQUIVALENCE_KWARGS = ("tf_padding", "bn_eps", "norm_eps", "head_norm_eps")

# Key renames for checkpoints saved by older code, applied only when the old key is unknown to the
# model and the new one is known. torchvision's published DenseNet files still use the pre-0.3
# names ``denselayer1.norm.1.weight`` for what is now ``denselayer1.norm1.weight``.
_LEGACY_KEY_FIXES = [
    (
        re.compile(
            r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
        ),
        r"\1\2",
    ),
]


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained` did: keys copied, adapted (stem) and left freshly initialised."""

    source: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    foreign: object | None = None  # the ForeignReport of a timm / Hugging Face source

    def __str__(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        if self.foreign is not None:
            parts[0] += f" ({self.foreign})"
        if self.adapted:
            parts.append(f"adapted {', '.join(self.adapted)} to the input channels")
        if self.reinitialised:
            parts.append(f"re-initialised {', '.join(self.reinitialised)} (new classes)")
        if self.ignored:
            parts.append(f"ignored {len(self.ignored)} tensors of heads this model does not have")
        return "; ".join(parts + self.notes)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file, a ``.pth``/``.pt`` state dict or a cnnlab run directory.

    ``{"state_dict": ...}``, ``{"state_dict_ema": ...}`` and ``{"model": ...}`` wrappers (common
    training-script checkpoints) are unwrapped and ``module.`` / ``_orig_mod.`` prefixes stripped.
    """
    p = Path(path)
    if p.is_dir():
        weights = p / "model.safetensors"
        if not weights.is_file():
            raise RunError(f"{p} is not a cnnlab run directory: it has no model.safetensors")
        p = weights
    if not p.is_file():
        raise RunError(f"pretrained weights not found: {p}")
    return read_tensor_file(p)[0]


def builder_defaults(path: str | Path, name: str) -> dict:
    """Builder options a timm / Hugging Face checkpoint at ``path`` needs to be reproduced exactly
    by zoo model ``name`` (e.g. ``tf_padding=True`` for Hugging Face's EfficientNet); empty for other
    sources or other architectures."""
    target = read_target(path)
    if target is None or target.name != name:
        return {}
    return {k: v for k, v in target.kwargs.items() if k in EQUIVALENCE_KWARGS}


def _foreign_source(
    model: nn.Module, path: str | Path
) -> tuple[dict[str, torch.Tensor], PretrainedReport] | None:
    """A timm / Hugging Face checkpoint mapped onto cnnlab names for ``model``, or None."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    if not (folder / "config.json").is_file() or detect_flavour(p) not in ("timm", "hf"):
        return None
    ckpt = read_foreign(p)
    arch = getattr(model, "cnnlab_arch", {}).get("name")
    if arch is not None and arch != ckpt.target.name:
        raise RunError(
            f"{p} holds {ckpt.flavour} {ckpt.architecture}, which maps onto cnnlab "
            f"{ckpt.target.name}, not {arch}; build {ckpt.target.name} to load it"
        )
    # Mapped straight onto this model: BatchNorm eps differences are folded for its eps, and a
    # new head or stem passes through with its file shape for the adaptation below.
    state, foreign = mapped_state(ckpt, model, strict_shapes=False)
    report = PretrainedReport(source=str(path), foreign=foreign)
    built = getattr(model, "cnnlab_arch", {}).get("kwargs", {})
    differ = [
        f"{k}={v!r}"
        for k, v in ckpt.target.kwargs.items()
        if k in EQUIVALENCE_KWARGS and k != "bn_eps" and built.get(k) != v
    ]
    if differ:
        report.notes.append(
            f"the source computes with {', '.join(differ)}; this model was built without, so its "
            "outputs differ slightly (fine for fine-tuning)"
        )
    return state, report


def _rename_legacy_keys(
    state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key not in target:
            for pattern, repl in _LEGACY_KEY_FIXES:
                new = pattern.sub(repl, key)
                if new != key and new in target:
                    key = new
                    break
        out[key] = value
    return out


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Module paths whose weights depend on ``num_classes`` (main and auxiliary classifiers)."""
    names = [getattr(model, "classifier_name", None), *getattr(model, "aux_classifier_names", ())]
    return tuple(n + "." for n in names if n)


def _aux_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Top-level modules of auxiliary heads: optional on either side (used only in training)."""
    return tuple(n.split(".")[0] + "." for n in getattr(model, "aux_classifier_names", ()))


def _stem_key(model_state: dict[str, torch.Tensor], in_chans: int) -> str | None:
    """The first convolution weight taking the image's channels: the stem to adapt."""
    for k, v in model_state.items():
        if k.endswith("weight") and v.dim() == 4 and v.shape[1] == in_chans:
            return k
    return None


def adapt_stem(
    weight: torch.Tensor, in_chans: int, mode: Literal["mean", "sum"] = "mean"
) -> torch.Tensor:
    """A stem kernel ``(O, C, kh, kw)`` converted to ``in_chans`` input channels.

    One channel: the mean (or sum) over the C channels. Other counts: channels repeated cyclically
    and rescaled by ``C / in_chans``, which keeps the summed kernel weight (the response to a
    constant image) the same in expectation.
    """
    c = weight.shape[1]
    if in_chans == 1:
        return weight.mean(1, keepdim=True) if mode == "mean" else weight.sum(1, keepdim=True)
    idx = torch.arange(in_chans) % c
    return weight[:, idx] * (c / in_chans)


def load_pretrained(
    model: nn.Module, path: str | Path, *, stem: Literal["mean", "sum"] = "mean"
) -> PretrainedReport:
    """Copy local weights at ``path`` into ``model`` in place, adapting classifier and stem.

    Example::

        model = get_model("resnet18", num_classes=10, in_chans=1)
        report = load_pretrained(model, "resnet18-imagenet.pth")
        print(report)  # loaded … tensors; adapted conv1.weight …; re-initialised fc.weight, fc.bias
    """
    if stem not in ("mean", "sum"):
        raise ConfigError(f"unknown stem adaptation '{stem}'; valid: mean, sum")
    target = model.state_dict()
    foreign = _foreign_source(model, path)
    if foreign is not None:
        source, report = foreign
    else:
        source = _rename_legacy_keys(read_state_dict(path), target)
        report = PretrainedReport(source=str(path))
    heads, aux = _head_prefixes(model), _aux_prefixes(model)
    in_chans = getattr(model, "in_chans", None)
    stem_key = _stem_key(target, in_chans) if in_chans is not None else None

    new_state: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for key, value in source.items():
        if key not in target:
            if key.startswith(heads + aux):
                report.ignored.append(key)  # e.g. a 1000-class head when the model has none
            continue  # anything else is reported below as unexpected
        want = target[key]
        if value.shape == want.shape:
            new_state[key] = value
        elif key.startswith(heads):
            report.reinitialised.append(key)
        elif (
            key == stem_key
            and value.dim() == 4
            and value.shape[0] == want.shape[0]
            and value.shape[2:] == want.shape[2:]
        ):
            new_state[key] = adapt_stem(value, want.shape[1], stem).to(want.dtype)
            report.adapted.append(key)
        else:
            mismatched.append(f"{key} (file {tuple(value.shape)} vs model {tuple(want.shape)})")

    ignored = set(report.ignored)
    unexpected = [k for k in source if k not in target and k not in ignored]
    # BatchNorm's step counter is absent from pre-0.4 checkpoints and is not a weight.
    missing = [
        k
        for k in target
        if k not in source and not k.startswith(aux) and not k.endswith("num_batches_tracked")
    ]
    problems = []
    if mismatched:
        problems.append(f"shape mismatch: {_listing(mismatched)}")
    if missing:
        problems.append(f"missing from file: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected in file: {_listing(unexpected)}")
    if problems:
        arch = getattr(model, "cnnlab_arch", {}).get("name", type(model).__name__)
        raise RunError(f"cannot load {path} into {arch}: " + "; ".join(problems))

    # Auxiliary heads missing from the file keep their fresh weights, like a new classifier.
    report.reinitialised += [k for k in target if k not in source and k.startswith(aux)]
    model.load_state_dict(new_state, strict=False)
    order = {k: i for i, k in enumerate(target)}
    report.loaded = sorted(new_state, key=order.__getitem__)
    report.adapted.sort(key=order.__getitem__)
    report.reinitialised.sort(key=order.__getitem__)
    # get_model() returns the model, not the report; keep it where the CLI and users can print it.
    model.pretrained_report = report
    return report
