"""The learned state a fit leaves on :class:`graft.Classifier`: each stage's result, stored as attributes ending in ``_``.

Apart from :mod:`graft.classifier` so that the facade keeps the estimator's interface (parameters,
fit, fine-tune, predict, save) and this module what each stage's result sets, in one place.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LearnedState"]


class LearnedState:
    """Mixin of :class:`graft.Classifier`: stores stage 1, the ladder, the wide-features rung and fine-tuning.

    It defines no ``__init__`` and no parameter: the estimator contract (``get_params``, ``clone``)
    stays the subclass's.
    """

    def _store_stage_one(self, st: Any, split: dict[str, Any]) -> None:
        """Stage 1's network, head, preprocessing and validation scores; ``split``: the split's record (for evaluate)."""
        emb, head = st.embedded, st.head
        self.data_ = st.data
        self.classes_ = list(st.data.classes)
        self.model_ = st.net
        self.timings_ = st.timings
        self.preprocessing_ = emb.preprocessing
        self.backbone_info_ = emb.backbone_info
        self.augment_views_ = emb.augment_views
        self.head_spec_ = head.spec
        self.head_info_ = head.info
        self.history_ = {"head": head.history}
        self.val_probs_ = head.val_probs
        self.val_labels_ = emb.val.y
        self.val_paths_ = emb.val.paths
        self.metrics_ = head.metrics
        self.thresholds_ = head.thresholds
        self.fine_tuned_ = False
        self.ood_ = st.ood
        self.split_ = split
        self.stage_metrics_ = {"head": {"val_accuracy": head.metrics["accuracy"], "seconds": head.seconds}}
        self.ladder_: list[dict[str, Any]] | None = None

    def _store_ladder(self, res: Any, budget_seconds: float) -> None:
        """The climb's table and plan, and its kept rung where that is not stage 1's model."""
        self.ladder_ = res.table()
        self.stage_metrics_["ladder"] = {"budget_seconds": budget_seconds, "kept": res.kept, "plan": res.plan}
        self.stage_metrics_["ladder"]["spent"] = res.spent()
        if res.unlabeled is not None:
            self.stage_metrics_["ladder"]["unlabeled"] = res.unlabeled
        if res.history:
            self.history_["ladder"] = res.history
        if res.wide is not None:
            self._store_wide(res.wide)
        if res.stage is None or res.policy is None or res.config is None:
            return  # the stage-1 model stays
        self._store_fine_tune(res.stage, res.config, res.policy)
        self.timings_["fine_tune"] = sum(r["seconds"] for r in self.ladder_[1:])

    def _store_wide(self, ws: Any) -> None:
        """The ladder kept the wide-features rung: its composite network, head and artifact description."""
        self.model_ = ws.net
        self.backbone_info_ = ws.backbone_info
        self.head_spec_ = ws.head.spec
        unlabeled = self.head_info_.get("unlabeled")
        self.head_info_ = ws.head.info
        if unlabeled is not None:  # the wide head is fitted on labelled images only: the record says so
            self.head_info_["unlabeled"] = {**unlabeled, "in_kept_model": False}
        self.history_["head"] = ws.head.history
        self.metrics_ = ws.head.metrics
        self.val_probs_ = ws.head.val_probs
        self.ood_ = ws.ood
        self.stage_metrics_["wide"] = {"val_accuracy": ws.head.metrics["accuracy"], "seconds": ws.embedded.seconds}

    def _store_fine_tune(self, stage: Any, config: Any, policy: Any) -> None:
        self.fine_tuned_ = bool(stage.kept)
        self.policy_ = policy
        self.fine_tune_config_ = {**config.to_dict(), **policy.state_dict()}
        self.metrics_ = stage.metrics
        self.val_probs_ = stage.val_probs
        self.stage_metrics_["fine_tune"] = stage.summary
        self.ood_ = stage.ood if stage.ood is not None else self.ood_
        if stage.thresholds:  # multi-label: refitted with the temperatures on the held-out slice
            self.thresholds_ = tuple(stage.thresholds)
