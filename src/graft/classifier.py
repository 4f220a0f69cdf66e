"""``graft.Classifier``: the scikit-learn-style facade over the stages of a fit.

folder -> records -> features (cached) -> head -> [fine-tune] -> artifact -> predict.
``__init__`` only stores parameters; ``fit`` returns self and never mutates its input;
learned state ends in ``_``. The work happens in :mod:`graft.training.stages`.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from graft.artifact.spec import ArtifactSpec
from graft.data.records import DatasetSplits, SkippedFile
from graft.exceptions import NotFittedError
from graft.progress import NullProgress, Progress
from graft.training.feature_choice import FEATURE_MODES
from graft.training.heads import HEAD_TYPES
from graft.validation import check_choice, check_duration, check_number

__all__ = ["Classifier", "load"]

#: Parameters a model folder may set when loaded: never a path to read or write (``weights``,
#: ``cache_dir``) nor a resource size, so an untrusted folder cannot steer graft outside it.
_SAFE_PARAMS = {
    "backbone",
    "input_size",
    "crop_pct",
    "head",
    "C",
    "dropout",
    "hidden",
    "features",
    "augment_views",
    "class_weight",
    "seed",
    "precision",
    "strict",
}


class Classifier:
    """Transfer-learning image classifier (parameters as in ``graft train --help``).

    Args:
        backbone / weights: timm model name (EfficientNet-Lite0 works offline) and an optional local weights file.
        input_size / crop_pct: ``"auto"`` embeds photos with enough detail about 30% above the backbone's
            training size, whole frame (FixRes; :func:`graft.backbones.feature_preprocessing`); ``"native"``; pixels.
        head / C / dropout / hidden: ``linear`` (C by cross-validation when None), ``mlp`` or ``flatten``.
        features: ``"auto"`` adds the pooled outputs of the last three block stages to the final features
            where cross-validation on the training features finds it better (never validation); ``"final"``;
            ``"multi"`` (:mod:`graft.training.feature_choice`).
        augment_views: ``"auto"`` adds the mirror image below 2,000 training images (+1.7 points on
            sign_digits); K adds the mirror then K-1 random resized crops.
        class_weight: None or ``"balanced"``; val_fraction / test_fraction: shares where the folder has no split.
        seed, device (``auto|cpu|cuda``), precision (``auto|fp32|bf16|fp16``), batch_size / num_workers (None: auto).
        strict: raise on any unreadable image; max_pixels: decompression-bomb guard.
        cache_dir / use_cache: the feature cache (default ``$GRAFT_HOME/features``); progress: a reporter.

    Attributes (after fit): ``classes_``, ``model_`` (:class:`~graft.training.heads.GraftNet`),
    ``data_``, ``history_``, ``metrics_``, ``backbone_info_``, ``preprocessing_``, ``stage_metrics_``,
    ``ladder_`` (the rungs of ``fit(..., budget=...)``, else None).
    """

    spec_: ArtifactSpec  # set by load()
    path_: Path

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        *,
        weights: str | os.PathLike | None = None,
        input_size: int | str | None = "auto",
        crop_pct: float | None = None,
        head: str = "linear",
        C: float | None = None,
        dropout: float = 0.2,
        hidden: int = 512,
        features: str = "auto",
        augment_views: int | str = "auto",
        class_weight: str | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        seed: int = 0,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int | None = None,
        num_workers: int | None = None,
        strict: bool = False,
        max_pixels: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
        progress: Progress | None = None,
    ) -> None:
        self.backbone, self.weights, self.input_size, self.crop_pct = backbone, weights, input_size, crop_pct
        self.head, self.C, self.dropout, self.hidden, self.features = head, C, dropout, hidden, features
        self.augment_views, self.class_weight = augment_views, class_weight
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.device, self.precision, self.batch_size, self.num_workers = device, precision, batch_size, num_workers
        self.strict, self.max_pixels, self.cache_dir, self.use_cache = strict, max_pixels, cache_dir, use_cache
        self.progress = progress

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (scikit-learn convention)."""
        return {n: getattr(self, n) for n in self._param_names()}

    def _validate_params(self) -> None:
        owner = type(self).__name__
        check_choice("head", self.head, HEAD_TYPES, owner)
        check_choice("features", self.features, FEATURE_MODES, owner)
        check_choice("class_weight", self.class_weight, (None, "balanced"), owner)
        if self.augment_views != "auto":
            check_number("augment_views", self.augment_views, owner, low=0, integer=True)
        check_number("C", self.C, owner, low=0, low_inclusive=False, allow_none=True)
        check_number("dropout", self.dropout, owner, low=0, high=1, high_inclusive=False)
        check_number("val_fraction", self.val_fraction, owner, low=0, high=1, low_inclusive=False, high_inclusive=False)
        check_number("test_fraction", self.test_fraction, owner, low=0, high=1, high_inclusive=False)

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
    ) -> Classifier:
        """Scan ``data`` (a dataset folder, or splits already scanned), embed it with the frozen backbone, train the head.

        Args:
            budget: seconds, or a duration such as ``"20m"``: after the head, climb the transfer
                ladder (the last block groups, then the whole backbone) as far as this time allows
                from the start of ``fit``, and keep the rung that is best on held-out training
                images (:mod:`graft.training.ladder`; the table is ``ladder_``). None: the head only.
            checkpoint_dir: where the ladder's fine-tuning checkpoints go (None: nowhere).
        """
        import time

        from graft.config import resolve_device
        from graft.training.stages import stage_one

        started = time.perf_counter()
        budget_s = None if budget is None else check_duration("budget", budget, f"{type(self).__name__}.fit")
        self._validate_params()
        self.device_ = resolve_device(self.device)
        params = {k: v for k, v in self.get_params().items() if k not in {"device", "progress"}}
        st = stage_one(data, **params, device=self.device_, progress=self._progress())
        emb, head = st.embedded, st.head
        self.data_, self.classes_, self.model_, self.timings_ = st.data, list(st.data.classes), st.net, st.timings
        self.preprocessing_, self.backbone_info_, self.augment_views_ = (
            emb.preprocessing,
            emb.backbone_info,
            emb.augment_views,
        )
        self.head_spec_, self.head_info_, self.history_ = head.spec, head.info, {"head": head.history}
        self.val_probs_, self.val_labels_, self.val_paths_ = head.val_probs, emb.val.y, emb.val.paths
        self.metrics_, self.fine_tuned_, self.ood_ = head.metrics, False, st.ood
        self.split_ = st.data.split_record(self.seed, self.val_fraction, self.test_fraction)  # for evaluate
        self.stage_metrics_ = {"head": {"val_accuracy": head.metrics["accuracy"], "seconds": head.seconds}}
        self.ladder_: list[dict[str, Any]] | None = None
        if budget_s is not None:
            self._climb(st, budget_s, started, checkpoint_dir)
        return self

    def _climb(self, st: Any, budget_s: float, started: float, checkpoint_dir: str | os.PathLike | None) -> None:
        """The transfer ladder after stage 1 (see :meth:`fit`); stores the kept rung like :meth:`fine_tune` does."""
        from graft.training.ladder import climb

        res = climb(
            self.model_, self.data_, (st.head, st.train), (self.val_paths_, self.val_labels_),
            score=lambda _net: self._predictor(frozen=False).predict_proba(self.val_paths_)[0],
            preprocessing=self.preprocessing_, budget_seconds=budget_s, started=started, device=self.device_,
            precision=self.precision, num_workers=self.num_workers, balanced=self.class_weight == "balanced",
            seed=self.seed, checkpoint_dir=checkpoint_dir, progress=self._progress(),
        )  # fmt: skip
        self.ladder_ = res.table()
        self.stage_metrics_["ladder"] = {"budget_seconds": budget_s, "kept": res.kept, "plan": res.plan}
        if res.history:
            self.history_["ladder"] = res.history
        if res.stage is None or res.policy is None or res.config is None:
            return  # the stage-1 model stays
        self.fine_tuned_, self.policy_ = True, res.policy
        self.fine_tune_config_ = {**res.config.to_dict(), **res.policy.state_dict()}
        self.metrics_, self.val_probs_ = res.stage.metrics, res.stage.val_probs
        self.stage_metrics_["fine_tune"] = res.stage.summary
        self.ood_ = res.stage.ood if res.stage.ood is not None else self.ood_
        self.timings_["fine_tune"] = sum(r["seconds"] for r in self.ladder_[1:])

    def fine_tune(
        self,
        *,
        epochs: int = 4,
        unfreeze: int = -1,
        lr: float = 1e-4,
        backbone_lr_ratio: float = 1.0,
        schedule: str = "cosine",
        patience: int = 3,
        augment: str = "light",
        batch_size: int = 32,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
        train_bn: bool = False,
    ) -> Classifier:
        """Unfreeze the last ``unfreeze`` block groups (default: all) and train them with the head.

        The defaults (whole backbone, AdamW 1e-4 for head and backbone, light augmentation,
        4 epochs, BatchNorm statistics fixed) measured above stage 1 on sign_digits and
        flowers_kaggle_128 (RESULTS.md). Early stopping on validation loss restores the best
        epoch; a result below stage 1 is rolled back (see :func:`graft.training.stage_two.fine_tune_stage`).
        """
        from graft.training import FineTuneConfig, FineTunePolicy
        from graft.training.stage_two import fine_tune_stage

        self._check_fitted()
        cfg = FineTuneConfig(
            epochs=epochs, lr=lr, schedule=schedule, patience=patience, augment=augment, batch_size=batch_size
        )
        policy = FineTunePolicy(unfreeze=unfreeze, backbone_lr_ratio=backbone_lr_ratio, train_bn=train_bn)
        st = fine_tune_stage(
            self.model_,
            self.data_,
            (self.val_paths_, self.val_labels_),
            (self.metrics_, self.val_probs_),
            score=lambda _net: self._predictor(frozen=False).predict_proba(self.val_paths_)[0],
            preprocessing=self.preprocessing_,
            config=cfg,
            policy=policy,
            device=self.device_,
            precision=self.precision,
            num_workers=self.num_workers,
            balanced=self.class_weight == "balanced",
            seed=self.seed,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            progress=self._progress(),
        )
        self.fine_tuned_, self.policy_ = st.kept, policy
        self.fine_tune_config_ = {**cfg.to_dict(), **policy.state_dict()}
        self.history_["fine_tune"] = st.fit.history
        self.metrics_, self.val_probs_ = st.metrics, st.val_probs
        self.stage_metrics_["fine_tune"] = st.summary
        self.ood_ = st.ood if st.ood is not None else self.ood_
        self.timings_["fine_tune"] = st.fit.seconds
        return self

    def _predictor(self, frozen: bool | None = None) -> Any:
        from graft.predict.torch import TorchPredictor

        self._check_fitted()
        return TorchPredictor(
            self.model_,
            self._spec(),
            device=getattr(self, "device_", "cpu"),
            precision=self.precision,
            frozen=(not self.fine_tuned_) if frozen is None else frozen,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            cache_dir=self.cache_dir,
            use_cache=self.use_cache,
        )

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
        params = {
            k: (str(v) if isinstance(v, os.PathLike) else v)
            for k, v in self.get_params().items()
            if k not in {"progress", "cache_dir"}
        }
        training = {
            "params": params,
            "head": getattr(self, "head_info_", {}),
            "fine_tuned": bool(self.fine_tuned_),
            "fine_tune": getattr(self, "fine_tune_config_", None),
            "stages": getattr(self, "stage_metrics_", {}),
            "history": getattr(self, "history_", {}),
            "ladder": getattr(self, "ladder_", None),
        }
        metrics = {k: v for k, v in getattr(self, "metrics_", {}).items() if k != "reliability"}
        backbone = {**self.backbone_info_, "fine_tuned": bool(self.fine_tuned_)}
        return ArtifactSpec(
            tuple(self.classes_), self.preprocessing_, backbone, self.head_spec_.to_dict(), training, metrics,
            ood=getattr(self, "ood_", {}), split=getattr(self, "split_", {}),
        )  # fmt: skip

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the model directory (safetensors + config.json)."""
        from graft.artifact.model_dir import save_model

        self._check_fitted()
        return save_model(directory, self.model_, self._spec())

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str = "auto", precision: str | None = None) -> Classifier:
        """Read a model directory; ``precision`` None keeps the one the model was trained with.

        Only the parameters in ``_SAFE_PARAMS`` are taken from the file.
        """
        from graft.artifact.model_dir import load_model
        from graft.config import resolve_device

        dev = resolve_device(device)
        lm = load_model(directory, device=dev)
        saved, names = lm.spec.training.get("params", {}), set(cls._param_names()) & _SAFE_PARAMS
        obj = cls(**{k: v for k, v in (saved if isinstance(saved, dict) else {}).items() if k in names})
        obj.device, obj.device_, obj.precision = device, dev, precision or obj.precision
        obj.model_, obj.classes_, obj.preprocessing_, obj.head_spec_ = (
            lm.net,
            lm.classes,
            lm.preprocessing,
            lm.head_spec,
        )
        obj.backbone_info_, obj.metrics_, obj.ood_ = dict(lm.spec.backbone), dict(lm.spec.metrics), dict(lm.spec.ood)
        obj.split_ = dict(lm.spec.split)
        obj.fine_tuned_ = bool(lm.spec.backbone.get("fine_tuned", False))
        obj.history_ = dict(lm.spec.training.get("history", {}))
        obj.stage_metrics_ = dict(lm.spec.training.get("stages", {}))
        obj.ladder_ = lm.spec.training.get("ladder")
        obj.spec_, obj.path_ = lm.spec, lm.path
        return obj


def load(directory: str | os.PathLike, device: str = "auto", precision: str | None = None) -> Classifier:
    """Load a saved model directory as a fitted :class:`Classifier` (see :meth:`Classifier.load`)."""
    return Classifier.load(directory, device=device, precision=precision)
