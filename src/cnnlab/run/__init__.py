"""The run directory, the format every workflow reads and writes.

``runs/<name>/`` holds ``model.safetensors``, ``config.json`` (architecture, classes, input size,
normalisation, training config, metrics), ``metrics.csv``, ``summary.json``, plots, the report and
``checkpoints/``. Train writes it; evaluate, deploy, inspect and the CLI read it through this
package only, so the format has one definition.
"""

from cnnlab.run.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointRef,
    capture_rng,
    clean_stray_files,
    list_checkpoints,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from cnnlab.run.files import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    SKIPPED_FILE,
    SUMMARY_FILE,
    MetricsLog,
    atomic_write_bytes,
    default_run_name,
    make_run_dir,
    read_metrics,
    read_run_config,
    read_weights,
    save_json,
    save_weights,
    state_dict_for_saving,
)
from cnnlab.run.load import (
    ModelSource,
    build_model_from_run_config,
    load_model_from_run,
    load_model_source,
    load_run_splits,
    resolve_model_source,
)

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "CheckpointRef",
    "METRICS_FILE",
    "MODEL_FILE",
    "SKIPPED_FILE",
    "SUMMARY_FILE",
    "MetricsLog",
    "ModelSource",
    "atomic_write_bytes",
    "build_model_from_run_config",
    "capture_rng",
    "clean_stray_files",
    "list_checkpoints",
    "default_run_name",
    "load_checkpoint",
    "load_model_from_run",
    "load_model_source",
    "load_run_splits",
    "make_run_dir",
    "read_metrics",
    "read_run_config",
    "read_weights",
    "resolve_model_source",
    "restore_rng",
    "save_checkpoint",
    "save_json",
    "save_weights",
    "state_dict_for_saving",
]
