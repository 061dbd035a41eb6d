"""Runs in and out of timm and Hugging Face: an imported run behaves like a trained one, and an
exported folder loads in the other library with no cnnlab code, same logits, labels and
preprocessing. Fixtures use the real libraries and random weights (nothing is downloaded)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnlab.errors import ConfigError, RunError
from cnnlab.models import get_model
from cnnlab.run import CONFIG_FILE, MODEL_FILE, read_run_config, save_json, save_weights
from tests.models.test_foreign import (
    LABELS,
    assert_logits_close,
    calibrate_bn,
    hf_folder,
    logits,
    timm_folder,
)

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

from cnnlab.deploy.interop import export_hf, export_timm, import_foreign  # noqa: E402

RUN_KEYS = {"cnnlab_version", "model", "classes", "input_size", "mean", "std", "dataset",
            "num_parameters", "train_config", "metrics"}  # fmt: skip


def make_run(root: Path, name: str, size: int = 64, **kwargs) -> Path:
    """A run directory for zoo model ``name`` with random (BN-calibrated) weights, as train writes."""
    torch.manual_seed(0)
    model = calibrate_bn(get_model(name, num_classes=len(LABELS), **kwargs), size)
    run = root / f"run-{name}"
    run.mkdir()
    save_weights(model, run / MODEL_FILE)
    save_json(
        run / CONFIG_FILE,
        {
            "model": {"name": name, "kwargs": {"num_classes": len(LABELS), **kwargs}},
            "classes": LABELS,
            "input_size": [3, size, size],
            "mean": [0.5, 0.4, 0.3],
            "std": [0.2, 0.25, 0.3],
        },
    )
    return run


def test_imported_run_has_a_trained_runs_shape_and_predicts_like_the_source(tmp_path) -> None:
    import cnnlab

    folder, ref = timm_folder(tmp_path, "resnet18")
    res = import_foreign(folder, tmp_path / "runs" / "r18")
    cfg = read_run_config(res.run_dir)
    assert set(cfg) >= RUN_KEYS
    assert cfg["model"]["name"] == "resnet18" and cfg["classes"] == LABELS
    pre = timm.data.resolve_data_config({}, model=ref)
    assert cfg["input_size"] == list(pre["input_size"]) and cfg["mean"] == list(pre["mean"])
    assert cfg["preprocessing"] == {
        "interpolation": "bicubic",
        "crop_pct": 0.95,
        "crop_mode": "center",
    }
    predictor = cnnlab.load(res.run_dir)
    x = torch.randn(3, 3, 224, 224)
    assert_logits_close(predictor.logits(x), logits(ref, x))
    assert [p.label for p in predictor.predict(x)] == [LABELS[i] for i in logits(ref, x).argmax(1)]
    with pytest.raises(RunError, match="already holds a run"):
        import_foreign(folder, res.run_dir)


def test_hf_import_round_trips_back_to_hf(tmp_path) -> None:
    folder, ref, processor, _ = hf_folder(tmp_path, "vit")
    run = import_foreign(folder, tmp_path / "runs" / "vit").run_dir
    out = export_hf(run, tmp_path / "hf-again").folder
    again = transformers.AutoModelForImageClassification.from_pretrained(out).eval()
    x = torch.randn(2, 3, 32, 32)
    assert_logits_close(logits(again, x), logits(ref, x))
    proc = transformers.AutoImageProcessor.from_pretrained(out)
    assert proc.size == processor.size and list(proc.image_mean) == list(processor.image_mean)
    assert again.config.id2label == ref.config.id2label


def _load_timm_export(folder: Path, arch: str, n: int):
    """The two offline ways a timm user loads the folder: a file overlay and ``local-dir:``."""
    overlay = timm.create_model(
        arch,
        pretrained=True,
        num_classes=n,
        pretrained_cfg_overlay={"file": str(folder / "model.safetensors"), "num_classes": n},
    ).eval()
    local = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    return overlay, local


FAST_TIMM_EXPORT = ["resnet18", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0"]
SLOW_TIMM_EXPORT = ["resnet34", "resnet50", "convnext_tiny", "vit_b_16"]


def _check_timm_export(tmp_path: Path, name: str) -> None:
    size = 224 if name.startswith("vit") else 64
    run = make_run(tmp_path, name, size)
    res = export_timm(run, tmp_path / "timm-out")
    assert res.files == ["config.json", "model.safetensors"]
    ours = get_model(name, num_classes=len(LABELS))
    ours.load_state_dict(read_run_weights(run))
    overlay, local = _load_timm_export(res.folder, res.architecture, len(LABELS))
    x = torch.randn(2, 3, size, size)
    want = logits(ours.eval(), x)
    assert_logits_close(logits(overlay, x), want)
    assert_logits_close(logits(local, x), want)
    # Labels and preprocessing travel in timm's own config fields.
    data = timm.data.resolve_data_config({}, model=local)
    assert data["input_size"] == (3, size, size) and data["interpolation"] == "bilinear"
    assert list(data["mean"]) == [0.5, 0.4, 0.3] and list(data["std"]) == [0.2, 0.25, 0.3]
    assert data["crop_pct"] == 1.0 and data["crop_mode"] == "squash"
    assert local.pretrained_cfg["label_names"] == LABELS


def read_run_weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / MODEL_FILE))


@pytest.mark.parametrize("name", FAST_TIMM_EXPORT)
def test_export_timm_loads_in_timm_alone(tmp_path, name) -> None:
    _check_timm_export(tmp_path, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_TIMM_EXPORT)
def test_export_timm_large_architectures(tmp_path, name) -> None:
    _check_timm_export(tmp_path, name)


def _check_hf_export(tmp_path: Path, name: str, size: int = 64, **kwargs) -> None:
    run = make_run(tmp_path, name, size, **kwargs)
    res = export_hf(run, tmp_path / "hf-out")
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= set(res.files)
    ours = get_model(name, num_classes=len(LABELS), **kwargs).eval()
    ours.load_state_dict(read_run_weights(run))
    theirs = transformers.AutoModelForImageClassification.from_pretrained(res.folder).eval()
    x = torch.randn(2, 3, size, size)
    assert_logits_close(logits(theirs, x), logits(ours, x))
    assert [theirs.config.id2label[i] for i in range(len(LABELS))] == LABELS
    proc = transformers.AutoImageProcessor.from_pretrained(res.folder)
    assert list(proc.image_mean) == [0.5, 0.4, 0.3] and list(proc.image_std) == [0.2, 0.25, 0.3]
    assert int(proc.resample) == 2  # bilinear, what cnnlab's predictor uses


@pytest.mark.parametrize(
    "name,size,kwargs",
    [
        ("resnet18", 64, {}),
        ("mobilenet_v2", 64, {}),
        ("efficientnet_b0", 64, {"tf_padding": True, "bn_eps": 1e-3}),
        ("vit_tiny", 32, {"patch_size": 8, "depth": 2, "hidden_dim": 64, "num_heads": 2}),
    ],
)
def test_export_hf_loads_in_transformers_alone(tmp_path, name, size, kwargs) -> None:
    _check_hf_export(tmp_path, name, size, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["convnext_tiny", "vit_b_16", "resnet50"])
def test_export_hf_large_architectures(tmp_path, name) -> None:
    _check_hf_export(tmp_path, name, 224 if name.startswith("vit") else 64)


def test_export_refusals_are_one_line_with_the_supported_list(tmp_path) -> None:
    run = make_run(tmp_path, "efficientnet_b0")
    with pytest.raises(RunError) as exc:
        export_hf(run, tmp_path / "x")
    assert "TF-style" in str(exc.value) and "--format timm" in str(exc.value)
    run = make_run(tmp_path, "mobilenet_v3_small")
    with pytest.raises(RunError, match=r"no Hugging Face equivalent; supported: resnet"):
        export_hf(run, tmp_path / "y")
    run = make_run(tmp_path, "densenet121")
    with pytest.raises(RunError, match=r"no timm equivalent; timm export supports"):
        export_timm(run, tmp_path / "z")


def test_missing_library_names_the_extra(tmp_path, monkeypatch) -> None:
    run = make_run(tmp_path, "resnet18")
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[interop\]'") as exc:
        export_timm(run, tmp_path / "out")
    assert "\n" not in str(exc.value)


def test_core_import_needs_neither_timm_nor_transformers() -> None:
    code = (
        "import sys, cnnlab, cnnlab.models.foreign, cnnlab.deploy.interop, cnnlab.cli\n"
        "cnnlab.get_model('resnet18')\n"
        "bad = [m for m in ('timm', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
