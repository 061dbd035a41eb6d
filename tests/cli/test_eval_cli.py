"""`cnnlab eval`, `cnnlab explain` and `cnnlab report` through the real entry point."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import DatasetSplits, ImageDataset, list_datasets, register_dataset
from tests.conftest import run_cli


def _fake_source(name: str, classes: list[str], shape: tuple[int, int, int]) -> None:
    """Register a tiny in-memory data source (ignores image_size, like fixed-size IDX files)."""
    if name in list_datasets():
        return

    @register_dataset(name)
    def _load(**_: object) -> DatasetSplits:
        g = torch.Generator().manual_seed(0)
        n = 2 * len(classes)
        ds = ImageDataset(
            torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g),
            torch.arange(n) % len(classes),
            list(classes),
            name,
        )
        return DatasetSplits(ds, ds)


DIGITS = [str(i) for i in range(10)]
_fake_source("eval-test-letters", [*DIGITS[:8], "x", "y"], (1, 28, 28))
_fake_source("eval-test-rgb", DIGITS, (3, 28, 28))
_fake_source("eval-test-small", DIGITS, (1, 16, 16))


def run_main(capsys, *args):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture()
def run_copy(digits_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(digits_run, dst)
    return dst


def test_eval_with_tta_and_calibration_through_the_real_process(run_copy):
    res = run_cli("eval", "--run", str(run_copy), "--tta", "flip", "--calibrate", "--no-latency")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    cfg = json.loads((run_copy / "config.json").read_text())
    assert float(lines[0].split()[1]) == pytest.approx(cfg["metrics"]["test_acc"], abs=1e-4)
    assert lines[1].startswith("with TTA (flip): accuracy")
    assert "calibration: temperature" in res.stdout
    # saved only when it lowers the cross-fitted NLL, and the line says which happened
    line = next(ln for ln in lines if ln.startswith("calibration:"))
    nll = line.split("NLL ")[1].split(",")[0]  # "0.3300 -> 0.3246"
    before, after = (float(v) for v in nll.split(" -> "))
    if after < before:
        assert "saved to config.json" in line and cfg["calibration"]["temperature"] > 0
    else:
        assert "not saved" in line and "calibration" not in cfg
    for name in (
        "confusion.png",
        "per_class.png",
        "reliability.png",
        "top_losses.png",
        "eval.json",
    ):
        assert (run_copy / name).stat().st_size > 0, name
    summary = json.loads((run_copy / "eval.json").read_text())
    assert summary["tta"]["views"] == "flip" and 0 <= summary["ece"] <= 1


def test_eval_prints_latency(run_copy, capsys):
    code, out, _ = run_main(capsys, "eval", "--run", run_copy, "--no-plots")
    assert code == 0 and "ms/image at batch 1" in out and "images/s" in out
    assert "p90" in out and "warm-up" in out


@pytest.mark.parametrize(
    "calibrate,improves,saved,needle",
    [
        (True, False, None, "does not lower the cross-fitted NLL: not saved (nothing saved)"),
        (True, False, 1.3, "not saved (config.json keeps T=1.3000)"),
        (False, True, None, "it lowers the NLL: --calibrate saves it"),
        (False, False, None, "it does not lower the NLL: nothing to save"),
    ],
)
def test_calibration_verdict_says_what_happened(calibrate, improves, saved, needle):
    from cnnlab.cli.eval import _calibration_verdict

    c = {"improves": improves, "saved_temperature": saved, "saved_now": False}
    assert needle in _calibration_verdict(c, calibrate)


def test_a_temperature_that_worsens_nll_is_not_an_improvement():
    from cnnlab.evaluate.run_eval import calibration_improves

    assert not calibration_improves({"nll_before": 0.0929, "nll_after": 0.1009})  # the issue's
    assert calibration_improves({"nll_before": 0.12, "nll_after": 0.10})
    assert not calibration_improves({"nll_before": 0.1})  # too few images to cross-fit


@pytest.mark.parametrize("method", ["mean", "weighted", "vote"])
def test_ensemble_reports_members_and_ensemble(digits_run, run_copy, capsys, method):
    code, out, err = run_main(
        capsys, "eval", "--run", digits_run, "--ensemble", run_copy, "--method", method
    )
    assert code == 0, err
    assert out.startswith("accuracy ") and f"{method} ensemble of 2 runs" in out
    assert f"ensemble ({method})" in out and digits_run.name in out and "run " in out
    if method == "weighted":
        assert "weights:" in out


def test_ensemble_members_with_different_classes_are_refused(digits_run, run_copy, capsys):
    cfg = json.loads((run_copy / "config.json").read_text())
    cfg["classes"][3] = "three"
    (run_copy / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_main(capsys, "eval", "--run", digits_run, "--ensemble", run_copy)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "lacks ['3'] and adds ['three']" in lines[0]


@pytest.mark.parametrize(
    "data,needles",
    [
        ("eval-test-letters", ["classes differ", "missing ['8', '9']", "unexpected ['x', 'y']"]),
        ("eval-test-rgb", ["3 channel(s)", "expects 1"]),
        ("eval-test-small", ["16x16", "expects 28x28", "--resize"]),
    ],
)
def test_eval_on_mismatched_data_says_which(digits_run, capsys, data, needles):
    code, _, err = run_main(capsys, "eval", "--run", digits_run, "--data", data, "--no-plots")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_eval_resize_flag_accepts_other_sizes(digits_run, capsys):
    code, out, err = run_main(
        capsys, "eval", "--run", digits_run, "--data", "eval-test-small", "--resize", "--no-plots",
        "--no-latency",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("accuracy")


def test_unknown_tta_view_is_a_one_line_error(digits_run, capsys):
    code, _, err = run_main(capsys, "eval", "--run", digits_run, "--tta", "flipz", "--no-plots")
    assert code == 2 and "unknown TTA view 'flipz'" in err and "flip+crops" in err


def _digit_png(path, digit=3):
    from sklearn.datasets import load_digits

    d = load_digits()
    img = d.images[list(d.target).index(digit)] / 16 * 255
    Image.fromarray(img.astype(np.uint8)).resize((28, 28)).save(path)
    return path


def test_explain_writes_overlays_and_reports_bad_files(digits_run, tmp_path, capsys):
    good = _digit_png(tmp_path / "three.png")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    out = tmp_path / "expl"
    code, stdout, err = run_main(
        capsys, "explain", "--run", digits_run, good, bad, "--method", "all", "--out", out
    )
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "three_gradcam.png",
        "three_gradcampp.png",
        "three_saliency.png",
    ]
    assert "three.png" in stdout and "bad.png" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_main(
        capsys, "explain", "--run", digits_run, good, "--layer", "conv9", "--out", out
    )
    assert code == 2 and "unknown layer 'conv9'" in err and "conv2" in err
    code, _, err = run_main(
        capsys, "explain", "--run", digits_run, good, "--target", "eleven", "--out", out
    )
    assert code == 2 and "unknown class 'eleven'" in err


def test_report_and_compare_commands(digits_run, run_copy, tmp_path, capsys):
    code, out, err = run_main(capsys, "report", run_copy, "--quick", "--device", "cpu")
    assert code == 0, err
    assert out.strip() == f"report: {run_copy / 'report.html'}"
    text = (run_copy / "report.html").read_text()
    assert (
        '<section id="gradcam">' in text and "quick report, written at the end of training" in text
    )
    cmp_path = tmp_path / "compare.html"
    code, out, err = run_main(capsys, "report", digits_run, run_copy, "--compare", cmp_path)
    assert code == 0, err
    assert cmp_path.exists() and "comparison:" in out


def test_help_shows_examples(capsys):
    for cmd in ("eval", "explain", "report"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        out = capsys.readouterr().out
        assert exc.value.code == 0 and "example:" in out and f"cnnlab {cmd}" in out
