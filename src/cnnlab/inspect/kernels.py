"""Classic image-processing kernels, and applying them to an image as a CNN's first layer would.

A trained CNN's first-layer filters often look like these hand-made ones (edges, blobs, colour
opponents), which is why the course starts with them. Kernels are numpy arrays used as
cross-correlation weights (what ``F.conv2d`` computes; no flip).
"""

from __future__ import annotations

import numpy as np

from cnnlab.errors import UnknownNameError


def _gaussian(size: int = 5, sigma: float = 1.0) -> np.ndarray:
    ax = np.arange(size) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    k = np.outer(g, g)
    return k / k.sum()


KERNELS: dict[str, np.ndarray] = {
    "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=float),
    "sobel_x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=float),
    "sobel_y": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=float),
    "prewitt_x": np.array([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]], dtype=float),
    "prewitt_y": np.array([[-1, -1, -1], [0, 0, 0], [1, 1, 1]], dtype=float),
    "laplacian": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=float),
    "laplacian8": np.array([[1, 1, 1], [1, -8, 1], [1, 1, 1]], dtype=float),
    "edge": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=float),
    "box_blur": np.full((3, 3), 1 / 9),
    "gaussian_blur": _gaussian(5, 1.0),
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=float),
    "emboss": np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=float),
}
# Short names users type (the course says "blur" for the box filter).
ALIASES = {"blur": "box_blur", "box": "box_blur", "gaussian": "gaussian_blur", "sobel": "sobel_x"}


def list_kernels() -> list[str]:
    """Names accepted by :func:`get_kernel` (aliases included), sorted."""
    return sorted([*KERNELS, *ALIASES])


def get_kernel(name: str) -> np.ndarray:
    """A copy of the classic kernel ``name``; unknown names raise :class:`UnknownNameError`.

    Example::

        >>> get_kernel("sobel_x")
        array([[-1.,  0.,  1.],
               [-2.,  0.,  2.],
               [-1.,  0.,  1.]])
    """
    key = ALIASES.get(name, name)
    if key not in KERNELS:
        raise UnknownNameError("kernel", name, list_kernels())
    return KERNELS[key].copy()


def apply_kernel(image: np.ndarray, kernel: np.ndarray | str) -> np.ndarray:
    """Filter a (H, W) or (H, W, C) image with one 2-D kernel, keeping its size.

    Borders are reflected (not zero-padded) so edge filters do not light up the image frame; each
    colour channel is filtered separately. Uses PyTorch's conv2d for speed; :func:`conv2d_numpy`
    is the readable reference it is tested against.
    """
    import torch
    import torch.nn.functional as F

    k = get_kernel(kernel) if isinstance(kernel, str) else np.asarray(kernel, dtype=float)
    img = np.asarray(image, dtype=np.float64)
    chans = img[..., None] if img.ndim == 2 else img
    x = torch.from_numpy(np.ascontiguousarray(chans.transpose(2, 0, 1)))[:, None]
    kh, kw = k.shape
    pad = ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)
    mode = "reflect" if min(img.shape[:2]) > max(kh, kw) else "replicate"
    x = F.pad(x, pad, mode=mode)
    out = F.conv2d(x, torch.from_numpy(k)[None, None]).numpy()[:, 0].transpose(1, 2, 0)
    return out[..., 0] if img.ndim == 2 else out
