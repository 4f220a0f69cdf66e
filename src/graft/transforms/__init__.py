"""Image transforms: the eval preprocessing that travels with every model, and the training presets.

``graft.transforms.eval`` (:class:`Preprocessing`) is torch-free and used by every
prediction path; ``graft.transforms.train`` (augmentation, feature views) needs
torchvision, as torchvision's ``references/classification/presets.py`` keeps the
eval and train presets side by side.
"""

from graft.transforms.eval import PIL_INTERPOLATION, Preprocessing

__all__ = ["PIL_INTERPOLATION", "Preprocessing"]
