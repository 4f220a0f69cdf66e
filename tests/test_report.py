"""The run report on a tiny real run (synthetic colours, tiny backbone): fast, no browser."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY_BACKBONE
from graft.exceptions import DataError
from graft.training.finetune.options import FineTuneConfig

SECTION_IDS = ["data", "training", "baseline", "evaluation", "calibration", "top-losses", "gradcam", "facts"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, synthetic_dataset: Path, tiny_weights: Path) -> Path:
    """A complete run directory: head, 2 fine-tuning epochs and a 2-epoch scratch baseline."""
    import graft
    from graft.run import RunOptions, train_run

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    clf = graft.Classifier(TINY_BACKBONE, weights=tiny_weights, num_workers=0, precision="fp32", use_cache=False)
    opts = RunOptions(
        fine_tune=True, tune=FineTuneConfig(epochs=2, batch_size=8), baseline="scratch", baseline_epochs=2
    )
    train_run(synthetic_dataset, out, clf, opts, argv=["graft", "train", str(synthetic_dataset)])
    return out


@pytest.fixture(scope="module")
def tiny_report(tiny_run: Path) -> str:
    from graft.report import write_report

    path = write_report(tiny_run)
    assert path == tiny_run / "report.html"
    return path.read_text(encoding="utf-8")


def _images(doc: str) -> list[tuple[str, bytes]]:
    return [
        (m.group(1), base64.b64decode(m.group(2)))
        for m in re.finditer(r'<img[^>]*src="data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)"', doc)
    ]


def test_report_is_complete_and_self_contained(tiny_run: Path, tiny_report: str) -> None:
    doc = tiny_report
    for anchor in SECTION_IDS:
        assert f'<section id="{anchor}">' in doc, anchor
    assert "could not be rendered" not in doc
    # Offline: no external resources, no scripts.
    assert not re.search(r'(src|href)="(https?:)?//', doc)
    assert "<script" not in doc
    imgs = _images(doc)
    assert len(doc.split("<img")) - 1 == len(imgs) >= 10  # every <img> is an embedded data URI
    for mime, data in imgs:
        im = Image.open(io.BytesIO(data))
        im.load()
        assert im.width > 50 and im.height > 50
        assert im.format == ("JPEG" if mime == "image/jpeg" else "PNG")
    files = {p.name for p in (tiny_run / "report").iterdir()}
    assert {
        "class_counts.png",
        "confusion.png",
        "reliability.png",
        "curves_head.png",
        "baseline.png",
        "top_losses_00.jpg",
        "gradcam_correct_00.jpg",
    } <= files
    assert any(f.startswith("curves_fine_tune") for f in files)
    # Photo captions are HTML text under each image: the top losses name p(true) per image.
    preds = json.loads((tiny_run / "val_predictions.json").read_text())
    n_top = min(len(preds["paths"]), 12)
    assert (
        len(re.findall(r"<figcaption[^>]*>[^<]*<br>[^<]*<br>p\(true\)", doc))
        == n_top
        == len([f for f in files if f.startswith("top_losses_")])
    )
    assert any(f.startswith("curves_baseline") for f in files)


def test_report_numbers_match_the_run(tiny_run: Path, tiny_report: str) -> None:
    from graft.metrics import compute_metrics

    doc = tiny_report
    preds = json.loads((tiny_run / "val_predictions.json").read_text())
    m = compute_metrics(np.array(preds["labels"]), np.array(preds["probs"]), preds["classes"])
    assert f"{m['accuracy']:.4f}" in doc
    for c in preds["classes"]:
        assert f"<td>{c}</td>" in doc
    run = json.loads((tiny_run / "run.json").read_text())
    assert "graft train" in doc and run["versions"]["torch"] in doc
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert f"{metrics['stages']['baseline_scratch']['val_accuracy']:.4f}" in doc


def test_report_without_predictions_or_model(tiny_run: Path, tmp_path: Path) -> None:
    """Older or partial run directories still get a report of what they have."""
    from graft.report import write_report

    part = tmp_path / "partial"
    part.mkdir()
    for name in ("metrics.json", "history.json", "run.json"):
        shutil.copy(tiny_run / name, part / name)
    doc = write_report(part).read_text(encoding="utf-8")
    assert '<section id="training">' in doc and '<section id="facts">' in doc
    assert '<section id="gradcam">' not in doc and '<section id="top-losses">' not in doc
    assert "could not be rendered" not in doc


def test_report_rejects_non_run_dir(tmp_path: Path) -> None:
    from graft.report import write_report

    with pytest.raises(DataError, match="not a graft run directory"):
        write_report(tmp_path)


def test_broken_section_is_shown_not_fatal(tiny_run: Path, tmp_path: Path) -> None:
    from graft.report import write_report

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    preds = json.loads((run / "val_predictions.json").read_text())
    preds["paths"] = [str(Path(p).with_name(f"gone_{Path(p).name}")) for p in preds["paths"]]  # deleted since
    (run / "val_predictions.json").write_text(json.dumps(preds))
    doc = write_report(run).read_text(encoding="utf-8")
    assert '<section id="evaluation">' in doc
    assert "could not be read any more" in doc


def test_cli_report(tiny_run: Path) -> None:
    from graft.cli.main import app

    res = CliRunner().invoke(app, ["report", str(tiny_run)])
    assert res.exit_code == 0, res.output
    assert "report.html" in res.output
    assert (tiny_run / "report.html").stat().st_size > 10_000
