"""The network and its saved parts: what a model folder describes and what prediction runs.

Below both :mod:`graft.artifact` (which saves and loads it) and :mod:`graft.training`
(which fits it), so opening a model for prediction never imports the trainer.
"""

from graft.network.heads import HEAD_TYPES, HeadSpec, build_head, register_head
from graft.network.net import GraftNet
from graft.network.ood import OODScorer

__all__ = ["HEAD_TYPES", "GraftNet", "HeadSpec", "OODScorer", "build_head", "register_head"]
