"""Any image a user hands the predictors (a path, a PIL image, an array or a tensor) as the model's
uint8 input: shared by the classification and the detection/segmentation predictors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.data.imagefolder import decode_image
from cnnlab.errors import DataError


def image_to_uint8(image: Any, input_size: Sequence[int]) -> torch.Tensor:
    """One image (path, PIL image, HxW / HxWxC / CxHxW array or tensor) → uint8 (C, H, W) at
    ``input_size`` (C, H, W).

    Example::

        image_to_uint8("scene.png", (1, 64, 64)).shape  # torch.Size([1, 64, 64])
    """
    c, h, w = input_size
    if isinstance(image, (str, Path)):
        try:
            # a copy: the decoded array is a read-only view, which torch warns about
            return torch.from_numpy(np.array(decode_image(image, (h, w), c), copy=True))
        except FileNotFoundError:
            raise DataError(f"{image}: no such file") from None
        except (ValueError, OSError) as exc:
            raise DataError(f"{image}: not a readable image ({exc})") from None
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB" if c == 3 else "L"))
    if not isinstance(image, torch.Tensor):
        arr = np.asarray(image)
        t = torch.as_tensor(arr if arr.flags.writeable else arr.copy())
    else:
        t = image
    if t.dim() == 2:
        t = t.unsqueeze(0)
    elif t.dim() == 3 and t.shape[-1] in (1, 3, 4) and t.shape[0] not in (1, 3, 4):
        t = t.permute(2, 0, 1)  # HWC → CHW
    if t.dim() != 3:
        raise DataError(f"an image must be HxW, HxWxC or CxHxW; got shape {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        t = t.float()
        t = (t * 255 if t.max() <= 1.0 else t).round().clamp(0, 255).to(torch.uint8)
    if t.shape[0] == 4:
        t = t[:3]
    if t.shape[0] != c:
        t = (
            t.float().mean(0, keepdim=True).round().to(torch.uint8)
            if c == 1
            else t.expand(c, -1, -1)
        )
    if tuple(t.shape[1:]) != (h, w):
        t = F.interpolate(
            t[None].float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False
        )[0]
        t = t.round().clamp(0, 255).to(torch.uint8)
    return t.contiguous()


def image_size(image: Any) -> tuple[int, int]:
    """The (height, width) of an image in any form :func:`image_to_uint8` takes (read from the
    file's header for a path)."""
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as im:
                return im.height, im.width
        except FileNotFoundError:
            raise DataError(f"{image}: no such file") from None
        except (ValueError, OSError) as exc:
            raise DataError(f"{image}: not a readable image ({exc})") from None
    if isinstance(image, Image.Image):
        return image.height, image.width
    shape = tuple(np.shape(image))
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4):
        return shape[0], shape[1]
    if len(shape) == 3:
        return shape[1], shape[2]
    raise DataError(f"an image must be HxW, HxWxC or CxHxW; got shape {shape}")
