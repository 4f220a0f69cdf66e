"""Explain tools on the real EfficientNet-Lite0 with its ImageNet head and real photos (integration)."""

from __future__ import annotations

import numpy as np
import pytest

from _datasets import shared_dataset

pytestmark = pytest.mark.integration

BEE, ANT = 309, 310  # ImageNet class indices


@pytest.fixture(scope="module")
def imagenet():
    from graft.explain import load_target

    return load_target("efficientnet_lite0", imagenet=True)


@pytest.fixture(scope="module")
def bee(imagenet) -> np.ndarray:
    """A hymenoptera bee photo that the ImageNet model itself calls a bee."""
    from graft.explain import prepare_image, probabilities, to_input

    for path in sorted((shared_dataset("hymenoptera") / "val" / "bees").glob("*.jpg"))[:20]:
        rgb = prepare_image(path, imagenet.preprocessing)
        if probabilities(imagenet.net, to_input(rgb, imagenet.preprocessing)).argmax() == BEE:
            return rgb
    pytest.fail("none of the first 20 validation bees is classified as a bee by EfficientNet-Lite0")


def test_targeted_attack_flips_real_image_within_budget(imagenet, bee: np.ndarray) -> None:
    from graft.explain import attack

    r = attack(imagenet, bee, target_index=ANT, epsilon=8 / 255, steps=40)
    assert r.source_index == BEE
    assert r.success and r.predicted_after == ANT
    assert r.linf <= 8 / 255 + 1e-9
    assert r.probs_after[ANT] > 0.5 > r.probs_before[ANT]


def test_gradcam_on_real_image(imagenet, bee: np.ndarray) -> None:
    from graft.explain import gradcam

    r = gradcam(imagenet, bee)
    assert r.layer == "bn2" and r.class_index == BEE
    assert r.cam.shape == bee.shape[:2] == tuple(imagenet.preprocessing.input_size)
    assert r.cam.std() > 0.1


def test_dream_beats_its_starting_noise(imagenet) -> None:
    from graft.explain import dream, resolve_class

    idx = resolve_class(imagenet.classes, "tabby", imagenet.full_names)
    r = dream(imagenet, idx, steps=12, seed=0)
    assert r.probability > r.start_probability * 5
    assert r.probability > 0.05
