"""Tasks the engine trains: each knows its targets, loss and metrics (see :class:`Task`).

Importing this package registers the built-in tasks: ``classification``, ``detection`` and
``segmentation``.
"""

from cnnlab.tasks import classification, detection, segmentation  # noqa: F401  (register them)
from cnnlab.tasks.base import Task, get_task, list_tasks, metric_fields, register_task
from cnnlab.tasks.classification import Classification, classification_loss

__all__ = [
    "Classification",
    "Task",
    "classification_loss",
    "get_task",
    "list_tasks",
    "metric_fields",
    "register_task",
]
