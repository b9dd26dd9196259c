"""Training: a LightningModule around the multi-task model, mixed-task batches, fit and evaluate."""
from .data import MixedTaskBatches, eval_batches
from .fit import FitResult, evaluate, fit
from .module import AutoEffLightning

__all__ = ["AutoEffLightning", "MixedTaskBatches", "eval_batches", "fit", "evaluate", "FitResult"]
