"""Pictures of what a CNN computes, written as PNG files.

Activation functions and their derivatives, the first layer's filters, the feature maps of any layer
for an image, the receptive field drawn on an image, and before/after grids of classic kernels.
Matplotlib runs with the Agg backend (no display needed), selected here before pyplot is imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from cnnlab.errors import ConfigError, DataError, UnknownNameError  # noqa: E402
from cnnlab.inspect.kernels import apply_kernel, get_kernel  # noqa: E402
from cnnlab.inspect.receptive import receptive_field  # noqa: E402

ACTIVATIONS: dict[str, nn.Module] = {
    "relu": nn.ReLU(),
    "leaky_relu": nn.LeakyReLU(0.1),
    "elu": nn.ELU(),
    "gelu": nn.GELU(),
    "silu": nn.SiLU(),
    "sigmoid": nn.Sigmoid(),
    "tanh": nn.Tanh(),
}


def activation_label(name: str) -> str:
    """The legend entry of an activation, with the parameter that shapes it (``leaky_relu
    (slope 0.1)``, ``elu (alpha 1)``): a leaky ReLU's slope is a choice, not a constant."""
    mod = ACTIVATIONS[name]
    if isinstance(mod, nn.LeakyReLU):
        return f"{name} (slope {mod.negative_slope:g})"
    if isinstance(mod, nn.ELU):
        return f"{name} (alpha {mod.alpha:g})"
    return name


def load_image(
    path: str | Path, channels: int | None = None, size: int | None = None
) -> np.ndarray:
    """Read an image file as float (H, W, C) in [0, 1]; ``channels`` 1 or 3 converts the mode."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"image file not found: {p}")
    try:
        with Image.open(p) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if size:
                im = im.resize((size, size))
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {p}: {exc}") from None
    return arr[..., None] if arr.ndim == 2 else arr


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _show(ax, img: np.ndarray, title: str, cmap: str | None = None) -> None:
    img = np.asarray(img, dtype=float)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        ax.imshow(img, cmap=cmap or "gray")
    else:
        lo, hi = img.min(), img.max()
        ax.imshow((img - lo) / (hi - lo) if hi > lo else np.zeros_like(img))
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def plot_activations(
    out: str | Path, names: Sequence[str] | None = None, x_range: float = 4.0
) -> Path:
    """Plot activation functions (left) and their derivatives (right, via autograd) to a PNG.

    Example: ``plot_activations("act.png", ["relu", "gelu"])``.
    """
    names = list(names or ACTIVATIONS)
    for n in names:
        if n not in ACTIVATIONS:
            raise UnknownNameError("activation", n, ACTIVATIONS)
    x = torch.linspace(-x_range, x_range, 401, requires_grad=True)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for n in names:
        y = ACTIVATIONS[n](x)
        (g,) = torch.autograd.grad(y.sum(), x)
        a1.plot(x.detach(), y.detach(), label=activation_label(n))
        a2.plot(x.detach(), g, label=activation_label(n))
    for ax, title in ((a1, "f(x)"), (a2, "f'(x)")):
        ax.axhline(0, color="0.7", lw=0.8)
        ax.axvline(0, color="0.7", lw=0.8)
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out)


def plot_kernels(image: np.ndarray, kernels: Sequence[str], out: str | Path) -> Path:
    """The image and the image filtered by each named classic kernel, side by side."""
    filtered = [
        (k, apply_kernel(image.mean(axis=-1) if image.ndim == 3 else image, get_kernel(k)))
        for k in kernels
    ]
    n = 1 + len(filtered)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    _show(axes[0, 0], image, "input")
    for ax, (name, img) in zip(axes.ravel()[1:], filtered):
        _show(ax, img, name)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, out)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first ``Conv2d`` in ``model`` (in definition order) and its name."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            return name, mod
    raise ConfigError(f"{type(model).__name__} has no Conv2d layer to show filters of")


def plot_filters(model: nn.Module, out: str | Path, max_filters: int = 64) -> Path:
    """The first convolution's filters as a grid (RGB when it has 3 input channels, else the
    channel mean), each scaled to its own range so weak filters stay visible."""
    name, conv = first_conv(model)
    w = conv.weight.detach().float().cpu().numpy()[:max_filters]
    n = w.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols + 1, 1.2 * rows + 1), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < n:
            f = w[i].transpose(1, 2, 0) if w.shape[1] == 3 else w[i].mean(axis=0)
            _show(ax, f, str(i), cmap="viridis")
    fig.suptitle(f"{name}: {tuple(conv.weight.shape)}")
    fig.tight_layout()
    return _save(fig, out)


def _to_input(image: np.ndarray, model: nn.Module, size: int | None) -> torch.Tensor:
    chans = getattr(model, "in_chans", None) or first_conv(model)[1].in_channels
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] != chans:
        img = np.repeat(img.mean(axis=-1, keepdims=True), chans, axis=-1)
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    cfg = getattr(model, "default_cfg", None)
    if cfg is not None and len(cfg.mean) == chans:
        x = (x - torch.tensor(cfg.mean)[:, None, None]) / torch.tensor(cfg.std)[:, None, None]
    if size:
        x = torch.nn.functional.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False
        )
    p = next(model.parameters(), None)
    return x.to(p.device, p.dtype) if p is not None else x


def feature_maps(
    model: nn.Module, layer: str, image: np.ndarray, size: int | None = None
) -> np.ndarray:
    """The output of the named layer (``model.named_modules()`` name) for one image, (C, H, W)."""
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        raise UnknownNameError("layer", layer, [n for n in modules if n])
    grabbed: list[torch.Tensor] = []
    handle = modules[layer].register_forward_hook(lambda m, i, o: grabbed.append(o))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(_to_input(image, model, size))
    finally:
        handle.remove()
        model.train(was_training)
    out = grabbed[0]
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.dim() != 4:
        raise ConfigError(
            f"layer {layer!r} outputs shape {tuple(out.shape)}, not a (N, C, H, W) feature map"
        )
    return out[0].float().cpu().numpy()


def plot_feature_maps(
    model: nn.Module,
    layer: str,
    image: np.ndarray,
    out: str | Path,
    max_maps: int = 32,
    size: int | None = None,
) -> Path:
    """The input image and the first ``max_maps`` channels of ``layer``'s output for it."""
    maps = feature_maps(model, layer, image, size)[:max_maps]
    n = 1 + maps.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 1, 1.6 * rows + 1), squeeze=False)
    _show(axes[0, 0], image, "input")
    for i, ax in enumerate(axes.ravel()[1:]):
        if i < maps.shape[0]:
            _show(ax, maps[i], str(i), cmap="viridis")
        else:
            ax.axis("off")
    fig.suptitle(f"{layer}: {maps.shape[0]} of its channels")
    fig.tight_layout()
    return _save(fig, out)


def plot_receptive_field(
    model: nn.Module,
    layer: str,
    image: np.ndarray,
    out: str | Path,
    unit: tuple[int, int] | None = None,
) -> Path:
    """Draw the receptive field of one unit of ``layer`` (default: the centre unit) on the image,
    which is resized to the model's input size first."""
    from matplotlib.patches import Rectangle

    img = np.asarray(image, dtype=float)
    h, w = img.shape[:2]
    chans = getattr(model, "in_chans", None) or first_conv(model)[1].in_channels
    rep = receptive_field(model, (chans, h, w))
    lr = rep[layer]
    fig, ax = plt.subplots(figsize=(6, 6 * h / w + 0.5))
    _show(ax, img, "")
    if lr.is_global:
        ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, ec="red", lw=3))
        ax.set_title(f"{layer}: sees the whole {h}x{w} input")
    else:
        jh, jw = lr.jump  # type: ignore[misc]
        sh, sw = lr.start  # type: ignore[misc]
        if unit is None:
            unit = (max(0, round((h / 2 - sh) / jh)), max(0, round((w / 2 - sw) / jw)))
        (top, bottom), (left, right) = lr.extent(*unit)
        ax.add_patch(
            Rectangle(
                (left - 0.5, top - 0.5),
                right - left + 1,
                bottom - top + 1,
                fill=True,
                fc=(1, 0, 0, 0.15),
                ec="red",
                lw=2,
            )
        )
        ax.plot([sw + unit[1] * jw], [sh + unit[0] * jh], "r+", ms=12)
        ax.set_xlim(min(-0.5, left - 1), max(w - 0.5, right + 1))
        ax.set_ylim(max(h - 0.5, bottom + 1), min(-0.5, top - 1))
        ax.set_title(f"{layer} unit {unit}: receptive field {lr.rf[0]}x{lr.rf[1]}, jump {jh:g}")
    fig.tight_layout()
    return _save(fig, out)
