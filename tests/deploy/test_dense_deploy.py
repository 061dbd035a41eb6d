"""Detection and segmentation runs through every deployment path: ``cnnlab.load(run).predict``,
``cnnlab predict`` (boxes / mask PNGs, JSON), ``cnnlab export`` (ONNX, parity on the decoded
outputs, the task in the metadata), and ``cnnlab serve`` (``/predict`` and the Open Inference
Protocol v2 through ``tritonclient``). Every answer is compared with the in-process predictor's."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.data import load_dataset
from cnnlab.deploy.dense_predict import BoxPrediction, DensePredictor
from cnnlab.deploy.export import compare_decoded, export_run, read_metadata, same_detections
from cnnlab.errors import ConfigError
from cnnlab.run import load_run_splits, read_run_config, save_json
from cnnlab.train.config import DataConfig, TrainConfig
from tests.conftest import run_cli
from tests.deploy.conftest import KEY, start_server

SIZE = 64


@pytest.fixture(scope="module")
def scenes():
    return load_dataset("digits-scenes", image_size=SIZE, num_train=32, num_test=8)


def _train(out: Path, splits, task: str) -> Path:
    from cnnlab.train import fit

    model, kwargs, monitor = {
        "detection": ("yolo_tiny", {"width": 4}, "test_map"),
        "segmentation": ("unet", {"base_channels": 4, "depth": 2}, "test_miou"),
    }[task]
    cfg = TrainConfig(
        model=model, task=task, model_kwargs=kwargs, epochs=1, batch_size=16, device="cpu",
        data=DataConfig(name="digits-scenes", image_size=SIZE), monitor=monitor,
        out_dir=str(out), name=task, progress=False, report=True, amp="off",
    )  # fmt: skip
    run = fit(cfg, splits=splits).run_dir
    if task == "detection":
        # a one-epoch detector scores below the deployed 0.25: keep every box, so each path
        # below has boxes to agree on (the threshold is read from config.json, as documented)
        cfg_json = read_run_config(run)
        cfg_json["postprocess"]["conf_thresh"] = 0.0
        cfg_json["postprocess"]["max_det"] = 4
        save_json(run / "config.json", cfg_json)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, scenes):
    out = tmp_path_factory.mktemp("dense-runs")
    return {t: _train(out, scenes, t) for t in ("detection", "segmentation")}


@pytest.fixture(scope="module")
def images(tmp_path_factory, scenes):
    """Three test scenes as PNGs at twice the model's size (answers are in *their* pixels)."""
    folder = tmp_path_factory.mktemp("scenes")
    paths = []
    for i in range(3):
        p = folder / f"scene{i}.png"
        Image.fromarray(np.kron(scenes.test.images[i, 0].numpy(), np.ones((2, 2), np.uint8))).save(
            p
        )
        paths.append(p)
    return paths


def _boxes(dets: list) -> np.ndarray:
    return np.array([d.box if isinstance(d, BoxPrediction) else d["box"] for d in dets]).reshape(
        -1, 4
    )


def test_load_gives_boxes_and_masks_in_the_images_pixels(runs, images):
    det = cnnlab.load(runs["detection"])
    assert isinstance(det, DensePredictor) and det.task == "detection"
    out = det.predict(images)
    assert len(out) == 3 and all(0 < len(r) <= 4 for r in out)  # max_det from config.json
    b = _boxes(out[0])
    assert b.min() >= 0 and b[:, [0, 2]].max() <= 2 * SIZE and (b[:, 2] >= b[:, 0]).all()
    assert [d.score for d in out[0]] == sorted((d.score for d in out[0]), reverse=True)
    # one image alone, as an array: the same boxes as in the batch
    one = det.predict(np.asarray(Image.open(images[1])))
    np.testing.assert_allclose(_boxes(one[0]), _boxes(out[1]), atol=1e-3)
    seg = cnnlab.load(runs["segmentation"])
    masks = seg.predict(images)
    assert masks[0].shape == (2 * SIZE, 2 * SIZE) and masks[0].dtype == np.uint8
    assert set(np.unique(masks[0])) <= set(range(len(seg.classes)))


def test_a_dense_run_refuses_the_int8_backend(runs):
    with pytest.raises(ConfigError, match="int8"):
        cnnlab.load(runs["segmentation"], backend="int8")


def test_segmentation_runs_load_their_splits(runs):
    """Their classes start with 'background', which the dataset does not list."""
    cfg = read_run_config(runs["segmentation"])
    assert cfg["classes"][0] == "background"
    splits = load_run_splits(cfg)
    assert splits is not None and splits.test.classes == cfg["classes"][1:]


def test_predict_cli_prints_boxes_and_json(runs, images):
    ref = cnnlab.load(runs["detection"]).predict(images[:2])
    res = run_cli("predict", "--run", str(runs["detection"]), *map(str, images[:2]))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == sum(len(r) for r in ref)
    src, cls, score, *box = lines[0].split()
    assert src == str(images[0]) and cls == ref[0][0].label
    assert float(score) == pytest.approx(ref[0][0].score, abs=1e-3)
    np.testing.assert_allclose([float(v) for v in box], ref[0][0].box, atol=0.06)
    res = run_cli("predict", "--run", str(runs["detection"]), str(images[0]), "--json")
    assert res.returncode == 0, res.stderr
    js = json.loads(res.stdout)
    np.testing.assert_allclose(_boxes(js[0]["detections"]), _boxes(ref[0]), atol=0.01)
    res = run_cli(
        "predict", "--run", str(runs["detection"]), str(images[0]), "--conf-thresh", "0.99"
    )
    assert res.returncode == 0 and "no object scored 0.99" in res.stdout


def test_predict_cli_writes_masks_and_overlays(runs, images, tmp_path):
    ref = cnnlab.load(runs["segmentation"]).predict(images[:2])
    out = tmp_path / "masks"
    res = run_cli(
        "predict", "--run", str(runs["segmentation"]), *map(str, images[:2]),
        str(tmp_path / "missing.png"), "--out-dir", str(out), "--json",
    )  # fmt: skip
    assert res.returncode == 1  # the missing file is named; the others are still answered
    assert "missing.png: no such file" in res.stderr
    js = json.loads(res.stdout)
    assert js[2]["error"] and len(js) == 3
    for rec, mask in zip(js[:2], ref):
        saved = np.asarray(Image.open(rec["mask"]))  # palette PNG: pixel values are classes
        np.testing.assert_array_equal(saved, mask)
        assert Image.open(rec["overlay"]).size == (2 * SIZE, 2 * SIZE)
        assert sum(rec["pixels"].values()) == mask.size


def test_eval_cli_prints_the_tasks_metrics_and_writes_eval_json(runs):
    res = run_cli("eval", "--run", str(runs["detection"]), "--no-latency")
    assert res.returncode == 0, res.stderr
    assert "mAP@[.5:.95]" in res.stdout and "AP50" in res.stdout and "AP75" in res.stdout
    ev = json.loads((runs["detection"] / "eval.json").read_text())
    assert ev["task"] == "detection" and set(ev["per_class"]) == {str(d) for d in range(10)}
    first = res.stdout.split()[1]
    assert float(first) == pytest.approx(ev["metrics"]["test_map"], abs=1e-4)
    assert (runs["detection"] / "detections.json").exists()
    assert Image.open(runs["detection"] / "pr_curves.png").size[0] > 100
    res = run_cli("eval", "--run", str(runs["segmentation"]), "--no-latency")
    assert res.returncode == 0, res.stderr
    ev = json.loads((runs["segmentation"] / "eval.json").read_text())
    assert res.stdout.startswith(f"mIoU {ev['metrics']['test_miou']:.4f}")
    assert "background" in res.stdout and "Dice" in res.stdout
    assert (runs["segmentation"] / "seg_confusion.csv").exists()
    assert Image.open(runs["segmentation"] / "seg_confusion.png").size[0] > 100
    res = run_cli("eval", "--run", str(runs["segmentation"]), "--calibrate")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    res = run_cli("eval", "--run", str(runs["segmentation"]), "--data", "digits")
    assert res.returncode == 2 and "classification dataset" in res.stderr, res.stderr


def test_report_has_the_dense_sections(runs):
    from cnnlab.evaluate.report import write_report

    for task in ("detection", "segmentation"):  # the quick report written by training itself
        page = (runs[task] / "report.html").read_text()
        assert "quick report" in page and f"{task} model" in page
    for task, ids in {
        "detection": ("det-summary", "det-per-class", "det-pr", "det-samples", "det-worst"),
        "segmentation": ("seg-summary", "seg-per-class", "seg-confusion", "seg-worst"),
    }.items():
        page = write_report(runs[task], quick=True, device="cpu").read_text()
        for sid in ("summary", "data", "curves", *ids, "model-card", "config"):
            assert f'<section id="{sid}">' in page, (task, sid)
        assert "<script" not in page and "not available" not in page


def test_export_checks_decoded_outputs_and_records_the_task(runs, images, tmp_path):
    for task in ("detection", "segmentation"):
        out = tmp_path / f"{task}.onnx"
        report = export_run(runs[task], "onnx", out)
        row = report.rows[0]
        assert row["passed"] and row["decoded"] == task and row["top1_agreement"] == 1.0
        meta = read_metadata(out)
        assert meta["task"] == task and meta["classes"] == read_run_config(runs[task])["classes"]
        exported = cnnlab.load(out)
        assert isinstance(exported, DensePredictor) and exported.backend_name == "onnx"
        eager = cnnlab.load(runs[task]).predict(images)
        onnx = exported.predict(images)
        for a, b in zip(eager, onnx):
            if task == "detection":
                assert same_detections(a, b, atol=1e-3)
            else:
                np.testing.assert_array_equal(a, b)


def test_decoded_parity_fails_when_the_boxes_or_masks_change(runs, scenes):
    for task in ("detection", "segmentation"):
        pred = cnnlab.load(runs[task])
        x = (scenes.test.images[:4].float() / 255 - pred.mean[0]) / pred.std[0]
        raw = pred.batch_outputs(x)
        assert compare_decoded(pred, raw, raw.clone()).passed
        other = raw.clone()
        if task == "detection":
            other[..., 0:2] += 3.0  # every box centre moves
        else:
            other[:, 0] += 50.0  # everything becomes background
        bad = compare_decoded(pred, raw, other)
        assert not bad.passed and bad.top1_agreement < 1.0
    box = BoxPrediction("3", 0.9, (0.0, 0.0, 10.0, 10.0))
    moved = BoxPrediction("3", 0.9, (1.0, 0.0, 11.0, 10.0))
    assert same_detections([box], [box]) and not same_detections([box], [moved])
    assert not same_detections([box], [BoxPrediction("4", 0.9, box.box)])


def test_int8_export_of_a_dense_run_is_refused(runs, tmp_path):
    res = run_cli(
        "export", "--run", str(runs["detection"]), "--int8", "-o", str(tmp_path / "m.onnx")
    )
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr


def _png(path: Path) -> bytes:
    return path.read_bytes()


@pytest.fixture(scope="module")
def det_server(runs, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-det") / "server.log"
    server = start_server(runs["detection"], log, "--backend", "torch", "--model-name", "det")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def seg_server(runs, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-seg") / "server.log"
    server = start_server(runs["segmentation"], log, "--backend", "onnx", "--model-name", "seg")
    yield server
    server.stop()


def test_serve_predict_answers_boxes(det_server, runs, images):
    import httpx

    ref = cnnlab.load(runs["detection"]).predict(images[:2])
    files = [("files", (p.name, _png(p), "image/png")) for p in images[:2]]
    r = httpx.post(f"{det_server.base}/predict", files=files, headers=KEY, timeout=30)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    for got, want in zip(preds, ref):
        assert [d["class"] for d in got["detections"]] == [d.label for d in want]
        np.testing.assert_allclose(_boxes(got["detections"]), _boxes(want), atol=0.01)
    meta = httpx.get(f"{det_server.base}/metadata", headers=KEY, timeout=10).json()
    assert meta["task"] == "detection" and meta["gradcam"] is False
    r = httpx.post(f"{det_server.base}/explain", files=files[:1], headers=KEY, timeout=30)
    assert r.status_code == 409 and "detection" in r.json()["detail"]


def test_serve_predict_answers_a_mask_png(seg_server, runs, images):
    import httpx

    ref = cnnlab.load(runs["segmentation"]).predict(images[:1])[0]
    files = [("file", (images[0].name, _png(images[0]), "image/png"))]
    r = httpx.post(f"{seg_server.base}/predict", files=files, headers=KEY, timeout=30)
    assert r.status_code == 200, r.text
    got = r.json()["predictions"][0]
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(got["mask_png"]))))
    assert got["shape"] == [2 * SIZE, 2 * SIZE]
    assert (mask == ref).mean() > 0.999  # ONNX Runtime vs eager: ties may flip a pixel


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_v2_infer_answers_boxes_scores_labels(det_server, runs, images, binary):
    httpclient = pytest.importorskip("tritonclient.http")
    ref = cnnlab.load(runs["detection"]).predict(images)
    c = httpclient.InferenceServerClient(url=det_server.base.removeprefix("http://"))
    try:
        meta = c.get_model_metadata("det", headers=dict(KEY))
        assert [o["name"] for o in meta["outputs"]] == [
            "boxes",
            "scores",
            "labels",
            "num_detections",
        ]
        data = np.array(
            [p.read_bytes() if binary else base64.b64encode(p.read_bytes()) for p in images],
            dtype=np.object_,
        )
        inp = httpclient.InferInput("image", [len(images)], "BYTES")
        inp.set_data_from_numpy(data, binary_data=binary)
        outs = [
            httpclient.InferRequestedOutput(n, binary_data=binary)
            for n in ("boxes", "scores", "labels", "num_detections")
        ]
        res = c.infer("det", [inp], outputs=outs, headers=dict(KEY))
    finally:
        c.close()
    counts = res.as_numpy("num_detections")
    assert counts.tolist() == [len(r) for r in ref]
    boxes, scores, labels = res.as_numpy("boxes"), res.as_numpy("scores"), res.as_numpy("labels")
    for i, want in enumerate(ref):
        np.testing.assert_allclose(boxes[i, : counts[i]], _boxes(want), atol=0.01)
        np.testing.assert_allclose(scores[i, : counts[i]], [d.score for d in want], atol=1e-4)
        got = [v.decode() if isinstance(v, bytes) else str(v) for v in labels[i, : counts[i]]]
        assert got == [d.label for d in want]


def test_v2_infer_answers_a_mask_and_refuses_classification_outputs(seg_server, runs, scenes):
    httpclient = pytest.importorskip("tritonclient.http")
    pred = cnnlab.load(runs["segmentation"])
    x = ((scenes.test.images[:2].float() / 255 - pred.mean[0]) / pred.std[0]).numpy()
    want = np.stack(pred.postprocess(pred.batch_outputs(torch.from_numpy(x)), [(SIZE, SIZE)] * 2))
    c = httpclient.InferenceServerClient(url=seg_server.base.removeprefix("http://"))
    try:
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x.astype(np.float32))
        res = c.infer("seg", [inp], headers=dict(KEY))
        mask = res.as_numpy("mask")
        assert mask.shape == (2, SIZE, SIZE) and mask.dtype == np.int32
        assert (mask == want).mean() > 0.999
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException, match="unknown output"):
            c.infer("seg", [inp], outputs=[httpclient.InferRequestedOutput("probabilities")],
                    headers=dict(KEY))  # fmt: skip
    finally:
        c.close()
