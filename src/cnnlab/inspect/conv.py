"""Convolution by hand: a readable numpy reference and an explanation of one output value.

What ``torch.nn.functional.conv2d`` computes is cross-correlation: each output value is the sum of
the products of a kernel with the input patch under it (no kernel flip), plus a bias. This module
spells that out in numpy so the loop can be read top to bottom; it is tested equal to PyTorch over
random shapes, strides, paddings, dilations and groups.

The course's hand-worked example (5x5 image, 3x3 edge kernel with 8 in the centre) prints a wrong
output; :data:`COURSE_IMAGE` / :data:`COURSE_EDGE_KERNEL` reproduce it and the tests pin the right one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnlab.errors import ConfigError, InputShapeError
from cnnlab.inspect.geometry import output_size, padding_for

COURSE_IMAGE = np.array(
    [[1, 2, 3, 0, 1], [4, 5, 6, 1, 2], [7, 8, 9, 2, 3], [1, 2, 3, 4, 5], [2, 3, 4, 5, 6]],
    dtype=float,
)
COURSE_EDGE_KERNEL = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=float)


def _pair(v: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ConfigError(f"{name} must be an int or a pair (h, w); got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _as_nchw(image: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Bring (H,W) / (C,H,W) / (N,C,H,W) and (kh,kw) / (F,C,kh,kw) to 4-D; return how to squeeze."""
    image, kernel = np.asarray(image, dtype=float), np.asarray(kernel, dtype=float)
    if image.ndim not in (2, 3, 4):
        raise InputShapeError(f"image must be (H,W), (C,H,W) or (N,C,H,W); got shape {image.shape}")
    if kernel.ndim not in (2, 3, 4):
        raise InputShapeError(
            f"kernel must be (kh,kw), (C,kh,kw) or (filters,C/groups,kh,kw); got shape {kernel.shape}"
        )
    squeeze = 4 - image.ndim
    image = image.reshape((1,) * squeeze + image.shape)
    if kernel.ndim == 2:
        kernel = kernel[None, None]
    elif kernel.ndim == 3:
        kernel = kernel[None]
    if image.ndim == 4 and squeeze == 2 and kernel.shape[1] != 1:
        raise InputShapeError(f"a 2-D image has one channel; the kernel has {kernel.shape[1]}")
    return image, kernel, squeeze


def conv2d_numpy(
    image: np.ndarray,
    kernel: np.ndarray,
    stride: int | tuple[int, int] = 1,
    padding: int | str | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    bias: np.ndarray | float | None = None,
    groups: int = 1,
) -> np.ndarray:
    """2-D cross-correlation written as plain loops over output positions, equal to ``F.conv2d``.

    ``image``: (H, W), (C, H, W) or (N, C, H, W). ``kernel``: (kh, kw) for one single-channel
    filter, (C, kh, kw) for one multi-channel filter, or (F, C/groups, kh, kw) for F filters.
    ``padding`` is zeros per side, a pair, or ``valid``/``same``/``full``. The result keeps the
    image's rank: (H', W') for a 2-D image and one filter, otherwise (F, H', W') or (N, F, H', W').
    Example (the course's hand-worked edge detector, correctly computed)::

        >>> conv2d_numpy(COURSE_IMAGE, COURSE_EDGE_KERNEL)
        array([[  0.,  18., -18.],
               [ 27.,  41., -17.],
               [-21., -13.,  -5.]])
    """
    x, w, squeeze = _as_nchw(image, kernel)
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    if groups < 1 or c % groups or f % groups:
        raise ConfigError(f"groups={groups} must divide input channels {c} and filters {f}")
    if cg != c // groups:
        raise InputShapeError(
            f"kernel has {cg} input channel(s) per filter but the image has {c} channel(s) "
            f"in {groups} group(s) (expected {c // groups})"
        )
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    if isinstance(padding, str):
        if padding == "same" and (sh, sw) != (1, 1):
            raise ConfigError("padding='same' is only defined for stride 1 (as in PyTorch)")
        pads = []
        for k, d in ((kh, dh), (kw, dw)):
            total = 2 * padding_for(padding, k, d) if padding != "same" else d * (k - 1)
            pads.append((total // 2, total - total // 2))
    else:
        ph, pw = _pair(padding, "padding")
        pads = [(ph, ph), (pw, pw)]
    oh = output_size(h + sum(pads[0]), kh, sh, 0, dh)
    ow = output_size(wd + sum(pads[1]), kw, sw, 0, dw)
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    out = np.zeros((n, f, oh, ow))
    per_group = f // groups
    for b in range(n):
        for o in range(f):
            g = o // per_group
            channels = xp[b, g * cg : (g + 1) * cg]
            for i in range(oh):
                for j in range(ow):
                    # The patch under the kernel: every dilation-th pixel from the window's corner.
                    patch = channels[
                        :,
                        i * sh : i * sh + dh * (kh - 1) + 1 : dh,
                        j * sw : j * sw + dw * (kw - 1) + 1 : dw,
                    ]
                    out[b, o, i, j] = np.sum(patch * w[o])
    if bias is not None:
        out += np.broadcast_to(np.asarray(bias, dtype=float), (f,))[None, :, None, None]
    if squeeze == 2 and f == 1:
        return out[0, 0]
    return out[0] if squeeze >= 1 else out


@dataclass(frozen=True)
class ConvExplanation:
    """The multiply-adds behind one output value: ``value == sum(patch * kernel) + bias``."""

    position: tuple[int, int]
    patch: np.ndarray
    kernel: np.ndarray
    products: np.ndarray
    bias: float
    value: float

    def __str__(self) -> str:
        terms = " + ".join(
            f"{a:g}*{b:g}" for a, b in zip(self.patch.ravel(), self.kernel.ravel(), strict=True)
        )
        lines = [
            f"output{list(self.position)} = sum(patch * kernel)" + (" + bias" if self.bias else ""),
            "patch:",
            np.array2string(self.patch),
            "kernel:",
            np.array2string(self.kernel),
            "products:",
            np.array2string(self.products),
            f"= {terms}" + (f" + {self.bias:g}" if self.bias else ""),
            f"= {self.value:g}",
        ]
        return "\n".join(lines)


def explain_conv(
    image: np.ndarray,
    kernel: np.ndarray,
    position: tuple[int, int] = (0, 0),
    stride: int | tuple[int, int] = 1,
    padding: int | str | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    bias: float = 0.0,
) -> ConvExplanation:
    """Explain one output value of a single-filter convolution of a (H,W) or (C,H,W) image.

    ``str()`` of the result prints the patch, the kernel, the element-wise products and their sum,
    which is exactly what :func:`conv2d_numpy` returns at ``position``. Example::

        >>> e = explain_conv(COURSE_IMAGE, COURSE_EDGE_KERNEL, (0, 0))
        >>> e.value   # the course prints -13 here although its own products add up to 0
        0.0
    """
    x, w, _ = _as_nchw(image, kernel)
    if w.shape[0] != 1:
        raise InputShapeError(f"explain_conv takes one filter; got {w.shape[0]}")
    full = conv2d_numpy(x, w, stride, padding, dilation, bias=bias)
    i, j = position
    oh, ow = full.shape[-2:]
    if not (0 <= i < oh and 0 <= j < ow):
        raise InputShapeError(f"position {position} is outside the {oh}x{ow} output")
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    kh, kw = w.shape[-2:]
    if isinstance(padding, str):
        pads = []
        for k, d in ((kh, dh), (kw, dw)):
            total = d * (k - 1) if padding == "same" else 2 * padding_for(padding, k, d)
            pads.append((total // 2, total - total // 2))
    else:
        ph, pw = _pair(padding, "padding")
        pads = [(ph, ph), (pw, pw)]
    xp = np.pad(x[0], ((0, 0), pads[0], pads[1]))
    patch = xp[
        :, i * sh : i * sh + dh * (kh - 1) + 1 : dh, j * sw : j * sw + dw * (kw - 1) + 1 : dw
    ]
    kern = w[0]
    if patch.shape[0] == 1:
        patch, kern = patch[0], kern[0]
    products = patch * kern
    return ConvExplanation(
        position=(i, j),
        patch=patch,
        kernel=kern,
        products=products,
        bias=float(bias),
        value=float(full[..., i, j].ravel()[0]),
    )
