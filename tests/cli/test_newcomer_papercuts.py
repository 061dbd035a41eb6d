"""Issue 20's training papercuts, each injected: small images for a ResNet, an unfreezing epoch,
Ctrl-C in the middle of a run, undecodable files in an image folder."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import DatasetSplits, ImageDataset
from cnnlab.train import TrainConfig
from cnnlab.train.callbacks import Callback
from cnnlab.train.config import DataConfig, TransferConfig


def _tiny_splits(n: int = 32, size: int = 28, classes: int = 2) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 60, (n, 1, size, size), dtype=torch.uint8, generator=g)
    images[labels == 1, :, : size // 2] = 250  # learnable: class 1 has a bright top half
    ds = ImageDataset(images, labels, [f"c{i}" for i in range(classes)], "tiny")
    return DatasetSplits(ds, ds)


# --- 1: zoo models adapt to MNIST-sized data ------------------------------------------------


def test_resnet_on_28_pixel_digits_takes_its_small_input_stem(capsys):
    from cnnlab.cli.train import fit_model_to_data

    cfg, splits = fit_model_to_data(TrainConfig(model="resnet18", data=DataConfig(name="digits")))
    assert cfg.model_kwargs == {"small_input": True}
    assert splits is not None and splits.train.image_shape == (1, 28, 28)  # loaded once, passed on
    err = capsys.readouterr().err
    assert "small_input=True for 28x28 images" in err and "--model_kwargs.small_input false" in err
    # a model with no such variant, and a user's explicit choice, are left alone (no data loaded)
    assert fit_model_to_data(TrainConfig(model="simplecnn")) == (
        TrainConfig(model="simplecnn"),
        None,
    )
    keep = TrainConfig(model="resnet18", model_kwargs={"small_input": False})
    assert fit_model_to_data(keep) == (keep, None)


def test_the_refusal_names_the_option(tmp_path, capsys):
    code = main(
        ["train", "--model", "resnet18", "--data", "digits", "--model_kwargs.small_input",
         "false", "--out-dir", str(tmp_path), "--no-progress"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--model_kwargs.small_input true" in err[0] and "--image-size" in err[0]


def test_summary_of_resnet_at_28_pixels(capsys):
    assert main(["summary", "resnet18", "--input", "1x28x28"]) == 0
    cap = capsys.readouterr()
    assert "small_input=True for 28x28 inputs" in cap.err and "Total params" in cap.out


def test_registry_picks_the_variant_only_below_the_standard_minimum():
    from cnnlab.models import kwargs_for_input, small_input_sizes

    assert kwargs_for_input("resnet18", 28) == {"small_input": True}
    assert kwargs_for_input("resnet18", 64) == {}
    assert kwargs_for_input("vgg11", 28) == {} and small_input_sizes("vgg11") is None
    assert small_input_sizes("resnet50") == (32, 8)


# --- 6: unfreezing, the two ETAs, Ctrl-C ----------------------------------------------------


class _CtrlC(Callback):
    """Presses Ctrl-C at the start of epoch ``at`` (1-based)."""

    def __init__(self, at: int):
        self.at = at

    def on_epoch_start(self, state) -> None:
        if state.epoch + 1 == self.at:
            raise KeyboardInterrupt


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(model="simplecnn", epochs=3, batch_size=16, out_dir=str(tmp_path), name="r",
                report=False)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_ctrl_c_says_how_to_resume_and_writes_the_summary(tmp_path, capsys):
    from cnnlab.train import fit

    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(tmp_path), callbacks=[_CtrlC(2)], splits=_tiny_splits())
    err = capsys.readouterr().err
    run = tmp_path / "r"
    assert f"continue with: cnnlab train --resume {run}" in err
    assert "interrupted during epoch 2" in err and "keeps epoch 1" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_run"] == 1


def test_ctrl_c_before_any_epoch_says_there_is_nothing_to_resume(tmp_path, capsys):
    from cnnlab.train import fit

    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(tmp_path), callbacks=[_CtrlC(1)], splits=_tiny_splits())
    assert "nothing to resume" in capsys.readouterr().err


def test_the_cli_turns_ctrl_c_into_exit_130(tmp_path, capsys, monkeypatch):
    import cnnlab.train as train_pkg

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_pkg, "fit", interrupted)  # the loop's own line is tested above
    assert main(["train", "--out-dir", str(tmp_path), "--no-progress"]) == 130
    assert "cnnlab train: interrupted" in capsys.readouterr().err


def test_unfreezing_names_the_flag_and_the_epoch(tmp_path, capsys):
    from cnnlab.train import fit

    cfg = _cfg(tmp_path, epochs=2, transfer=TransferConfig(freeze="early", unfreeze_at=1))
    fit(cfg, splits=_tiny_splits())
    err = capsys.readouterr().err
    assert "epoch 2: everything unfrozen after 1 frozen epoch(s) (--unfreeze-at 1" in err


def test_progress_bar_labels_both_etas():
    from cnnlab.train.loop import BAR_FORMAT

    assert "epoch left {remaining}" in BAR_FORMAT
    import inspect

    from cnnlab.train import loop

    assert '"run left"' in inspect.getsource(loop._show_progress)


def test_unfreeze_help_says_when(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "then everything from epoch N+1" in " ".join(capsys.readouterr().out.split())


# --- 9: undecodable files are one line ------------------------------------------------------


def test_skipped_files_are_one_line_and_no_warning(tmp_path, capsys):
    root = tmp_path / "photos"
    for c in ("cats", "dogs"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            arr = np.full((8, 8, 3), 40 * i + (100 if c == "dogs" else 0), np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    (root / "cats" / "broken.png").write_bytes(b"not a png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a raw UserWarning would fail here
        code = main(
            ["train", "--data", "imagefolder", "--data-dir", str(root), "--image-size", "28",
             "--epochs", "1", "--batch-size", "4", "--out-dir", str(tmp_path / "runs"),
             "--name", "r", "--no-progress", "--report", "false"]
        )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "skipped" in ln]
    assert len(lines) == 1 and lines[0].startswith("skipped 1 image file")
    assert str(tmp_path / "runs" / "r" / "skipped.txt") in lines[0]
