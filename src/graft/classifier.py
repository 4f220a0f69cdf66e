"""``graft.Classifier``: the scikit-learn-style facade over the whole pipeline.

folder -> records -> features (cached) -> head -> [fine-tune] -> artifact -> predict.
``__init__`` only stores parameters; ``fit`` returns self; learned state ends in ``_``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .data.records import DatasetSplits, ImageRecord, SkippedFile
from .data.transforms import resolve_augment_views
from .exceptions import DataError, NotFittedError
from .heads import HEAD_TYPES, GraftNet, HeadSpec
from .inference import fingerprint, model_features, predict_probs
from .progress import NullProgress, Progress

__all__ = ["Classifier", "load"]


class Classifier:
    """Transfer-learning image classifier.

    Args:
        backbone: timm model name (default EfficientNet-Lite0, ImageNet weights offline).
        weights: local weights file for the backbone (safetensors or tensors-only .pt/.pth).
        input_size: resolution to embed at: ``"auto"`` (for images with the detail for it,
            about 30% above the backbone's training size, whole frame: 288 px for
            EfficientNet-Lite0, which measurably beats 224 on photos; see
            :func:`graft.backbones.feature_preprocessing`), ``"native"``, or pixels.
        crop_pct: centre-crop fraction (default: 1.0 at a changed size, else timm's).
        head: ``linear`` (dropout + linear), ``mlp`` or ``flatten``.
        C: inverse L2 strength of the linear head; None chooses it by cross-validation.
        dropout: dropout before the head's linear layer(s) (used when training by SGD).
        hidden: hidden width of the MLP head.
        augment_views: extra augmented feature views per training image (stage 1):
            ``"auto"`` (default) adds the mirror image (view 1) when the training split
            has fewer than 2,000 images, where it measurably helps (+1.7 points on
            sign_digits) and costs at most 2,000 more embeddings; 0 on larger sets. A
            number K adds the mirror then K-1 random resized crops.
        class_weight: None or ``"balanced"`` (loss weights inverse to class counts).
        val_fraction / test_fraction: automatic split shares where the folder has none.
        seed: makes splits, views and training reproducible.
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` for the backbone.
        batch_size / num_workers: embedding batch size and decoder processes (None: auto).
        strict: raise on any unreadable image instead of skipping it.
        cache_dir: feature cache root (default ``$GRAFT_HOME/features``); ``use_cache=False`` disables it.
        progress: progress reporter (the CLI passes rich bars; default silent).

    Attributes (after fit):
        classes_: class names in label order.
        model_: the trained :class:`~graft.heads.GraftNet`.
        data_: the scanned :class:`~graft.data.records.DatasetSplits`.
        history_: per-stage training records.
        metrics_: validation metrics of the current model.
        backbone_info_: backbone name, architecture, weights source and hash.
        preprocessing_: the eval preprocessing the model expects.
    """

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
        self.backbone = backbone
        self.weights = weights
        self.input_size = input_size
        self.crop_pct = crop_pct
        self.head = head
        self.C = C
        self.dropout = dropout
        self.hidden = hidden
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
        self.progress = progress

    # ------------------------------------------------------------------ helpers
    def _progress(self) -> Progress:
        return self.progress or NullProgress()

    def _check_fitted(self) -> None:
        if getattr(self, "model_", None) is None:
            raise NotFittedError(
                "this Classifier is not fitted yet: call fit(data_dir) first, or graft.load(model_dir)"
            )

    def _validate_params(self) -> None:
        if self.head not in HEAD_TYPES:
            raise ValueError(f"head must be one of {', '.join(HEAD_TYPES)}, got {self.head!r}")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', got {self.class_weight!r}")
        if self.augment_views != "auto" and not (
            isinstance(self.augment_views, int) and not isinstance(self.augment_views, bool) and self.augment_views >= 0
        ):
            raise ValueError(f"augment_views must be 'auto' or an integer >= 0, got {self.augment_views!r}")
        if self.C is not None and self.C <= 0:
            raise ValueError(f"C must be > 0, got {self.C}")

    def _class_weights(self, y: np.ndarray) -> np.ndarray | None:
        from .training import class_weights_balanced

        return class_weights_balanced(y, len(self.classes_)) if self.class_weight == "balanced" else None

    # ------------------------------------------------------------------ stage 1
    def fit(self, data: str | os.PathLike | DatasetSplits) -> "Classifier":
        """Scan ``data``, embed it with the frozen backbone, and train the head.

        Args:
            data: a dataset folder (split folders or class folders) or scanned splits.

        Returns:
            self
        """
        from .backbones import create_backbone, feature_preprocessing
        from .config import resolve_device
        from .data.scan import scan_dataset
        from .training import train_head

        self._validate_params()
        t_start = time.perf_counter()
        prog = self._progress()
        torch.manual_seed(self.seed)
        if isinstance(data, DatasetSplits):
            splits = data
        else:
            task = prog.task("scanning images")
            splits = scan_dataset(
                data, val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed,
                strict=self.strict, progress=task.advance, warn=prog.warn,
                **({"max_pixels": self.max_pixels} if self.max_pixels else {}),
            )
            task.close()
        self.data_ = splits
        self.classes_ = list(splits.classes)
        ratio = splits.imbalance_ratio("train")
        if ratio > 5 and self.class_weight is None:
            prog.warn(
                f"classes are imbalanced: the largest has {ratio:.1f}x the images of the smallest; "
                "consider --class-weight balanced"
            )

        t0 = time.perf_counter()
        bb = create_backbone(self.backbone, weights=self.weights)
        self.backbone_info_ = bb.to_dict()
        sides = [min(r.width, r.height) for r in splits.splits["train"] if r.width and r.height]
        self.preprocessing_ = feature_preprocessing(
            bb.model, bb.preprocessing, self.input_size, self.crop_pct,
            image_short_side=float(np.median(sides)) if sides else None,
        )
        self.backbone_info_["preprocessing"] = self.preprocessing_.to_dict()
        self.backbone_info_["native_preprocessing"] = bb.preprocessing.to_dict()
        self.device_ = resolve_device(self.device)
        spatial = self.head == "flatten"
        self._backbone_module = bb.model
        self.timings_ = {"scan": t0 - t_start, "load_backbone": time.perf_counter() - t0}

        t0 = time.perf_counter()
        self.augment_views_ = resolve_augment_views(self.augment_views, len(splits.splits["train"]))
        Xtr, ytr, gtr = self._embed_split("train", views=self.augment_views_, spatial=spatial)
        Xva, yva, _ = self._embed_split("val", views=0, spatial=spatial)
        self.timings_["embed"] = time.perf_counter() - t0
        self._report_skips()
        if len(Xtr) == 0 or len(Xva) == 0:
            raise DataError(f"{splits.root}: no usable training or validation images after skipping unreadable files")

        t0 = time.perf_counter()
        spec = HeadSpec(self.head, Xtr.shape[1], len(self.classes_), self.dropout, self.hidden)
        head, head_info, history = train_head(
            spec, Xtr, ytr, Xva, yva, C=self.C, class_weight=self._class_weights(ytr), seed=self.seed, groups=gtr
        )
        self.timings_["head"] = time.perf_counter() - t0
        self.head_spec_ = spec
        self.head_info_ = head_info
        self.model_ = GraftNet(bb.model, head, spatial=spatial).eval()
        self.fine_tuned_ = False
        self.history_ = {"head": history}
        with torch.no_grad():
            logits = head(torch.from_numpy(Xva)).float()
        self.val_probs_ = torch.softmax(logits, 1).numpy()
        self.val_labels_ = yva
        self.val_paths_ = self._val_paths
        from .evaluate import compute_metrics

        self.metrics_ = compute_metrics(yva, self.val_probs_, self.classes_)
        self.stage_metrics_ = {"head": {"val_accuracy": self.metrics_["accuracy"], "seconds": self.timings_["head"]}}
        prog.message(
            f"head ({self.head}{', C=' + format(head_info['C'], 'g') if 'C' in head_info else ''}): "
            f"val accuracy {self.metrics_['accuracy']:.4f}"
        )
        self.timings_["fit"] = time.perf_counter() - t_start
        return self

    def _embed_split(self, split: str, *, views: int, spatial: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, labels and source-image ids of one split (views stacked for train)."""
        from .data.transforms import build_feature_view_transform

        records: list[ImageRecord] = self.data_.splits[split]
        paths = [str(r.path) for r in records]
        labels = np.array([r.label for r in records], dtype=np.int64)
        prog = self._progress()
        Xs, ys, gs = [], [], []
        bad: set[str] = set()
        for view in range(views + 1):
            desc = f"embedding {split}" + (f" (view {view})" if view else "")
            task = prog.task(desc, total=len(paths))
            tf = None if view == 0 else build_feature_view_transform(self.preprocessing_, view, self.seed)
            fs = model_features(
                self._backbone_module, self.preprocessing_, paths, spatial=spatial, view=view, seed=self.seed,
                transform=tf, device=self.device_, precision=self.precision, batch_size=self.batch_size,
                num_workers=self.num_workers, cache_dir=self.cache_dir, use_cache=self.use_cache,
                progress=task.advance,
                **({"max_pixels": self.max_pixels} if self.max_pixels else {}),
            )
            task.close()
            if view == 0:
                for f in fs.failed:
                    bad.add(f.path)
                    self.data_.skipped.append(f)
                if bad:  # found only at full decode (e.g. truncated data): drop from the split
                    self.data_.splits[split] = [r for r in records if str(r.path) not in bad]
                if fs.failed and self.strict:
                    raise DataError(
                        f"{fs.failed[0].path}: {fs.failed[0].reason} ({len(fs.failed)} unreadable images in {split}); "
                        "remove or fix them, or drop --strict to skip them"
                    )
            keep = np.array([paths[i] not in bad for i in fs.ok], dtype=bool)
            Xs.append(fs.X[keep])
            ys.append(labels[fs.ok[keep]])
            gs.append(fs.ok[keep])
        if split == "val":
            self._val_paths = [paths[i] for i in gs[0]]
        return np.concatenate(Xs), np.concatenate(ys), np.concatenate(gs)

    def _report_skips(self) -> None:
        if self.data_.skipped:
            self._progress().warn(f"{len(self.data_.skipped)} file(s) skipped; see the run summary")

    # ------------------------------------------------------------------ stage 2
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
    ) -> "Classifier":
        """Unfreeze the last ``unfreeze`` block groups (default: all) and train them with the head.

        Starts from the stage-1 head; the backbone learns at ``lr * backbone_lr_ratio``.
        The defaults (whole backbone, AdamW 1e-4 for head and backbone alike, light
        augmentation, 4 epochs, BatchNorm statistics fixed) are the ones measured to beat
        stage 1 on sign_digits and flowers_kaggle_128 (RESULTS.md); unfreezing only the
        last block group, or a 10x larger head LR, measured below stage 1 there.
        Early stopping on validation loss restores the best epoch. If the result is less
        accurate on validation than stage 1, the stage-1 model is kept (and the report
        says so): fine-tuning is used where it pays, never where it hurts.
        """
        from .data.transforms import build_train_transform
        from .evaluate import compute_metrics
        from .features.runtime import choose_precision, default_num_workers
        from .training import FineTuneConfig, FineTunePolicy, train_network

        self._check_fitted()
        cfg = FineTuneConfig(
            epochs=epochs, lr=lr, schedule=schedule, patience=patience, augment=augment, batch_size=batch_size
        )
        policy = FineTunePolicy(unfreeze=unfreeze, backbone_lr_ratio=backbone_lr_ratio, train_bn=train_bn)
        tr = [r for r in self.data_.splits["train"] if r.path not in {Path(s.path) for s in self.data_.skipped}]
        va_paths = self.val_paths_
        precision = choose_precision(self.precision, self.device_)
        before = {k: v.detach().clone() for k, v in self.model_.state_dict().items()}
        before_metrics, before_probs = self.metrics_, self.val_probs_
        res = train_network(
            self.model_, self.model_.backbone,
            [str(r.path) for r in tr], np.array([r.label for r in tr]),
            va_paths, self.val_labels_,
            train_transform=build_train_transform(self.preprocessing_, strength=augment),
            eval_transform=self.preprocessing_,
            policy=policy, config=cfg, device=self.device_, precision=precision,
            num_workers=default_num_workers() if self.num_workers is None else self.num_workers,
            class_weight=self._class_weights(np.array([r.label for r in tr])),
            checkpoint_dir=checkpoint_dir, resume=resume, seed=self.seed, progress=self._progress(),
        )
        self.fine_tuned_ = True
        self.policy_ = policy
        self.fine_tune_config_ = {**cfg.to_dict(), **policy.state_dict()}
        self.history_["fine_tune"] = res.history
        self.val_probs_ = predict_probs(
            self.model_, self.preprocessing_, va_paths, device=self.device_, precision=precision
        ).probs
        self.metrics_ = compute_metrics(self.val_labels_, self.val_probs_, self.classes_)
        kept = self.metrics_["accuracy"] >= before_metrics["accuracy"]
        self.stage_metrics_["fine_tune"] = {
            "val_accuracy": self.metrics_["accuracy"], "seconds": res.seconds, "best_epoch": res.best_epoch,
            "stopped_early": res.stopped_early, "unfrozen_groups": policy.unfrozen_groups, "kept": kept,
        }
        if not kept:
            self._progress().warn(
                f"fine-tuning reached val accuracy {self.metrics_['accuracy']:.4f}, below stage 1 "
                f"({before_metrics['accuracy']:.4f}); keeping the stage-1 model"
            )
            self.model_.load_state_dict(before)
            self.metrics_, self.val_probs_ = before_metrics, before_probs
            self.fine_tuned_ = False
        self.timings_["fine_tune"] = res.seconds
        return self

    # ------------------------------------------------------------------ use
    def predict_proba(self, paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, list[str], list[SkippedFile]]:
        """Class probabilities for image files.

        Returns:
            (probs of the readable files, their paths, the unreadable files with reasons)
        """
        self._check_fitted()
        out = predict_probs(
            self.model_, self.preprocessing_, [str(p) for p in paths], device=getattr(self, "device_", "cpu"),
            precision=self.precision, batch_size=self.batch_size,
            fingerprint_spec=None if self.fine_tuned_ else self._cache_spec(), cache_dir=self.cache_dir,
        )
        return out.probs, out.paths, out.failed

    def predict(self, paths: Sequence[str | os.PathLike], top_k: int = 1) -> list[dict[str, Any]]:
        """Top-k labels for image files, folders or globs.

        Returns:
            One dict per input image: ``path``, ``label``, ``probability``, ``top_k``
            (list of {label, probability}); unreadable files get ``error`` instead.
        """
        from .data.scan import collect_image_paths

        from .onnx_predictor import top_k_results  # torch-free, shared with the ONNX path and the server

        files, missing = collect_image_paths([str(p) for p in paths])
        probs, ok_paths, failed = self.predict_proba(files)
        results: list[dict[str, Any]] = [
            {"path": path, **r} for path, r in zip(ok_paths, top_k_results(probs, self.classes_, top_k))
        ]
        results.extend({"path": f.path, "error": f.reason} for f in list(missing) + list(failed))
        return results

    def evaluate(self, data: str | os.PathLike, split: str | None = None, top_k: int = 5) -> dict[str, Any]:
        """Metrics on a labelled folder (``test/`` if present, else the val split, or ``split``)."""
        from .data.scan import scan_split
        from .evaluate import compute_metrics

        self._check_fitted()
        prog = self._progress()
        records, _classes, skipped = scan_split(data, split, self.classes_, strict=self.strict, warn=prog.warn)
        probs, ok_paths, failed = self.predict_proba([r.path for r in records])
        label_of = {str(r.path): r.label for r in records}
        y = np.array([label_of[p] for p in ok_paths], dtype=np.int64)
        m = compute_metrics(y, probs, self.classes_, top_k=top_k)
        m["skipped"] = [s.to_dict() for s in list(skipped) + list(failed)]
        m["paths"] = ok_paths
        m["probs"] = probs.tolist()
        m["labels"] = y.tolist()
        return m

    # ------------------------------------------------------------------ persistence
    def _cache_spec(self) -> dict[str, Any]:
        return {"backbone": fingerprint(self.model_.backbone), "arch": self.backbone_info_["architecture"]}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the model directory (safetensors + config.json)."""
        from .model import save_model

        self._check_fitted()
        training = {
            "params": {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in self.get_params().items()
                       if k != "progress"},
            "head": getattr(self, "head_info_", {}),
            "fine_tuned": bool(self.fine_tuned_),
            "fine_tune": getattr(self, "fine_tune_config_", None),
            "stages": getattr(self, "stage_metrics_", {}),
            "history": getattr(self, "history_", {}),
        }
        metrics = {k: v for k, v in getattr(self, "metrics_", {}).items() if k not in {"reliability"}}
        return save_model(
            directory, self.model_, classes=self.classes_, preprocessing=self.preprocessing_,
            backbone={**self.backbone_info_, "fine_tuned": bool(self.fine_tuned_)}, head=self.head_spec_,
            training=training, metrics=metrics,
        )

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (scikit-learn convention)."""
        import inspect

        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    @classmethod
    def load(
        cls, directory: str | os.PathLike, device: str = "auto", precision: str | None = None
    ) -> "Classifier":
        """Read a model directory written by :meth:`save` or ``graft train``.

        Args:
            directory: the model directory.
            device: ``auto``, ``cpu`` or ``cuda``.
            precision: backbone precision for predict/evaluate; None keeps the one the
                model was trained with (``auto`` picks bf16 only where it measures faster).
        """
        from .config import resolve_device
        from .model import load_model

        dev = resolve_device(device)
        lm = load_model(directory, device=dev)
        params = dict(lm.config.get("training", {}).get("params", {}))
        params.pop("progress", None)
        obj = cls(**{k: v for k, v in params.items() if k in cls.__init__.__code__.co_varnames})
        obj.device = device
        obj.device_ = dev
        if precision is not None:
            obj.precision = precision
        obj.model_ = lm.net
        obj.classes_ = lm.classes
        obj.preprocessing_ = lm.preprocessing
        obj.backbone_info_ = dict(lm.config["backbone"])
        obj.head_spec_ = lm.head_spec
        obj.fine_tuned_ = bool(lm.config["backbone"].get("fine_tuned", False))
        obj.metrics_ = dict(lm.config.get("metrics", {}))
        obj.history_ = dict(lm.config.get("training", {}).get("history", {}))
        obj.stage_metrics_ = dict(lm.config.get("training", {}).get("stages", {}))
        obj.config_ = lm.config
        obj.path_ = lm.path
        return obj


def load(directory: str | os.PathLike, device: str = "auto", precision: str | None = None) -> Classifier:
    """Load a saved model directory as a fitted :class:`Classifier` (see :meth:`Classifier.load`)."""
    return Classifier.load(directory, device=device, precision=precision)
