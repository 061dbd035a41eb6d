"""Preprocessing carried between cnnlab, timm and Hugging Face, in timm's vocabulary.

A checkpoint is only right with the preprocessing it was trained with (a local file that silently
used the wrong mean or crop is a known trap), so it travels with the weights in both directions.
The common description is timm's data config: ``input_size`` (C, H, W), ``mean``, ``std``,
``interpolation``, ``crop_pct`` (resize the short side to ``H / crop_pct``, then centre-crop) and
``crop_mode`` (``"center"``, or ``"squash"``: resize straight to H x W, what cnnlab's predictor does).

Hugging Face image processors describe the same thing differently: ``size={"shortest_edge": s}`` +
``crop_pct`` (ConvNeXt/ResNet), ``size={"height", "width"}`` (ViT, EfficientNet: squash),
``size={"shortest_edge"}`` + ``crop_size`` (MobileNetV2). EfficientNet's ``include_top`` divides by
``std`` a second time, which is the same as normalising with ``std**2``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cnnlab.errors import RunError

# PIL's resampling codes, which Hugging Face processors store as ``resample``.
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
PIL_CODES = {v: k for k, v in PIL_RESAMPLE.items()}
TIMM_DEFAULT_CROP_PCT = 0.875  # timm.data.constants.DEFAULT_CROP_PCT


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input tensor (timm's data-config fields)."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    crop_mode: str = "squash"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def run_config_part(self) -> dict[str, Any]:
        """What goes under ``"preprocessing"`` in a run's ``config.json`` (input size, mean and std
        live at its top level already)."""
        return {
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
        }

    # -- timm ----------------------------------------------------------------------------------
    def to_timm(self) -> dict[str, Any]:
        """Fields of a timm ``pretrained_cfg`` (what ``resolve_data_config`` reads back)."""
        return {
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": "squash" if self.crop_mode == "squash" else "center",
        }

    # -- Hugging Face --------------------------------------------------------------------------
    def to_hf(self, model_type: str) -> tuple[str, dict[str, Any]]:
        """The image-processor class name and its arguments for ``model_type``."""
        c, h, w = self.input_size
        common = {
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "resample": PIL_CODES.get(self.interpolation, 2),
            "do_normalize": True,
            "do_rescale": True,
        }
        if model_type in ("resnet", "convnext"):
            # Resize short side to h / crop_pct, centre-crop h (below 384 px, ConvNeXt's rule).
            crop = 1.0 if self.crop_mode == "squash" else self.crop_pct
            return "ConvNextImageProcessor", {
                **common,
                "size": {"shortest_edge": h},
                "crop_pct": crop,
            }
        if model_type == "mobilenet_v2":
            crop = 1.0 if self.crop_mode == "squash" else self.crop_pct
            return "MobileNetV2ImageProcessor", {
                **common,
                "size": {"shortest_edge": int(round(h / crop))},
                "crop_size": {"height": h, "width": w},
                "do_center_crop": True,
            }
        if model_type == "efficientnet":
            return "EfficientNetImageProcessor", {
                **common,
                "size": {"height": h, "width": w},
                "do_center_crop": False,
                "include_top": False,
                "rescale_offset": False,
            }
        return "ViTImageProcessor", {**common, "size": {"height": h, "width": w}}


def from_timm_config(cfg: dict[str, Any], in_chans: int | None = None) -> Preprocessing:
    """Preprocessing from a timm ``config.json`` (``pretrained_cfg`` form or the older flat form)."""
    pc = cfg.get("pretrained_cfg") or cfg
    try:
        size = tuple(int(v) for v in pc["input_size"])
        mean = tuple(float(v) for v in pc["mean"])
        std = tuple(float(v) for v in pc["std"])
    except (KeyError, TypeError, ValueError):
        raise RunError(
            "timm config.json has no usable input_size/mean/std in pretrained_cfg"
        ) from None
    if in_chans and size[0] != in_chans:
        size = (in_chans, *size[1:])
    return Preprocessing(
        input_size=size,  # type: ignore[arg-type]
        mean=mean,
        std=std,
        interpolation=str(pc.get("interpolation") or "bicubic"),
        crop_pct=float(pc.get("crop_pct") or TIMM_DEFAULT_CROP_PCT),
        crop_mode=str(pc.get("crop_mode") or "center"),
    )


def from_hf_processor(proc: dict[str, Any], num_channels: int, model_type: str) -> Preprocessing:
    """Preprocessing from a Hugging Face ``preprocessor_config.json``."""
    mean = tuple(float(v) for v in proc.get("image_mean", (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in proc.get("image_std", (0.5, 0.5, 0.5)))
    if proc.get("do_normalize") is False:
        mean, std = tuple(0.0 for _ in mean), tuple(1.0 for _ in std)
    if model_type == "efficientnet" and proc.get("include_top", True):
        std = tuple(s * s for s in std)  # include_top normalises by std a second time
    rescale = float(proc.get("rescale_factor", 1 / 255)) if proc.get("do_rescale", True) else 1.0
    if abs(rescale * 255 - 1) > 1e-6 or proc.get("rescale_offset"):
        raise RunError(
            f"preprocessor_config.json rescales by {rescale} (offset {proc.get('rescale_offset')}); "
            "cnnlab supports only the usual 1/255"
        )
    interpolation = PIL_RESAMPLE.get(int(proc.get("resample", 2)), "bilinear")
    size = proc.get("size") or {}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    crop_size = proc.get("crop_size")
    if isinstance(crop_size, int):
        crop_size = {"height": crop_size, "width": crop_size}
    if proc.get("do_center_crop") and crop_size and "shortest_edge" in size:
        h, w = int(crop_size["height"]), int(crop_size["width"])
        return Preprocessing(
            (num_channels, h, w), mean, std, interpolation, h / int(size["shortest_edge"]), "center"
        )
    if "shortest_edge" in size:
        s = int(size["shortest_edge"])
        crop_pct = float(proc.get("crop_pct") or 224 / 256)
        if s >= 384:  # ConvNeXt's processor warps large sizes without cropping
            return Preprocessing((num_channels, s, s), mean, std, interpolation, 1.0, "squash")
        return Preprocessing((num_channels, s, s), mean, std, interpolation, crop_pct, "center")
    if "height" in size and "width" in size:
        h, w = int(size["height"]), int(size["width"])
        return Preprocessing((num_channels, h, w), mean, std, interpolation, 1.0, "squash")
    raise RunError(f"preprocessor_config.json has an unsupported size {size!r}")


def from_run_config(cfg: dict[str, Any]) -> Preprocessing:
    """A run's preprocessing: imported runs keep their source's; trained runs squash bilinearly."""
    extra = cfg.get("preprocessing") or {}
    return Preprocessing(
        input_size=tuple(int(v) for v in cfg["input_size"]),  # type: ignore[arg-type]
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=str(extra.get("interpolation", "bilinear")),
        crop_pct=float(extra.get("crop_pct", 1.0)),
        crop_mode=str(extra.get("crop_mode", "squash")),
    )
