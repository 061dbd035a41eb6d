"""What a path holds: a cnnlab run, a timm folder/file, a Hugging Face folder, or bare weights.

Detection looks only at files, never at the network: ``config.json`` with ``model.name`` is a cnnlab
run, with ``architecture`` a timm export (``pretrained_cfg`` form or the older flat form), with
``model_type`` a Hugging Face model (preprocessing from ``preprocessor_config.json``). A lone
weights file is a timm or torchvision state dict whose architecture ``arch`` names (a timm or cnnlab
name); a weights file inside such a folder is read with the folder's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import RunError
from cnnlab.models.foreign.files import read_json, read_tensor_file
from cnnlab.models.foreign.preprocessing import (
    Preprocessing,
    from_hf_processor,
    from_run_config,
    from_timm_config,
)
from cnnlab.models.foreign.specs import (
    TIMM_ARCHS,
    Target,
    hf_target,
    supported_timm,
    timm_target,
)

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
)


@dataclass(frozen=True)
class ForeignCheckpoint:
    """Weights read from a path, with what is known about them.

    ``flavour`` is ``"timm"``, ``"hf"``, ``"torchvision"`` (cnnlab/torchvision names) or
    ``"cnnlab"`` (a run directory); ``architecture`` is the source's own name for the model.
    """

    path: Path
    flavour: str
    architecture: str
    target: Target
    state: dict[str, torch.Tensor]
    labels: list[str] | None = None
    preprocessing: Preprocessing | None = None
    container: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def detect_flavour(path: str | Path) -> str:
    """``"cnnlab"``, ``"timm"``, ``"hf"`` or ``"weights"`` (a file with no config beside it)."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        if p.is_dir():
            raise RunError(f"{p} has no config.json: not a cnnlab run, timm or Hugging Face folder")
        return "weights"
    cfg = read_json(cfg_path)
    if isinstance(cfg.get("model"), dict) and "name" in cfg["model"]:
        return "cnnlab"
    if "architecture" in cfg:
        return "timm"
    if "model_type" in cfg:
        return "hf"
    if p.is_dir():
        raise RunError(
            f"{cfg_path} is neither a cnnlab run (model.name), a timm config (architecture) "
            "nor a Hugging Face config (model_type)"
        )
    return "weights"


def _weights_in(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise RunError(f"{folder} has no weights: expected one of {', '.join(WEIGHT_FILES[:3])}")


def _labels(raw: Any, n: int) -> list[str] | None:
    if isinstance(raw, (list, tuple)) and len(raw) == n:
        return [str(v) for v in raw]
    if isinstance(raw, dict) and len(raw) == n:
        try:
            return [str(raw[k]) for k in sorted(raw, key=int)]
        except (TypeError, ValueError):
            return None
    return None


# Classifier and stem weights of the supported families, in timm's and torchvision's names: files
# do not keep layer order (safetensors sorts keys), so they are found by name.
HEAD_KEYS = ("fc.weight", "classifier.weight", "head.fc.weight", "head.weight",
             "heads.head.weight", "classifier.1.weight", "classifier.2.weight",
             "classifier.3.weight")  # fmt: skip
STEM_KEYS = ("conv1.weight", "conv_stem.weight", "stem.0.weight", "patch_embed.proj.weight",
             "features.0.0.weight", "features.0.weight", "conv_proj.weight")  # fmt: skip


# Top-level module names only timm uses (torchvision's and cnnlab's models have none of them).
TIMM_ONLY_PREFIXES = ("conv_stem.", "blocks.", "stages.", "stem.", "patch_embed.", "conv_head.")


def _head_and_stem(state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(num_classes, in_chans) of a bare state dict, from its classifier and stem weights."""
    head = next((state[k] for k in HEAD_KEYS if k in state and state[k].dim() == 2), None)
    stem = next((state[k] for k in STEM_KEYS if k in state and state[k].dim() == 4), None)
    if head is None or stem is None:
        raise RunError(
            "the weights hold no classifier or stem under a known name "
            f"(classifier one of {', '.join(HEAD_KEYS[:5])}…; stem one of {', '.join(STEM_KEYS[:4])}…)"
        )
    return int(head.shape[0]), int(stem.shape[1])


def read_foreign(path: str | Path, arch: str | None = None) -> ForeignCheckpoint:
    """Read ``path`` (folder or file) into a :class:`ForeignCheckpoint`; nothing is downloaded.

    Example::

        ckpt = read_foreign("hub/resnet50.a1_in1k")       # a timm folder
        ckpt.target.name, ckpt.preprocessing.crop_pct     # ('resnet50', 0.95)
    """
    p = Path(path)
    if not p.exists():
        raise RunError(f"{p} does not exist")
    flavour = "weights" if p.is_file() and arch else detect_flavour(p)
    folder = p if p.is_dir() else p.parent
    weights = _weights_in(folder) if p.is_dir() else p
    if flavour == "cnnlab":
        return _read_run(folder, weights)
    if flavour == "timm":
        return _read_timm(folder, weights)
    if flavour == "hf":
        return _read_hf(folder, weights)
    return _read_bare(weights, arch)


def _read_run(folder: Path, weights: Path) -> ForeignCheckpoint:
    cfg = read_json(folder / "config.json")
    state, container = read_tensor_file(weights)
    spec = cfg["model"]
    target = Target(spec["name"], "identity", dict(spec.get("kwargs", {})))
    return ForeignCheckpoint(
        folder, "cnnlab", spec["name"], target, state, list(cfg.get("classes") or []) or None,
        from_run_config(cfg) if "input_size" in cfg else None, container,
    )  # fmt: skip


def _timm_meta(folder: Path, state: dict[str, torch.Tensor] | None = None) -> tuple:
    cfg = read_json(folder / "config.json")
    pc = cfg.get("pretrained_cfg") or cfg
    arch = str(cfg["architecture"])
    n = cfg.get("num_classes") or pc.get("num_classes")
    if n is None:
        if state is None:
            return arch, None, None, None
        n = _head_and_stem(state)[0]
    args = cfg.get("model_args") or {}
    in_chans = int(args.get("in_chans") or (pc.get("input_size") or [3])[0])
    target = timm_target(arch, int(n), in_chans)
    labels = _labels(cfg.get("label_names") or cfg.get("labels") or pc.get("label_names"), int(n))
    return arch, target, labels, from_timm_config(cfg, in_chans)


def _read_timm(folder: Path, weights: Path) -> ForeignCheckpoint:
    _timm_meta(folder)  # an unsupported architecture is refused before the weights are read
    state, container = read_tensor_file(weights)
    arch, target, labels, pre = _timm_meta(folder, state)
    return ForeignCheckpoint(folder, "timm", arch, target, state, labels, pre, container)


def _hf_meta(folder: Path) -> tuple:
    cfg = read_json(folder / "config.json")
    target = hf_target(cfg)
    n, c = target.kwargs["num_classes"], target.kwargs["in_chans"]
    labels = _labels(cfg.get("id2label"), n)
    proc_path = folder / "preprocessor_config.json"
    notes = []
    if proc_path.is_file():
        pre = from_hf_processor(read_json(proc_path), c, str(cfg["model_type"]))
    else:
        size = int(cfg.get("image_size", 224))
        pre = Preprocessing((c, size, size), (0.485, 0.456, 0.406)[:c], (0.229, 0.224, 0.225)[:c])
        notes.append("no preprocessor_config.json: assumed ImageNet mean/std, squash resize")
    arch = str((cfg.get("architectures") or [cfg["model_type"]])[0])
    return arch, target, labels, pre, tuple(notes)


def _read_hf(folder: Path, weights: Path) -> ForeignCheckpoint:
    arch, target, labels, pre, notes = _hf_meta(folder)  # refuse unsupported configs first
    state, container = read_tensor_file(weights)
    return ForeignCheckpoint(folder, "hf", arch, target, state, labels, pre, container, notes)


def read_target(path: str | Path) -> Target | None:
    """The cnnlab model a timm or Hugging Face folder maps onto, from its config alone (no
    weights read); None for anything else (runs, bare files)."""
    p = Path(path)
    if not (p if p.is_dir() else p.parent).joinpath("config.json").is_file():
        return None
    flavour = detect_flavour(p)
    folder = p if p.is_dir() else p.parent
    if flavour == "timm":
        return _timm_meta(folder)[1]
    if flavour == "hf":
        return _hf_meta(folder)[1]
    return None


def _read_bare(weights: Path, arch: str | None) -> ForeignCheckpoint:
    state, container = read_tensor_file(weights)
    if not arch:
        raise RunError(
            f"{weights.name} is a bare weights file: name its architecture with --arch NAME "
            f"(a cnnlab model or a timm architecture: {supported_timm()})"
        )
    num_classes, in_chans = _head_and_stem(state)
    base = arch.split(".", 1)[0]
    if base not in TIMM_ARCHS:
        # A zoo name: torchvision's (= cnnlab's) names, unless the keys are timm's for that model.
        timm_names = any(k.startswith(TIMM_ONLY_PREFIXES) for k in state)
        timm_arch = next((a for a, v in TIMM_ARCHS.items() if v[0] == base and not v[3]), None)
        if not (timm_names and timm_arch):
            target = Target(base, "identity", {"num_classes": num_classes, "in_chans": in_chans})
            return ForeignCheckpoint(
                weights, "torchvision", base, target, state, None, None, container
            )
        base = timm_arch
    target = timm_target(base, num_classes, in_chans)
    return ForeignCheckpoint(weights, "timm", base, target, state, None, None, container)
