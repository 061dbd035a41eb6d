"""Which foreign architectures map onto which cnnlab zoo models, and with which builder options.

A :class:`Target` says where a checkpoint lands: the zoo name, its family (which picks the key
mapping), the builder keyword arguments and the BatchNorm ``eps`` the source was built with (folded
into the running variance when cnnlab's differs). The reverse direction (``timm_arch_for``,
``hf_config_for``) describes a cnnlab model in the other library's terms, for export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from cnnlab.errors import RunError

# The zoo's ConvNeXt and EfficientNet variants, restated here because importing the family modules
# would close an import cycle (families -> registry -> pretrained -> this package); a test checks
# them against CONVNEXT_CFGS and EFFICIENTNET_PARAMS.
CONVNEXT_SHAPES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "tiny": ((96, 192, 384, 768), (3, 3, 9, 3)),
    "small": ((96, 192, 384, 768), (3, 3, 27, 3)),
    "base": ((128, 256, 512, 1024), (3, 3, 27, 3)),
    "large": ((192, 384, 768, 1536), (3, 3, 27, 3)),
}
# variant -> (width, depth, resolution, dropout)
EFFICIENTNET_SCALING: dict[str, tuple[float, float, int, float]] = {
    "b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5),
}  # fmt: skip


@dataclass(frozen=True)
class Target:
    """A cnnlab model to build for a foreign checkpoint."""

    name: str
    family: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    bn_eps: float | None = None  # eps of the source's BatchNorms (None: no BatchNorm)


# timm architecture → (cnnlab name, family, source BatchNorm eps, extra builder kwargs).
TIMM_ARCHS: dict[str, tuple[str, str, float | None, dict[str, Any]]] = {
    **{f"resnet{d}": (f"resnet{d}", "resnet", 1e-5, {}) for d in (18, 34, 50, 101, 152)},
    "mobilenetv2_100": ("mobilenet_v2", "mobilenet_v2", 1e-5, {}),
    "mobilenetv3_large_100": ("mobilenet_v3_large", "mobilenet_v3", 1e-5, {}),
    "mobilenetv3_small_100": ("mobilenet_v3_small", "mobilenet_v3", 1e-5, {}),
    "efficientnet_b0": ("efficientnet_b0", "efficientnet", 1e-5, {}),
    # TF-ported weights: TF "SAME" padding (equal to cnnlab's tf_padding at even sizes), TF's eps.
    "tf_efficientnet_b0": ("efficientnet_b0", "efficientnet", 1e-3, {"tf_padding": True, "bn_eps": 1e-3}),
    **{f"convnext_{s}": (f"convnext_{s}", "convnext", None, {}) for s in CONVNEXT_SHAPES},
    "vit_base_patch16_224": ("vit_b_16", "vit", None, {}),
    "vit_base_patch32_224": ("vit_b_32", "vit", None, {}),
    "vit_large_patch16_224": ("vit_l_16", "vit", None, {}),
}  # fmt: skip
HF_MODEL_TYPES = ("resnet", "convnext", "vit", "mobilenet_v2", "efficientnet")
# Builder options that only change training (dropout, drop path, init), not the computed function.
TRAINING_ONLY_KWARGS = {
    "dropout",
    "drop_rate",
    "stochastic_depth_prob",
    "attention_dropout",
    "layer_scale",
    "zero_init_residual",
    "mean",
    "std",
}


def supported_timm() -> str:
    """The timm architectures cnnlab reads and writes, for error messages."""
    return ", ".join(TIMM_ARCHS)


def timm_target(arch: str, num_classes: int, in_chans: int) -> Target:
    """The cnnlab model for timm architecture ``arch`` (a ``.tag`` suffix is ignored)."""
    base = arch.split(".", 1)[0]
    if base not in TIMM_ARCHS:
        raise RunError(
            f"timm architecture '{arch}' is not supported; supported: {supported_timm()}"
        )
    name, family, eps, extra = TIMM_ARCHS[base]
    kwargs = {"num_classes": num_classes, "in_chans": in_chans, **extra}
    return Target(name, family, kwargs, eps)


def family_of(name: str) -> str | None:
    """The mapping family of a cnnlab zoo name (None when no foreign mapping exists)."""
    for prefix, family in (
        ("resnet", "resnet"),
        ("mobilenet_v2", "mobilenet_v2"),
        ("mobilenet_v3", "mobilenet_v3"),
        ("efficientnet", "efficientnet"),
        ("convnext", "convnext"),
        ("vit", "vit"),
    ):
        if name.startswith(prefix) and name not in ("resnext50_32x4d", "wide_resnet50_2"):
            return family
    return None


def _structural_kwargs(kwargs: dict[str, Any], allowed: set[str]) -> list[str]:
    return sorted(k for k in kwargs if k not in TRAINING_ONLY_KWARGS | allowed)


def timm_arch_for(name: str, kwargs: dict[str, Any]) -> str:
    """The timm architecture computing the same function as cnnlab's ``name(**kwargs)``."""
    bad = _structural_kwargs(kwargs, {"num_classes", "in_chans", "tf_padding", "bn_eps"})
    if bad:
        raise RunError(
            f"{name} built with {', '.join(bad)} has no timm equivalent; timm export supports "
            f"the default builders of: {', '.join(sorted({v[0] for v in TIMM_ARCHS.values()}))}"
        )
    tf = bool(kwargs.get("tf_padding"))
    for arch, (cn, _family, _eps, extra) in TIMM_ARCHS.items():
        if cn == name and bool(extra.get("tf_padding")) == tf:
            return arch
    raise RunError(
        f"{name} has no timm equivalent; timm export supports: "
        f"{', '.join(sorted({v[0] for v in TIMM_ARCHS.values()}))}"
    )


# -- Hugging Face -------------------------------------------------------------------------------

_HF_RESNETS = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}
_VIT_NAMES = {(224, 16, 12, 12, 768, 3072): "vit_b_16", (224, 32, 12, 12, 768, 3072): "vit_b_32",
              (224, 16, 24, 16, 1024, 4096): "vit_l_16"}  # fmt: skip
SUPPORTED_HF = (
    "resnet (resnet18/34/50/101/152), convnext (tiny/small/base/large), vit (any size), "
    "mobilenet_v2 (depth_multiplier 1.0, tf_padding false), efficientnet (b0-b7)"
)


def _require(cfg: dict[str, Any], model_type: str, **expected: Any) -> None:
    for key, want in expected.items():
        have = cfg.get(key, want)
        if have != want:
            raise RunError(
                f"Hugging Face {model_type} with {key}={have!r} is not supported (cnnlab's "
                f"{model_type} needs {key}={want!r}); supported: {SUPPORTED_HF}"
            )


def _ln_eps(cfg: dict[str, Any], kwarg: str) -> dict[str, float]:
    """The builder option carrying a LayerNorm eps other than cnnlab's 1e-6 (HF defaults to 1e-12)."""
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    return {} if eps == 1e-6 else {kwarg: eps}


def hf_target(cfg: dict[str, Any]) -> Target:
    """The cnnlab model for a Hugging Face image-classification ``config.json``."""
    mt = cfg.get("model_type")
    labels = cfg.get("id2label") or {}
    num_classes = int(cfg.get("num_labels") or len(labels) or 2)
    base = {"num_classes": num_classes, "in_chans": int(cfg.get("num_channels", 3))}
    if mt == "resnet":
        _require(cfg, mt, embedding_size=64, hidden_act="relu", downsample_in_first_stage=False,
                 downsample_in_bottleneck=False)  # fmt: skip
        key = (cfg.get("layer_type", "bottleneck"), tuple(cfg.get("depths", ())))
        if key not in _HF_RESNETS:
            raise RunError(
                f"Hugging Face resnet {key[0]} depths {list(key[1])} is not supported; supported: {SUPPORTED_HF}"
            )
        return Target(_HF_RESNETS[key], "resnet", base, 1e-5)
    if mt == "convnext":
        _require(cfg, mt, patch_size=4, num_stages=4, hidden_act="gelu")
        shape = (tuple(cfg.get("hidden_sizes", ())), tuple(cfg.get("depths", ())))
        for size, c in CONVNEXT_SHAPES.items():
            if c == shape:
                return Target(
                    f"convnext_{size}", "convnext", {**base, **_ln_eps(cfg, "head_norm_eps")}
                )
        raise RunError(
            f"Hugging Face convnext hidden_sizes {list(shape[0])} depths {list(shape[1])} is not supported; supported: {SUPPORTED_HF}"
        )
    if mt == "vit":
        _require(cfg, mt, hidden_act="gelu", qkv_bias=True)
        dims = (int(cfg.get("image_size", 224)), int(cfg.get("patch_size", 16)),
                int(cfg.get("num_hidden_layers", 12)), int(cfg.get("num_attention_heads", 12)),
                int(cfg.get("hidden_size", 768)), int(cfg.get("intermediate_size", 3072)))  # fmt: skip
        base = {**base, **_ln_eps(cfg, "norm_eps")}
        if dims in _VIT_NAMES:
            return Target(_VIT_NAMES[dims], "vit", base)
        keys = ("image_size", "patch_size", "depth", "num_heads", "hidden_dim", "mlp_dim")
        return Target("vit_tiny", "vit", {**base, **dict(zip(keys, dims))})
    if mt == "mobilenet_v2":
        _require(cfg, mt, depth_multiplier=1.0, tf_padding=False, first_layer_is_expansion=True,
                 finegrained_output=True, hidden_act="relu6", output_stride=32, expand_ratio=6.0)  # fmt: skip
        return Target("mobilenet_v2", "mobilenet_v2", base, float(cfg.get("layer_norm_eps", 1e-3)))
    if mt == "efficientnet":
        _require(cfg, mt, depthwise_padding=[], depth_divisor=8, squeeze_expansion_ratio=0.25)
        if cfg.get("hidden_act", "swish") not in ("swish", "silu"):
            raise RunError(
                f"Hugging Face efficientnet with hidden_act={cfg['hidden_act']!r} is not supported; supported: {SUPPORTED_HF}"
            )
        wd = (float(cfg.get("width_coefficient", 2.0)), float(cfg.get("depth_coefficient", 3.1)))
        for variant, p in EFFICIENTNET_SCALING.items():
            if p[:2] == wd:
                eps = float(cfg.get("batch_norm_eps", 1e-3))
                kwargs = {**base, "tf_padding": True, "bn_eps": eps}
                return Target(f"efficientnet_{variant}", "efficientnet", kwargs, eps)
        raise RunError(
            f"Hugging Face efficientnet width/depth coefficients {wd} match no B0-B7 variant; supported: {SUPPORTED_HF}"
        )
    raise RunError(f"Hugging Face model_type '{mt}' is not supported; supported: {SUPPORTED_HF}")


def hf_config_for(
    name: str, kwargs: dict[str, Any], model: nn.Module
) -> tuple[str, str, dict[str, Any]]:
    """(model_type, config class name, config arguments) of the Hugging Face model computing the
    same function as cnnlab's ``model`` (built as ``name(**kwargs)``)."""
    family = family_of(name)
    in_chans = int(model.in_chans)  # type: ignore[arg-type]
    base = {"num_channels": in_chans}
    vit_shape = {"image_size", "patch_size", "depth", "num_heads", "hidden_dim", "mlp_dim"}
    exactness = {"tf_padding", "bn_eps", "norm_eps", "head_norm_eps"}
    bad = _structural_kwargs(kwargs, {"num_classes", "in_chans"} | exactness | vit_shape)
    if bad or family is None:
        why = f"built with {', '.join(bad)}" if bad else "of this family"
        raise RunError(f"{name} {why} has no Hugging Face equivalent; supported: {SUPPORTED_HF}")
    if family == "resnet":
        layer_type, depths = next((k for k, v in _HF_RESNETS.items() if v == name), (None, None))
        if layer_type is None or kwargs.get("small_input"):
            raise RunError(f"{name} has no Hugging Face equivalent; supported: {SUPPORTED_HF}")
        widths = [64, 128, 256, 512] if layer_type == "basic" else [256, 512, 1024, 2048]
        return "resnet", "ResNetConfig", {**base, "embedding_size": 64, "hidden_sizes": widths,
                "depths": list(depths), "layer_type": layer_type, "hidden_act": "relu",
                "downsample_in_first_stage": False, "downsample_in_bottleneck": False}  # fmt: skip
    if family == "convnext":
        dims, depths = CONVNEXT_SHAPES[name.split("_", 1)[1]]
        return "convnext", "ConvNextConfig", {**base, "patch_size": 4, "num_stages": 4,
                "hidden_sizes": list(dims), "depths": list(depths), "hidden_act": "gelu",
                "layer_norm_eps": float(model.classifier[0].eps), "drop_path_rate": 0.0}  # fmt: skip
    if family == "vit":
        hidden = model.conv_proj.out_channels  # type: ignore[union-attr]
        patch = model.conv_proj.kernel_size[0]  # type: ignore[union-attr]
        layers = list(model.encoder.layers)  # type: ignore[union-attr]
        seq = model.encoder.pos_embedding.shape[1]  # type: ignore[union-attr]
        grid = int(round((seq - 1) ** 0.5))
        return "vit", "ViTConfig", {**base, "hidden_size": hidden, "num_hidden_layers": len(layers),
                "num_attention_heads": layers[0].self_attention.num_heads,
                "intermediate_size": layers[0].mlp[0].out_features, "hidden_act": "gelu",
                "layer_norm_eps": float(model.encoder.ln.eps), "image_size": grid * patch, "patch_size": patch,
                "qkv_bias": True}  # fmt: skip
    if family == "mobilenet_v2":
        return "mobilenet_v2", "MobileNetV2Config", {**base, "depth_multiplier": 1.0,
                "tf_padding": False, "layer_norm_eps": bn_eps_of(model), "hidden_act": "relu6",
                "first_layer_is_expansion": True, "finegrained_output": True}  # fmt: skip
    if family == "efficientnet":
        if not kwargs.get("tf_padding"):
            raise RunError(
                f"{name} pads stride-2 convolutions symmetrically (torchvision/timm style) but "
                "Hugging Face's EfficientNet pads TF-style, so no HF model computes the same "
                "function; export with --format timm, or fine-tune from a Hugging Face-imported run"
            )
        width, depth, resolution, dropout = EFFICIENTNET_SCALING[name.rsplit("_", 1)[1]]
        return "efficientnet", "EfficientNetConfig", {**base, "width_coefficient": width,
                "depth_coefficient": depth, "image_size": resolution,
                "hidden_dim": int(model.num_features), "batch_norm_eps": bn_eps_of(model),
                "depthwise_padding": [], "dropout_rate": dropout}  # fmt: skip
    raise RunError(
        f"{name} has no Hugging Face equivalent; supported: {SUPPORTED_HF}"
    )  # mobilenet_v3


def bn_eps_of(model: nn.Module) -> float:
    """The ``eps`` of a model's first BatchNorm (the zoo's families use one value throughout)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            return float(m.eps)
    return 1e-5
