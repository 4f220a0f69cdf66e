"""Shared fixtures: small synthetic images written with Pillow into tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image


def _write_image(path: Path, size: tuple[int, int] = (32, 24), mode: str = "RGB", seed: int = 0, **save_kw) -> Path:
    """Write a smooth random-colour image of ``size`` (w, h) to ``path`` (format from suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, 3)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = (base + 80 * np.stack([xx / max(w, 1), yy / max(h, 1), (xx + yy) / max(w + h, 1)], -1)) % 256
    img = Image.fromarray(arr.astype(np.uint8), "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, **save_kw)
    return path


@pytest.fixture
def make_image() -> Callable[..., Path]:
    """Factory ``make_image(path, size=(w, h), mode="RGB", seed=0, **save_kw) -> path``."""
    return _write_image


@pytest.fixture
def make_class_tree() -> Callable[..., Path]:
    """Factory ``make_class_tree(root, {"cat": 5, "dog": 3}, ext=".jpg") -> root``."""

    def build(root: Path, counts: dict[str, int], ext: str = ".png", size: tuple[int, int] = (16, 16)) -> Path:
        for i, (name, n) in enumerate(sorted(counts.items())):
            for j in range(n):
                _write_image(root / name / f"img_{j:03d}{ext}", size=size, seed=1000 * i + j)
        return root

    return build
