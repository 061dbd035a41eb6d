"""Segmentation task: confusion-matrix metrics by hand and against torchmetrics, the task contract."""

from __future__ import annotations

import math

import pytest
import torch

from cnnlab.data import DatasetSplits, load_dataset
from cnnlab.data.dense import IGNORE_INDEX
from cnnlab.errors import ConfigError, DataError
from cnnlab.models import get_model
from cnnlab.tasks.base import get_task
from cnnlab.tasks.segmentation import confusion_matrix, segmentation_metrics


def test_metrics_match_a_hand_computation() -> None:
    truth = torch.tensor([[0, 0, 1, 1], [0, 2, 2, IGNORE_INDEX]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 0, 1]])
    cm = confusion_matrix(pred, truth, 3)
    # rows truth, cols pred; the ignored pixel is not counted
    assert cm.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
    m = segmentation_metrics(cm)
    # IoU: c0 = 2/(2+1+1) = .5, c1 = 2/(2+1+0) = 2/3, c2 = 1/(1+0+1) = .5
    assert m.iou.tolist() == pytest.approx([0.5, 2 / 3, 0.5])
    assert m.miou == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert m.pixel_acc == pytest.approx(5 / 7)
    assert m.dice.tolist() == pytest.approx([4 / 6, 4 / 5, 2 / 3])


def test_a_class_absent_from_truth_and_prediction_is_not_averaged() -> None:
    truth = torch.tensor([0, 0, 1, 1])
    m = segmentation_metrics(confusion_matrix(truth.clone(), truth, 3))
    assert m.miou == 1.0 and math.isnan(m.iou[2].item())


def test_matches_torchmetrics() -> None:
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    g = torch.Generator().manual_seed(0)
    k = 4
    truth = torch.randint(0, k, (3, 16, 16), generator=g)
    truth[:, :2] = IGNORE_INDEX
    pred = torch.where(
        torch.rand(3, 16, 16, generator=g) < 0.6,
        truth,
        torch.randint(0, k, (3, 16, 16), generator=g),
    )
    pred[truth == IGNORE_INDEX] = 0
    m = segmentation_metrics(confusion_matrix(pred, truth, k))
    jac = MulticlassJaccardIndex(k, average=None, ignore_index=IGNORE_INDEX)(pred, truth)
    assert m.iou.float().tolist() == pytest.approx(jac.tolist(), abs=1e-6)
    miou = MulticlassJaccardIndex(k, average="macro", ignore_index=IGNORE_INDEX)(pred, truth)
    assert m.miou == pytest.approx(float(miou), abs=1e-6)
    acc = MulticlassAccuracy(k, average="micro", ignore_index=IGNORE_INDEX)(pred, truth)
    assert m.pixel_acc == pytest.approx(float(acc), abs=1e-6)


@pytest.fixture(scope="module")
def scenes() -> DatasetSplits:
    return load_dataset("digits-scenes", image_size=32, num_train=32, num_test=8)


def test_task_contract_trains_and_evaluates_unet(scenes: DatasetSplits) -> None:
    from cnnlab.train.config import DataConfig, TrainConfig

    cfg = TrainConfig(model="unet", data=DataConfig(name="digits-scenes", augment="flip,scale"))
    task = get_task("segmentation", cfg)
    task.check_data(scenes)
    train = scenes.train
    task.setup(train, torch.device("cpu"))
    kw = task.model_kwargs(train)
    assert kw == {"num_classes": 11, "in_chans": 1}
    torch.manual_seed(0)
    model = get_model("unet", **kw, base_channels=8, depth=2)
    task.check_model(model, train)
    mean, std = train.mean_std()
    tf = task.train_transform(cfg, train, torch.Generator().manual_seed(0))
    loader = task.make_loader(
        train, 8, mean=mean, std=std, shuffle=True, transform=tf, drop_last=True
    )
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    first = None
    for epoch in range(4):
        loader.set_epoch(epoch)
        for x, y in loader:
            out = model(x)
            loss = task.loss(out, y, model)
            first = first if first is not None else float(loss.detach())
            opt.zero_grad()
            loss.backward()
            opt.step()
            stats = task.batch_stats(out, y)
            assert 0 <= float(stats["train_pixel_acc"]) <= len(x)
    assert float(loss.detach()) < first
    metrics = task.evaluate(model, task.make_loader(scenes.test, 4, mean=mean, std=std))
    assert set(metrics) == set(task.metric_names)
    assert (
        0 <= metrics["test_miou"] <= 1 and metrics["test_pixel_acc"] > 0.5
    )  # background dominates
    assert task.last_metrics.confusion.shape == (11, 11)
    assert task.run_config(train)["classes"][0] == "background"


def test_bad_pairings_are_one_line_errors(scenes: DatasetSplits) -> None:
    task = get_task("segmentation")
    with pytest.raises(DataError, match="classification dataset"):
        task.check_data(load_dataset("digits"))
    with pytest.raises(ConfigError, match="detection model"):
        task.check_model(get_model("yolo_tiny", num_classes=10, in_chans=1, width=4), scenes.train)
    with pytest.raises(ConfigError, match="predicts 3 classes"):
        task.check_model(
            get_model("unet", num_classes=3, in_chans=1, base_channels=4, depth=2), scenes.train
        )


@pytest.mark.parametrize(
    "name", ["unet_resnet18", "unet_mobilenet_v2", "deeplab_resnet18", "deeplab_mobilenet_v2"]
)
def test_zoo_encoder_segmenters_give_full_size_logits_and_gradients(name: str) -> None:
    model = get_model(name, num_classes=5, in_chans=1)
    assert model.task == "segmentation" and len(model._taps) == 5
    out = model(torch.randn(2, 1, 40, 48))  # not a multiple of 32: logits still match the input
    assert out.shape == (2, 5, 40, 48)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with torch.device("meta"):  # the model table builds on meta: tap discovery must work there
        assert get_model(name, num_classes=3).head.out_channels == 3


def test_a_classification_run_is_the_pretrained_encoder(tmp_path) -> None:
    from safetensors.torch import save_file

    from cnnlab.models.pretrained import load_pretrained

    classifier = get_model("resnet18", num_classes=10, in_chans=1)
    save_file(classifier.state_dict(), str(tmp_path / "model.safetensors"))
    seg = get_model("unet_resnet18", num_classes=11, in_chans=1)
    report = load_pretrained(seg, tmp_path)
    assert torch.equal(seg.layer4[1].conv2.weight, classifier.layer4[1].conv2.weight)
    assert "head.weight" in report.reinitialised and any(
        k.startswith("decoder.") for k in report.reinitialised
    )
    assert sorted(report.ignored) == ["fc.bias", "fc.weight"]
