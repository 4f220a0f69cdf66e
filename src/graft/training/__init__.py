"""Head fitting, the fine-tuning policy and the training loop."""

from .callbacks import Checkpointer, EarlyStopping
from .checkpoint import load_checkpoint, save_checkpoint
from .finetune import FineTuneConfig, FitResult, train_network
from .head_fit import LinearFit, class_weights_balanced, fit_linear_head, fit_sgd_head, train_head
from .loop import evaluate, train_one_epoch
from .policy import FineTunePolicy

__all__ = [
    "Checkpointer",
    "EarlyStopping",
    "FineTuneConfig",
    "FineTunePolicy",
    "FitResult",
    "LinearFit",
    "class_weights_balanced",
    "evaluate",
    "fit_linear_head",
    "fit_sgd_head",
    "load_checkpoint",
    "save_checkpoint",
    "train_head",
    "train_network",
    "train_one_epoch",
]
