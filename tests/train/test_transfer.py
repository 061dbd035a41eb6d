"""Freezing strategies freeze exactly the intended parameters; layer-wise LR; transfer via fit."""

from __future__ import annotations

import pytest
import torch
from tests.train.conftest import tiny_cfg

from cnnlab.errors import UnknownNameError
from cnnlab.models import get_model
from cnnlab.train import fit
from cnnlab.train.optim import param_groups
from cnnlab.train.transfer import (
    FREEZE_STRATEGIES,
    apply_freeze,
    depth_units,
    layer_lr_scales,
    set_norm_eval,
)


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_resnet18_units_and_strategies():
    m = get_model("resnet18", num_classes=5)
    units, head = depth_units(m)
    assert units[0].modules == ["conv1", "bn1"] and head.params == ["fc.weight", "fc.bias"]
    assert [u.label for u in units[1:]] == [f"layer{i}.{j}" for i in range(1, 5) for j in (0, 1)]
    all_names = {n for n, _ in m.named_parameters()}

    apply_freeze(m, "early")
    frozen = all_names - trainable(m)
    assert frozen == {n for n in all_names if n.startswith(("conv1.", "bn1.", "layer1."))}

    apply_freeze(m, "most")
    assert trainable(m) == {n for n in all_names if n.startswith(("layer4.1.", "fc."))}

    apply_freeze(m, "all-but-head")
    assert trainable(m) == {"fc.weight", "fc.bias"}

    apply_freeze(m, "none")
    assert trainable(m) == all_names


def test_fastnet_and_simplecnn_strategies():
    m = get_model("fastnet", width=4)
    apply_freeze(m, "early")
    assert {n for n, p in m.named_parameters() if not p.requires_grad} == {
        "features.0.weight",
        "features.1.weight",
        "features.1.bias",
    }
    s = get_model("simplecnn")
    apply_freeze(s, "most")
    assert trainable(s) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


def test_unknown_strategy_lists_valid_ones():
    with pytest.raises(UnknownNameError) as exc:
        apply_freeze(get_model("fastnet"), "some")
    assert all(s in str(exc.value) for s in FREEZE_STRATEGIES)


def test_frozen_units_keep_batchnorm_statistics():
    m = get_model("fastnet", width=4).train()
    apply_freeze(m, "early")
    set_norm_eval(m, "early")
    assert not m.features[1].training and m.features[4].training
    before = m.features[1].running_mean.clone()
    m(torch.randn(8, 1, 28, 28) * 3 + 1)
    assert torch.equal(m.features[1].running_mean, before)
    m.train()
    set_norm_eval(m, "none", freeze_bn=True)
    assert not m.features[4].training and not m.features[8].training


def test_layer_wise_lr_groups():
    m = get_model("fastnet", width=4)
    scales = layer_lr_scales(m, 0.5)
    groups = param_groups(m, weight_decay=0.01, lr=1.0, lr_scales=scales)
    lr_of = {n: g["lr"] for g in groups for n in g["param_names"]}
    assert lr_of["fc.weight"] == 1.0 and lr_of["fc.bias"] == 1.0
    assert lr_of["features.7.weight"] == 0.5 and lr_of["features.8.bias"] == 0.5
    assert lr_of["features.3.weight"] == 0.25
    assert lr_of["features.0.weight"] == 0.125 and lr_of["features.1.weight"] == 0.125
    # decay and no-decay stay separate inside each LR level
    wd = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert wd["features.0.weight"] == 0.01 and wd["features.1.weight"] == 0.0


def test_fine_tune_from_run_with_new_classes_and_unfreezing(tmp_path, digits_small):
    """Pretrain on digits 0-4, transfer to 5-9 (new head), frozen body until epoch 1."""
    from cnnlab.data import DatasetSplits

    def classes(split, lo):
        idx = torch.nonzero((split.labels >= lo) & (split.labels < lo + 5)).flatten()
        ds = split.subset(idx)
        ds.labels = ds.labels - lo
        ds.classes = ds.classes[lo : lo + 5]
        return ds

    first = DatasetSplits(classes(digits_small.train, 0), classes(digits_small.test, 0))
    second = DatasetSplits(classes(digits_small.train, 5), classes(digits_small.test, 5))
    src = fit(tiny_cfg(tmp_path, name="src", epochs=1, checkpoint=False), splits=first)

    seen: list[set[str]] = []
    body: list[dict[str, torch.Tensor]] = []
    from cnnlab.train.callbacks import Callback

    class Spy(Callback):
        def on_epoch_start(self, state):
            seen.append(trainable(state.model))
            sd = state.model.state_dict()
            body.append({k: v.clone() for k, v in sd.items() if k.startswith("features.")})

    dst = fit(
        tiny_cfg(
            tmp_path,
            name="dst",
            epochs=2,
            transfer={"pretrained": str(src.run_dir), "freeze": "all-but-head", "unfreeze_at": 1},
            checkpoint=False,
        ),
        callbacks=[Spy()],
        splits=second,
    )
    assert seen[0] == {"fc.weight", "fc.bias"} and len(seen[1]) == len(list(dst.model.parameters()))
    # The body (weights and BatchNorm statistics) is the source's, untouched by the frozen epoch;
    # the head is new (5 classes); after unfreezing the body trains too.
    src_sd = src.model.state_dict()
    for k, v in body[1].items():
        assert torch.equal(v, src_sd[k]), k
    assert dst.model.fc.out_features == 5
    assert not torch.equal(src_sd["features.0.weight"], dst.model.state_dict()["features.0.weight"])
