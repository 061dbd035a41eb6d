"""Test-time augmentation on whole batches: run the model on several views, average probabilities.

The course's TTA wrapper applied PIL transforms to a batched tensor and could not run; here every view
is a tensor operation on the (N, C, H, W) batch, so TTA costs one forward pass per view and nothing
else. Views work on the normalised float batch the model takes (a flip or crop commutes with the
per-channel normalisation).

Presets: ``none`` (identity only), ``flip`` (identity + horizontal flip), ``flip+crops`` (identity,
flip and five zoomed crops: centre and four corners, each resized back to the input size). Any list
of view names (``"identity,hflip,crop_c"``) or callables works too.
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


VIEWS: dict[str, View] = {
    "identity": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "crop_c": lambda x: _crop(x, "cc"),
    "crop_tl": lambda x: _crop(x, "tl"),
    "crop_tr": lambda x: _crop(x, "tr"),
    "crop_bl": lambda x: _crop(x, "bl"),
    "crop_br": lambda x: _crop(x, "br"),
}
PRESETS: dict[str, list[str]] = {
    "none": ["identity"],
    "flip": ["identity", "hflip"],
    "flip+crops": ["identity", "hflip", "crop_c", "crop_tl", "crop_tr", "crop_bl", "crop_br"],
}


def resolve_views(views: str | Sequence[str | View]) -> list[tuple[str, View]]:
    """``"flip"`` / ``"identity,hflip"`` / ``["identity", my_fn]`` → named view functions."""
    if isinstance(views, str):
        names: list[str | View] = list(
            PRESETS.get(views, [v.strip() for v in views.split(",") if v.strip()])
        )
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
    total = None
    vs = resolve_views(views)
    for _, fn in vs:
        p = torch.softmax(main_logits(model(fn(x))).float() / temperature, 1)
        total = p if total is None else total + p
    return total / len(vs)  # type: ignore[operator]
