"""The first thing a user does, through the real entry point: train → eval → predict."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-runs")
    res = run_cli(
        "train",
        "--model",
        "simplecnn",
        "--data",
        "digits",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--name",
        "e2e",
        "--out-dir",
        str(out),
        "--optim.weight_decay",
        "0.0",
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    return out / "e2e", res


def _digit_png(path, digit=3):
    from sklearn.datasets import load_digits

    d = load_digits()
    img = d.images[list(d.target).index(digit)] / 16 * 255
    Image.fromarray(img.astype(np.uint8)).resize((28, 28)).save(path)
    return path


def test_train_writes_complete_run_directory(cli_run):
    run_dir, res = cli_run
    assert f"run directory: {run_dir}" in res.stdout
    for name in ("model.safetensors", "config.json", "metrics.csv", "confusion.png", "curves.png"):
        assert (run_dir / name).stat().st_size > 0, name
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["model"]["name"] == "simplecnn"
    assert cfg["classes"] == [str(i) for i in range(10)]
    assert cfg["input_size"] == [1, 28, 28]
    assert len(cfg["mean"]) == 1 and len(cfg["std"]) == 1
    assert cfg["train_config"]["epochs"] == 1 and cfg["train_config"]["batch_size"] == 32
    assert 0 <= cfg["metrics"]["test_acc"] <= 1
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "epoch",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "lr",
        "epoch_s",
        "elapsed_s",
    ]
    assert len(rows) == 1 and float(rows[0]["elapsed_s"]) > 0


def test_eval_rebuilds_from_run_directory(cli_run):
    run_dir, train_res = cli_run
    res = run_cli("eval", "--run", str(run_dir))
    assert res.returncode == 0, res.stderr
    acc = float(res.stdout.split()[1])
    cfg = json.loads((run_dir / "config.json").read_text())
    assert acc == pytest.approx(cfg["metrics"]["test_acc"], abs=1e-4)
    assert "macro avg" in res.stdout and "weighted avg" in res.stdout


def test_predict_files_and_bad_files(cli_run, tmp_path):
    run_dir, _ = cli_run
    good = _digit_png(tmp_path / "three.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "trunc.png"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    res = run_cli(
        "predict",
        "--run",
        str(run_dir),
        str(good),
        str(empty),
        str(text),
        str(truncated),
        "--format",
        "json",
    )
    assert res.returncode == 1
    out = json.loads(res.stdout)
    assert out[0]["source"] == str(good) and out[0]["label"] in [str(i) for i in range(10)]
    assert all("error" in o for o in out[1:])
    err_lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(err_lines) == 3 and all(ln.startswith("cnnlab predict: error:") for ln in err_lines)
    assert "Traceback" not in res.stderr


def test_api_equivalent(digits_run):
    import cnnlab
    from cnnlab.data import load_dataset

    p = cnnlab.load(digits_run)
    test = load_dataset("digits").test
    preds = p.predict(test.images[:16].numpy(), top_k=3)
    assert len(preds) == 16
    assert all(
        pr.label in p.classes and 0 <= pr.probability <= 1 and len(pr.top_k) == 3 for pr in preds
    )
    probs = p.predict_proba(list(test.images[:4]))
    assert probs.shape == (4, 10) and torch_allclose(probs.sum(1), 1.0)
    acc = np.mean(
        [pr.index == y for pr, y in zip(p.predict(test.images.numpy()), test.labels.tolist())]
    )
    cfg = json.loads((digits_run / "config.json").read_text())
    assert acc == pytest.approx(cfg["metrics"]["test_acc"], abs=1e-3)


def torch_allclose(t, v):
    return bool(((t - v).abs() < 1e-5).all())


@pytest.mark.parametrize(
    "args,needle",
    [
        (("train", "--model", "resnet19"), "unknown model 'resnet19'"),
        (("train", "--data", "cifar100x"), "unknown dataset 'cifar100x'"),
        (("train", "--optimizer", "adamx", "--epochs", "1"), "unknown optimizer 'adamx'"),
        (("train", "--optim.lrr", "1"), "unknown config key 'optim.lrr'"),
    ],
)
def test_unknown_names_exit_2_with_valid_names(capsys, args, needle):
    code, _, err = run_main(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "valid" in lines[0].lower()


def test_unknown_model_through_real_process():
    res = run_cli("train", "--model", "resnet19")
    assert res.returncode == 2 and "Did you mean" in res.stderr and "Traceback" not in res.stderr


def test_missing_data_dir_says_how_to_get_data(tmp_path):
    res = run_cli("train", "--data", "fashion-mnist", "--data-dir", str(tmp_path / "nope"))
    assert res.returncode == 2
    assert "apt-get install dataset-fashion-mnist" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "victim,needle", [("model.safetensors", "model.safetensors"), ("config.json", "config.json")]
)
@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_damaged_run_directory_names_the_file(cli_run, tmp_path, capsys, victim, needle, damage):
    run_dir, _ = cli_run
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    if damage == "missing":
        (broken / victim).unlink()
    else:
        (broken / victim).write_bytes(b"\x00garbage{")
    cmds = (["eval", "--run", str(broken)], ["predict", "--run", str(broken), str(tmp_path)])
    if victim == "model.safetensors":
        # with a verified checkpoint beside it, the run falls back to it and says so in one line
        for cmd in cmds:
            code, _, err = run_main(capsys, *cmd)
            warned = [line for line in err.splitlines() if needle in line]
            assert code == 0 and len(warned) == 1 and "using the weights of best-" in warned[0]
        shutil.rmtree(broken / "checkpoints")
    for cmd in cmds:  # nothing to fall back to: a one-line error
        code, _, err = run_main(capsys, *cmd)
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], err


def test_help_shows_an_example(capsys):
    for cmd in ("train", "eval", "predict", "models"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        out = capsys.readouterr().out
        assert exc.value.code == 0 and "example:" in out and "cnnlab " + cmd in out


def run_main(capsys, *args):
    """Call the CLI's entry function in-process (same code path as the console script)."""
    code = main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err
