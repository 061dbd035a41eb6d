"""Vision Transformer: complete model, any patch-divisible size, vit_tiny learns small images."""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import InputShapeError
from cnnlab.models import get_model


def test_torchvision_key_names_are_present():
    m = get_model("vit_tiny", depth=2)
    keys = set(m.state_dict())
    for k in [
        "conv_proj.weight",
        "class_token",
        "encoder.pos_embedding",
        "encoder.layers.encoder_layer_1.ln_1.weight",
        "encoder.layers.encoder_layer_1.self_attention.in_proj_weight",
        "encoder.layers.encoder_layer_1.self_attention.out_proj.weight",
        "encoder.layers.encoder_layer_1.ln_2.bias",
        "encoder.layers.encoder_layer_1.mlp.0.weight",
        "encoder.layers.encoder_layer_1.mlp.3.weight",
        "encoder.ln.weight",
        "heads.head.weight",
    ]:
        assert k in keys, k


def test_position_embedding_is_interpolated_for_other_grids():
    torch.manual_seed(0)
    m = get_model("vit_tiny", num_classes=3, in_chans=1, depth=1).eval()
    assert m.encoder.pos_embedding.shape == (1, 65, 192)
    with torch.no_grad():
        for size in [(28, 28), (32, 32), (4, 4), (24, 40)]:
            feats = m.forward_features(torch.randn(2, 1, *size))
            assert feats.shape == (2, 1 + size[0] // 4 * size[1] // 4, 192)
            assert m.forward_head(feats).shape == (2, 3)


def test_same_grid_interpolation_is_the_identity():
    from cnnlab.models.vit import resize_pos_embedding

    pos = torch.randn(1, 1 + 16, 8)
    torch.testing.assert_close(resize_pos_embedding(pos, 4, (4, 4)), pos)


def test_bad_inputs_give_one_line_errors():
    m = get_model("vit_b_32", num_classes=2)
    with pytest.raises(InputShapeError, match="divisible by 32"):
        m(torch.randn(1, 3, 48, 64))
    with pytest.raises(InputShapeError, match="at least 32x32"):
        m(torch.randn(1, 3, 16, 32))
    with pytest.raises(InputShapeError, match="3 input channel"):
        m(torch.randn(1, 1, 32, 32))


def test_vit_tiny_overfits_two_batches(overfit):
    torch.manual_seed(0)
    m = get_model("vit_tiny", num_classes=10)
    batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))) for _ in range(2)]
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0)
    final = max(overfit(m, batches, opt, 30))
    assert final < 0.05, final
