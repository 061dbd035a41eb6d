"""``report.html``: one self-contained page answering "how good is it, where does it fail, can I trust it?".

Every picture is a PNG embedded as base64, there is no script and no external resource, so the file
opens anywhere (a laptop, a CI artefact, an e-mail attachment) with no network. Sections, in order
(their ``id`` attributes are :data:`SECTIONS`): summary, training curves, confusion matrix, per-class
table, calibration, top losses, Grad-CAM samples, filters and feature maps, model card, resolved
config. :func:`write_comparison` puts several runs side by side on one page.

The engine calls :func:`write_report` with ``quick=True`` at the end of training; ``cnnlab report``
writes the full version (TTA comparison, longer latency measurement, more explanation samples).
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data import normalize_batch
from cnnlab.evaluate.explain import explain
from cnnlab.evaluate.plots import plot_curves, plot_curves_compare, plot_explanations
from cnnlab.evaluate.run_eval import evaluate_run, measure_latency
from cnnlab.inspect import count_macs, format_summary, summarize
from cnnlab.inspect.viz import first_conv, plot_feature_maps, plot_filters
from cnnlab.run import METRICS_FILE, MODEL_FILE, atomic_write_bytes, load_model_from_run
from cnnlab.runtime import resolve_device

REPORT_FILE = "report.html"
SECTIONS = (
    ("summary", "Summary"),
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
"""


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
    path = plot_explanations(imgs, rows, titles, run_dir / "gradcam.png")
    return (
        f"<p>Heat maps for the predicted class of {len(idx)} test images (one per class first). "
        f"Grad-CAM and Grad-CAM++ use layer <code>{_e(layer)}</code> (the last convolutional "
        "stage, chosen automatically; <code>cnnlab explain --layer NAME</code> picks another); "
        "saliency is the input gradient.</p>" + _img(path, "Grad-CAM samples")
    )


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


def _summary_section(res, cfg: dict[str, Any], run_dir: Path) -> str:
    s = res.summary()
    m = cfg.get("metrics", {})
    kpis = [
        ("top-1 accuracy", f"{s['accuracy']:.2%}"),
        ("top-5 accuracy", f"{s['top5_accuracy']:.2%}"),
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
    table = _table(["", "accuracy", "top-5", "log-loss", "ECE", "macro F1"], rows)
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
    return _kpis(kpis) + f"<p>{', '.join(lines)}.</p>" + table


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
    note = (
        f"A temperature of {saved:.4f} is saved in config.json and applied by the predictor."
        if saved
        else "No temperature is saved yet; <code>cnnlab eval --run RUN --calibrate</code> saves it."
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


def write_report(
    run_dir: str | Path,
    *,
    quick: bool = False,
    data: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    out: str | Path | None = None,
) -> Path:
    """Evaluate the run and write ``run_dir/report.html`` (or ``out``); returns its path.

    ``quick`` (used at the end of training) skips the TTA comparison and the layer table, measures
    latency briefly and explains fewer images.

    Example::

        from cnnlab.evaluate.report import write_report
        write_report("runs/simplecnn-digits")  # → runs/simplecnn-digits/report.html
    """

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    res = evaluate_run(
        run_dir,
        data,
        data_dir,
        device,
        write_plots=True,
        tta="none" if quick else "flip",
        latency=False,
        top_loss_count=8 if quick else 16,
    )
    model, cfg = load_model_from_run(run_dir)
    dev = resolve_device(device)
    model = model.to(dev)
    res.latency = measure_latency(
        model,
        cfg["input_size"],
        dev,
        batch_size=16 if quick else 64,
        budget_s=0.3 if quick else 2.0,
    )
    curves = None
    if (run_dir / METRICS_FILE).exists():
        curves = _guard_path(lambda: plot_curves(run_dir / METRICS_FILE, run_dir / "curves.png"))
    shown = {k: v for k, v in cfg.items() if k != "train_config"}
    sections = [
        ("summary", _guard(lambda: _summary_section(res, cfg, run_dir), "summary")),
        ("curves", _img(curves, "training curves")),
        (
            "confusion",
            _img(res.artefacts.get("confusion"), "confusion matrix (counts)")
            + _img(res.artefacts.get("confusion_normalized"), "confusion matrix (row-normalised)"),
        ),
        ("per-class", _per_class_section(res)),
        ("calibration", _calibration_section(res)),
        (
            "top-losses",
            "<p>The test images the model got wrong with the highest confidence: look for label "
            "noise, ambiguous images and systematic confusions.</p>"
            + _img(res.artefacts.get("top_losses"), "top losses"),
        ),
        (
            "gradcam",
            _guard(lambda: _explanations(model, res, cfg, run_dir, 6 if quick else 10), "Grad-CAM"),
        ),
        (
            "inspect",
            _QUICK_INSPECT
            if quick
            else _guard(lambda: _inspect_pictures(model, res, run_dir), "filters and feature maps"),
        ),
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
    page = _page(
        f"cnnlab report: {run_dir.name}",
        f"{cfg['model']['name']} · {len(res.classes)} classes · {res.num_samples} test images · "
        f"generated {time.strftime('%Y-%m-%d %H:%M:%S')} in {time.perf_counter() - t0:.1f} s"
        + (" (quick)" if quick else ""),
        [(sid, titles[sid], content) for sid, content in sections],
    )
    path = Path(out) if out is not None else run_dir / REPORT_FILE
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


def _guard_path(fn: Callable[[], Path]) -> Path | None:
    try:
        return fn()
    except Exception:
        return None


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
