"""Load local weights into a cnnlab model: safetensors, torchvision ``.pth`` files, cnnlab runs.

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

# Prefixes wrappers add to every key: DistributedDataParallel/DataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED = 8

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

    def __str__(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        if self.adapted:
            parts.append(f"adapted {', '.join(self.adapted)} to the input channels")
        if self.reinitialised:
            parts.append(f"re-initialised {', '.join(self.reinitialised)} (new classes)")
        if self.ignored:
            parts.append(f"ignored {len(self.ignored)} tensors of heads this model does not have")
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file, a ``.pth``/``.pt`` state dict or a cnnlab run directory.

    ``{"state_dict": ...}`` and ``{"model": ...}`` wrappers (common training-script checkpoints) are
    unwrapped and ``module.`` / ``_orig_mod.`` prefixes stripped.
    """
    p = Path(path)
    if p.is_dir():
        weights = p / "model.safetensors"
        if not weights.is_file():
            raise RunError(f"{p} is not a cnnlab run directory: it has no model.safetensors")
        p = weights
    if not p.is_file():
        raise RunError(f"pretrained weights not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise RunError(f"cannot read {p} as safetensors: {_one_line(e)}") from None
    elif suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling refusals and corrupt files raise many types
            raise RunError(
                f"cannot read {p} as a weights-only torch file (cnnlab never unpickles code): "
                f"{_one_line(e)}"
            ) from None
        state = _unwrap(obj, p)
    else:
        raise RunError(
            f"unsupported weights file {p.name}: expected .safetensors, .pth/.pt, or a run directory"
        )
    return _strip_prefixes(state)


def _unwrap(obj: object, p: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise RunError(f"{p} does not hold a state dict (a mapping of names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise RunError(f"{p} is not a plain state dict: non-tensor entries {_listing(bad)}")
    return obj  # type: ignore[return-value]


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


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


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] + ("…" if len(text) > 200 else "")


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
