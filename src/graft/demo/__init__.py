"""A tiny bundled dataset so the first command in the README works with no download."""

from __future__ import annotations

from pathlib import Path

__all__ = ["demo_dataset_path"]


def demo_dataset_path() -> Path:
    """Folder of the bundled demo dataset (10 classes of hand-sign digits, 10 images each).

    Returns:
        Path to ``graft/demo/sign_digits``, which holds one folder per class (``0`` ... ``9``)
        and the dataset's Apache-2.0 ``LICENSE``.
    """
    return Path(__file__).resolve().parent / "sign_digits"
