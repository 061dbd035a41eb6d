"""Output sizes and paddings of convolutions and pooling, as pure functions of integers.

The one formula behind every shape in a CNN::

    out = floor((n + 2p - d(k - 1) - 1) / s) + 1        (ceil instead of floor with ceil_mode)
    out = (n - 1)s - 2p + d(k - 1) + output_padding + 1  (transposed convolution)

These are what PyTorch computes (tested against the real modules), so students can check exercises
against them and size networks without building one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from cnnlab.errors import ConfigError, InputShapeError

PADDING_MODES = ("valid", "same", "full")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ConfigError(f"{name} must be a positive integer; got {value!r}")


def padding_for(mode: str | int, kernel: int, dilation: int = 1) -> int:
    """Padding (per side) for a padding mode: ``valid`` (0), ``same`` or ``full``.

    ``same`` keeps the size at stride 1: it needs ``d(k-1)/2`` per side, which is an integer only
    for odd effective kernels (PyTorch then pads the extra pixel on the right/bottom; use
    :func:`same_padding` for the split). ``full`` lets every kernel position that overlaps the
    input produce an output: ``d(k-1)`` per side. An integer passes through. Example::

        >>> padding_for("same", 3), padding_for("full", 3), padding_for("same", 3, dilation=2)
        (1, 2, 2)
    """
    if isinstance(mode, int) and not isinstance(mode, bool):
        if mode < 0:
            raise ConfigError(
                f"padding must be >= 0 or one of {', '.join(PADDING_MODES)}; got {mode}"
            )
        return mode
    _check_positive(kernel=kernel, dilation=dilation)
    span = dilation * (kernel - 1)
    if mode == "valid":
        return 0
    if mode == "same":
        return span // 2
    if mode == "full":
        return span
    raise ConfigError(
        f"unknown padding mode {mode!r}; valid: an integer >= 0 or one of {', '.join(PADDING_MODES)}"
    )


def same_padding(kernel: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding that keeps the size at stride 1 for any kernel and dilation.

    Even effective kernels need an asymmetric split; like PyTorch's ``padding="same"`` the extra
    pixel goes after. Example::

        >>> same_padding(3), same_padding(4), same_padding(3, dilation=2)
        ((1, 1), (1, 2), (2, 2))
    """
    _check_positive(kernel=kernel, dilation=dilation)
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def output_size(
    n: int,
    kernel: int,
    stride: int = 1,
    padding: int | str = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
    transposed: bool = False,
    output_padding: int = 0,
) -> int:
    """The output length of a convolution or pooling along one axis of length ``n``.

    ``padding`` is pixels per side or a mode (``valid``, ``same``, ``full``). ``ceil_mode`` follows
    PyTorch's pooling rule (the last window must start inside the input or left padding).
    ``transposed`` gives the size of a transposed convolution. Raises :class:`InputShapeError`
    when the kernel is larger than the padded input. Example::

        >>> output_size(224, 7, stride=2, padding=3), output_size(5, 3, padding="full")
        (112, 7)
        >>> output_size(7, 3, stride=2, ceil_mode=True), output_size(4, 4, 2, 1, transposed=True)
        (3, 8)
    """
    _check_positive(n=n, kernel=kernel, stride=stride, dilation=dilation)
    if isinstance(padding, str) and padding == "same" and stride != 1:
        raise ConfigError("padding='same' is only defined for stride 1 (as in PyTorch)")
    if isinstance(padding, str) and padding == "same":
        before, after = same_padding(kernel, dilation)
        return n + before + after - dilation * (kernel - 1)
    p = padding_for(padding, kernel, dilation)
    span = dilation * (kernel - 1) + 1
    if transposed:
        if not 0 <= output_padding < max(stride, dilation):
            raise ConfigError(
                f"output_padding must be smaller than stride or dilation; got {output_padding}"
            )
        out = (n - 1) * stride - 2 * p + span + output_padding
        if out < 1:
            raise InputShapeError(
                f"transposed convolution output would be {out}: padding {p} is too large for "
                f"input {n}, kernel {kernel}, stride {stride}"
            )
        return out
    if span > n + 2 * p:
        raise InputShapeError(
            f"kernel {kernel} (dilation {dilation}, span {span}) is larger than the padded input "
            f"{n} + 2*{p} = {n + 2 * p}; use a smaller kernel or more padding"
        )
    out = (n + 2 * p - span) / stride
    out = (math.ceil(out) if ceil_mode else math.floor(out)) + 1
    # PyTorch drops a last window that would start in the right padding.
    if ceil_mode and (out - 1) * stride >= n + p:
        out -= 1
    return out


def check_input_size(size: Sequence[int]) -> tuple[int, ...]:
    """Validate an input size (C, H, W) (a leading batch dimension is dropped)."""
    dims = tuple(size)
    if len(dims) == 4:
        dims = dims[1:]
    if len(dims) != 3 or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in dims):
        raise ConfigError(
            f"input size must be three positive integers (C, H, W); got {tuple(size)!r}"
        )
    return dims


def parse_input_size(text: str) -> tuple[int, int, int]:
    """Parse ``"3x224x224"`` (``3,224,224`` also works) into (C, H, W).

    Example::

        >>> parse_input_size("3x224x224"), parse_input_size("1,28,28")
        ((3, 224, 224), (1, 28, 28))
    """
    parts = text.strip().lower().replace(",", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) != 3 or min(dims) < 1:
        raise ConfigError(
            f"malformed input size {text!r}; expected CxHxW such as 3x224x224 or 1x28x28"
        )
    return dims[0], dims[1], dims[2]
