"""Test-time augmentation on whole batches: run the model on several views, average probabilities.

The course's TTA wrapper applied PIL transforms to a batched tensor and could not run; here every view
is a tensor operation on the (N, C, H, W) batch, so TTA costs one forward pass per view and nothing
else. Views work on the normalised float batch the model takes (a flip or crop commutes with the
per-channel normalisation).

Presets: ``none`` (identity only), ``flip`` (identity + horizontal flip), ``translate`` (identity
and the image moved one pixel up-left and one down-right, edge fill: the small shifts a training
``crop``/``translate`` augmentation taught), ``flip+crops`` (identity, flip and five zoomed crops:
centre and four corners, each resized back to the input size). A comma-separated list may mix
presets and view names (``"flip,translate"`` = identity, hflip, shift_ul, shift_dr); callables work
too. :class:`TTAModel` wraps a model so anything that evaluates logits (the training loop's epoch
evaluation) evaluates the TTA average instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import UnknownNameError
from cnnlab.runtime import main_logits

View = Callable[[torch.Tensor], torch.Tensor]
CROP_FRACTION = 0.875  # the crops keep 87.5 % of each side, as in the usual 224-of-256 evaluation


def _crop(x: torch.Tensor, where: str, fraction: float = CROP_FRACTION) -> torch.Tensor:
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top = {"t": 0, "b": h - ch, "c": (h - ch) // 2}[where[0]]
    left = {"l": 0, "r": w - cw, "c": (w - cw) // 2}[where[-1]]
    patch = x[..., top : top + ch, left : left + cw]
    return F.interpolate(patch, size=(h, w), mode="bilinear", align_corners=False)


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The image moved by (dy, dx) pixels, the uncovered border filled by its edge pixels (the
    normalised value of the background, whatever the normalisation)."""
    h, w = x.shape[-2:]
    p = max(abs(dy), abs(dx))
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


VIEWS: dict[str, View] = {
    "identity": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "crop_c": lambda x: _crop(x, "cc"),
    "crop_tl": lambda x: _crop(x, "tl"),
    "crop_tr": lambda x: _crop(x, "tr"),
    "crop_bl": lambda x: _crop(x, "bl"),
    "crop_br": lambda x: _crop(x, "br"),
    "shift_ul": lambda x: _shift(x, -1, -1),
    "shift_dr": lambda x: _shift(x, 1, 1),
}
PRESETS: dict[str, list[str]] = {
    "none": ["identity"],
    "flip": ["identity", "hflip"],
    "translate": ["identity", "shift_ul", "shift_dr"],
    "flip+crops": ["identity", "hflip", "crop_c", "crop_tl", "crop_tr", "crop_bl", "crop_br"],
}


def resolve_views(views: str | Sequence[str | View]) -> list[tuple[str, View]]:
    """``"flip"`` / ``"identity,hflip"`` / ``["identity", my_fn]`` → named view functions."""
    if isinstance(views, str):
        names: list[str | View] = []
        for part in (v.strip() for v in views.split(",")):
            for name in PRESETS.get(part, [part] if part else []):
                if name not in names:  # "flip,translate": identity once
                    names.append(name)
    else:
        names = list(views)
    out = []
    for v in names:
        if callable(v):
            out.append((getattr(v, "__name__", "custom"), v))
        elif v in VIEWS:
            out.append((v, VIEWS[v]))
        else:
            raise UnknownNameError("TTA view", str(v), [*PRESETS, *VIEWS])
    if not out:
        raise UnknownNameError("TTA view", str(views), [*PRESETS, *VIEWS])
    return out


@torch.no_grad()
def predict_tta(
    model: nn.Module,
    x: torch.Tensor,
    views: str | Sequence[str | View] = "flip",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Class probabilities (N, K) averaged over ``views`` of the normalised batch ``x``.

    With ``views="none"`` (identity only) this is exactly ``softmax(model(x) / temperature)``.

    Example::

        probs = predict_tta(model, batch, views="flip+crops")
        probs = predict_tta(model, batch, views=["identity", "hflip"])
    """

    model.eval()
    return _mean_probs(model, x, resolve_views(views), temperature)


def _mean_probs(
    model: nn.Module, x: torch.Tensor, views: list[tuple[str, View]], temperature: float = 1.0
) -> torch.Tensor:
    """The mean over ``views`` of ``softmax(model(view(x)) / temperature)``."""
    total = None
    for _, fn in views:
        p = torch.softmax(main_logits(model(fn(x))).float() / temperature, 1)
        total = p if total is None else total + p
    return total / len(views)  # type: ignore[operator]


class TTAModel(nn.Module):
    """``model`` evaluated over TTA ``views``: returns the log of the averaged probabilities.

    Log-probabilities are valid logits: their argmax is the TTA prediction and cross-entropy on
    them is the TTA loss, so any evaluation written for logits scores the TTA ensemble unchanged.

    Example::

        metrics = task.evaluate(TTAModel(model, "flip,translate"), test_loader)
    """

    def __init__(self, model: nn.Module, views: str | Sequence[str | View] = "flip"):
        super().__init__()
        self.model = model
        self.views = resolve_views(views)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(_mean_probs(self.model, x, self.views) + 1e-12)
