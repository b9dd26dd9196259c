"""Training: a LightningModule around the multi-task model, mixed-task batches, fit and evaluate,
and the one train/evaluate/save function that trials and `autoeff train` share."""
from .data import MixedTaskBatches, eval_batches
from .fit import FitResult, evaluate, evaluate_tasks, fit
from .module import AutoEffLightning
from .run import save_checkpoint, train_and_evaluate, train_config

__all__ = ["AutoEffLightning", "MixedTaskBatches", "eval_batches", "fit", "evaluate", "evaluate_tasks", "FitResult",
           "train_and_evaluate", "save_checkpoint", "train_config"]
