import numpy as np
import pytest
from PIL import Image

from cnnlab.errors import UnknownNameError
from cnnlab.inspect import viz
from cnnlab.models import get_model


def _check_png(path, min_w=300, min_h=200):
    im = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert im.shape[1] >= min_w and im.shape[0] >= min_h
    assert im.std() > 5  # not blank


def test_activation_plot(tmp_path):
    _check_png(viz.plot_activations(tmp_path / "a.png"), 900, 350)
    with pytest.raises(UnknownNameError):
        viz.plot_activations(tmp_path / "b.png", ["relu", "swish2"])


def test_filters_features_and_rf(tmp_path):
    model = get_model("simplecnn")
    img = np.zeros((28, 28, 1), dtype=np.float32)
    img[6:22, 12:16] = 1.0
    _check_png(viz.plot_filters(model, tmp_path / "f.png"))
    maps = viz.feature_maps(model, "conv2", img)
    assert maps.shape == (64, 14, 14)
    _check_png(viz.plot_feature_maps(model, "conv1", img, tmp_path / "m.png"))
    _check_png(viz.plot_receptive_field(model, "conv2", img, tmp_path / "r.png"))
    with pytest.raises(UnknownNameError, match="conv1"):
        viz.feature_maps(model, "conv9", img)


def test_kernel_grid(tmp_path):
    img = np.random.default_rng(0).random((40, 50, 3))
    _check_png(viz.plot_kernels(img, ["sobel_x", "blur", "emboss"], tmp_path / "k.png"))
