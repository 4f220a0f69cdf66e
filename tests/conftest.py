"""Shared fixtures: small synthetic images written with Pillow into tmp_path."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from PIL import Image

# huggingface_hub reads this once, when first imported: set it before any test module imports
# timm, so no test can ever download (fixtures below set it again for every test).
os.environ["HF_HUB_OFFLINE"] = "1"


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


# --------------------------------------------------------------------------- pipeline fixtures
TINY_BACKBONE = "test_efficientnet"  # timm's ~100k-parameter test network (160 px input)


@contextmanager
def isolated_graft_home(tmp_path_factory: pytest.TempPathFactory, name: str = "graft_home") -> Iterator[Path]:
    """``with isolated_graft_home(tmp_path_factory) as home:`` a fresh GRAFT_HOME and no network.

    For module- or session-scoped fixtures that train or export and want a home of their
    own: the variables are restored (or removed again) on exit, whatever they were.
    """
    home = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAFT_HOME", str(home))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield home


@pytest.fixture(scope="session", autouse=True)
def _session_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """GRAFT_HOME for the whole session, so module/session fixtures never touch ~/.cache/graft.

    Autouse fixtures of the widest scope are set up first, so this is in place before any
    module- or session-scoped fixture runs; the per-test :func:`_isolated_home` nests inside.
    """
    with isolated_graft_home(tmp_path_factory, "session_home") as home:
        yield home


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own GRAFT_HOME (feature cache, weights) and no network."""
    home = tmp_path_factory.mktemp("graft_home")
    monkeypatch.setenv("GRAFT_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def _colour_image(path: Path, cls: int, seed: int, size: int = 48) -> None:
    """An image whose dominant colour and stripe direction depend on the class."""
    rng = np.random.default_rng(seed)
    palette = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40)]
    arr = np.empty((size, size, 3), np.float32)
    arr[:] = palette[cls % len(palette)]
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = np.sin((xx if cls % 2 else yy) / 3.0)[..., None] * 40
    arr = np.clip(arr + stripes + rng.normal(0, 25, arr.shape), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def make_synthetic_dataset(
    root: Path, classes: tuple[str, ...] = ("red", "green", "blue"), per_class: int = 12, split: bool = True
) -> Path:
    """A learnable dataset: ``train/`` + ``val/`` (split=True) or class folders only."""
    for c, name in enumerate(classes):
        for j in range(per_class):
            sub = ("train" if j < per_class * 2 // 3 else "val") if split else ""
            _colour_image(root / sub / name / f"{name}_{j:02d}.png", c, seed=100 * c + j)
    return root


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 colour classes x 12 images, with train/ and val/ folders (read-only: don't modify)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "colours")


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A safetensors file of random-init weights for the tiny backbone (stands in for ImageNet)."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    m = timm.create_model(TINY_BACKBONE, pretrained=False)
    path = tmp_path_factory.mktemp("weights") / f"{TINY_BACKBONE}.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, synthetic_dataset: Path, tiny_weights: Path) -> Path:
    """A saved model directory trained on :func:`synthetic_dataset` (session-wide, read-only)."""
    import graft

    with isolated_graft_home(tmp_path_factory, "tiny_home"):
        clf = graft.Classifier(TINY_BACKBONE, weights=tiny_weights, num_workers=0, precision="fp32")
        clf.fit(synthetic_dataset)
        out = tmp_path_factory.mktemp("tiny_model") / "model"
        clf.save(out)
    return out


@pytest.fixture(scope="module")
def run_copy(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, synthetic_dataset: Path) -> Path:
    """RUN_DIR/model copy of the tiny model with a run.json naming its training data (where export finds
    parity images); one per test module, since exports are written beside it."""
    run = tmp_path_factory.mktemp("run")
    shutil.copytree(tiny_model_dir, run / "model")
    (run / "run.json").write_text(json.dumps({"data_dir": str(synthetic_dataset)}))
    return run / "model"


@pytest.fixture(scope="session")
def hymenoptera_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model_dir, dataset) of a head-only lite0 model on hymenoptera, trained once per session (read-only).

    ``run.json`` beside the model names its data, as in a run folder (export's validation split
    and calibration images).
    """
    import json

    import graft
    from _datasets import shared_dataset

    data = shared_dataset("hymenoptera")
    root = tmp_path_factory.mktemp("hymenoptera_run")
    clf = graft.Classifier("efficientnet_lite0", use_cache=False, precision="fp32").fit(data)
    (root / "run.json").write_text(json.dumps({"data_dir": str(data)}))
    return clf.save(root / "model"), data


def run_cli(args: list[Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``graft ARGS`` as the console script runs it, in this process: (exit code, stdout, stderr)."""
    from graft.cli.main import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err
