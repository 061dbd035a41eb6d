"""Parameter arithmetic: how many weights a layer has, and the comparisons the course teaches.

Every formula here is the count PyTorch's module would have (tested against ``numel()``), so
students can verify exercises and see why 3x3 stacks, depthwise-separable convolutions and 1x1
bottlenecks became standard. Comparisons are returned as data (a :class:`Comparison`), not printed.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnlab.errors import ConfigError


def _pair(k: int | tuple[int, int]) -> tuple[int, int]:
    return (int(k[0]), int(k[1])) if isinstance(k, (tuple, list)) else (int(k), int(k))


def conv_params(
    c_in: int, c_out: int, k: int | tuple[int, int], groups: int = 1, bias: bool = True
) -> int:
    """Parameters of a ``Conv2d``: ``c_out * (c_in / groups) * kh * kw`` (+ ``c_out`` biases).

    Example::

        >>> conv_params(3, 64, 3), conv_params(32, 32, 3, groups=32, bias=False)
        (1792, 288)
    """
    if groups < 1 or c_in % groups or c_out % groups:
        raise ConfigError(f"groups={groups} must divide c_in={c_in} and c_out={c_out}")
    kh, kw = _pair(k)
    return c_out * (c_in // groups) * kh * kw + (c_out if bias else 0)


def linear_params(in_features: int, out_features: int, bias: bool = True) -> int:
    """Parameters of a ``Linear`` layer: ``in * out`` (+ ``out`` biases).

    Example::

        >>> linear_params(64 * 7 * 7, 128)   # the course SimpleCNN's fc1
        401536
    """
    return in_features * out_features + (out_features if bias else 0)


def batchnorm_params(channels: int, affine: bool = True) -> int:
    """Learnable parameters of ``BatchNorm2d``: a scale and a shift per channel (running mean and
    variance are buffers, not parameters). Example: ``batchnorm_params(64) == 128``."""
    return 2 * channels if affine else 0


def depthwise_separable_params(
    c_in: int, c_out: int, k: int | tuple[int, int], bias: bool = True
) -> int:
    """A k x k depthwise convolution (one filter per channel) followed by a 1x1 pointwise one.

    Example::

        >>> depthwise_separable_params(32, 64, 3, bias=False)   # 288 + 2048
        2336
    """
    return conv_params(c_in, c_in, k, groups=c_in, bias=bias) + conv_params(
        c_in, c_out, 1, bias=bias
    )


@dataclass(frozen=True)
class Comparison:
    """Two ways to build the same thing, with their parameter counts and the saving."""

    title: str
    a_name: str
    a_params: int
    b_name: str
    b_params: int

    @property
    def ratio(self) -> float:
        """``a_params / b_params``: how many times more parameters option A needs."""
        return self.a_params / self.b_params

    @property
    def saving(self) -> float:
        """Fraction of A's parameters that B saves (0.28 means B has 28 % fewer)."""
        return 1 - self.b_params / self.a_params

    def to_dict(self) -> dict:
        """Plain data for JSON output."""
        return {
            "title": self.title,
            "a": {"name": self.a_name, "params": self.a_params},
            "b": {"name": self.b_name, "params": self.b_params},
            "ratio": self.ratio,
            "saving": self.saving,
        }

    def __str__(self) -> str:
        return (
            f"{self.title}: {self.a_name} {self.a_params:,} vs {self.b_name} {self.b_params:,} "
            f"params ({self.ratio:.2f}x, {self.saving:.1%} saved)"
        )


def compare_5x5_vs_two_3x3(channels: int, bias: bool = False) -> Comparison:
    """One 5x5 convolution vs two stacked 3x3 ones: the same 5x5 receptive field, 25C² vs 18C²
    weights (and one more non-linearity). Example: ``compare_5x5_vs_two_3x3(64).saving == 0.28``."""
    return Comparison(
        f"5x5 conv vs two 3x3 convs ({channels} channels, same 5x5 receptive field)",
        "one 5x5",
        conv_params(channels, channels, 5, bias=bias),
        "two 3x3",
        2 * conv_params(channels, channels, 3, bias=bias),
    )


def compare_standard_vs_separable(
    c_in: int, c_out: int, k: int = 3, bias: bool = False
) -> Comparison:
    """A standard k x k convolution vs a depthwise-separable one (MobileNet's building block).

    The ratio is ``1 / c_out + 1 / k²`` — about 8-9x fewer weights for 3x3 kernels.
    """
    return Comparison(
        f"standard vs depthwise-separable {k}x{k} conv ({c_in}->{c_out})",
        "standard",
        conv_params(c_in, c_out, k, bias=bias),
        "depthwise-separable",
        depthwise_separable_params(c_in, c_out, k, bias=bias),
    )


def inception_params(
    c_in: int,
    ch1x1: int,
    ch3x3: int,
    ch5x5: int,
    pool_proj: int,
    ch3x3_reduce: int | None = None,
    ch5x5_reduce: int | None = None,
    bias: bool = True,
) -> int:
    """Parameters of an Inception block's convolutions.

    Without reductions (``None``) the 3x3 and 5x5 branches read all ``c_in`` channels and the pool
    branch passes them through (the naive block, no projection); with reductions each branch first
    squeezes the channels with a 1x1 convolution and the pool branch projects to ``pool_proj``.
    """
    total = conv_params(c_in, ch1x1, 1, bias=bias) if ch1x1 else 0
    for reduce, out, k in ((ch3x3_reduce, ch3x3, 3), (ch5x5_reduce, ch5x5, 5)):
        if reduce is None:
            total += conv_params(c_in, out, k, bias=bias)
        else:
            total += conv_params(c_in, reduce, 1, bias=bias) + conv_params(
                reduce, out, k, bias=bias
            )
    if ch3x3_reduce is not None and pool_proj:
        total += conv_params(c_in, pool_proj, 1, bias=bias)
    return total


def compare_inception_naive_vs_reduced(
    c_in: int = 192,
    ch1x1: int = 64,
    ch3x3_reduce: int = 96,
    ch3x3: int = 128,
    ch5x5_reduce: int = 16,
    ch5x5: int = 32,
    pool_proj: int = 32,
) -> Comparison:
    """The naive Inception block vs GoogLeNet's 1x1-reduced one (defaults: GoogLeNet's block 3a).

    Example: block 3a needs 387,296 weights+biases naively and 163,696 with 1x1 reductions.
    """
    naive = inception_params(c_in, ch1x1, ch3x3, ch5x5, pool_proj)
    reduced = inception_params(c_in, ch1x1, ch3x3, ch5x5, pool_proj, ch3x3_reduce, ch5x5_reduce)
    return Comparison(
        f"naive vs 1x1-reduced Inception block (in {c_in})", "naive", naive, "1x1-reduced", reduced
    )
