"""Decode one image file into a uint8 (C, H, W) array, or say in a few words why it cannot be.

Real folders are messy: any extension in any letter case, grayscale, RGBA, palette and 16-bit images,
phone photos whose orientation lives in EXIF, the odd zero-byte or truncated file, and now and then a
decompression bomb. :func:`decode_image` turns every readable one into the same shape and raises
``ValueError`` with a short reason for the rest, so a loader can skip and report them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_PIXELS = 64_000_000  # decompression-bomb guard: larger images are refused before decoding


def is_image_file(path: str | Path) -> bool:
    """True for the common image extensions, in any letter case (hidden files excluded)."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float images scaled to 8 bits (PIL's convert('L') would clip them)."""
    arr = np.asarray(im)
    if im.mode == "F":
        arr = arr * 255.0 if arr.size and float(arr.max()) <= 1.0 else arr
        out = np.clip(arr, 0, 255)
    else:  # I;16*, I: 16-bit data in practice
        out = np.clip(arr.astype(np.float64), 0, 65535) / 257.0
    return Image.fromarray(np.round(out).astype(np.uint8), "L")


def decode_image(
    path: str | Path,
    size: int | tuple[int, int],
    channels: int,
    *,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode one file to a uint8 array (C, H, W): EXIF orientation applied, converted, resized.

    Transparent images are composited on white; palette, grayscale, CMYK and 16-bit images are
    converted to ``channels`` (1 or 3). The image is resized (bilinear, whole image) to ``size``.

    Raises ``ValueError`` with a short reason for empty, truncated, undecodable, oversized or
    unreadable files (and ``FileNotFoundError`` when the file does not exist). Pillow's warnings
    about decodable files are silenced: a normal folder decodes without a single warning.
    """
    path = Path(path)
    try:
        empty = path.stat().st_size == 0
    except FileNotFoundError:
        raise
    except OSError as exc:  # permission denied, an I/O error, a name too long: say which
        raise ValueError(f"cannot read the file: {exc.strerror or type(exc).__name__}") from None
    if empty:
        raise ValueError("empty file")
    h, w = (size, size) if isinstance(size, int) else size
    # Another library may have switched this global on; truncated files must fail, not half-decode.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with warnings.catch_warnings():
        # Pillow warns about odd-but-decodable files (corrupt EXIF, palette transparency, MPO
        # quirks): per-image noise a user cannot act on. Decompression bombs stay an error.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                if im.width * im.height > max_pixels:
                    raise ValueError(
                        f"image of {im.width}x{im.height} exceeds the {max_pixels:,}-pixel limit"
                    )
                return pil_to_array(im, (h, w), channels)
        except (
            OSError,
            SyntaxError,
            EOFError,
            Image.DecompressionBombError,
            Image.DecompressionBombWarning,
        ) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            if isinstance(exc, OSError) and exc.errno is not None:  # the filesystem, not Pillow
                reason = f"cannot read the file: {exc.strerror or type(exc).__name__}"
            else:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(reason[:200]) from None


def pil_to_array(im: Image.Image, size: tuple[int, int], channels: int) -> np.ndarray:
    """An opened PIL image → uint8 (C, H, W) at ``size`` (H, W): EXIF orientation applied,
    16-bit scaled to 8, transparency composited on white, converted to ``channels``, resized.

    Shared by the folder loader (:func:`decode_image`) and the HTTP service, so an image gives the
    model the same pixels whether it was trained on or uploaded. Pillow errors propagate.
    """
    h, w = size
    # JPEG: decode at a reduced DCT scale when the target is much smaller (a square request so
    # that an EXIF rotation cannot leave one side too small).
    side = max(w, h)
    im.draft("RGB" if channels == 3 else "L", (side, side))
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        im = _to_8bit(im)
    if im.mode in ("P", "PA", "LA", "RGBA", "La", "RGBa"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    im = im.convert("RGB" if channels == 3 else "L")
    if im.size != (w, h):
        im = im.resize((w, h), Image.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
