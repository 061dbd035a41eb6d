"""Loading local weights: formats, wrappers, classifier and stem adaptation, and clear refusals."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from cnnlab.errors import CnnlabError, RunError
from cnnlab.models import get_model
from cnnlab.models.pretrained import PretrainedReport, adapt_stem, load_pretrained


@pytest.fixture(scope="module")
def tv_resnet18() -> OrderedDict:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()  # 1000 classes, RGB


def _assert_loaded(model: torch.nn.Module, source: dict, skip: tuple[str, ...] = ()) -> None:
    state = model.state_dict()
    for k, v in source.items():
        if not k.startswith(skip):
            assert torch.equal(state[k], v.to(state[k].dtype)), k


def test_safetensors_round_trip(tmp_path) -> None:
    src = get_model("resnet18", num_classes=10, small_input=True)
    path = tmp_path / "w.safetensors"
    save_file(src.state_dict(), str(path))
    dst = get_model("resnet18", num_classes=10, small_input=True)
    report = load_pretrained(dst, path)
    assert isinstance(report, PretrainedReport)
    assert len(report.loaded) == len(src.state_dict())
    assert report.adapted == report.reinitialised == report.ignored == []
    _assert_loaded(dst, src.state_dict())


def test_torchvision_pth_with_new_classes_keeps_a_fresh_head(tmp_path, tv_resnet18) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(tv_resnet18, path)
    torch.manual_seed(1)
    model = get_model("resnet18", num_classes=7, pretrained=str(path))
    assert model.fc.weight.shape == (7, 512)
    _assert_loaded(model, tv_resnet18, skip=("fc.",))
    report = load_pretrained(get_model("resnet18", num_classes=7), path)
    assert report.reinitialised == ["fc.weight", "fc.bias"]
    assert "re-initialised fc.weight, fc.bias" in str(report)
    assert model.pretrained_report.reinitialised == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("wrap", ["state_dict", "model", "ddp", "ddp+state_dict"])
def test_common_checkpoint_wrappers(tmp_path, tv_resnet18, wrap: str) -> None:
    sd = tv_resnet18
    if wrap.startswith("ddp"):
        sd = {f"module.{k}": v for k, v in sd.items()}
    obj = {"model": sd, "epoch": 3} if wrap == "model" else sd
    if wrap.endswith("state_dict"):
        obj = {"state_dict": sd, "epoch": 3, "best_acc": 0.9}
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    model = get_model("resnet18")
    load_pretrained(model, path)
    _assert_loaded(model, tv_resnet18)


def test_half_precision_file_loads_into_float_model(tmp_path, tv_resnet18) -> None:
    path = tmp_path / "half.safetensors"
    save_file(
        {k: v.half() if v.is_floating_point() else v for k, v in tv_resnet18.items()}, str(path)
    )
    model = get_model("resnet18")
    load_pretrained(model, path)
    assert model.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(
        model.conv1.weight, tv_resnet18["conv1.weight"], atol=1e-3, rtol=1e-3
    )


def test_rgb_stem_is_averaged_for_one_channel(tmp_path, tv_resnet18) -> None:
    path = tmp_path / "rgb.pth"
    torch.save(tv_resnet18, path)
    model = get_model("resnet18", num_classes=10, in_chans=1)
    report = load_pretrained(model, path)
    assert report.adapted == ["conv1.weight"]
    rgb = tv_resnet18["conv1.weight"]
    expected = (rgb[:, 0] + rgb[:, 1] + rgb[:, 2]) / 3
    torch.testing.assert_close(model.conv1.weight[:, 0], expected)
    assert model.conv1.weight.shape == (64, 1, 7, 7)

    summed = get_model("resnet18", num_classes=10, in_chans=1)
    load_pretrained(summed, path, stem="sum")
    torch.testing.assert_close(summed.conv1.weight[:, 0], expected * 3)


def test_stem_for_other_channel_counts_repeats_and_rescales() -> None:
    w = torch.randn(8, 3, 3, 3)
    four = adapt_stem(w, 4)
    torch.testing.assert_close(four[:, :3], w * 0.75)
    torch.testing.assert_close(four[:, 3], w[:, 0] * 0.75)
    two = adapt_stem(w, 2)
    assert two.shape == (8, 2, 3, 3)
    torch.testing.assert_close(two, w[:, :2] * 1.5)


def test_stem_adaptation_on_a_non_resnet(tmp_path) -> None:
    src = get_model("densenet121", num_classes=10)
    path = tmp_path / "d.safetensors"
    save_file(src.state_dict(), str(path))
    model = get_model("densenet121", num_classes=3, in_chans=1)
    report = load_pretrained(model, path)
    assert report.adapted == ["features.conv0.weight"]
    assert report.reinitialised == ["classifier.weight", "classifier.bias"]


def test_cnnlab_run_directory(tmp_path) -> None:
    src = get_model("lenet5", num_classes=10)
    run = tmp_path / "run"
    run.mkdir()
    save_file(src.state_dict(), str(run / "model.safetensors"))
    (run / "config.json").write_text(json.dumps({"model": {"name": "lenet5", "num_classes": 10}}))
    model = get_model("lenet5", num_classes=10, pretrained=str(run))
    _assert_loaded(model, src.state_dict())

    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(RunError, match="no model.safetensors"):
        load_pretrained(get_model("lenet5"), empty)


def test_mismatched_shapes_are_listed_with_both_shapes(tmp_path) -> None:
    small = get_model("resnet18", small_input=True)  # 3x3 stem: not adaptable to a 7x7 one
    path = tmp_path / "small.safetensors"
    sd = small.state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    save_file(sd, str(path))
    with pytest.raises(RunError) as err:
        load_pretrained(get_model("resnet18"), path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "conv1.weight (file (64, 3, 3, 3) vs model (64, 3, 7, 7))" in msg
    assert "layer1.0.conv1.weight (file (64, 64, 1, 1) vs model (64, 64, 3, 3))" in msg


def test_missing_and_unexpected_keys_are_refused(tmp_path, tv_resnet18) -> None:
    path = tmp_path / "r18.pth"
    torch.save(tv_resnet18, path)
    with pytest.raises(RunError) as err:
        load_pretrained(get_model("resnet34"), path)
    assert "missing from file: layer1.2.conv1.weight" in str(err.value)

    extra = dict(tv_resnet18, **{"projection.weight": torch.zeros(3)})
    torch.save(extra, path)
    with pytest.raises(RunError, match=r"unexpected in file: projection\.weight"):
        load_pretrained(get_model("resnet18"), path)


def test_auxiliary_heads_are_optional_on_either_side(tmp_path) -> None:
    tv = torchvision.models.googlenet(weights=None, init_weights=True)  # has aux1, aux2
    path = tmp_path / "googlenet.pth"
    torch.save(tv.state_dict(), path)
    no_aux = get_model("googlenet", num_classes=1000, aux_logits=False)
    report = load_pretrained(no_aux, path)
    assert report.ignored and all(k.startswith(("aux1.", "aux2.")) for k in report.ignored)
    _assert_loaded(no_aux, {k: v for k, v in tv.state_dict().items() if not k.startswith("aux")})

    save_file(no_aux.state_dict(), str(tmp_path / "g.safetensors"))
    with_aux = get_model("googlenet", num_classes=1000)
    report = load_pretrained(with_aux, tmp_path / "g.safetensors")
    assert "aux1.fc2.weight" in report.reinitialised

    new_classes = get_model("googlenet", num_classes=5)
    report = load_pretrained(new_classes, path)
    assert set(report.reinitialised) == {
        f"{m}.{p}" for m in ("fc", "aux1.fc2", "aux2.fc2") for p in ("weight", "bias")
    }


class _NotAWeight:
    pass


def test_pickled_code_is_refused(tmp_path, tv_resnet18) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": tv_resnet18, "obj": _NotAWeight()}, path)
    with pytest.raises(RunError, match="weights-only"):
        load_pretrained(get_model("resnet18"), path)


def test_bad_paths(tmp_path) -> None:
    with pytest.raises(RunError, match="not found"):
        load_pretrained(get_model("lenet5"), tmp_path / "nope.safetensors")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(RunError, match="unsupported"):
        load_pretrained(get_model("lenet5"), tmp_path / "w.onnx")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RunError, match="cannot read"):
        load_pretrained(get_model("lenet5"), tmp_path / "bad.safetensors")
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(CnnlabError, match="non-tensor"):
        load_pretrained(get_model("lenet5"), tmp_path / "meta.pt")
