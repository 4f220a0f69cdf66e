"""The report reads a run folder defensively: names are text, images come from the dataset only (issue 27)."""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import _colour_image
from graft.report import write_report

CLASSES = ["$\\foo$", "price $5 and $6"]


def _run_folder(tmp_path: Path, classes: list[str] = CLASSES, **metrics: Any) -> tuple[Path, Path]:
    """A run folder as graft train writes it (no model), on a dataset of 2 x 3 validation images; (run, dataset)."""
    data, run = tmp_path / "data", tmp_path / "run"
    paths, labels = [], []
    for c, name in enumerate(classes):
        for j in range(3):
            p = data / "val" / name / f"{j}.png"
            _colour_image(p, c, seed=10 * c + j)
            paths.append(str(p))
            labels.append(c)
    probs = np.full((len(paths), len(classes)), 0.2)
    probs[np.arange(len(paths)), labels] = 0.8
    probs[0] = probs[0][::-1]  # one mistake
    counts = {"train": dict.fromkeys(classes, 5), "val": dict.fromkeys(classes, 3)}
    run.mkdir()
    files = {
        "run.json": {"status": "done", "data_dir": str(data.resolve()), "argv": ["graft", "train", str(data)]},
        "data.json": {"classes": classes, "counts": counts, "root": str(data), "layout": "split-folders"},
        "metrics.json": {"val_accuracy": 0.83, "classes": classes, "counts": counts, "kept_stage": "head", **metrics},
        "history.json": {},
        "val_predictions.json": {"classes": classes, "paths": paths, "labels": labels, "probs": probs.tolist()},
    }
    for name, body in files.items():
        (run / name).write_text(json.dumps(body))
    return run, data


def _sections(doc: str) -> set[str]:
    return set(re.findall(r'<section id="([a-z-]+)">', doc))


def test_class_names_are_text_never_matplotlib_maths(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run, _ = _run_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="graft"):
        doc = write_report(run).read_text(encoding="utf-8")
    assert {"data", "evaluation", "top-losses"} <= _sections(doc)
    assert "could not be rendered" not in doc, doc
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert {"class_counts.png", "confusion.png"} <= {p.name for p in (run / "report").iterdir()}


def test_the_drawn_labels_keep_their_dollar_signs() -> None:
    from graft.report.plots import class_counts_figure

    fig = class_counts_figure({"val": dict.fromkeys(CLASSES, 3)}, CLASSES)
    fig.canvas.draw()
    labels = fig.axes[0].get_xticklabels()
    assert [t.get_text() for t in labels] == CLASSES
    assert all(not t.get_parse_math() for t in labels)  # drawn as written: "price $5 and $6", not maths


def test_only_images_of_the_recorded_dataset_are_embedded(tmp_path: Path) -> None:
    run, data = _run_folder(tmp_path, classes=["ants", "bees"])
    secret = tmp_path / "home" / "me" / "private.png"  # the recipient's own photo, named by a shared run
    _colour_image(secret, 3, seed=99)
    outside_class = data / "val" / "wasps" / "w.png"  # inside the folder, but no class of this run
    _colour_image(outside_class, 2, seed=98)
    preds = json.loads((run / "val_predictions.json").read_text())
    preds["paths"] += [
        str(secret),
        str(outside_class),
        str(data / "val" / "ants" / ".." / ".." / ".." / "home/me/private.png"),
    ]
    preds["labels"] += [0, 0, 0]
    preds["probs"] += [[0.01, 0.99]] * 3  # the most confident mistakes: first in line for the top losses
    (run / "val_predictions.json").write_text(json.dumps(preds))
    doc = write_report(run).read_text(encoding="utf-8")
    photos = sorted(p.name for p in (run / "report").glob("top_losses_*.jpg"))
    assert len(photos) == 6, photos  # the dataset's six images, none of the three others
    assert "3 image(s) listed in val_predictions.json are not images of the run's dataset folder" in html.unescape(doc)


def test_wrong_types_in_metrics_json_are_one_warning_each_never_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run, _ = _run_folder(tmp_path, ["ants", "bees"], val_accuracy="high", test_accuracy=[1], stages=[1, 2])
    with caplog.at_level(logging.WARNING, logger="graft"):
        doc = write_report(run).read_text(encoding="utf-8")
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("'val_accuracy' should be a number" in w for w in warned), warned
    assert any("'stages' should be a JSON object" in w for w in warned), warned
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
    assert "val accuracy" in doc


def test_the_report_says_what_unlabeled_images_did(tmp_path: Path) -> None:
    u = {"images": 60, "method": "self_training", "pseudo_labelled": 41, "leaks_of_val_or_test": 2}
    u["cv_accuracy"] = {"none": 0.8, "self_training": 0.85, "label_spreading": 0.78}
    run, _ = _run_folder(tmp_path / "a", ["ants", "bees"], unlabeled=u)
    doc = html.unescape(write_report(run).read_text(encoding="utf-8"))
    assert "60 images, self_training labelled 41 (train CV 0.8000 -> 0.8500); left out 2 leaks of val/test" in doc
    run, _ = _run_folder(tmp_path / "b", ["ants", "bees"], unlabeled=[1, 2])  # not a record: left out, no traceback
    assert "unlabeled images" not in write_report(run).read_text(encoding="utf-8")
    from graft.report.sections import unlabeled_line  # with a budget, what the fine-tuning rungs took

    rungs = {**u, "rungs": {"method": "self_training", "pseudo_labelled": 30, "labelled": 54}}
    assert "; the budget's fine-tuning rungs trained on 30 of them pseudo-labelled;" in unlabeled_line(rungs)
    assert "rungs" not in unlabeled_line({**u, "rungs": "odd"})
    assert unlabeled_line({**u, "in_kept_model": False}).endswith(
        "rung kept does not use them; left out 2 leaks of val/test"
    )
