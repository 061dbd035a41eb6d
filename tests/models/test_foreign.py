"""Reading timm / Hugging Face / bare checkpoints onto the zoo: exact logits, the library's own
preprocessing, containers and prefixes, and one-line refusals.

Fixtures are built with the real libraries and random weights (nothing is downloaded): timm's
``create_model(arch, pretrained=False)`` saved with timm's own ``save_for_hf``, and transformers'
``XxxForImageClassification(XxxConfig(...)).save_pretrained`` plus the model type's own image
processor. BatchNorm statistics are calibrated on a random batch first, so logits have the scale
of a trained network (timm's fresh MobileNetV3 gives logits near 700 otherwise, where 1e-4 is
below float32's resolution).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnlab.errors import RunError
from cnnlab.models import get_model
from cnnlab.models.foreign import ForeignCheckpoint, ForeignReport, read_foreign
from cnnlab.models.foreign import convert as convert_into
from cnnlab.models.pretrained import load_pretrained

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

ATOL = 1e-4
LABELS = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]


def calibrate_bn(model: torch.nn.Module, size: int, chans: int = 3) -> torch.nn.Module:
    """Random affine BN parameters and running statistics of one random batch; eval mode."""
    torch.manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.weight.data.uniform_(0.5, 1.5)
        m.bias.data.uniform_(-0.1, 0.1)
        m.momentum = 1.0
    if bns:
        model.train()
        with torch.no_grad():
            model(torch.randn(4, chans, size, size))
    return model.eval()


def timm_folder(root: Path, arch: str, size: int = 64) -> tuple[Path, torch.nn.Module]:
    """A timm folder as timm writes it (config.json + model.safetensors), 7 labelled classes."""
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=len(LABELS))
    model = calibrate_bn(model, size)
    folder = root / arch
    save_for_hf(model, str(folder), model_config={"label_names": LABELS}, safe_serialization=True)
    return folder, model


def _hf_specs() -> dict:
    T = transformers
    return {
        "resnet": (
            T.ResNetConfig(
                layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512]
            ),
            T.ResNetForImageClassification,
            T.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875),
            "resnet18",
        ),
        "convnext": (
            T.ConvNextConfig(),
            T.ConvNextForImageClassification,
            T.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.9),
            "convnext_tiny",
        ),
        "vit": (  # a tiny ViT: the zoo's vit_tiny builder takes any shape
            T.ViTConfig(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=128,
                image_size=32,
                patch_size=8,
            ),
            T.ViTForImageClassification,
            T.ViTImageProcessor(size={"height": 32, "width": 32}),
            "vit_tiny",
        ),  # fmt: skip
        "mobilenet_v2": (
            T.MobileNetV2Config(tf_padding=False),
            T.MobileNetV2ForImageClassification,
            T.MobileNetV2ImageProcessor(),
            "mobilenet_v2",
        ),
        "efficientnet": (
            T.EfficientNetConfig(
                width_coefficient=1.0, depth_coefficient=1.0, image_size=224, hidden_dim=1280
            ),
            T.EfficientNetForImageClassification,
            T.EfficientNetImageProcessor(size={"height": 224, "width": 224}),
            "efficientnet_b0",
        ),  # fmt: skip
    }


def hf_folder(root: Path, kind: str) -> tuple[Path, torch.nn.Module, object, str]:
    """A Hugging Face folder (config, weights, preprocessor config) with 5 labelled classes."""
    config, cls, processor, zoo_name = _hf_specs()[kind]
    config.id2label = dict(enumerate(LABELS[:5]))
    config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(0)
    size = config.image_size if kind == "vit" else 64
    model = calibrate_bn(cls(config), size)
    folder = root / f"hf-{kind}"
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder, model, processor, zoo_name


def convert(ckpt: ForeignCheckpoint) -> tuple[torch.nn.Module, ForeignReport]:
    """The zoo model the checkpoint names, with its weights (what ``cnnlab import`` builds)."""
    return convert_into(ckpt, get_model(ckpt.target.name, **ckpt.target.kwargs))


def assert_logits_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """|diff| <= 1e-4, scaled by the logits' size beyond 1: float32 itself moves MobileNetV3's
    logits (max ~18 here) by 1.1e-4 between timm's own NCHW and channels-last runs."""
    scale = max(1.0, float(theirs.abs().max()))
    torch.testing.assert_close(ours, theirs, atol=ATOL * scale, rtol=0)


def logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model(x)
    return getattr(out, "logits", out)


FAST_TIMM = ["resnet18", "mobilenetv2_100", "mobilenetv3_large_100", "mobilenetv3_small_100",
             "efficientnet_b0", "tf_efficientnet_b0"]  # fmt: skip
SLOW_TIMM = ["resnet34", "resnet50", "convnext_tiny", "vit_base_patch16_224"]


def _check_timm_import(tmp_path: Path, arch: str) -> None:
    size = 224 if arch.startswith("vit") else 64
    folder, ref = timm_folder(tmp_path, arch, size)
    ckpt = read_foreign(folder)
    assert ckpt.flavour == "timm" and ckpt.architecture == arch
    model, report = convert(ckpt)
    assert report.missing == report.unexpected == []
    x = torch.randn(2, 3, size, size)
    assert_logits_close(logits(model, x), logits(ref, x))
    # The preprocessing carried over is timm's own, as timm itself resolves it for the model.
    want = timm.data.resolve_data_config({}, model=ref)
    pre = ckpt.preprocessing
    assert pre.input_size == tuple(want["input_size"])
    assert pre.mean == pytest.approx(want["mean"]) and pre.std == pytest.approx(want["std"])
    assert pre.interpolation == want["interpolation"]
    assert pre.crop_pct == pytest.approx(want["crop_pct"]) and pre.crop_mode == want["crop_mode"]
    assert ckpt.labels == LABELS


@pytest.mark.parametrize("arch", FAST_TIMM)
def test_timm_folder_imports_with_equal_logits_and_timms_preprocessing(tmp_path, arch) -> None:
    _check_timm_import(tmp_path, arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", SLOW_TIMM)
def test_timm_folder_imports_large_architectures(tmp_path, arch) -> None:
    _check_timm_import(tmp_path, arch)


def _check_hf_import(tmp_path: Path, kind: str) -> None:
    folder, ref, processor, zoo_name = hf_folder(tmp_path, kind)
    ckpt = read_foreign(folder)
    assert ckpt.flavour == "hf" and ckpt.target.name == zoo_name
    model, report = convert(ckpt)
    assert report.missing == report.unexpected == []
    size = ref.config.image_size if kind == "vit" else 64
    x = torch.randn(2, 3, size, size)
    assert_logits_close(logits(model, x), logits(ref, x))
    assert ckpt.labels == LABELS[:5]
    # The preprocessing is the processor's own: same mean/std, resampling and geometry.
    pre = ckpt.preprocessing
    std = [s * s for s in processor.image_std] if kind == "efficientnet" else processor.image_std
    assert pre.mean == pytest.approx(tuple(processor.image_mean))
    assert pre.std == pytest.approx(tuple(std))  # EfficientNet's include_top divides by std twice
    assert pre.interpolation == {2: "bilinear", 3: "bicubic"}[int(processor.resample)]
    if kind in ("resnet", "convnext"):
        assert pre.input_size[1] == processor.size["shortest_edge"]
        assert pre.crop_pct == pytest.approx(processor.crop_pct) and pre.crop_mode == "center"
    elif kind == "mobilenet_v2":
        assert pre.input_size[1:] == (processor.crop_size["height"], processor.crop_size["width"])
        assert pre.crop_pct == pytest.approx(
            processor.crop_size["height"] / processor.size["shortest_edge"]
        )
    else:
        assert pre.input_size[1:] == (processor.size["height"], processor.size["width"])
        assert pre.crop_mode == "squash"


@pytest.mark.parametrize("kind", ["resnet", "vit", "mobilenet_v2", "efficientnet"])
def test_hf_folder_imports_with_equal_logits_and_the_processors_preprocessing(tmp_path, kind):
    _check_hf_import(tmp_path, kind)


@pytest.mark.slow
def test_hf_convnext_imports(tmp_path) -> None:
    _check_hf_import(tmp_path, "convnext")


def test_hf_efficientnet_through_get_model_keeps_tf_padding(tmp_path) -> None:
    folder, ref, _, _ = hf_folder(tmp_path, "efficientnet")
    n = ref.config.num_labels
    model = get_model("efficientnet_b0", num_classes=n, pretrained=str(folder)).eval()
    assert model.cnnlab_arch["kwargs"]["tf_padding"] is True  # filled from the checkpoint
    x = torch.randn(1, 3, 64, 64)
    assert_logits_close(logits(model, x), logits(ref, x))
    # A new head for other classes: the body loads, the classifier starts fresh.
    other = get_model("efficientnet_b0", num_classes=3, pretrained=str(folder))
    assert other.pretrained_report.reinitialised == ["classifier.1.weight", "classifier.1.bias"]
    assert "hf EfficientNetForImageClassification -> cnnlab efficientnet_b0" in str(
        other.pretrained_report
    )


def test_timm_folder_as_pretrained_for_a_gray_model(tmp_path) -> None:
    folder, ref = timm_folder(tmp_path, "mobilenetv3_small_100")
    model = get_model("mobilenet_v3_small", num_classes=10, in_chans=1)
    report = load_pretrained(model, folder)
    assert report.adapted == ["features.0.0.weight"] and report.reinitialised[-1].startswith(
        "classifier.3"
    )
    mapped, _ = convert(read_foreign(folder))
    torch.testing.assert_close(
        model.features[0][0].weight, mapped.features[0][0].weight.mean(1, keepdim=True)
    )


def test_wrong_architecture_for_pretrained_is_named(tmp_path) -> None:
    folder, _ = timm_folder(tmp_path, "resnet18")
    with pytest.raises(RunError, match="maps onto cnnlab resnet18, not mobilenet_v2"):
        load_pretrained(get_model("mobilenet_v2"), folder)


def test_containers_and_prefixes_are_unwrapped_ema_first(tmp_path) -> None:
    torch.manual_seed(0)
    src = timm.create_model("resnet18", pretrained=False, num_classes=4).eval()
    ema = {
        f"module.{k}": v + 1 if v.is_floating_point() else v for k, v in src.state_dict().items()
    }
    path = tmp_path / "checkpoint-9.pth.tar"
    path = path.with_suffix(".pth")
    torch.save(
        {"epoch": 9, "state_dict": src.state_dict(), "state_dict_ema": ema, "arch": "r"}, path
    )
    ckpt = read_foreign(path, arch="resnet18")
    assert ckpt.container == "state_dict_ema" and "conv1.weight" in ckpt.state
    model, report = convert(ckpt)
    assert "state_dict_ema" in str(report)
    torch.testing.assert_close(model.conv1.weight, src.conv1.weight + 1)


def test_bare_timm_safetensors_with_arch(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = calibrate_bn(timm.create_model("mobilenetv2_100", num_classes=3), 64)
    path = tmp_path / "weights.safetensors"
    save_file(ref.state_dict(), str(path))
    for arch in ("mobilenetv2_100", "mobilenet_v2"):  # timm's name or the zoo's
        model, report = convert(read_foreign(path, arch=arch))
        assert report.flavour == "timm" and model.num_classes == 3
        x = torch.randn(1, 3, 64, 64)
        assert_logits_close(logits(model, x), logits(ref, x))


def test_pickled_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": Path("/etc")}, path)
    with pytest.raises(RunError, match="weights-only"):
        read_foreign(path, arch="resnet18")


def _one_line_error(fn, *needles: str) -> str:
    with pytest.raises(RunError) as exc:
        fn()
    msg = str(exc.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_unsupported_timm_architecture_names_it_and_the_supported_list(tmp_path) -> None:
    folder, _ = timm_folder(tmp_path, "resnet18")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architecture"] = "resnet50d"
    (folder / "config.json").write_text(json.dumps(cfg))
    _one_line_error(lambda: read_foreign(folder), "'resnet50d'", "supported:", "convnext_tiny")


def test_shape_mismatch_names_the_first_keys(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    folder, _ = timm_folder(tmp_path, "resnet18")
    state = load_file(str(folder / "model.safetensors"))
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    save_file(state, str(folder / "model.safetensors"))
    _one_line_error(
        lambda: convert(read_foreign(folder)), "resnet18", "shape mismatch", "layer2.0.conv1.weight"
    )


def test_hf_tf_padded_mobilenet_is_refused_with_the_reason(tmp_path) -> None:
    folder, _, _, _ = hf_folder(tmp_path, "mobilenet_v2")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["tf_padding"] = True
    (folder / "config.json").write_text(json.dumps(cfg))
    _one_line_error(lambda: read_foreign(folder), "tf_padding=True", "supported:")


def test_unknown_hf_model_type_and_bare_file_without_arch(tmp_path) -> None:
    folder = tmp_path / "swin"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "swin"}))
    (folder / "model.safetensors").write_bytes(b"")
    _one_line_error(lambda: read_foreign(folder), "model_type 'swin'", "supported:")
    path = tmp_path / "w.pth"
    torch.save(get_model("lenet5").state_dict(), path)
    _one_line_error(lambda: read_foreign(path), "--arch NAME")


def test_flipped_bytes_are_a_one_line_error(tmp_path) -> None:
    folder, _ = timm_folder(tmp_path, "resnet18")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[:8] = b"\xff" * 8  # the header length
    weights.write_bytes(bytes(data))
    _one_line_error(lambda: read_foreign(folder), "cannot read", "safetensors")


def test_restated_variant_tables_match_the_zoo() -> None:
    from cnnlab.models.convnext import CONVNEXT_CFGS
    from cnnlab.models.efficientnet import EFFICIENTNET_PARAMS
    from cnnlab.models.foreign.specs import CONVNEXT_SHAPES, EFFICIENTNET_SCALING

    assert {k: (c.dims, c.depths) for k, c in CONVNEXT_CFGS.items()} == CONVNEXT_SHAPES
    assert {
        k: (p.width, p.depth, p.resolution, p.dropout) for k, p in EFFICIENTNET_PARAMS.items()
    } == EFFICIENTNET_SCALING
