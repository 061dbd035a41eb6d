"""Segmentation with a zoo classifier as the encoder: U-Net and DeepLabv3+-style decoders.

The encoder is a registered classifier (``resnet18``, ``mobilenet_v2``…) whose modules are adopted
*under their own names* (``conv1``, ``layer1``… or ``features.N``), so the state dict of a
classification run is a subset of the segmenter's: ``--pretrained RUN`` loads the encoder and leaves
the decoder and head freshly initialised (they are declared as optional heads, the way auxiliary
classifiers are, so :func:`~cnnlab.models.pretrained.load_pretrained` reports them as
re-initialised). That is transfer learning from classification to a dense task.

The encoder's ``forward_features`` is replayed module by module (its *plan*); the output of the last
module at each resolution is a *tap* (strides 2, 4, 8, 16, 32 for ResNet and MobileNet), found once
at build time by pushing a dummy image through the plan (on the model's device, so a ``meta`` build
works too).

* ``unet_*``: from the deepest tap up, upsample ×2 (bilinear), concatenate the tap of that scale,
  one 3x3 conv-BN-ReLU; a 1x1 head; logits bilinearly upsampled to the input size.
* ``deeplab_*``: DeepLabv3+ — an ASPP (1x1, three dilated 3x3 and image pooling) on the deepest tap,
  upsampled and fused with the stride-4 tap, two 3x3 convs, a 1x1 head, upsampled to the input.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cnnlab.errors import ConfigError
from cnnlab.layers.conv_bn_act import ConvBNAct
from cnnlab.models._base import ClassifierMixin
from cnnlab.models._registry import get_model, register_model


def encoder_plan(encoder: nn.Module) -> list[str]:
    """Names of the modules whose sequential application is ``encoder.forward_features``."""
    names = [n for n, _ in encoder.named_children()]
    if {"conv1", "bn1", "layer1", "layer4"} <= set(names):  # ResNet / ResNeXt / Wide ResNet
        return ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    features = getattr(encoder, "features", None)
    if isinstance(features, nn.Sequential) and type(
        encoder
    ).forward_features.__qualname__.startswith("_MobileNetBase"):
        return [f"features.{n}" for n, _ in features.named_children()]
    raise ConfigError(
        f"{type(encoder).__name__} cannot be a segmentation encoder; use resnet* or mobilenet*"
    )


class EncoderDecoder(ClassifierMixin, nn.Module):
    """A zoo encoder (adopted under its own module names) plus a dense decoder; see the module."""

    task = "segmentation"
    classifier_name = "head"

    def __init__(
        self,
        encoder: str = "resnet18",
        decoder: str = "unet",
        num_classes: int = 2,
        in_chans: int = 3,
        decoder_channels: int = 32,
        encoder_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        if decoder not in ("unet", "deeplab"):
            raise ConfigError(f"unknown decoder '{decoder}'; valid decoders: deeplab, unet")
        enc = get_model(encoder, num_classes=1, in_chans=in_chans, **(encoder_kwargs or {}))
        self.encoder_name, self.decoder_name = encoder, decoder
        self.in_chans, self.num_classes = in_chans, num_classes
        self.default_cfg = enc.default_cfg
        self._plan = encoder_plan(enc)
        top = {p.split(".")[0] for p in self._plan}
        for name, child in enc.named_children():
            if name in top:
                self.add_module(name, child)
        # A classification run's head (fc / classifier) is ignored and the decoder and head are
        # optional when loading a classifier's weights into this model.
        enc_head = getattr(enc, "classifier_name", "fc").split(".")[0]
        self.aux_classifier_names = (enc_head, "decoder", "head")
        self._taps, chans = self._find_taps(enc)
        d = decoder_channels
        if decoder == "unet":
            # deepest first: channel count after each up step = d * 2**(levels - 1 - i), min d // 2
            levels = len(self._taps) - 1
            widths = [max(d // 2, d * 2 ** (levels - 1 - i)) for i in range(levels)]
            ups, cin = [], chans[-1]
            for i, skip in enumerate(reversed(chans[:-1])):
                ups.append(ConvBNAct(cin + skip, widths[i], 3))
                cin = widths[i]
            self.decoder = nn.ModuleDict({"up": nn.ModuleList(ups)})
            out = cin
        else:
            low = chans[1] if len(chans) > 2 else chans[0]
            rates = (1, 2, 3)
            self.decoder = nn.ModuleDict(
                {
                    "aspp": nn.ModuleList(
                        [ConvBNAct(chans[-1], d, 1)]
                        + [ConvBNAct(chans[-1], d, 3, dilation=r, padding=r) for r in rates]
                    ),
                    "pool": ConvBNAct(chans[-1], d, 1, norm_layer=None),
                    "project": ConvBNAct(d * (len(rates) + 2), d, 1),
                    "low": ConvBNAct(low, d // 2, 1),
                    "fuse": nn.Sequential(ConvBNAct(d + d // 2, d, 3), ConvBNAct(d, d, 3)),
                }
            )
            out = d
        self.num_features = out
        self.head = nn.Conv2d(out, num_classes, 1)

    @torch.no_grad()
    def _find_taps(self, enc: nn.Module) -> tuple[list[int], list[int]]:
        """Plan indices of the last module at each resolution, and their channel counts."""
        p = next(enc.parameters())
        size = max(64, self.default_cfg.min_size * 2)
        x = torch.zeros(1, self.in_chans, size, size, device=p.device, dtype=p.dtype)
        shapes = []
        was = enc.training
        enc.eval()  # BatchNorm on a 1-image batch; eval mode leaves its statistics untouched
        for name in self._plan:
            x = enc.get_submodule(name)(x)
            shapes.append(tuple(x.shape[1:]))
        enc.train(was)
        taps = [
            i
            for i in range(len(shapes))
            if i == len(shapes) - 1 or shapes[i + 1][1:] != shapes[i][1:]
        ]
        # the stem's conv and BN share the first resolution with its activation: keep the last
        taps = [i for i in taps if shapes[i][1] < size or i == taps[-1]][-5:] or [len(shapes) - 1]
        return taps, [shapes[i][0] for i in taps]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's taps, shallow to deep."""
        feats = []
        tap = iter(self._taps)
        want = next(tap)
        for i, name in enumerate(self._plan):
            x = self.get_submodule(name)(x)
            if i == want:
                feats.append(x)
                want = next(tap, -1)
                if want < 0:
                    break
        return feats

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder features ``(N, num_features, h, w)`` at the shallowest tap's resolution."""
        feats = self.encode(x)
        dec = self.decoder
        if self.decoder_name == "unet":
            y = feats[-1]
            for conv, skip in zip(dec["up"], reversed(feats[:-1])):
                y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                y = conv(torch.cat([y, skip], 1))
            return y
        deep = feats[-1]
        pooled = dec["pool"](F.adaptive_avg_pool2d(deep, 1)).expand(-1, -1, *deep.shape[-2:])
        y = dec["project"](torch.cat([m(deep) for m in dec["aspp"]] + [pooled], 1))
        low = feats[1] if len(feats) > 2 else feats[0]
        y = F.interpolate(y, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return dec["fuse"](torch.cat([y, dec["low"](low)], 1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits ``(N, num_classes, H, W)`` at the input's size."""
        self.check_input(x)
        logits = self.forward_head(self.forward_features(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _seg(encoder: str, decoder: str, num_classes: int, in_chans: int, **kwargs) -> EncoderDecoder:
    return EncoderDecoder(encoder, decoder, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def unet_resnet18(*, num_classes: int = 2, in_chans: int = 3, **kwargs) -> EncoderDecoder:
    """U-Net decoder on a ResNet-18 encoder (load a resnet18 run with ``--pretrained``).

    Options: ``decoder_channels`` (32), ``encoder_kwargs`` (e.g. ``{"small_input": true}``).
    """
    return _seg("resnet18", "unet", num_classes, in_chans, **kwargs)


@register_model
def unet_mobilenet_v2(*, num_classes: int = 2, in_chans: int = 3, **kwargs) -> EncoderDecoder:
    """U-Net decoder on a MobileNet v2 encoder (load a mobilenet_v2 run with ``--pretrained``)."""
    return _seg("mobilenet_v2", "unet", num_classes, in_chans, **kwargs)


@register_model
def deeplab_resnet18(*, num_classes: int = 2, in_chans: int = 3, **kwargs) -> EncoderDecoder:
    """DeepLabv3+-style decoder (ASPP + stride-4 skip) on a ResNet-18 encoder."""
    return _seg("resnet18", "deeplab", num_classes, in_chans, **kwargs)


@register_model
def deeplab_mobilenet_v2(*, num_classes: int = 2, in_chans: int = 3, **kwargs) -> EncoderDecoder:
    """DeepLabv3+-style decoder (ASPP + stride-4 skip) on a MobileNet v2 encoder."""
    return _seg("mobilenet_v2", "deeplab", num_classes, in_chans, **kwargs)
