"""``graft evaluate`` on a folder without split folders scores what the model never trained on (issue 27, item 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import graft
from conftest import TINY_BACKBONE, make_synthetic_dataset, run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> tuple[graft.Classifier, Path, Path]:
    """A model trained on a folder of class folders only (graft split it: seed 0, 20% validation)."""
    root = tmp_path_factory.mktemp("auto_split")
    data = make_synthetic_dataset(root / "colours", split=False)
    clf = graft.Classifier(TINY_BACKBONE, weights=tiny_weights, num_workers=0, precision="fp32").fit(data)
    return clf, clf.save(root / "model"), data


def _evaluate(model: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    code, out, err = run_cli(["evaluate", model, data, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def test_the_training_folder_is_scored_on_its_held_out_images(
    trained: tuple[graft.Classifier, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    clf, model, data = trained
    m = _evaluate(model, data, capsys)
    assert m["n"] == len(clf.val_paths_) == 6  # 2 of each class's 12 images, not all 36
    assert m["accuracy"] == pytest.approx(clf.metrics_["accuracy"])
    assert m["scored"]["split"] == "val" and m["scored"]["images"] == 6
    assert "held out of" in m["scored"]["description"] and "seed 0" in m["scored"]["description"]
    code, out, _ = run_cli(["evaluate", model, data], capsys)
    assert code == 0 and out.startswith("scored: 6 images, the val split graft held out of"), out
    for api in (clf, graft.load(model)):  # the Python API, fitted or loaded, scores the same images
        assert sorted(api.evaluate(data)["paths"]) == sorted(clf.val_paths_)


def test_another_folder_is_scored_whole_and_says_so(
    trained: tuple[graft.Classifier, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _clf, model, data = trained
    other = make_synthetic_dataset(tmp_path / "other", per_class=5, split=False)
    m = _evaluate(model, other, capsys)
    assert m["n"] == 15 and m["scored"]["split"] == "all"
    assert m["scored"]["description"].startswith(f"every image in {other}: it is not the folder")
    grown = shutil.copytree(data, tmp_path / "grown")  # the training folder, one image added since
    shutil.copy(grown / "red" / "red_00.png", grown / "red" / "red_new.png")
    m = _evaluate(model, grown, capsys)
    assert m["n"] == 37 and m["scored"]["split"] == "all"
