"""Scene datasets: exact labels from the pixels, fixed layouts, train/test items kept apart."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab.data import DatasetSplits, ImageDataset, load_dataset
from cnnlab.data.dense import boxes_from_instances
from cnnlab.data.scenes import SceneConfig, _scene_splits, compose_scenes


@pytest.fixture(scope="module")
def scenes() -> DatasetSplits:
    return load_dataset("digits-scenes", image_size=64, num_train=40, num_test=12)


def test_labels_are_exact_from_the_pixels(scenes: DatasetSplits) -> None:
    cfg = SceneConfig(canvas=64)
    for ds in (scenes.train, scenes.test):
        assert ds.image_shape == (1, 64, 64) and ds.classes == [str(i) for i in range(10)]
        for i in range(len(ds)):
            k = len(ds.boxes[i])
            assert 1 <= k <= 4
            inst, sem, img = ds.instances[i], ds.masks[i], ds.images[i, 0]
            boxes, areas = boxes_from_instances(inst, k)
            assert torch.equal(boxes, ds.boxes[i])  # each box is its item's tight mask box
            assert (areas > 0).all()
            for j in range(k):
                m = inst == j + 1
                assert (sem[m] == ds.box_labels[i][j] + 1).all()
                assert (img[m] >= cfg.threshold).all()  # the mask is the item's bright pixels
            assert torch.equal(sem > 0, inst > 0)
            # squares never overlap, so boxes never do
            b = ds.boxes[i]
            for p in range(k):
                for q in range(p + 1, k):
                    w = torch.min(b[p, 2], b[q, 2]) - torch.max(b[p, 0], b[q, 0])
                    h = torch.min(b[p, 3], b[q, 3]) - torch.max(b[p, 1], b[q, 1])
                    assert w <= 0 or h <= 0


def test_layouts_are_fixed_whatever_the_run_seed(scenes: DatasetSplits) -> None:
    again = load_dataset("digits-scenes", image_size=64, num_train=40, num_test=12, seed=7)
    assert torch.equal(again.train.images, scenes.train.images)
    assert torch.equal(again.test.masks, scenes.test.masks)
    assert not torch.equal(scenes.train.images[:12], scenes.test.images)


def test_train_canvases_use_only_train_items_and_test_only_test() -> None:
    def items(value: int) -> ImageDataset:
        return ImageDataset(
            torch.full((20, 1, 8, 8), value, dtype=torch.uint8),
            torch.arange(20) % 3,
            ["a", "b", "c"],
            "x",
        )

    splits = _scene_splits(DatasetSplits(items(200), items(100)), "t", 48, 10, 10)
    for ds, value in ((splits.train, 200), (splits.test, 100)):
        pixels = ds.images[:, 0][ds.instances > 0]
        assert pixels.numel() and (pixels == value).all()


def test_sizes_follow_the_canvas_and_bad_configs_fail() -> None:
    items = ImageDataset(
        torch.full((4, 1, 8, 8), 255, dtype=torch.uint8), torch.zeros(4), ["a"], "x"
    )
    ds = compose_scenes(items, 6, SceneConfig(canvas=100), seed=0, name="t")
    sides = torch.cat([b[:, 2:] - b[:, :2] for b in ds.boxes])
    assert sides.min() >= 16 and sides.max() <= 42  # 0.16..0.42 of the canvas
    with pytest.raises(Exception, match="too small"):
        compose_scenes(
            items, 1, SceneConfig(canvas=8, min_scale=0.9, max_scale=1.2), seed=0, name="t"
        )


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="dataset-fashion-mnist not installed",
)
def test_fashion_scenes_load_from_the_idx_files() -> None:
    splits = load_dataset("fashion-scenes", image_size=64, num_train=20, num_test=5)
    assert splits.train.classes[0] == "T-shirt/top" and len(splits.test) == 5
    assert splits.train.task == "detection" and set(splits.train.tasks) == {
        "detection",
        "segmentation",
    }
