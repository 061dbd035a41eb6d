import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.errors import InputShapeError
from cnnlab.inspect import COURSE_EDGE_KERNEL, COURSE_IMAGE, conv2d_numpy, explain_conv, get_kernel
from cnnlab.inspect.kernels import apply_kernel


def test_course_example_is_computed_not_copied():
    out = conv2d_numpy(COURSE_IMAGE, COURSE_EDGE_KERNEL)
    np.testing.assert_array_equal(out, [[0, 18, -18], [27, 41, -17], [-21, -13, -5]])
    assert not np.array_equal(out, [[-13, -15, -12], [-8, -9, -6], [-5, -6, 0]])
    e = explain_conv(COURSE_IMAGE, COURSE_EDGE_KERNEL, (0, 0))
    assert e.value == 0 and e.products.sum() == 0
    assert "= 0" in str(e) and "5*8" in str(e)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    cpg=st.integers(1, 2),
    fpg=st.integers(1, 2),
    h=st.integers(5, 9),
    w=st.integers(5, 9),
    kh=st.integers(1, 3),
    kw=st.integers(1, 3),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    bias=st.booleans(),
)
def test_equals_torch_conv2d(n, groups, cpg, fpg, h, w, kh, kw, stride, padding, dilation, bias):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, groups * cpg, h, w))
    k = rng.standard_normal((groups * fpg, cpg, kh, kw))
    b = rng.standard_normal(groups * fpg) if bias else None
    ours = conv2d_numpy(x, k, stride, padding, dilation, bias=b, groups=groups)
    ref = F.conv2d(
        torch.from_numpy(x),
        torch.from_numpy(k),
        None if b is None else torch.from_numpy(b),
        stride,
        padding,
        dilation,
        groups,
    )
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-10)


@pytest.mark.parametrize("mode", ["valid", "same", "full"])
def test_padding_modes_match_torch(mode):
    x = np.arange(36.0).reshape(1, 6, 6)
    k = np.arange(8.0).reshape(2, 1, 2, 2)  # even kernel: 'same' pads asymmetrically like torch
    ours = conv2d_numpy(x, k, padding=mode)
    tx, tk = torch.from_numpy(x)[None], torch.from_numpy(k)
    ref = F.conv2d(tx, tk, padding=1) if mode == "full" else F.conv2d(tx, tk, padding=mode)
    np.testing.assert_allclose(ours, ref[0].numpy())
    assert ours.shape[-1] == {"valid": 5, "same": 6, "full": 7}[mode]


def test_kernel_larger_than_padded_input_is_a_one_line_error():
    with pytest.raises(InputShapeError, match="larger than the padded input"):
        conv2d_numpy(np.ones((3, 3)), np.ones((5, 5)))


def test_apply_kernel_matches_reference_inside():
    img = np.random.default_rng(1).random((8, 9))
    k = get_kernel("sobel_x")
    out = apply_kernel(img, k)
    assert out.shape == img.shape
    np.testing.assert_allclose(out[1:-1, 1:-1], conv2d_numpy(img, k))


def test_explain_multichannel_with_stride_padding_matches_full_output():
    rng = np.random.default_rng(2)
    img, k = (
        rng.integers(-3, 4, (2, 6, 7)).astype(float),
        rng.integers(-2, 3, (2, 3, 3)).astype(float),
    )
    full = conv2d_numpy(img, k, stride=2, padding=1, bias=0.5)
    e = explain_conv(img, k, (1, 2), stride=2, padding=1, bias=0.5)
    assert e.patch.shape == (2, 3, 3)
    assert e.value == pytest.approx(full[0, 1, 2]) == pytest.approx(e.products.sum() + 0.5)
    with pytest.raises(InputShapeError, match="outside"):
        explain_conv(img, k, (9, 9))
