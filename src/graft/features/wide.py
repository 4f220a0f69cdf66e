"""Wide features: the stage-1 backbone's features beside those of the other offline backbones.

Each member embeds the same images with the same preprocessing (the stage-1 one) through the
feature cache, so the stage-1 backbone's columns are the cached stage-1 features and every
other member is embedded once per dataset. The concatenation is exactly what
:class:`~graft.backbones.wide.WideBackbone` computes from one input tensor, which is the
backbone the kept model carries (predict, serve, evaluate, the ONNX graph).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from graft import distributed
from graft.backbones.names import LITE_ALIASES, normalize_name
from graft.backbones.options import BackboneOptions
from graft.backbones.wide import WIDE_ARCHITECTURE, WIDE_MEMBERS, WideBackbone
from graft.features.dataset import EmbeddedData, SplitFeatures, embed_split
from graft.features.engines import reuse_engines
from graft.features.options import EmbedOptions
from graft.progress import NullProgress, Progress
from graft.transforms.eval import Preprocessing

__all__ = ["WideEmbedded", "embed_wide", "wide_candidates", "wide_members"]


@dataclass
class WideEmbedded:
    """The wide backbone, its artifact description, and the training and validation features it gives."""

    backbone: WideBackbone
    info: dict[str, Any]  # the artifact's ``backbone`` section
    train: SplitFeatures
    val: SplitFeatures
    seconds: float  # embedding the added members (the stage-1 member's features were cached)


def _arch_key(name: str) -> str:
    n = normalize_name(name).partition(".")[0]
    return LITE_ALIASES.get(n, n)


def wide_members(stage1_name: str, candidates: Sequence[BackboneOptions] | None = None) -> list[BackboneOptions]:
    """The backbones added beside ``stage1_name``: :data:`WIDE_MEMBERS` (or ``candidates``) less that one."""
    opts = list(candidates) if candidates is not None else [BackboneOptions(n) for n in WIDE_MEMBERS]
    own = _arch_key(stage1_name)
    return [o for o in opts if _arch_key(o.backbone) != own]


def _normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The mean and std timm's config gives a backbone name (the Lites: their TF ports'); None if unknown."""
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(_arch_key(name))
        return (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None else None
    except Exception:  # noqa: BLE001 - unknown to timm: the member is checked again when loaded
        return None


def wide_candidates(emb: EmbeddedData, members: Sequence[BackboneOptions] | None = None) -> list[BackboneOptions]:
    """The members worth loading for ``emb``: not its own backbone, and with its normalisation (no weights read)."""
    pre = emb.preprocessing
    own = (tuple(pre.mean), tuple(pre.std))
    return [o for o in wide_members(emb.backbone.name, members) if _normalisation(o.backbone) in (own, None)]


def _stage1_columns(emb: EmbeddedData, taps: Sequence[int]) -> list[int]:
    from graft.backbones.taps import tap_columns

    if not emb.taps:
        return list(range(emb.train.X.shape[1]))
    return tap_columns(emb.widths, emb.taps, tuple(taps))


def _load_members(
    members: Sequence[BackboneOptions], pre: Preprocessing, multi: bool, prog: Progress
) -> list[tuple[Any, tuple[int, ...]]]:
    """The added members that load offline, each with its taps (its candidate taps where stage 1 chose multi-depth).

    A member must expect the stage-1 normalisation (the Lite family's 0.5/0.5; ImageNet's for
    most others): it sees the same input tensor, so one of another family would read wrong
    pixels. Such members are left out quietly (the wide rung then finds none).
    """
    from graft.backbones import create_backbone, resolve_weights
    from graft.backbones.taps import candidate_taps
    from graft.exceptions import GraftError

    out = []
    for o in members:
        try:
            if o.weights is None and resolve_weights(o.backbone).kind == "hub":
                prog.warn(f"wide features: {o.backbone} has no offline weights; left out")
                continue
            bb = create_backbone(o.backbone, weights=o.weights)
        except (GraftError, OSError) as e:
            prog.warn(f"wide features: {o.backbone} left out ({e})")
            continue
        own = bb.preprocessing
        if tuple(own.mean) != tuple(pre.mean) or tuple(own.std) != tuple(pre.std):
            continue
        out.append((bb, candidate_taps(bb.model) if multi else ()))
    return out


def embed_wide(
    emb: EmbeddedData,
    taps: Sequence[int],
    options: EmbedOptions,
    *,
    members: Sequence[BackboneOptions] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> WideEmbedded | None:
    """Embed train (with stage 1's views) and val with the added members; None where none loads offline.

    Args:
        emb: stage 1's embedding (its backbone, preprocessing, views and features).
        taps: the taps stage 1 chose for its backbone (``()``: final features); the added members use
            their own candidate taps where stage 1 chose multi-depth, their final features otherwise.
        members: the backbones to add (default :data:`~graft.backbones.wide.WIDE_MEMBERS` less stage 1's).
    """
    from graft.features.extract import EmbedJob, FeatureRequest, bind_model_features
    from graft.transforms.train import build_feature_view_transform

    prog = progress or NullProgress()
    t0 = time.perf_counter()
    loaded = _load_members(wide_candidates(emb, members), emb.preprocessing, bool(taps), prog)
    if not loaded:
        return None
    cols = _stage1_columns(emb, taps)
    data, pre = emb.data, emb.preprocessing
    n_labels = len(data.classes) if getattr(data, "multi_label", False) else 0
    parts_tr = [emb.train.X[:, cols]]
    parts_va = [emb.val.X[:, cols]]
    train = val = None
    for bb, mtaps in loaded:
        fn = bind_model_features(
            bb.model,
            pre,
            what=FeatureRequest(taps=mtaps, seed=seed),
            options=options,
            job=EmbedJob(shard=distributed.is_distributed()),
        )
        view_tf: Callable[[int], Any] = lambda v: None if v == 0 else build_feature_view_transform(pre, v, seed)  # noqa: E731
        kw: dict[str, Any] = dict(embed=fn, view_transform=view_tf, progress=prog, n_labels=n_labels)
        with reuse_engines():
            train = embed_split(data.splits["train"], name=f"train ({bb.name})", views=emb.augment_views, **kw)
            val = embed_split(data.splits["val"], name=f"val ({bb.name})", **kw)
        if train.X.shape[0] != emb.train.X.shape[0] or val.X.shape[0] != emb.val.X.shape[0]:
            prog.warn(f"wide features: {bb.name} decoded other images than stage 1; wide features skipped")
            return None
        parts_tr.append(train.X)
        parts_va.append(val.X)
    if train is None or val is None:  # unreachable: ``loaded`` is not empty; a real error, not an assert
        raise RuntimeError("wide features: no member backbone was embedded")
    models = [emb.backbone.model] + [bb.model for bb, _ in loaded]
    all_taps = [tuple(int(t) for t in taps)] + [t for _, t in loaded]
    archs = [emb.backbone.architecture] + [bb.architecture for bb, _ in loaded]
    wide = WideBackbone(models, all_taps, archs)
    info = _info(emb, wide, [emb.backbone_info] + [bb.to_dict() for bb, _ in loaded])
    train_f = SplitFeatures(np.concatenate(parts_tr, 1), train.y, train.groups, train.paths, train.failed)
    val_f = SplitFeatures(np.concatenate(parts_va, 1), val.y, val.groups, val.paths, val.failed)
    return WideEmbedded(wide, info, train_f, val_f, time.perf_counter() - t0)


def _info(emb: EmbeddedData, wide: WideBackbone, described: list[dict[str, Any]]) -> dict[str, Any]:
    """The artifact's backbone section: the composite, and each member's weights as loaded."""
    members = [
        {
            **m,
            "name": d.get("name"),
            "weights_source": d.get("weights_source"),
            "weights_sha256": d.get("weights_sha256"),
        }
        for m, d in zip(wide.describe(), described)
    ]
    return {
        **emb.backbone_info,
        "name": WIDE_ARCHITECTURE,
        "architecture": WIDE_ARCHITECTURE,
        "num_features": wide.num_features,
        "members": members,
        "feature_taps": [],
        "weights_source": "+".join(str(m["weights_source"]) for m in members),
        "weights_sha256": None,
    }
