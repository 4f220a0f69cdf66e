"""Classification heads grafted onto a headless backbone: their saved description and a registry of builders.

A head type is added in this file alone: a function decorated with :func:`register_head`
that builds the module from a :class:`HeadSpec`. Everything that offers a choice of head
(``Classifier(head=...)``, ``graft train --head``, the model loader) reads :data:`HEAD_TYPES`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from torch import nn

from graft.validation import Interval, check_choice, check_param

__all__ = ["HEAD_TYPES", "HeadSpec", "build_head", "register_head"]

HeadBuilder = Callable[["HeadSpec"], "nn.Sequential"]
_BUILDERS: dict[str, HeadBuilder] = {}
_SPATIAL: set[str] = set()


def register_head(name: str, *, spatial: bool = False) -> Callable[[HeadBuilder], HeadBuilder]:
    """Register ``fn(spec) -> nn.Sequential`` (its last layer maps features to logits) as head type ``name`` (``spatial``: it reads the un-pooled map)."""

    def add(fn: HeadBuilder) -> HeadBuilder:
        _BUILDERS[name] = fn
        if spatial:
            _SPATIAL.add(name)
        return fn

    return add


@register_head("linear")
def _linear(spec: HeadSpec) -> nn.Sequential:
    """Dropout + linear on pooled features (the default)."""
    from torch import nn

    return nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(spec.in_features, spec.num_classes))


@register_head("mlp")
def _mlp(spec: HeadSpec) -> nn.Sequential:
    """Dropout + linear + ReLU + dropout + linear on pooled features."""
    from torch import nn

    return nn.Sequential(
        nn.Dropout(spec.dropout),
        nn.Linear(spec.in_features, spec.hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(spec.dropout),
        nn.Linear(spec.hidden, spec.num_classes),
    )


@register_head("flatten", spatial=True)
def _flatten(spec: HeadSpec) -> nn.Sequential:
    """Dropout + linear on the flattened feature map, as the classic Keras "Flatten + Dense" recipe
    does; many more inputs, so it needs more data."""
    return _linear(spec)


#: The registered head types, in registration order (the first is the default).
HEAD_TYPES: tuple[str, ...] = tuple(_BUILDERS)


@dataclass(frozen=True)
class HeadSpec:
    """Everything needed to rebuild a head (stored in the model's config.json)."""

    type: str
    in_features: int
    num_classes: int
    dropout: float = 0.2
    hidden: int = 512
    multi_label: bool = False  # logits are per-label (sigmoid), not one softmax over the classes

    def __post_init__(self) -> None:
        check_choice("type", self.type, tuple(_BUILDERS), "HeadSpec")
        check_param("dropout", self.dropout, "HeadSpec", Interval(0, 1, closed="left"))

    @property
    def spatial(self) -> bool:
        """True if the head reads the un-pooled feature map."""
        return self.type in _SPATIAL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HeadSpec:
        keys = ("type", "in_features", "num_classes", "dropout", "hidden", "multi_label")
        return cls(**{k: d[k] for k in keys if k in d})


def build_head(spec: HeadSpec) -> nn.Sequential:
    """A freshly initialised head for ``spec``."""
    return _BUILDERS[spec.type](spec)
