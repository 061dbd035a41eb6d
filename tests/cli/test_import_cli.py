"""`cnnlab import` and `cnnlab export --format timm|hf` through the real entry point, and the
offline workflow end to end: timm folder → import → fine-tune with --pretrained/--freeze → export."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from cnnlab.cli import main
from tests.models.test_foreign import LABELS, hf_folder, timm_folder

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_import_prints_the_key_report_and_preprocessing(tmp_path, capsys) -> None:
    folder, _ = timm_folder(tmp_path, "mobilenetv3_small_100")
    code, out, err = run_main(capsys, "import", folder, "--out", tmp_path / "runs" / "m3")
    assert code == 0, err
    assert "timm mobilenetv3_small_100 -> cnnlab mobilenet_v3_small: copied" in out
    assert "missing 0, unexpected 0" in out
    assert "adapted (BatchNorm eps folded into running_var)" in out
    assert "bicubic, crop_pct 0.875 (center)" in out and f"{len(LABELS)} classes" in out


@pytest.mark.parametrize(
    "args,needle",
    [
        (("--arch", "resnet99"), "unknown architecture 'resnet99': neither a cnnlab model"),
        (("--arch", "resnet34"), "does not hold a resnet34"),
    ],
)
def test_import_errors_are_one_line(tmp_path, capsys, args, needle) -> None:
    folder, _ = timm_folder(tmp_path, "resnet18")
    weights = folder / "model.safetensors"
    code, _, err = run_main(capsys, "import", weights, "--out", tmp_path / "r", *args)
    assert code != 0 and len(err.strip().splitlines()) == 1 and needle in err, err


def test_hf_import_then_export_both_formats(tmp_path, capsys) -> None:
    folder, _, _, _ = hf_folder(tmp_path, "mobilenet_v2")
    run = tmp_path / "runs" / "mnv2"
    assert run_main(capsys, "import", folder, "--out", run)[0] == 0
    for fmt in ("timm", "hf"):
        code, out, err = run_main(capsys, "export", "--run", run, "--format", fmt)
        assert code == 0, err
        assert f"wrote {run / f'export-{fmt}'}" in out and "max |logit diff|" in out
        assert "load it with:" in out
    code, _, err = run_main(capsys, "export", "--run", run, "--format", "hf")
    assert code != 0 and "is not empty" in err


@pytest.mark.slow
def test_offline_workflow_import_finetune_with_freeze_export(tmp_path, capsys) -> None:
    """The README's workflow on digits: a timm MobileNetV3 fine-tuned one epoch, early layers
    frozen. Slow: 10-40 s on a shared 2-core CPU (one digits epoch plus the run's report)."""
    folder, _ = timm_folder(tmp_path, "mobilenetv3_small_100")
    imported = tmp_path / "runs" / "m3-timm"
    assert run_main(capsys, "import", folder, "--out", imported)[0] == 0
    code, _, err = run_main(
        capsys, "train", "--model", "mobilenet_v3_small", "--data", "digits", "--image-size", "32",
        "--epochs", "1", "--batch-size", "128", "--pretrained", imported, "--freeze", "early",
        "--out-dir", tmp_path / "runs", "--name", "m3-digits",
    )  # fmt: skip
    assert code == 0, err
    assert "pretrained: loaded" in err or err == ""
    tuned = tmp_path / "runs" / "m3-digits"
    cfg = json.loads((tuned / "config.json").read_text())
    transfer = cfg["train_config"]["transfer"]
    assert transfer["pretrained"] == str(imported) and transfer["freeze"] == "early"
    src = load_file(str(imported / "model.safetensors"))
    dst = load_file(str(tuned / "model.safetensors"))
    # Frozen: the stem, averaged to digits' one gray channel, and its BatchNorm statistics.
    stem = "features.0.0.weight"
    torch.testing.assert_close(dst[stem], src[stem].mean(1, keepdim=True))
    torch.testing.assert_close(dst["features.0.1.running_var"], src["features.0.1.running_var"])
    # Trained: the last block and the new 10-class head.
    assert not torch.equal(dst["features.11.block.0.0.weight"], src["features.11.block.0.0.weight"])
    assert dst["classifier.3.weight"].shape == (10, 1024)
    # ...and the fine-tuned run goes back out to timm.
    code, out, err = run_main(capsys, "export", "--run", tuned, "--format", "timm")
    assert code == 0 and "timm mobilenetv3_small_100" in out, err
