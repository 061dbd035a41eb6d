"""The inspection subcommands through the real entry point: numbers printed, PNGs written, errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, timeout=300
    )


def _png_ok(path, min_w=200):
    im = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert im.shape[1] >= min_w and im.std() > 5


def test_summary_subprocess_text_and_json(tmp_path):
    r = _cli("summary", "simplecnn", "--input", "1x28x28")
    assert r.returncode == 0, r.stderr
    assert "Total params:             421,642" in r.stdout
    assert "4,241,152" in r.stdout
    bad = _cli("summary", "simplecnn", "--input", "axbxc")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "cnnlab summary: error: malformed input size 'axbxc'; expected CxHxW such as 3x224x224 "
        "or 1x28x28"
    ]
    out = tmp_path / "s.json"
    assert main(["summary", "lenet_bn", "--format", "json", "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["total_params"] == 62_050 and data["input_size"] == [3, 32, 32]


def test_summary_on_run_directory(tmp_path, capsys):
    from safetensors.torch import save_file

    from cnnlab.models import get_model

    run = tmp_path / "run"
    run.mkdir()
    model = get_model("simplecnn", num_classes=5)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "model.safetensors")
    )
    (run / "config.json").write_text(
        json.dumps(
            {
                "model": {"name": "simplecnn", "kwargs": {"num_classes": 5}},
                "classes": ["a", "b", "c", "d", "e"],
                "input_size": [1, 28, 28],
                "mean": [0.5],
                "std": [0.25],
            }
        )
    )
    assert main(["summary", str(run), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "fc2,Linear,1x5,645," in out
    assert f"Total params,{421_642 - 5 * 129}" in out


@pytest.mark.parametrize(
    "args,needle",
    [
        (["summary", "simplecnn", "--input", "1x28"], "expected CxHxW such as 3x224x224"),
        (["summary", "resnet81"], "Did you mean"),
        (["arith", "size", "5", "--kernel", "7"], "larger than the padded input"),
        (["kernels", "nofile.png", "--kernel", "sobel_x,sobelz"], "Valid kernels:"),
        (["rf", "--layers", "3,x"], "KERNEL[/STRIDE][dDILATION]"),
    ],
)
def test_bad_input_is_one_line(args, needle, capsys):
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_rf_layers_and_model(capsys):
    assert main(["rf", "--layers", "3,3,2/2,3,3,2/2"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("receptive field: 16x16")
    assert main(["rf", "simplecnn", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    conv2 = next(layer for layer in data["layers"] if layer["name"] == "conv2")
    assert conv2["rf"] == [8, 8] and conv2["jump"] == [2, 2]


def test_arith(capsys):
    assert main(["arith", "size", "224", "-k", "7", "-s", "2", "-p", "3"]) == 0
    assert capsys.readouterr().out.strip() == "output size: 112"
    assert main(["arith", "size", "5", "-k", "3", "-p", "full"]) == 0
    assert capsys.readouterr().out.strip() == "output size: 7"
    assert main(["arith", "params", "conv", "--c-in", "3", "--c-out", "64"]) == 0
    assert capsys.readouterr().out.strip() == "parameters: 1,792"
    assert main(["arith", "compare", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["a"]["params"] == 102_400 and data[0]["b"]["params"] == 73_728
    assert main(["arith", "conv"]) == 0
    out = capsys.readouterr().out
    assert "[ 27.  41. -17.]" in out and out.strip().endswith("= 0")


def test_kernels_png(tmp_path):
    img = tmp_path / "in.png"
    arr = np.zeros((48, 64, 3), dtype=np.uint8)
    arr[10:40, 20:44] = 255
    Image.fromarray(arr).save(img)
    out = tmp_path / "k.png"
    assert main(["kernels", str(img), "--kernel", "sobel_x,blur", "--out", str(out)]) == 0
    _png_ok(out)


def test_viz_pngs(tmp_path, capsys):
    img = tmp_path / "digit.png"
    arr = np.zeros((28, 28), dtype=np.uint8)
    arr[5:23, 12:16] = 255
    Image.fromarray(arr).save(img)
    for args in (
        ["activations"],
        ["filters", "simplecnn"],
        ["features", "simplecnn", "--layer", "conv1", "--image", str(img)],
        ["rf", "simplecnn", "--layer", "conv2", "--image", str(img)],
    ):
        out = tmp_path / f"{args[0]}.png"
        assert main(["viz", *args, "--out", str(out)]) == 0
        _png_ok(out)


def test_summary_input_channels_follow_input(capsys):
    assert (
        main(
            ["summary", "resnet18", "--input", "1x64x64", "--num-classes", "10", "--format", "json"]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["rows"][0]["name"] == "conv1" and data["rows"][0]["params"] == 64 * 49
    assert data["output_shape"] == [1, 10]
