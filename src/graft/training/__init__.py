"""Fitting: the head on cached features (:mod:`.head`), fine-tuning the backbone (:mod:`.finetune`),
and the fit pipeline that chains them (:mod:`.fit`: stages, stage two, the budget ladder, the baseline)."""

from graft.training.early_stopping import EarlyStopping
from graft.training.finetune.callbacks import Checkpointer
from graft.training.finetune.checkpoint import load_checkpoint, save_checkpoint
from graft.training.finetune.loop import evaluate, train_one_epoch
from graft.training.finetune.policy import FineTunePolicy
from graft.training.finetune.train import FineTuneConfig, FitResult, train_network
from graft.training.head.fit import LinearFit, class_weights_balanced, fit_linear_head, fit_sgd_head, train_head

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
