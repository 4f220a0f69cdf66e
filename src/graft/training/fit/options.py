"""What stage one fits: the backbone, the head and the split, one options object each."""

from __future__ import annotations

from dataclasses import dataclass, field

from graft.backbones.options import BackboneOptions
from graft.data.options import ManifestOptions, SplitOptions
from graft.training.head.options import HeadOptions

__all__ = ["FitOptions"]


@dataclass(frozen=True)
class FitOptions:
    """The learning-side options of a fit (how images are embedded is :class:`~graft.features.options.EmbedOptions`)."""

    backbone: BackboneOptions = field(default_factory=BackboneOptions)
    head: HeadOptions = field(default_factory=HeadOptions)
    split: SplitOptions = field(default_factory=SplitOptions)
    manifest: ManifestOptions = field(default_factory=ManifestOptions)  # where the data is a manifest

    def validate(self, owner: str = "FitOptions") -> FitOptions:
        self.backbone.validate(owner)
        self.head.validate(owner)
        self.split.validate(owner)
        return self
