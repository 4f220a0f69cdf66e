"""The head on wide features (:mod:`graft.features.wide`): ``--features wide``, and the ladder's wide rung.

Wide features cost embedding with two more backbones and no training, so on a CPU they are the
cheapest step after the head; the ladder tries them first and keeps them only where the
held-out slice of train says so (:mod:`graft.training.fit.ladder`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from graft.backbones.options import BackboneOptions
from graft.features.dataset import EmbeddedData
from graft.features.options import EmbedOptions
from graft.features.wide import WideEmbedded, embed_wide
from graft.network import GraftNet
from graft.progress import NullProgress, Progress
from graft.training.fit.stages import HeadStage, StageOne, fit_head_stage, fit_ood_stage, ood_info
from graft.training.fit.targets import loss_weights

__all__ = ["WIDE_COST", "WideSource", "WideStage", "fit_wide", "wide_stage_one"]

#: Seconds of the wide features per second of stage 1's embedding, to decide whether they fit a
#: budget: Lite1 and Lite2 at Lite0's input size cost about 1.4x and 2.0x its FLOPs, less in
#: practice (decoding is shared work): hymenoptera's added embedding took 2.2x the default's on a
#: shared 2-core CPU (176 s against 78.5 s, RESULTS.md "Wide features"). The ladder applies it to
#: stage 1's head fit too: the head on 3x the columns cost as much as the embedding on sign_digits.
WIDE_COST = 3.0


@dataclass(frozen=True)
class WideSource:
    """What the ladder's wide rung starts from: stage 1's embedding and head, and how to embed."""

    embedded: EmbeddedData
    stage1: HeadStage
    embed: EmbedOptions


@dataclass
class WideStage:
    """The head on wide features: the network (composite backbone + head + OOD), its head stage, its artifact parts."""

    embedded: WideEmbedded
    head: HeadStage
    net: GraftNet
    ood: dict[str, Any]

    @property
    def backbone_info(self) -> dict[str, Any]:
        return self.embedded.info


def fit_wide(
    emb: EmbeddedData,
    stage1: HeadStage,
    embed: EmbedOptions,
    *,
    class_weight: np.ndarray | None = None,
    members: Sequence[BackboneOptions] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> WideStage | None:
    """Embed the wide features (stage 1's taps for its own backbone) and fit stage 1's kind of head on them.

    None where no other backbone loads offline, or where stage 1's head reads feature maps.
    """
    if stage1.spec.spatial:
        return None
    taps = tuple(int(t) for t in stage1.info.get("features", {}).get("taps", []))
    wide = embed_wide(emb, taps, embed, members=members, seed=seed, progress=progress)
    if wide is None:
        return None
    spec = dataclasses.replace(stage1.spec, in_features=int(wide.train.X.shape[1]))
    st = fit_head_stage(spec, wide.train, wide.val, list(emb.data.classes), class_weight=class_weight, seed=seed)
    st.info["features"] = {"mode": "wide", "taps": [], "members": [m["architecture"] for m in wide.info["members"]]}
    ood = fit_ood_stage(spec, wide.train, seed=seed)
    net = GraftNet(wide.backbone, st.head, ood=ood.scorer if ood else None)
    dev = next(emb.backbone.model.parameters()).device
    return WideStage(wide, st, net.to(dev).eval(), ood_info(ood))


def wide_stage_one(
    st: StageOne, embed: EmbedOptions, *, balanced: bool = False, seed: int = 0, progress: Progress | None = None
) -> StageOne:
    """``--features wide``: stage 1 with the wide features in place of its own (unchanged where none load)."""
    prog = progress or NullProgress()
    emb = st.embedded
    cw = loss_weights(emb.train.y, len(emb.data.classes)) if balanced else None
    ws = fit_wide(emb, st.head, embed, class_weight=cw, seed=seed, progress=prog)
    if ws is None:
        prog.warn("--features wide: no other backbone loads offline; the stage-1 features are kept")
        return st
    prog.message(
        f"head on wide features ({'+'.join(ws.head.info['features']['members'])}): "
        f"val accuracy {ws.head.metrics['accuracy']:.4f}"
    )
    new_emb = dataclasses.replace(
        emb, backbone_info=ws.backbone_info, train=ws.embedded.train, val=ws.embedded.val, taps=(), widths=[]
    )
    timings = {**st.timings, "wide": ws.embedded.seconds, "wide_head": ws.head.seconds}
    return dataclasses.replace(
        st, embedded=new_emb, head=ws.head, net=ws.net, timings=timings, ood=ws.ood, train=ws.embedded.train
    )
