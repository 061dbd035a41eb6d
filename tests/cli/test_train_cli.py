"""`cnnlab train` and `cnnlab lr-find` through the real entry point: flags, recipes, bad input."""

from __future__ import annotations

import json

import pytest

from cnnlab.cli import main
from tests.conftest import run_cli


def run_main(capsys, *args):
    code = main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.parametrize(
    "args,needle",
    [
        (("train", "--schedule", "cosin"), "unknown schedule 'cosin'"),
        (("train", "--optimizer", "adamx"), "unknown optimizer 'adamx'"),
        (("train", "--freeze", "half"), "unknown freeze strategy 'half'"),
        (("train", "--recipe", "fmnist-fastest"), "unknown recipe 'fmnist-fastest'"),
        (("train", "--amp", "fp8"), "unknown amp mode 'fp8'"),
        (("train", "--transfer.freez", "most"), "unknown config key 'transfer.freez'"),
        (("train", "--monitor", "val_f1"), "unknown monitor metric 'val_f1'"),
    ],
)
def test_bad_names_are_one_line_with_valid_choices(capsys, args, needle):
    code, _, err = run_main(capsys, *args, "--data", "digits", "--no-progress")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert needle in lines[0] and "valid" in lines[0].lower()


def test_recipe_and_resume_cannot_be_combined(capsys, tmp_path):
    code, _, err = run_main(capsys, "train", "--recipe", "fmnist-fast", "--resume", str(tmp_path))
    assert code == 2 and "cannot be combined" in err


def test_recipe_resolves_with_overrides():
    from cnnlab.cli import build_parser, parse_overrides
    from cnnlab.cli.train import build_config

    args, extra = build_parser().parse_known_args(
        ["train", "--recipe", "fmnist-fast", "--epochs", "3", "--optim.lr", "1e-3"]
    )
    args.overrides = parse_overrides(extra)
    cfg = build_config(args)
    assert cfg.model == "fastnet" and cfg.data.name == "fashion-mnist"
    assert cfg.epochs == 3 and cfg.optim.lr == 1e-3 and cfg.data.augment == "altflip"


def test_train_with_engine_flags_writes_checkpoints_and_summary(tmp_path):
    res = run_cli(
        "train",
        "--model",
        "fastnet",
        "--model_kwargs.width",
        "8",
        "--data",
        "digits",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--sizes",
        "32,28",
        "--augment",
        "flip",
        "--ema",
        "0.9",
        "--accum-steps",
        "2",
        "--grad-clip",
        "5",
        "--patience",
        "3",
        "--threads",
        "1",
        "--tensorboard",
        "--name",
        "flags",
        "--out-dir",
        str(tmp_path),
        "--no-progress",
        "--report",
        "false",
    )
    assert res.returncode == 0, res.stderr
    run = tmp_path / "flags"
    for tag in ("last", "best"):
        (ck,) = (
            (run / "checkpoints").glob(f"{tag}-*")
            if tag == "best"
            else [run / "checkpoints" / "last-0002"]
        )
        for name in ("model.safetensors", "state.pt", "manifest.json"):
            assert (ck / name).stat().st_size > 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == 2
    tc = json.loads((run / "config.json").read_text())["train_config"]
    assert tc["data"]["sizes"] == [32, 28] and tc["accum_steps"] == 2 and tc["ema_decay"] == 0.9
    assert list((run / "tensorboard").iterdir())
    assert "resume    cnnlab train --resume" in res.stdout


def test_lr_find_cli_plots_and_suggests(tmp_path):
    out = tmp_path / "lr.png"
    res = run_cli(
        "lr-find",
        "--model",
        "fastnet",
        "--model_kwargs.width",
        "8",
        "--data",
        "digits",
        "--optimizer",
        "adamw",
        "--steps",
        "40",
        "--threads",
        "1",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("suggested lr ") and out.stat().st_size > 1000
    lr = float(res.stdout.split()[2])
    assert 1e-7 <= lr <= 10


def test_help_shows_examples(capsys):
    for cmd in ("train", "lr-find"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out = capsys.readouterr().out
        assert "example:" in out and f"cnnlab {cmd}" in out
