"""Head fitting, the fine-tuning policy and the training loop."""

from .checkpoint import load_checkpoint, save_checkpoint
from .finetune import FineTuneConfig, FitResult, train_network
from .head_fit import LinearFit, class_weights_balanced, fit_linear_head, fit_sgd_head, train_head
from .policy import FineTunePolicy

__all__ = [
    "FineTuneConfig",
    "FineTunePolicy",
    "FitResult",
    "LinearFit",
    "class_weights_balanced",
    "fit_linear_head",
    "fit_sgd_head",
    "load_checkpoint",
    "save_checkpoint",
    "train_head",
    "train_network",
]
