"""`cnnlab eval`: evaluate a trained run (or an ensemble of runs) on its test data."""

from __future__ import annotations

import argparse

NAME = "eval"
HELP = (
    "evaluate a run on test data: accuracy, top-5, per-class precision/recall/F1, confusion matrix, "
    "calibration, TTA, latency, ensembles; detection runs: COCO mAP, AP50, AP75, per-class AP; "
    "segmentation runs: mIoU, pixel accuracy, Dice, per-class IoU"
)
DENSE_TASKS = ("detection", "segmentation")
EXAMPLE = "cnnlab eval --run runs/simplecnn-digits --tta flip --calibrate"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory written by `cnnlab train`")
    p.add_argument("--data", help="data source (default: the one the run was trained on)")
    p.add_argument("--data-dir", help="folder with the data files")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument(
        "--tta",
        default="none",
        help="test-time augmentation: none, flip, flip+crops, or view names "
        "(identity,hflip,vflip,crop_c,crop_tl,crop_tr,crop_bl,crop_br); reported next to no TTA",
    )
    p.add_argument(
        "--ensemble",
        nargs="+",
        metavar="RUN",
        help="more runs to ensemble with --run (each member and the ensemble are reported)",
    )
    p.add_argument(
        "--method", choices=("mean", "weighted", "vote"), default="mean", help="ensemble method"
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="save the fitted temperature into config.json (the predictor then applies it) when "
        "it lowers the cross-fitted NLL; the command says either way",
    )
    p.add_argument(
        "--resize",
        action="store_true",
        help="resize --data images of another size to the model's input (otherwise an error)",
    )
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--no-plots", action="store_true", help="write no PNGs / eval.json")


def format_report(res) -> str:
    """The per-class evaluation as a text table with macro and weighted averages."""
    lines = [f"{'class':<16} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    pc = res.per_class
    for i, c in enumerate(res.classes):
        lines.append(
            f"{c[:16]:<16} {pc['precision'][i]:>9.4f} {pc['recall'][i]:>9.4f} {pc['f1'][i]:>9.4f} {int(pc['support'][i]):>8d}"
        )
    av = res.averages
    for k in ("macro", "weighted"):
        a = av[k]
        lines.append(
            f"{k + ' avg':<16} {a['precision']:>9.4f} {a['recall']:>9.4f} {a['f1']:>9.4f} {a['support']:>8d}"
        )
    return "\n".join(lines)


def _calibration_verdict(c: dict, calibrate: bool) -> str:
    """What happened to the temperature, in words, whether or not --calibrate was given."""
    if c.get("saved_now"):
        return "it lowers the NLL: saved to config.json (the predictor applies it)"
    if calibrate and not c.get("improves"):
        kept = (
            f"config.json keeps T={c['saved_temperature']:.4f}"
            if c.get("saved_temperature")
            else "nothing saved"
        )
        return f"it does not lower the cross-fitted NLL: not saved ({kept})"
    if c.get("saved_temperature"):
        return f"config.json has T={c['saved_temperature']:.4f}"
    if c.get("improves"):
        return "it lowers the NLL: --calibrate saves it"
    return "it does not lower the NLL: nothing to save"


def _headline(name: str, r, width: int) -> str:
    return (
        f"{name[:width]:<{width}} {r.accuracy:>8.4f} {r.top5_accuracy:>8.4f} {r.log_loss:>9.4f} "
        f"{r.ece:>7.4f} {float(r.per_class['f1'].mean()):>8.4f}"
    )


def _run_ensemble(args: argparse.Namespace) -> int:
    from cnnlab.evaluate.run_eval import evaluate_ensemble

    ens = evaluate_ensemble(
        [args.run, *args.ensemble],
        method=args.method,
        data=args.data,
        data_dir=args.data_dir,
        device=args.device,
        batch_size=args.batch_size,
        tta=args.tta,
        resize=True if args.resize else None,
    )
    r = ens.ensemble
    print(
        f"accuracy {r.accuracy:.4f}  top-5 {r.top5_accuracy:.4f}  log-loss {r.log_loss:.4f}  "
        f"ECE {r.ece:.4f}  ({r.num_samples} test images, {args.method} ensemble of {len(ens.members)} runs)"
    )
    width = max(12, *(len(m.name) for m in ens.members), len(r.name))
    print(
        f"{'model':<{width}} {'accuracy':>8} {'top-5':>8} {'log-loss':>9} {'ECE':>7} {'macro-F1':>8}"
    )
    for m in ens.members:
        print(_headline(m.name, m, width))
    print(_headline(r.name, r, width))
    if ens.weights is not None:
        print(
            "weights: " + ", ".join(f"{m.name} {w:.3f}" for m, w in zip(ens.members, ens.weights))
        )
    if ens.note:
        print(f"note: {ens.note}")
    print(format_report(r))
    return 0


def format_dense(ev) -> str:
    """A dense evaluation as text: the headline metrics, then the per-class table."""
    m, n = ev.metrics, ev.num_images
    if ev.task == "detection":
        s = ev.details.stats
        lines = [
            f"mAP@[.5:.95] {m['test_map']:.4f}  AP50 {m['test_map50']:.4f}  AP75 "
            f"{m['test_map75']:.4f}  AR@100 {m['test_ar100']:.4f}  ({n} test images, pycocotools)",
            f"AP small {_ap(s['map_small'])}  medium {_ap(s['map_medium'])}  large "
            f"{_ap(s['map_large'])}  (- = no object of that size)",
            f"{'class':<16} {'AP@[.5:.95]':>11} {'AP50':>8}",
        ]
        for c, v in ev.per_class.items():
            lines.append(f"{c[:16]:<16} {_ap(v['ap']):>11} {_ap(v['ap50']):>8}")
        return "\n".join(lines)
    lines = [
        f"mIoU {m['test_miou']:.4f}  pixel accuracy {m['test_pixel_acc']:.4f}  mean Dice "
        f"{m['test_dice']:.4f}  ({n} test images)",
        f"{'class':<16} {'IoU':>8} {'Dice':>8} {'pixels':>9}",
    ]
    for c, v in ev.per_class.items():
        lines.append(f"{c[:16]:<16} {_ap(v['iou']):>8} {_ap(v['dice']):>8} {v['pixels']:>9d}")
    return "\n".join(lines)


def _ap(v: float) -> str:
    """A score, or ``-`` for COCO's -1 / NaN ("nothing to score")."""
    return "-" if v is None or v != v or v < 0 else f"{v:.4f}"


def _run_dense(args: argparse.Namespace, task: str) -> int:
    from cnnlab.errors import ConfigError
    from cnnlab.evaluate.dense_report import evaluate_dense_run
    from cnnlab.evaluate.run_eval import measure_latency
    from cnnlab.run import load_model_from_run
    from cnnlab.runtime import resolve_device

    given = [
        flag
        for flag, on in (
            ("--ensemble", bool(args.ensemble)),
            ("--tta", args.tta != "none"),
            ("--calibrate", args.calibrate),
        )
        if on
    ]
    if given:
        raise ConfigError(f"{', '.join(given)}: for classification runs only; this is a {task} run")
    ev = evaluate_dense_run(
        args.run,
        data=args.data,
        data_dir=args.data_dir,
        device=args.device,
        batch_size=min(args.batch_size, 64),
        write=not args.no_plots,
    )
    print(format_dense(ev))
    if not args.no_latency:
        model, cfg = load_model_from_run(args.run)
        lat = measure_latency(model, cfg["input_size"], resolve_device(args.device), 16, 1.0)
        print(
            f"latency: {lat['ms_per_image_batch1']:.2f} ms/image at batch 1 (median; p90 "
            f"{lat['p90_ms_batch1']:.2f} ms, forward pass without post-processing), "
            f"{lat['images_per_s']:.0f} images/s at batch {lat['batch_size']} ({lat['device']})"
        )
    for path in ev.files:
        print(f"{path.stem}: {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    from cnnlab.evaluate.run_eval import evaluate_run
    from cnnlab.run import read_run_config

    task = read_run_config(args.run).get("task", "classification")
    if task in DENSE_TASKS:
        return _run_dense(args, task)
    if args.ensemble:
        return _run_ensemble(args)
    res = evaluate_run(
        args.run,
        data=args.data,
        data_dir=args.data_dir,
        device=args.device,
        batch_size=args.batch_size,
        write_plots=not args.no_plots,
        tta=args.tta,
        calibrate=args.calibrate,
        latency=not args.no_latency,
        resize=True if args.resize else None,
    )
    s = res.summary()
    top5 = len(res.classes) > 5  # with five classes or fewer, top-5 is 100 % by definition
    t5 = f"top-5 {s['top5_accuracy']:.4f}  " if top5 else ""
    print(
        f"accuracy {s['accuracy']:.4f}  {t5}log-loss {s['log_loss']:.4f}  "
        f"ECE {s['ece']:.4f}  ({s['samples']} test images)"
    )
    if res.tta:
        t = res.tta
        t5 = f"top-5 {t['top5_accuracy']:.4f}  " if top5 else ""
        print(
            f"with TTA ({t['views']}): accuracy {t['accuracy']:.4f}  {t5}"
            f"log-loss {t['log_loss']:.4f}  ECE {t['ece']:.4f}"
        )
    c = res.calibration
    if c and "nll_after" in c:
        print(
            f"calibration: temperature {c['temperature']:.4f}; NLL {c['nll_before']:.4f} -> "
            f"{c['nll_after']:.4f}, ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f} "
            f"(2-fold cross-fitted); {_calibration_verdict(c, args.calibrate)}"
        )
    if res.latency:
        lat = res.latency
        print(
            f"latency: {lat['ms_per_image_batch1']:.2f} ms/image at batch 1 (median; p90 "
            f"{lat['p90_ms_batch1']:.2f} ms), {lat['images_per_s']:.0f} images/s at batch "
            f"{lat['batch_size']} ({lat['device']}, {lat['threads']} threads, after a warm-up "
            "until the timing is stable)"
        )
    print(format_report(res))
    for name, path in res.artefacts.items():
        print(f"{name}: {path}")
    return 0
