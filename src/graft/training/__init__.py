"""Head fitting, the fine-tuning policy and the training loop."""

from graft.training.callbacks import Checkpointer, EarlyStopping
from graft.training.checkpoint import load_checkpoint, save_checkpoint
from graft.training.finetune import FineTuneConfig, FitResult, train_network
from graft.training.head_fit import LinearFit, class_weights_balanced, fit_linear_head, fit_sgd_head, train_head
from graft.training.loop import evaluate, train_one_epoch
from graft.training.policy import FineTunePolicy

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
