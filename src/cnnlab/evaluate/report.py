"""``report.html``: one self-contained page answering "how good is it, where does it fail, can I trust it?".

Every picture is a PNG embedded as base64, there is no script and no external resource, so the file
opens anywhere (a laptop, a CI artefact, an e-mail attachment) with no network. Sections, in order
(their ``id`` attributes are :data:`SECTIONS`): summary (which weights it describes, and the best
epoch's when they differ), data (classes, images per split, skipped files), training curves (with
unfreezing marked), confusion matrix, per-class table, calibration, top losses, Grad-CAM samples,
filters and feature maps, model card, resolved config. Labels under the top-loss and Grad-CAM
images are HTML text, readable at any page width. :func:`write_comparison` puts several runs side
by side on one page.

The engine calls :func:`write_report` with ``quick=True`` at the end of training (the header says
what that leaves out); ``cnnlab report`` writes the full version (TTA comparison, longer latency
measurement, more explanation samples).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cnnlab.data import normalize_batch
from cnnlab.errors import ConfigError, RunError, UnknownNameError
from cnnlab.evaluate.dense_report import DenseEvaluation, evaluate_dense_run
from cnnlab.evaluate.explain import explain, overlay
from cnnlab.evaluate.metrics import top_losses
from cnnlab.evaluate.plots import plot_curves, plot_curves_compare, plot_explanations, run_markers
from cnnlab.evaluate.run_eval import evaluate_run, measure_latency
from cnnlab.inspect import count_macs, format_summary, summarize
from cnnlab.inspect.viz import first_conv, plot_feature_maps, plot_filters
from cnnlab.run import (
    METRICS_FILE,
    MODEL_FILE,
    SKIPPED_FILE,
    SUMMARY_FILE,
    atomic_write_bytes,
    list_checkpoints,
    load_model_from_run,
    read_run_config,
)
from cnnlab.runtime import resolve_device

REPORT_FILE = "report.html"
DENSE_TASKS = ("detection", "segmentation")
SECTIONS = (
    ("summary", "Summary"),
    ("data", "Data"),
    ("curves", "Training curves"),
    ("confusion", "Confusion matrix"),
    ("per-class", "Per-class precision, recall and F1"),
    ("calibration", "Calibration"),
    ("top-losses", "Top losses"),
    ("gradcam", "Grad-CAM samples"),
    ("inspect", "Filters and feature maps"),
    ("model-card", "Model card"),
    ("config", "Resolved config"),
)
COMPARE_SECTIONS = (
    ("summary", "Summary"),
    ("curves", "Training curves"),
    ("per-class", "Per-class F1"),
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85;font-size:13px}
nav{padding:8px 28px;background:#e8ecf1;font-size:13px}nav a{margin-right:14px;color:#1d3557}
main{padding:8px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:14px 20px;margin:16px 0}
h2{font-size:18px;margin:4px 0 10px;color:#1d3557}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e3e6ea;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f0f2f5}
tr.avg td{font-weight:600;background:#fafbfc}
img{max-width:100%;height:auto;border:1px solid #eee;margin:4px 0}
.kpi{display:inline-block;margin:4px 18px 4px 0}.kpi b{font-size:22px;display:block}
.kpi span{font-size:12px;color:#5b6670}
.note{font-size:12px;color:#5b6670}pre{background:#f4f5f7;padding:10px;overflow:auto;font-size:12px}
.missing{color:#8a5a00;font-style:italic}
.weights{background:#fff8e6;border-left:4px solid #e0a800;padding:8px 12px;font-size:14px}
.gallery{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0}
.gallery figure{margin:0;width:112px;text-align:center}
.gallery img{width:112px;image-rendering:pixelated;margin:0}
.gallery figcaption{font-size:13px;line-height:1.35;overflow-wrap:anywhere}
.gallery figcaption .bad{color:#b22222}
"""
# Labels in the galleries are HTML text at 13 px: drawn inside a PNG that the page scales down
# to its width, they came out at ~5 px. A test measures them in Chromium.
TILE_PX = 112


def _e(v: Any) -> str:
    return html.escape(str(v))


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.{digits}f}"
    return _e(v)


def _img(path: Path | None, alt: str) -> str:
    if path is None or not Path(path).exists():
        return f'<p class="missing">{_e(alt)}: not available</p>'
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], avg_rows: int = 0) -> str:
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = ' class="avg"' if i >= len(rows) - avg_rows else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _kpis(items: Sequence[tuple[str, str]]) -> str:
    return "".join(f'<div class="kpi"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for k, v in items)


def _page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    nav = "".join(f'<a href="#{sid}">{_e(t)}</a>' for sid, t, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{_e(t)}</h2>{content}</section>' for sid, t, content in sections
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p></header><nav>{nav}</nav>"
        f"<main>{body}</main></body></html>\n"
    )


def _guard(fn: Callable[[], str], what: str) -> str:
    """A section's HTML, or a visible note when an optional part fails (the page still renders)."""
    try:
        return fn()
    except Exception as exc:  # optional pictures must never cost the whole report
        return f'<p class="missing">{_e(what)} not available: {_e(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}</p>'


def _sample_indices(labels: np.ndarray, k: int) -> list[int]:
    """Up to ``k`` images, one per class first (the first of each), then the next ones in order."""
    picked: list[int] = []
    for c in np.unique(labels):
        if len(picked) < k:
            picked.append(int(np.flatnonzero(labels == c)[0]))
    for i in range(len(labels)):
        if len(picked) >= k:
            break
        if i not in picked:
            picked.append(i)
    return sorted(picked)


def _tile(arrays: Sequence[np.ndarray], alt: str) -> str:
    """An ``<img>`` of images stacked vertically (RGB floats in [0, 1] or uint8 grey/colour),
    each scaled (nearest neighbour) to :data:`TILE_PX` wide."""
    from PIL import Image

    rows = []
    for a in arrays:
        arr = np.asarray(a)
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.transpose(1, 2, 0)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        im = Image.fromarray(arr).convert("RGB")
        scale = TILE_PX / im.width
        rows.append(im.resize((TILE_PX, max(1, round(im.height * scale))), Image.NEAREST))
    gap = 3
    canvas = Image.new(
        "RGB", (TILE_PX, sum(r.height for r in rows) + gap * (len(rows) - 1)), "white"
    )
    y = 0
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height + gap
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _gallery(items: Sequence[tuple[str, str]]) -> str:
    """``(img html, caption html)`` pairs as a wrapping row of captioned figures."""
    figs = "".join(f"<figure>{img}<figcaption>{cap}</figcaption></figure>" for img, cap in items)
    return f'<div class="gallery">{figs}</div>'


def _explanations(model, res, cfg, run_dir: Path, k: int) -> str:
    idx = _sample_indices(res.labels, k)
    imgs = res.images[idx]
    p = next(model.parameters())
    x = normalize_batch(imgs.to(p.device), cfg["mean"], cfg["std"])
    rows, layer = {}, None
    for method in ("gradcam", "gradcam++", "saliency"):
        e = explain(model, x, method=method)
        rows[method] = e.maps
        layer = layer or e.layer
        preds = e.targets
    titles = [
        f"true {res.classes[res.labels[i]][:8]}\npred {res.classes[int(t)][:8]}"
        for i, t in zip(idx, preds)
    ]
    plot_explanations(imgs, rows, titles, run_dir / "gradcam.png")  # the run's own copy
    items = []
    for j, (i, t) in enumerate(zip(idx, preds)):
        img = imgs[j].numpy()
        true, pred = res.classes[res.labels[i]], res.classes[int(t)]
        tile = _tile([img, *(overlay(img, maps[j]) for maps in rows.values())], f"sample {i}")
        cls = ' class="bad"' if true != pred else ""
        items.append((tile, f"true <b>{_e(true)}</b><br><span{cls}>pred <b>{_e(pred)}</b></span>"))
    return (
        f"<p>Heat maps for the predicted class of {len(idx)} test images (one per class first). "
        "Each column, top to bottom: the input, Grad-CAM, Grad-CAM++ and saliency. "
        f"Grad-CAM and Grad-CAM++ use layer <code>{_e(layer)}</code> (the last convolutional "
        "stage, chosen automatically; <code>cnnlab explain --layer NAME</code> picks another); "
        "saliency is the input gradient. The grid is also saved as "
        "<code>gradcam.png</code>.</p>" + _gallery(items)
    )


def _top_losses_section(res, k: int) -> str:
    intro = (
        "<p>The test images the model got wrong with the highest confidence: look for label "
        "noise, ambiguous images and systematic confusions.</p>"
    )
    if res.images is None:
        return intro + _img(res.artefacts.get("top_losses"), "top losses")
    idx = top_losses(res.labels, res.probs, k)
    if len(idx) == 0:
        return intro + "<p>No mistakes on the test split.</p>"
    items = []
    for i in idx:
        p, t = int(res.probs[i].argmax()), int(res.labels[i])
        cap = (
            f'<span class="bad">pred <b>{_e(res.classes[p])}</b> {res.probs[i, p]:.2f}</span>'
            f"<br>true <b>{_e(res.classes[t])}</b> {res.probs[i, t]:.2f}"
        )
        items.append((_tile([res.images[int(i)].numpy()], f"test image {int(i)}"), cap))
    return intro + _gallery(items)


def _inspect_pictures(model, res, run_dir: Path) -> str:

    parts = []
    filt = _guard(lambda: _img(plot_filters(model, run_dir / "filters.png"), "filters"), "filters")
    parts.append("<h3>First-layer filters</h3>" + filt)
    image = res.images[0].permute(1, 2, 0).float().numpy() / 255.0

    def fmaps() -> str:
        name, _ = first_conv(model)
        path = plot_feature_maps(model, name, image, run_dir / "feature_maps.png", max_maps=16)
        return f"<p>Layer <code>{_e(name)}</code> on the first test image.</p>" + _img(
            path, "feature maps"
        )

    parts.append("<h3>Feature maps</h3>" + _guard(fmaps, "feature maps"))
    return "".join(parts)


def _model_card(
    model, cfg: dict[str, Any], run_dir: Path, latency: dict[str, Any] | None, quick: bool
) -> str:
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    size = (run_dir / MODEL_FILE).stat().st_size if (run_dir / MODEL_FILE).exists() else None
    input_size = tuple(cfg["input_size"])

    def macs() -> str:

        m = count_macs(model, input_size)
        return f"{m:,} ({m / 1e6:.2f} M MACs, {2 * m / 1e9:.3f} GFLOPs)"

    rows = [
        ("architecture", f"{cfg['model']['name']} {json.dumps(cfg['model'].get('kwargs', {}))}"),
        ("parameters", f"{params:,} ({trainable:,} trainable)"),
        ("MACs per image", _guard(macs, "MAC count")),
        ("input size (C, H, W)", str(input_size)),
        (
            "classes",
            f"{len(cfg['classes'])}: {', '.join(cfg['classes'][:20])}"
            + (" …" if len(cfg["classes"]) > 20 else ""),
        ),
        ("normalisation", f"mean {cfg['mean']}, std {cfg['std']}"),
        (
            "weights on disk",
            f"{size / 1e6:.2f} MB ({MODEL_FILE})" if size is not None else "missing",
        ),
    ]
    if latency:
        rows.append(
            (
                "latency",
                f"{latency['ms_per_image_batch1']:.2f} ms per image at batch 1; "
                f"{latency['images_per_s']:.0f} images/s at batch {latency['batch_size']} "
                f"({latency['device']}, {latency['threads']} threads; medians)",
            )
        )
    if cfg.get("calibration", {}).get("temperature"):
        rows.append(
            (
                "saved temperature",
                f"{cfg['calibration']['temperature']:.4f} (applied by the predictor)",
            )
        )
    body = (
        "<table><tbody>"
        + "".join(
            f"<tr><th>{_e(k)}</th><td style='text-align:left'>{v if k == 'MACs per image' else _e(v)}</td></tr>"
            for k, v in rows
        )
        + "</tbody></table>"
    )
    if not quick:

        def summary_table() -> str:

            return f"<details><summary>layer table</summary><pre>{_e(format_summary(summarize(model, input_size)))}</pre></details>"

        body += _guard(summary_table, "layer table")
    return body


def _best_epoch(run_dir: Path) -> dict[str, Any] | None:
    """``summary.json``'s best epoch with its checkpoint directory, when one was published."""
    try:
        best = json.loads((run_dir / SUMMARY_FILE).read_text()).get("best") or {}
    except (OSError, ValueError):
        return None
    refs = list_checkpoints(run_dir, "best")
    if not best.get("epoch") or not refs:
        return None
    return {**best, "checkpoint": str(refs[0].path.relative_to(run_dir))}


def _weights_note(run_dir: Path, cfg: dict[str, Any], weights: str) -> str:
    """Which weights the page describes, and the best epoch's when they differ."""
    best = _best_epoch(run_dir)
    m = cfg.get("metrics", {})
    metric = (best or {}).get("metric", "test_acc")
    if weights == "best" and best:
        return (
            f'<p class="weights">This report describes the <b>best</b> epoch\'s weights (epoch '
            f"{best['epoch']}, {_e(metric)} {_fmt(best.get('value'))}, "
            f"<code>{_e(best['checkpoint'])}</code>); the final weights "
            f"(<code>{MODEL_FILE}</code>, epoch {_e(m.get('epoch', '?'))}) are in "
            f"<code>{REPORT_FILE}</code>.</p>"
        )
    final = m.get(metric)
    text = (
        f"This report describes the <b>final</b> weights (<code>{MODEL_FILE}</code>, epoch "
        f"{_e(m.get('epoch', '?'))}, {_e(metric)} {_fmt(final)}), which predict, export and "
        "serve use."
    )
    if best and best.get("epoch") != m.get("epoch") and best.get("value") != final:
        text += (
            f" The best epoch was <b>{best['epoch']}</b> ({_e(metric)} {_fmt(best.get('value'))}), "
            f"kept in <code>{_e(best['checkpoint'])}</code>: "
            f"<code>cnnlab report {_e(run_dir)} --weights best</code> writes its report "
            f"(<code>{BEST_REPORT_FILE}</code>)."
        )
        return f'<p class="weights">{text}</p>'
    return f'<p class="note">{text}</p>'


def _skipped_row(run_dir: Path) -> tuple[str, str]:
    """The data table's "skipped files" row: how many ``skipped.txt`` lists, or none."""
    skipped = run_dir / SKIPPED_FILE
    n_skipped = (
        sum(1 for ln in skipped.read_text(errors="replace").splitlines() if ln.strip())
        if skipped.exists()
        else 0
    )
    return ("skipped files", f"{n_skipped} (listed in {SKIPPED_FILE})" if n_skipped else "none")


def _data_section(res, cfg: dict[str, Any], run_dir: Path) -> str:
    """Classes, images per split and skipped files: what the figures were measured on."""
    ds = cfg.get("dataset", {}) or {}
    tc = cfg.get("train_config", {}).get("data", {})
    name = tc.get("name") or ds.get("name", "?")
    counts = ds.get("class_counts") or []
    test_counts = np.bincount(res.labels, minlength=len(res.classes)) if len(res.labels) else []
    rows = [
        ("source", f"{name}" + (f" ({tc['data_dir']})" if tc.get("data_dir") else "")),
        ("classes", f"{len(res.classes)}"),
        ("training images", f"{ds['train_size']:,}" if ds.get("train_size") else "–"),
        ("test images", f"{res.num_samples:,}"),
        ("image size (C, H, W)", "x".join(map(str, cfg["input_size"]))),
        _skipped_row(run_dir),
    ]
    if tc.get("augment"):
        rows.append(("training augmentation", tc["augment"]))
    body = (
        "<table><tbody>"
        + "".join(
            f"<tr><th>{_e(k)}</th><td style='text-align:left'>{_e(v)}</td></tr>" for k, v in rows
        )
        + "</tbody></table>"
    )
    per_class = [
        [c, int(counts[i]) if i < len(counts) else None, int(test_counts[i])]
        for i, c in enumerate(res.classes)
    ]
    return body + "<h3>images per class</h3>" + _table(["class", "train", "test"], per_class)


def _summary_section(res, cfg: dict[str, Any], run_dir: Path, weights: str = "final") -> str:
    s = res.summary()
    m = cfg.get("metrics", {})
    top5 = len(res.classes) > 5  # top-5 of five classes or fewer is 100 % by definition
    kpis = [
        ("top-1 accuracy", f"{s['accuracy']:.2%}"),
        *([("top-5 accuracy", f"{s['top5_accuracy']:.2%}")] if top5 else []),
        ("macro F1", f"{s['macro_f1']:.4f}"),
        ("log-loss", f"{s['log_loss']:.4f}"),
        ("ECE", f"{s['ece']:.4f}"),
        ("test images", f"{s['samples']:,}"),
    ]
    rows = [["no TTA", s["accuracy"], s["top5_accuracy"], s["log_loss"], s["ece"], s["macro_f1"]]]
    if res.tta:
        t = res.tta
        rows.append(
            [
                f"TTA ({t['views']})",
                t["accuracy"],
                t["top5_accuracy"],
                t["log_loss"],
                t["ece"],
                t["macro_f1"],
            ]
        )
    header = ["", "accuracy", "top-5", "log-loss", "ECE", "macro F1"]
    if not top5:
        header.pop(2)
        rows = [r[:2] + r[3:] for r in rows]
    table = _table(header, rows)
    tc = cfg.get("train_config", {})
    lines = [
        f"model <b>{_e(cfg['model']['name'])}</b> trained on <b>{_e(tc.get('data', {}).get('name', cfg.get('dataset', {}).get('name', '?')))}</b>",
        f"{_e(m.get('epoch', '?'))} epoch(s)",
    ]
    if m.get("elapsed_s") is not None:
        lines.append(f"{float(m['elapsed_s']):.1f} s of training")
    if res.latency:
        lines.append(
            f"{res.latency['ms_per_image_batch1']:.2f} ms per image ({_e(res.latency['device'])})"
        )
    return (
        _weights_note(run_dir, cfg, weights) + _kpis(kpis) + f"<p>{', '.join(lines)}.</p>" + table
    )


def _per_class_section(res) -> str:
    pc, av = res.per_class, res.averages
    rows = [
        [c, pc["precision"][i], pc["recall"][i], pc["f1"][i], int(pc["support"][i])]
        for i, c in enumerate(res.classes)
    ]
    rows += [
        [f"{k} avg", av[k]["precision"], av[k]["recall"], av[k]["f1"], av[k]["support"]]
        for k in ("macro", "weighted")
    ]
    return _table(["class", "precision", "recall", "F1", "support"], rows, avg_rows=2) + _img(
        res.artefacts.get("per_class"), "per-class bars"
    )


def _calibration_section(res) -> str:
    c = res.calibration or {}
    rows = [
        ["before (T = 1)", c.get("nll_before"), c.get("ece_before")],
        [
            f"after (T = {c.get('temperature', float('nan')):.3f})",
            c.get("nll_after"),
            c.get("ece_after"),
        ],
    ]
    saved = c.get("saved_temperature")
    if saved:
        note = f"A temperature of {saved:.4f} is saved in config.json and applied by the predictor."
    elif c.get("nll_after") is not None and c["nll_after"] >= c.get("nll_before", math.inf):
        note = (
            "The fitted temperature does not lower the cross-fitted NLL, so none is saved "
            "(<code>cnnlab eval --calibrate</code> saves only an improvement)."
        )
    else:
        note = (
            "No temperature is saved yet; <code>cnnlab eval --run RUN --calibrate</code> saves it."
        )
    return (
        "<p>Expected calibration error with 15 equal-width confidence bins. The temperature is "
        "fitted on the test split (the only data the model did not train on); the after-scaling "
        "numbers are 2-fold cross-fitted, so no image is scored with a temperature fitted on it. "
        f"{note}</p>"
        + _table(["", "NLL", "ECE"], rows)
        + _img(res.artefacts.get("reliability"), "reliability diagram")
    )


_QUICK_INSPECT = (
    '<p class="note">Skipped in the quick report written at the end of training; '
    "<code>cnnlab report RUN</code> adds the first-layer filters and feature maps.</p>"
)


QUICK_NOTE = (
    "quick report, written at the end of training: no TTA comparison, a brief latency "
    "measurement and fewer samples; `cnnlab report RUN` writes the full one"
)
BEST_REPORT_FILE = "report-best.html"


# Long by design: the page is assembled section by section in reading order; each section's
# content comes from a helper above, this function only orders them.
def write_report(
    run_dir: str | Path,
    *,
    quick: bool = False,
    data: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    weights: str = "final",
    progress: bool | None = None,
) -> Path:
    """Evaluate the run and write ``run_dir/report.html`` (or ``out``); returns its path.

    ``quick`` (used at the end of training) skips the TTA comparison and the layer table, measures
    latency briefly and explains fewer images. ``weights="best"`` describes the best epoch's
    checkpoint instead of the final weights (written to ``report-best.html``, its pictures to
    ``report-best/``). ``progress`` shows a bar of the stages on stderr (None: when it is a
    terminal); the full report takes tens of seconds on a small CPU.

    Example::

        from cnnlab.evaluate.report import write_report
        write_report("runs/simplecnn-digits")  # → runs/simplecnn-digits/report.html
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    weights_file, pictures = MODEL_FILE, run_dir
    if weights not in ("final", "best"):
        raise UnknownNameError("report weights", weights, ["final", "best"])
    if weights == "best":
        best = _best_epoch(run_dir)
        if best is None:
            raise RunError(f"{run_dir} has no best checkpoint to report on")
        weights_file = f"{best['checkpoint']}/{MODEL_FILE}"
        pictures = run_dir / "report-best"
        pictures.mkdir(exist_ok=True)
    if read_run_config(run_dir).get("task", "classification") in DENSE_TASKS:
        return _write_dense_report(
            run_dir, quick, data, data_dir, device, out, weights, weights_file, pictures
        )
    stages = ["evaluating the test split", "latency", "curves", "explanations", "pictures", "page"]
    bar = tqdm(
        total=len(stages),
        desc="report",
        disable=None if progress is None else not progress,
        leave=False,
        file=sys.stderr,
        bar_format="{desc}: {n_fmt}/{total_fmt} {postfix} [{elapsed}]",
    )

    def stage(i: int) -> None:
        bar.n = i
        bar.set_postfix_str(stages[i])

    stage(0)
    res = evaluate_run(
        run_dir,
        data,
        data_dir,
        device,
        write_plots=True,
        tta="none" if quick else "flip",
        latency=False,
        top_loss_count=8 if quick else 16,
        weights=weights_file,
        out_dir=pictures,
    )
    model, cfg = load_model_from_run(run_dir, weights_file)
    dev = resolve_device(device)
    model = model.to(dev)
    stage(1)
    res.latency = measure_latency(
        model,
        cfg["input_size"],
        dev,
        batch_size=16 if quick else 64,
        budget_s=0.3 if quick else 2.0,
    )
    stage(2)
    curves = None
    if (run_dir / METRICS_FILE).exists():
        markers = run_markers(cfg.get("train_config", {}))
        curves = _guard_path(
            lambda: plot_curves(run_dir / METRICS_FILE, pictures / "curves.png", markers)
        )
    stage(3)
    gradcam = _guard(
        lambda: _explanations(model, res, cfg, pictures, 6 if quick else 10), "Grad-CAM"
    )
    stage(4)
    inspect = (
        _QUICK_INSPECT
        if quick
        else _guard(lambda: _inspect_pictures(model, res, pictures), "filters and feature maps")
    )
    stage(5)
    shown = {k: v for k, v in cfg.items() if k != "train_config"}
    sections = [
        ("summary", _guard(lambda: _summary_section(res, cfg, run_dir, weights), "summary")),
        ("data", _guard(lambda: _data_section(res, cfg, run_dir), "data summary")),
        ("curves", _curves_note(cfg) + _img(curves, "training curves")),
        (
            "confusion",
            _img(res.artefacts.get("confusion"), "confusion matrix (counts)")
            + _img(res.artefacts.get("confusion_normalized"), "confusion matrix (row-normalised)"),
        ),
        ("per-class", _per_class_section(res)),
        ("calibration", _calibration_section(res)),
        ("top-losses", _guard(lambda: _top_losses_section(res, 8 if quick else 16), "top losses")),
        ("gradcam", gradcam),
        ("inspect", inspect),
        ("model-card", _model_card(model, cfg, run_dir, res.latency, quick)),
        (
            "config",
            "<h3>training config</h3><pre>"
            + _e(json.dumps(cfg.get("train_config", {}), indent=2, default=str))
            + "</pre><details><summary>config.json (model, preprocessing, metrics)</summary><pre>"
            + _e(json.dumps(shown, indent=2, default=str))
            + "</pre></details>",
        ),
    ]
    titles = dict(SECTIONS)
    which = " · best epoch's weights" if weights == "best" else ""
    page = _page(
        f"cnnlab report: {run_dir.name}",
        f"{cfg['model']['name']} · {len(res.classes)} classes · {res.num_samples} test images"
        f"{which} · generated {time.strftime('%Y-%m-%d %H:%M:%S')} in "
        f"{time.perf_counter() - t0:.1f} s" + (f" · {QUICK_NOTE}" if quick else ""),
        [(sid, titles[sid], content) for sid, content in sections],
    )
    default = run_dir / (BEST_REPORT_FILE if weights == "best" else REPORT_FILE)
    path = Path(out) if out is not None else default
    atomic_write_bytes(path, page.encode("utf-8"))
    bar.close()
    return path


def _dense_kpis(ev: DenseEvaluation) -> list[tuple[str, str]]:
    m = ev.metrics
    if ev.task == "detection":
        return [
            ("mAP@[.5:.95]", f"{m['test_map']:.4f}"),
            ("AP50", f"{m['test_map50']:.4f}"),
            ("AP75", f"{m['test_map75']:.4f}"),
            ("AR@100", f"{m['test_ar100']:.4f}"),
            ("test images", f"{ev.num_images:,}"),
        ]
    return [
        ("mIoU", f"{m['test_miou']:.4f}"),
        ("pixel accuracy", f"{m['test_pixel_acc']:.2%}"),
        ("mean Dice", f"{m['test_dice']:.4f}"),
        ("test images", f"{ev.num_images:,}"),
    ]


def _dense_data_section(ev: DenseEvaluation, cfg: dict[str, Any], run_dir: Path) -> str:
    """Classes, images per split, objects per class and skipped files of a dense run."""
    ds = cfg.get("dataset", {}) or {}
    tc = cfg.get("train_config", {}).get("data", {})
    rows = [
        ("source", tc.get("name") or ds.get("name", "?")),
        ("task", ev.task),
        ("classes", f"{len(cfg['classes'])}"),
        ("training images", f"{ds['train_size']:,}" if ds.get("train_size") else "–"),
        ("test images", f"{ev.num_images:,}"),
        ("image size (C, H, W)", "x".join(map(str, cfg["input_size"]))),
        _skipped_row(run_dir),
    ]
    if tc.get("augment"):
        rows.append(("training augmentation", tc["augment"]))
    body = "<table><tbody>" + "".join(
        f"<tr><th>{_e(k)}</th><td style='text-align:left'>{_e(v)}</td></tr>" for k, v in rows
    ) + "</tbody></table>"  # fmt: skip
    counts = ds.get("class_counts") or []
    objects = [c for c in cfg["classes"] if c != "background" or ev.task == "detection"]
    per_class = [[c, int(counts[i]) if i < len(counts) else None] for i, c in enumerate(objects)]
    return body + "<h3>training objects per class</h3>" + _table(["class", "train"], per_class)


# Long by design: like write_report, the dense page's sections in reading order.
def _write_dense_report(
    run_dir: Path,
    quick: bool,
    data: str | None,
    data_dir: str | None,
    device: str,
    out: str | Path | None,
    weights: str,
    weights_file: str,
    pictures: Path,
) -> Path:
    """``report.html`` of a detection or segmentation run: the task's metrics and pictures
    (:func:`cnnlab.evaluate.dense_report.evaluate_dense_run`) with the shared summary, data,
    curves, model card and config sections."""
    t0 = time.perf_counter()
    ev = evaluate_dense_run(
        run_dir,
        device=device,
        data=data,
        data_dir=data_dir,
        write=weights == "final",
        weights=weights_file,
        samples=4 if quick else None,
    )
    model, cfg = load_model_from_run(run_dir, weights_file)
    dev = resolve_device(device)
    latency = measure_latency(
        model.to(dev), cfg["input_size"], dev, batch_size=16, budget_s=0.3 if quick else 2.0
    )
    curves = None
    if (run_dir / METRICS_FILE).exists():
        markers = run_markers(cfg.get("train_config", {}))
        curves = _guard_path(
            lambda: plot_curves(run_dir / METRICS_FILE, pictures / "curves.png", markers)
        )
    tc = cfg.get("train_config", {})
    m = cfg.get("metrics", {})
    lines = [
        f"{_e(ev.task)} model <b>{_e(cfg['model']['name'])}</b> trained on "
        f"<b>{_e(tc.get('data', {}).get('name', cfg.get('dataset', {}).get('name', '?')))}</b>",
        f"{_e(m.get('epoch', '?'))} epoch(s)",
        f"{latency['ms_per_image_batch1']:.2f} ms per image ({_e(latency['device'])}, forward "
        "pass)",
    ]
    summary = _weights_note(run_dir, cfg, weights) + _kpis(_dense_kpis(ev))
    summary += f"<p>{', '.join(lines)}.</p>"
    shown = {k: v for k, v in cfg.items() if k != "train_config"}
    sections = [
        ("summary", "Summary", summary),
        ("data", "Data", _guard(lambda: _dense_data_section(ev, cfg, run_dir), "data summary")),
        ("curves", "Training curves", _curves_note(cfg) + _img(curves, "training curves")),
        *ev.sections,
        ("model-card", "Model card", _model_card(model, cfg, run_dir, latency, quick)),
        (
            "config",
            "Resolved config",
            "<h3>training config</h3><pre>"
            + _e(json.dumps(tc, indent=2, default=str))
            + "</pre><details><summary>config.json (model, preprocessing, metrics)</summary><pre>"
            + _e(json.dumps(shown, indent=2, default=str))
            + "</pre></details>",
        ),
    ]
    which = " · best epoch's weights" if weights == "best" else ""
    page = _page(
        f"cnnlab report: {run_dir.name}",
        f"{cfg['model']['name']} · {ev.task} · {len(ev.classes)} classes · {ev.num_images} "
        f"test images{which} · generated {time.strftime('%Y-%m-%d %H:%M:%S')} in "
        f"{time.perf_counter() - t0:.1f} s" + (f" · {QUICK_NOTE}" if quick else ""),
        sections,
    )
    default = run_dir / (BEST_REPORT_FILE if weights == "best" else REPORT_FILE)
    path = Path(out) if out is not None else default
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


def _curves_note(cfg: dict[str, Any]) -> str:
    markers = run_markers(cfg.get("train_config", {}))
    if not markers:
        return ""
    return "<p class='note'>Dashed line: " + "; ".join(_e(t) for t in markers.values()) + ".</p>"


def _guard_path(fn: Callable[[], Path]) -> Path | None:
    try:
        return fn()
    except Exception:
        return None


# Long by design: like write_report, the comparison page's sections in reading order.
def write_comparison(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    data: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
) -> Path:
    """One page comparing several runs: a metrics table (accuracy, top-5, log-loss, ECE, macro F1,
    parameters, MACs, size, latency), overlaid training curves and per-class F1 side by side.

    Each run is evaluated on its own test data (``data`` overrides all of them).
    """
    import tempfile

    dirs = [Path(r) for r in run_dirs]
    for d in dirs:
        task = read_run_config(d).get("task", "classification")
        if task in DENSE_TASKS:
            raise ConfigError(
                f"{d} is a {task} run; comparison pages compare classification runs (each dense "
                "run has its own report: cnnlab report RUN)"
            )
    names = _unique_names(dirs)
    dev = resolve_device(device)
    rows, results = [], []
    for d, name in zip(dirs, names):
        res = evaluate_run(d, data, data_dir, device, write_plots=False, latency=False)
        model, cfg = load_model_from_run(d)
        lat = measure_latency(model.to(dev), cfg["input_size"], dev, budget_s=0.5)
        try:
            macs: Any = count_macs(model, tuple(cfg["input_size"]))
        except Exception:
            macs = None
        size = (d / MODEL_FILE).stat().st_size / 1e6
        rows.append(
            [
                name,
                cfg["model"]["name"],
                f"{sum(p.numel() for p in model.parameters()):,}",
                f"{macs / 1e6:.2f} M" if macs else None,
                f"{size:.2f} MB",
                res.accuracy,
                res.top5_accuracy,
                res.log_loss,
                res.ece,
                float(res.per_class["f1"].mean()),
                f"{lat['ms_per_image_batch1']:.2f}",
            ]
        )
        results.append(res)
    header = [
        "run",
        "model",
        "parameters",
        "MACs",
        "size",
        "accuracy",
        "top-5",
        "log-loss",
        "ECE",
        "macro F1",
        "ms/image",
    ]
    best = max(range(len(results)), key=lambda i: results[i].accuracy)
    summary = _table(header, rows) + f"<p>Most accurate: <b>{_e(names[best])}</b>.</p>"
    with tempfile.TemporaryDirectory() as tmp:
        curves_png = plot_curves_compare(
            {n: d / METRICS_FILE for n, d in zip(names, dirs)}, Path(tmp) / "curves.png"
        )
        curves = _img(curves_png, "training curves of all runs")
    if all(r.classes == results[0].classes for r in results):
        f1_rows = [
            [c, *(float(r.per_class["f1"][i]) for r in results)]
            for i, c in enumerate(results[0].classes)
        ]
        per_class = _table(["class", *names], f1_rows)
    else:
        per_class = '<p class="missing">the runs have different class lists; per-class F1 is in each run\'s own report</p>'
    titles = dict(COMPARE_SECTIONS)
    page = _page(
        "cnnlab comparison: " + ", ".join(names),
        f"{len(dirs)} runs · generated {time.strftime('%Y-%m-%d %H:%M:%S')}",
        [
            (sid, titles[sid], c)
            for sid, c in (("summary", summary), ("curves", curves), ("per-class", per_class))
        ],
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, page.encode("utf-8"))
    return out


def _unique_names(dirs: Sequence[Path]) -> list[str]:
    names = [d.name for d in dirs]
    if len(set(names)) == len(names):
        return names
    return [str(d) for d in dirs]
