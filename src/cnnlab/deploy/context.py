"""What every route of the service shares: the predictor, the limits, the queues and the model card."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cnnlab.deploy.batcher import MicroBatcher
from cnnlab.deploy.limits import ServeConfig
from cnnlab.deploy.metrics import Metrics
from cnnlab.deploy.predictor import AnyPredictor
from cnnlab.deploy.uploads import Preprocessor

# Set when the server process got SIGTERM/SIGINT: readiness turns 503 while in-flight requests
# finish, so a load balancer stops sending new ones. One server per process, hence per process.
DRAINING = threading.Event()


@dataclass
class ServiceContext:
    """The service's state; ``batcher`` and ``preprocessor`` exist while the app is running."""

    predictor: AnyPredictor
    cfg: ServeConfig
    metrics: Metrics
    model_hash: str = ""
    batcher: MicroBatcher | None = None
    preprocessor: Preprocessor | None = None
    started: float = field(default_factory=time.time)

    @property
    def ready(self) -> bool:
        """Whether the service can answer inference requests now."""
        return self.batcher is not None and self.batcher.alive and not DRAINING.is_set()

    @property
    def num_classes(self) -> int:
        return len(self.predictor.classes)

    def model_card(self) -> dict[str, Any]:
        """Architecture, classes, input size, preprocessing, test accuracy, backend and limits."""
        p = self.predictor
        model = p.config.get("model", {})
        metrics = p.config.get("metrics") or {}
        test_acc = metrics.get("test_acc") if isinstance(metrics, dict) else None
        task = getattr(p, "task", "classification")
        return {
            "name": self.cfg.model_name,
            "task": task,
            "test_metrics": (
                {k: v for k, v in metrics.items() if k.startswith("test_")}
                if isinstance(metrics, dict)
                else None
            ),
            "architecture": model.get("name") if isinstance(model, dict) else model,
            "classes": p.classes,
            "input_size": list(p.input_size),
            "mean": list(p.mean),
            "std": list(p.std),
            "test_accuracy": test_acc,
            "dataset": (p.config.get("dataset") or {}).get("name"),
            "num_parameters": p.config.get("num_parameters"),
            "backend": p.backend_name,
            "temperature": p.temperature,
            "model_hash": self.model_hash,
            "gradcam": p.model is not None and task == "classification",
            "limits": self.cfg.public_limits(),
        }
