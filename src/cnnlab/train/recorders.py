"""Callbacks that write the run directory: metrics log, weights, checkpoints, progress, summary.

``fit`` hangs these on the loop's hooks after the user's callbacks, so by the time they run an
epoch's metrics are final and every other callback (early stopping included) has updated its state,
which the checkpoint then captures. All of them write on the main process only; the checkpoint
callback still takes part in the RNG gather on every process.
"""

from __future__ import annotations

import sys
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.run import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    SUMMARY_FILE,
    MetricsLog,
    capture_rng,
    list_checkpoints,
    save_checkpoint,
    save_json,
    save_weights,
)
from cnnlab.tasks import metric_fields
from cnnlab.train.callbacks import Callback, TrainState
from cnnlab.train.distributed import gather_objects
from cnnlab.train.resume import config_fingerprint


class RunFiles(Callback):
    """``metrics.csv`` (one row per epoch), ``model.safetensors`` and the metrics in ``config.json``."""

    def __init__(self, run_config: dict[str, Any]):
        self.run_config = run_config
        self.log: MetricsLog | None = None

    def on_train_start(self, state: TrainState) -> None:
        self.log = MetricsLog(state.run_dir / METRICS_FILE, metric_fields(state.task))
        if state.is_main:
            self.log.truncate_after(state.epoch)  # a resumed run drops rows past its checkpoint

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        if not state.is_main:
            return
        self.log.append(metrics)
        self.run_config["weights_sha256"] = save_weights(
            state.eval_model, state.run_dir / MODEL_FILE
        )
        self.run_config["metrics"] = {k: v for k, v in metrics.items() if k != "lr"}
        save_json(state.run_dir / CONFIG_FILE, self.run_config)


class Checkpointer(Callback):
    """``checkpoints/last`` every epoch and ``checkpoints/best`` when the monitored metric improved:
    the weights plus everything needed to continue bit-for-bit (see :mod:`cnnlab.run.checkpoint`)."""

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        r = state.resumables
        rng = gather_objects(capture_rng(r["generator"]))  # a collective: every rank calls it
        if not state.is_main:
            return
        scaler, ema, plateau = r["scaler"], r["ema"], r["plateau"]
        ck = {
            "epoch": state.epoch + 1,
            "epochs": state.config.epochs,
            "step": state.step,
            "elapsed": state.elapsed,
            "world_size": state.world_size,
            "optimizer": state.optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "ema": ema.state_dict() if ema is not None else {},
            "lookahead": r["lookahead"].state_dict() if r.get("lookahead") is not None else {},
            "plateau": {k: getattr(plateau, k) for k in ("best", "bad_epochs", "current")},
            "callbacks": {
                type(cb).__name__: cb.state_dict() for cb in state.callbacks if cb.state_dict()
            },
            "history": state.history,
            "best": state.best,
            "metrics": metrics,
            "rng": rng,
        }
        fingerprint = config_fingerprint(state.config)
        save_checkpoint(state.run_dir, "last", state.inner, ck, fingerprint)
        if state.improved:  # raw weights too, so a run can also resume from its best epoch
            save_checkpoint(state.run_dir, "best", state.inner, ck, fingerprint)


def _best_dir(state: TrainState) -> str | None:
    """The published ``best`` checkpoint directory, relative to the run directory."""
    found = list_checkpoints(state.run_dir, "best")
    return str(found[0].path.relative_to(state.run_dir)) if found else None


class EpochPrinter(Callback):
    """One line per epoch on stderr: the train and test metrics, LR, time and throughput."""

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        if not state.is_main:
            return
        task = state.task
        parts = []
        for split, names in (("train", task.train_metric_names), ("test", task.metric_names)):
            shown = " ".join(
                f"{n.removeprefix(split + '_')} {metrics[n]:.4f}" for n in names if n in metrics
            )
            parts.append(f"{split} {shown or '(not evaluated this epoch)'}")
        print(
            f"epoch {metrics['epoch']}/{state.config.epochs}  {'  '.join(parts)}  "
            f"lr {metrics['lr']:.2e}  {metrics['epoch_s']:.1f}s "
            f"({metrics['images_per_s']:.0f} img/s)",
            file=sys.stderr,
        )


class RunSummary(Callback):
    """At the end: ``summary.json`` for every ending (also a divergence or Ctrl-C), and the plots and
    ``report.html`` for a run that finished its epochs or stopped early."""

    def __init__(self, test_loader: Any, report: bool, defer_pictures: bool = False):
        self.test_loader, self.report = test_loader, report
        # deferred: fit returns first and TrainResult.finish() draws them, so a CLI can print the
        # final metrics before the seconds the plots and report take
        self.defer_pictures = defer_pictures
        self.pending: Any = None

    def on_train_end(self, state: TrainState) -> None:
        if not state.is_main:
            return
        final = state.history[-1] if state.history else {}
        try:
            self._write_summary(state, final)
        except (OSError, CnnlabError) as exc:  # e.g. the disk became read-only: keep the real error
            print(f"warning: could not write {SUMMARY_FILE}: {exc}", file=sys.stderr)
            return
        if state.status not in ("completed", "stopped") or not state.history:
            return
        if self.defer_pictures:
            self.pending = lambda: self._write_pictures(state)
        else:
            self._write_pictures(state)

    def _write_summary(self, state: TrainState, final: dict[str, Any]) -> None:
        save_json(
            state.run_dir / SUMMARY_FILE,
            {
                "status": state.status,
                "stop_reason": state.stop_reason,
                "epochs_run": len(state.history),
                "epochs": state.config.epochs,
                "steps": state.step,
                "train_time_s": final.get("elapsed_s", 0.0),
                "final": final,
                "best": {
                    **state.best,
                    "metric": state.config.monitor,
                    "checkpoint": _best_dir(state),
                },
                "world_size": state.world_size,
            },
        )

    def _write_pictures(self, state: TrainState) -> None:
        # imported here: matplotlib and the report cost seconds of start-up a run need not pay
        # before its first step
        from cnnlab.evaluate.report import write_report
        from cnnlab.evaluate.run_plots import write_run_plots

        # a task may leave files of its last evaluation (detection: the COCO results file)
        write_artifacts = getattr(state.task, "write_artifacts", None)
        if write_artifacts is not None:
            write_artifacts(state.run_dir)
        classes = list(getattr(self.test_loader.dataset, "classes", []))
        loader = self.test_loader
        if loader.indices is not None:  # a rank's shard: plot the whole test set
            loader = state.task.make_loader(
                loader.dataset,
                loader.batch_size,
                mean=loader.mean,
                std=loader.std,
                device=loader.device,
                channels_last=loader.channels_last,
            )
        write_run_plots(state.run_dir, state.task.name, state.eval_model, loader, classes)
        if self.report:
            try:
                write_report(state.run_dir, quick=True)
            except Exception as exc:  # noqa: BLE001 - the run is complete on disk; the report is a bonus
                print(f"warning: could not write report.html: {exc}", file=sys.stderr)
