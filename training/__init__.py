"""The one Accelerate training harness: config, Trainer, tasks, command line."""

from .config import TrainingConfig, load_config
from .tasks import TASKS, TrainingTask, get_task_class
from .trainer import Trainer, list_checkpoints, train

__all__ = [
    "TASKS",
    "Trainer",
    "TrainingConfig",
    "TrainingTask",
    "get_task_class",
    "list_checkpoints",
    "load_config",
    "train",
]
