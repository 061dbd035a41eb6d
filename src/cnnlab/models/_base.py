"""The interface every cnnlab classifier offers.

``forward_features`` / ``forward_head`` / ``reset_classifier`` / ``num_features`` / ``default_cfg``
(the timm idea) make feature extraction, fine-tuning and new heads uniform across families, so the
training engine and the transfer-learning helpers never special-case an architecture.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from cnnlab.errors import InputShapeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DefaultCfg:
    """Preprocessing and size facts a model was designed for.

    ``input_size`` is (C, H, W) at which the paper's numbers (parameters, MACs) are quoted;
    ``min_size`` is the smallest H = W the network accepts.
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    min_size: int = 32
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    extra: dict = field(default_factory=dict)

    def for_chans(self, in_chans: int) -> DefaultCfg:
        """The same config for ``in_chans`` input channels (averaged mean/std for grayscale)."""
        if in_chans == len(self.mean):
            return replace(self, input_size=(in_chans, *self.input_size[1:]))
        if in_chans == 1:
            mean = (sum(self.mean) / len(self.mean),)
            std = (sum(self.std) / len(self.std),)
        else:
            mean = tuple([self.mean[0]] * in_chans)
            std = tuple([self.std[0]] * in_chans)
        return replace(self, input_size=(in_chans, *self.input_size[1:]), mean=mean, std=std)


class ClassifierMixin:
    """Mixin for classifiers; subclasses set ``in_chans``, ``num_features``, ``default_cfg``.

    Subclasses implement ``forward_features(x)`` (image → feature map or vector), ``forward_head``
    (features → logits, including the global pooling) and name their final linear layer in
    ``classifier_name`` so :meth:`reset_classifier` can swap it.
    """

    in_chans: int
    num_features: int
    num_classes: int
    default_cfg: DefaultCfg
    classifier_name: str = "fc"

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a one-line :class:`InputShapeError` when ``x`` cannot go through the model."""
        if x.dim() != 4:
            raise InputShapeError(
                f"{type(self).__name__} expects a batch of shape (N, {self.in_chans}, H, W); "
                f"got {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_chans:
            raise InputShapeError(
                f"{type(self).__name__} expects {self.in_chans} input channel(s); got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}); build it with in_chans={x.shape[1]}"
            )
        m = self.default_cfg.min_size
        if x.shape[2] < m or x.shape[3] < m:
            hint = (  # a family with a small-input stem (ResNet) takes them with the option
                "; build it with small_input=True (--model_kwargs.small_input true)"
                if getattr(self, "small_input", None) is False
                else ""
            )
            raise InputShapeError(
                f"{type(self).__name__} needs inputs of at least {m}x{m} pixels; "
                f"got {x.shape[2]}x{x.shape[3]}{hint}"
            )

    def get_classifier(self) -> nn.Module:
        """The final layer that maps features to logits."""
        mod: nn.Module = self  # type: ignore[assignment]
        for part in self.classifier_name.split("."):
            mod = getattr(mod, part)
        return mod

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer with a freshly initialised one for ``num_classes`` classes.

        ``num_classes=0`` leaves an identity, so ``forward`` returns pooled features.
        """
        old = self.get_classifier()
        new: nn.Module
        if num_classes <= 0:
            new = nn.Identity()
        elif isinstance(old, nn.Conv2d):
            new = nn.Conv2d(
                old.in_channels, num_classes, old.kernel_size, bias=old.bias is not None
            )
        else:
            new = nn.Linear(self.num_features, num_classes)
        parent: nn.Module = self  # type: ignore[assignment]
        parts = self.classifier_name.split(".")
        for part in parts[:-1]:
            parent = getattr(parent, part)
        if isinstance(new, (nn.Linear, nn.Conv2d)) and isinstance(old, (nn.Linear, nn.Conv2d)):
            new = new.to(old.weight.device, old.weight.dtype)
        setattr(parent, parts[-1], new)
        self.num_classes = num_classes
