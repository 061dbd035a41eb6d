"""Tasks the engine trains: each knows its targets, loss and metrics (see :class:`Task`).

Importing this package registers the built-in tasks (``classification``).
"""

from cnnlab.tasks import classification  # noqa: F401  (registers the task)
from cnnlab.tasks import detection, segmentation  # noqa: F401  (register the dense tasks)
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
