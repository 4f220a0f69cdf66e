"""``graft.Classifier``: the scikit-learn-style facade over the stages of a fit.

folder -> records -> features (cached) -> head -> [fine-tune] -> artifact -> predict.
``__init__`` only stores parameters; ``fit`` returns self and never mutates its input;
learned state ends in ``_``. The work happens in :mod:`graft.training.fit.stages`; what each
stage's result sets on the estimator is :mod:`graft.classifier_state`'s.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from graft.artifact.spec import ArtifactSpec
from graft.backbones.options import BackboneOptions
from graft.classifier_io import restore, spec_of
from graft.classifier_state import LearnedState
from graft.data.options import ManifestOptions, SplitOptions
from graft.data.records import DatasetSplits, SkippedFile
from graft.estimator import Estimator
from graft.exceptions import InvalidParameterError, NotFittedError
from graft.features.options import EmbedOptions
from graft.progress import NullProgress, Progress
from graft.training.head.options import HeadOptions
from graft.validation import Constraint, check_duration

__all__ = ["Classifier", "load"]

_BB, _HEAD, _SPLIT, _EMB = BackboneOptions(), HeadOptions(), SplitOptions(), EmbedOptions()


class Classifier(LearnedState, Estimator):
    """Transfer-learning image classifier, a scikit-learn estimator (parameters as in ``graft train --help``).

    The parameters group into four options objects, where each default is stated once:
    :class:`~graft.backbones.options.BackboneOptions` (backbone, weights, input_size, crop_pct),
    :class:`~graft.training.head.options.HeadOptions` (head, C, dropout, hidden, features,
    augment_views, class_weight), :class:`~graft.data.options.SplitOptions` (val_fraction,
    test_fraction, seed) and :class:`~graft.features.options.EmbedOptions` (device, precision,
    batch_size, num_workers, strict, max_pixels, cache_dir, use_cache). ``data`` may be a manifest
    (CSV, TSV, JSON Lines, Parquet; :mod:`graft.data.manifest`), read as ``manifest``
    (:class:`~graft.data.options.ManifestOptions`, None: columns detected) says. ``progress``: a reporter.

    ``__init__`` only stores its arguments; ``fit`` validates them against
    ``_parameter_constraints`` and returns self; learned state ends in ``_``.
    ``get_params``/``set_params`` and :func:`sklearn.base.clone` work as for any estimator.

    Attributes (after fit): ``classes_``, ``model_`` (:class:`~graft.network.GraftNet`),
    ``data_``, ``history_``, ``metrics_``, ``backbone_info_``, ``preprocessing_``, ``stage_metrics_``,
    ``ladder_`` (the rungs of ``fit(..., budget=...)``, else None), ``thresholds_`` (a multi-label
    model's per-label decision thresholds on sigmoid probabilities, chosen on out-of-fold training
    probabilities; empty for a single-label model).
    """

    spec_: ArtifactSpec  # set by load()
    path_: Path

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **BackboneOptions.CONSTRAINTS,
        **HeadOptions.CONSTRAINTS,
        **SplitOptions.CONSTRAINTS,
        **EmbedOptions.CONSTRAINTS,
        "strict": [bool],
        "use_cache": [bool],
        "manifest": [ManifestOptions, None],
    }

    def __init__(
        self,
        backbone: str = _BB.backbone,
        *,
        weights: str | os.PathLike | None = _BB.weights,
        input_size: int | str | None = _BB.input_size,
        crop_pct: float | None = _BB.crop_pct,
        head: str = _HEAD.head,
        C: float | None = _HEAD.C,
        dropout: float = _HEAD.dropout,
        hidden: int = _HEAD.hidden,
        features: str = _HEAD.features,
        augment_views: int | str = _HEAD.augment_views,
        class_weight: str | None = _HEAD.class_weight,
        val_fraction: float = _SPLIT.val_fraction,
        test_fraction: float = _SPLIT.test_fraction,
        seed: int = _SPLIT.seed,
        device: str = _EMB.device,
        precision: str = _EMB.precision,
        batch_size: int | None = _EMB.batch_size,
        num_workers: int | None = _EMB.num_workers,
        strict: bool = _EMB.strict,
        max_pixels: int | None = _EMB.max_pixels,
        cache_dir: str | os.PathLike | None = _EMB.cache_dir,
        use_cache: bool = _EMB.use_cache,
        manifest: ManifestOptions | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.input_size = input_size
        self.crop_pct = crop_pct
        self.head = head
        self.C = C
        self.dropout = dropout
        self.hidden = hidden
        self.features = features
        self.augment_views = augment_views
        self.class_weight = class_weight
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.strict = strict
        self.max_pixels = max_pixels
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.manifest = manifest
        self.progress = progress

    # ------------------------------------------------------------------ the options objects
    def _fit_options(self) -> Any:
        from graft.training.fit.options import FitOptions

        return FitOptions(
            self._options_of(BackboneOptions),
            self._options_of(HeadOptions),
            self._options_of(SplitOptions),
            self.manifest or ManifestOptions(),
        )

    def _embed_options(self) -> EmbedOptions:
        return dataclasses.replace(
            self._options_of(EmbedOptions),
            device=getattr(self, "device_", self.device),
            cache_dir=str(self.cache_dir) if self.cache_dir is not None else None,
        )

    def _train_env(self, **changes: Any) -> Any:
        """How fine-tuning runs here (:class:`~graft.training.finetune.options.TrainEnv`)."""
        from graft.training.finetune.options import TrainEnv

        settings: dict[str, Any] = {
            "device": self.device_,
            "precision": self.precision,
            "num_workers": self.num_workers,
            "seed": self.seed,
            "balanced": self.class_weight == "balanced",
            "progress": self._progress(),
        }
        return TrainEnv(**{**settings, **changes})

    def _progress(self) -> Progress:
        return self.progress or NullProgress()

    def _check_fitted(self) -> None:
        if getattr(self, "model_", None) is None:
            raise NotFittedError(
                "this Classifier is not fitted yet: call fit(data_dir) first, or graft.load(model_dir)"
            )

    def fit(
        self,
        data: str | os.PathLike | DatasetSplits,
        budget: float | str | None = None,
        *,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
        unlabeled: str | os.PathLike | None = None,
    ) -> Classifier:
        """Scan ``data`` (a dataset folder, or splits already scanned), embed it with the frozen backbone, train the head.

        Args:
            budget: seconds, or a duration such as ``"20m"``: after the head, climb the transfer
                ladder (the last block groups, then the whole backbone) as far as this time allows
                from the start of ``fit``, and keep the rung that is best on held-out training
                images (:mod:`graft.training.fit.ladder`; the table is ``ladder_``). None: the head only.
            checkpoint_dir: where the ladder's fine-tuning checkpoints go (None: nowhere).
            resume: continue the ladder recorded in ``checkpoint_dir`` (an interrupted ``--budget``
                run): finished rungs are read back, the rung in progress goes on from its last
                checkpoint, and the seconds already spent count against ``budget``.
            unlabeled: a folder of unlabelled images the linear head may learn from, kept only where
                cross-validation on the training images says they help (``head_info_["unlabeled"]``);
                with ``budget``, the ladder's head rung and fine-tuning rungs use them too
                (``stage_metrics_["ladder"]["unlabeled"]``).
        """
        import time

        from graft.config import resolve_device
        from graft.training.fit.stages import stage_one

        started = time.perf_counter()
        budget_s = self._checked_budget(budget)
        self.device_ = resolve_device(self.device)
        st = stage_one(data, self._fit_options(), self._embed_options(), progress=self._progress(), unlabeled=unlabeled)
        if self.features == "wide":
            st = self._widened(st)
        self._store_stage_one(st, st.data.split_record(self.seed, self.val_fraction, self.test_fraction))
        if budget_s is not None:
            self._climb(st, (budget_s, started), checkpoint_dir, resume)
        return self

    def _checked_budget(self, budget: float | str | None) -> float | None:
        """``fit``'s budget in seconds (None: the head only), once every parameter is checked too."""
        budget_s = None if budget is None else check_duration("budget", budget, f"{type(self).__name__}.fit")
        self._validate_params()
        if budget_s is not None and self.features == "wide":
            raise InvalidParameterError(
                "features='wide' (--features wide) with a budget: the ladder tries wide features as its first "
                "rung and keeps them where held-out images say so; leave out one of the two"
            )
        return budget_s

    def _widened(self, st: Any) -> Any:
        """Stage 1 with the other offline backbones' features beside its own (:mod:`graft.features.wide`)."""
        from graft.training.fit.wide import wide_stage_one

        cw = self.class_weight == "balanced"
        return wide_stage_one(st, self._embed_options(), balanced=cw, seed=self.seed, progress=self._progress())

    def _score_val(self, _net: Any) -> np.ndarray:
        """Validation probabilities of the network being fine-tuned, through the prediction path."""
        return self._predictor(frozen=False).predict_proba(self.val_paths_)[0]

    def _climb(
        self, st: Any, budget: tuple[float, float], checkpoint_dir: str | os.PathLike | None, resume: bool
    ) -> None:
        """The transfer ladder after stage 1 (see :meth:`fit`); stores the kept rung like :meth:`fine_tune` does."""
        from graft.training.fit.ladder import LadderStart, WideSource, climb

        start = LadderStart(
            self.model_,
            self.data_,
            st.head,
            st.train,
            (self.val_paths_, self.val_labels_),
            score=self._score_val,
            preprocessing=self.preprocessing_,
            wide=WideSource(st.embedded, st.head, self._embed_options()),
            pool=st.pool,
        )
        res = climb(start, budget=budget, env=self._train_env(checkpoint_dir=checkpoint_dir, resume=resume))
        self._store_ladder(res, budget[0])

    def fine_tune(
        self,
        config: Any = None,
        *,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
        **changes: Any,
    ) -> Classifier:
        """Unfreeze the last ``unfreeze`` block groups (default: all) and train them with the head.

        Args:
            config: a :class:`~graft.training.finetune.options.FineTuneConfig` (None: its defaults,
                measured above stage 1 on sign_digits and flowers_kaggle_128, RESULTS.md).
            **changes: fields of the config to change (``epochs=2``, ``lr=3e-4``, ``unfreeze=2`` ...).

        Early stopping on validation loss restores the best epoch; a result below stage 1 is
        rolled back (see :func:`graft.training.fit.stage_two.fine_tune_stage`).
        """
        import dataclasses

        from graft.training.finetune.options import FineTuneConfig
        from graft.training.fit.stage_two import fine_tune_stage

        self._check_fitted()
        cfg = dataclasses.replace(config or FineTuneConfig(), **changes)
        st = fine_tune_stage(
            self.model_,
            self.data_,
            (self.val_paths_, self.val_labels_),
            (self.metrics_, self.val_probs_),
            score=self._score_val,
            preprocessing=self.preprocessing_,
            config=cfg,
            env=self._train_env(checkpoint_dir=checkpoint_dir, resume=resume),
        )
        self._store_fine_tune(st, cfg, st.policy)
        self.history_["fine_tune"] = st.fit.history
        self.timings_["fine_tune"] = st.fit.seconds
        return self

    def baseline(self, config: Any = None) -> dict[str, Any]:
        """Train the same architecture from random initialisation on the same data: does transfer help here?

        ``config``: a :class:`~graft.training.finetune.options.FineTuneConfig` (the from-scratch run
        trains every layer). Returns the baseline's validation accuracy, best epoch, epochs, seconds
        and history; the fitted model is left unchanged.
        """
        from graft.features.embedder import choose_precision, default_num_workers
        from graft.training.finetune.options import FineTuneConfig
        from graft.training.fit.baseline import train_from_scratch

        self._check_fitted()
        if getattr(self.data_, "multi_label", False):
            raise InvalidParameterError(
                "the from-scratch baseline is single-label only; leave out --baseline for multi-label data"
            )
        cfg = config or FineTuneConfig()
        skipped = {s.path for s in self.data_.skipped}
        tr = [r for r in self.data_.splits["train"] if str(r.path) not in skipped]
        env = self._train_env(
            precision=choose_precision(self.precision, self.device_),
            num_workers=default_num_workers() if self.num_workers is None else self.num_workers,
        )
        _net, res = train_from_scratch(
            self.backbone_info_["architecture"],
            len(self.classes_),
            self.preprocessing_,
            ([str(r.path) for r in tr], np.array([r.label for r in tr])),
            (self.val_paths_, self.val_labels_),
            config=cfg,
            env=env,
        )
        return {
            "val_accuracy": res.best_val_acc,
            "best_epoch": res.best_epoch,
            "epochs": cfg.epochs,
            "seconds": res.seconds,
            "history": res.history,
        }

    def _predictor(self, frozen: bool | None = None) -> Any:
        from graft.predict.torch import TorchPredictor

        self._check_fitted()
        frozen = (not self.fine_tuned_) if frozen is None else frozen
        return TorchPredictor(self.model_, self._spec(), self._embed_options(), frozen=frozen)

    def predict_proba(self, paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, list[str], list[SkippedFile]]:
        """Class probabilities for image files: (probs of the readable files, their paths, the unreadable ones)."""
        return self._predictor().predict_proba(paths)

    def predict(self, paths: Sequence[str | os.PathLike], top_k: int = 1, reject: bool = True) -> list[dict[str, Any]]:
        """Top-k labels for image files, folders or globs; images unlike the training data are ``"unknown"``.

        See :meth:`graft.predict.base.Predictor.predict` (``reject=False`` keeps every label).
        """
        return self._predictor().predict(paths, top_k=top_k, reject=reject)

    def evaluate(self, data: str | os.PathLike, split: str | None = None, top_k: int = 5) -> dict[str, Any]:
        """Metrics on a labelled folder (``test/`` if present, else the val split, or ``split``)."""
        from graft.predict.evaluate import evaluate_predictor

        self._check_fitted()
        return evaluate_predictor(
            self._predictor(), data, split=split, top_k=top_k, strict=self.strict, warn=self._progress().warn
        )

    def _spec(self) -> ArtifactSpec:
        return spec_of(self)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the model directory (safetensors + config.json)."""
        from graft.artifact.model_dir import save_model

        self._check_fitted()
        return save_model(directory, self.model_, self._spec())

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str = "auto", precision: str | None = None) -> Classifier:
        """Read a model directory; ``precision`` None keeps the one the model was trained with.

        Only the parameters in :data:`graft.classifier_io.SAFE_PARAMS` are taken from the file.
        """
        from graft.artifact.model_dir import load_model
        from graft.config import resolve_device

        dev = resolve_device(device)
        return restore(cls, load_model(directory, device=dev), (device, dev), precision)


def load(directory: str | os.PathLike, device: str = "auto", precision: str | None = None) -> Classifier:
    """Load a saved model directory as a fitted :class:`Classifier` (see :meth:`Classifier.load`)."""
    return Classifier.load(directory, device=device, precision=precision)
