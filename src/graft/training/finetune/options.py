"""Fine-tuning's options, each default stated once: what it learns (:class:`FineTuneConfig`) and how a
run of the loop executes (:class:`TrainEnv`).

``graft train``'s options, :class:`graft.run.RunOptions`, :meth:`graft.Classifier.fine_tune`
and the budget ladder all build a :class:`FineTuneConfig`; none restates its defaults.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from graft.progress import Progress
from graft.transforms.eval import AUGMENT_STRENGTHS, Preprocessing
from graft.validation import Interval, Options, check_param

if TYPE_CHECKING:
    from graft.training.finetune.policy import FineTunePolicy

__all__ = ["BASELINES", "SCHEDULES", "FineTuneConfig", "TrainEnv"]

#: ``scratch``: also train the same architecture from random initialisation, the control for transfer.
BASELINES = (None, "scratch")

#: Learning-rate schedules after the warm-up.
SCHEDULES = ("cosine", "onecycle", "constant")


@dataclass(frozen=True)
class FineTuneConfig:
    """Hyper-parameters of a fine-tuning (or from-scratch) run, and which layers it trains.

    The defaults (whole backbone, AdamW 1e-4 for head and backbone, light augmentation,
    4 epochs, BatchNorm statistics fixed) measured above stage 1 on sign_digits and
    flowers_kaggle_128 (RESULTS.md).

    ``train_size``: the side in pixels of the training crops (None: the model's input size).
    Training below the size the model is scored and served at is cheaper (pixels fall with
    the square of the side) and, with BatchNorm statistics fixed, need not cost accuracy:
    random-resized crops make objects look larger in training than the centre crop does at
    test, so a lower training resolution matches their apparent size better (Touvron et al.
    2019, "Fixing the train-test resolution discrepancy"; global pooling takes any size).
    Validation, the held-out slice and the saved model's preprocessing keep the input size.
    """

    epochs: int = 4
    lr: float = 1e-4  # head learning rate; the backbone gets lr * backbone_lr_ratio
    weight_decay: float = 0.01
    batch_size: int = 32  # the global batch, split over the processes of a job
    schedule: str = "cosine"
    warmup_epochs: float = 0.5
    patience: int = 3  # epochs without a validation-loss gain before stopping
    label_smoothing: float = 0.1
    augment: str = "light"
    prefix_views: int = 2  # augmented views of the frozen prefix cached (0: recompute it every epoch)
    unfreeze: int = -1  # block groups to train, from the top (-1: all)
    backbone_lr_ratio: float = 1.0
    train_bn: bool = False
    train_size: int | None = None  # training crops' side in pixels (None: the model's input size)

    def __post_init__(self) -> None:
        owner = "FineTuneConfig"
        check_param("schedule", self.schedule, owner, Options(SCHEDULES))
        check_param("augment", self.augment, owner, Options(AUGMENT_STRENGTHS))
        check_param("epochs", self.epochs, owner, Interval(1, integer=True))
        check_param("batch_size", self.batch_size, owner, Interval(1, integer=True))
        check_param("patience", self.patience, owner, Interval(0, integer=True))
        check_param("prefix_views", self.prefix_views, owner, Interval(0, integer=True))
        check_param("lr", self.lr, owner, Interval(0, None, closed="right"))
        check_param("unfreeze", self.unfreeze, owner, Options((-1,)), Interval(1, integer=True))
        check_param("backbone_lr_ratio", self.backbone_lr_ratio, owner, Interval(0, 10, closed="right"))
        check_param("train_size", self.train_size, owner, Options((None,)), Interval(32, integer=True))

    def policy(self) -> FineTunePolicy:
        """A fresh policy for these settings (it records the groups it unfroze)."""
        from graft.training.finetune.policy import FineTunePolicy

        return FineTunePolicy(self.unfreeze, self.backbone_lr_ratio, self.train_bn)

    def train_preprocessing(self, pre: Preprocessing) -> Preprocessing:
        """What training crops are made at: ``pre`` at :attr:`train_size` (``pre`` itself where None).

        Only the training transform (and so the prefix cache's views) takes it; evaluation
        keeps ``pre``, which the saved model stores.
        """
        return pre if self.train_size is None else pre.with_input_size(self.train_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FineTuneConfig:
        """From a saved dict; unknown keys (another graft version's) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class TrainEnv:
    """Where and how one run of the fine-tuning loop executes, and how it reports and ends.

    Attributes:
        device / precision / num_workers / seed: ``precision`` ``auto`` measures the fastest
            accurate one (:mod:`.speed`), so two runs on one machine may differ; the default is
            fp32. ``num_workers`` None picks it for this machine.
        balanced: the fit weights the loss by inverse class frequency (it sets ``class_weight``).
        class_weight: the per-class loss weights the loop uses (None: equal).
        checkpoint_dir / resume: where ``best/`` and ``last/`` go (None: nowhere); continue from ``last/``.
        stage / eval_name: names in history records and progress lines.
        deadline: a ``time.perf_counter()`` value: after an epoch, stop if another epoch as long
            as the last one would end past it (a budget is then overrun by less than one epoch).
        progress / on_epoch: a reporter, and a function called with each epoch's record.
    """

    device: str = "cpu"
    precision: str = "fp32"  # as train_network's default always was; the fit passes the user's choice
    num_workers: int | None = None
    seed: int = 0
    balanced: bool = False
    class_weight: np.ndarray | None = None
    checkpoint_dir: str | os.PathLike | None = None
    resume: bool = False
    stage: str = "fine_tune"
    eval_name: str = "val"
    deadline: float | None = None
    progress: Progress | None = None
    on_epoch: Callable[[dict[str, Any]], None] | None = None
