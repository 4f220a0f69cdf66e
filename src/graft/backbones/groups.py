"""Fine-tuning layer groups and ImageNet class names."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from torch import nn

from graft.backbones.weights import classifier_keys

__all__ = ["layer_groups", "imagenet_class_names"]


def _matches_any(name: str, matcher: Mapping[str, Any]) -> bool:
    """Whether a param name is claimed by a timm dict group matcher (not left over)."""
    for spec in matcher.values():
        if spec is None:
            continue
        patterns = [s[0] for s in spec] if isinstance(spec, (list, tuple)) else [spec]
        if any(re.match(p, name) for p in patterns):
            return True
    return False


def _fallback_groups(params: list[str]) -> list[list[str]]:
    """One group per top-level child module, in parameter order."""
    groups: dict[str, list[str]] = {}
    for n in params:
        groups.setdefault(n.split(".", 1)[0], []).append(n)
    return list(groups.values())


def layer_groups(model: nn.Module) -> list[list[str]]:
    """Parameter-name groups ordered input -> output, for "unfreeze the last N groups".

    Built from timm's coarse ``group_matcher`` (stem, then one group per block stage):
    EfficientNet gives stem, blocks.0..6; ResNet stem, layer1..4; VGG one group per
    conv. Parameters after the last block that timm leaves in a group of their own
    (a final conv/norm such as ``conv_head``/``bn2``, ViT's ``norm``, VGG's
    ``pre_logits``) are merged into the last block group, so unfreezing one group
    trains the last stage together with what follows it. The classifier, if the
    model still has one, is not part of any group (it is the head, always trained).
    Models without a group matcher get one group per top-level child module.

    Args:
        model: a timm model (other ``nn.Module`` use the fallback grouping).

    Returns:
        Lists of parameter names (as in ``model.named_parameters()``, the keys for
        ``requires_grad`` toggling), every backbone parameter in exactly one group.
    """
    head = classifier_keys(model)
    params = [n for n, _ in model.named_parameters() if n not in head]
    matcher: Mapping[str, Any] | Callable[..., Any] | None = None
    timm_model: Any = model  # timm's group_matcher is untyped
    if hasattr(timm_model, "group_matcher"):
        try:
            matcher = timm_model.group_matcher(coarse=True)
        except (NotImplementedError, TypeError, AttributeError):
            matcher = None
    if matcher is None:
        return [g for g in _fallback_groups(params) if g]
    from timm.models import group_parameters

    keep = set(params)
    raw = group_parameters(model, matcher)
    groups = [[n for n in raw[i] if n in keep] for i in sorted(raw)]
    groups = [g for g in groups if g]
    if isinstance(matcher, Mapping) and len(groups) > 2:
        # Trailing groups nothing in the matcher claims are timm's "neck/head" leftovers.
        while len(groups) > 2 and not any(_matches_any(n, matcher) for n in groups[-1]):
            tail = groups.pop()
            groups[-1].extend(tail)
    return groups


@lru_cache(maxsize=2)
def _imagenet_descriptions() -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_descriptions())


def imagenet_class_names(short: bool = False) -> list[str]:
    """The 1000 ImageNet-1k class names timm ships, in class-index order (no download).

    Args:
        short: keep only the first synonym (``"ant"`` instead of
            ``"ant, emmet, pismire"``); a few short names repeat (two "crane"s).

    Returns:
        1000 strings; index 309 is the bee, 310 the ant.
    """
    names = _imagenet_descriptions()
    if short:
        return [n.split(",", 1)[0].strip() for n in names]
    return list(names)
