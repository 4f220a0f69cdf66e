"""Issue-2 acceptance on real data with the real EfficientNet-Lite0 weights, through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _datasets import shared_dataset

pytestmark = pytest.mark.integration


def graft_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRAFT_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "graft.cli.main", *map(str, args)], capture_output=True, text=True, env=env, timeout=900
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("integration_home")


@pytest.fixture(scope="module")
def hymenoptera_run(tmp_path_factory: pytest.TempPathFactory, home: Path) -> Path:
    out = tmp_path_factory.mktemp("hym") / "run"
    p = graft_cli("train", shared_dataset("hymenoptera"), "--out", out, "--quiet", "--no-report", home=home)
    assert p.returncode == 0, p.stderr
    return out


def test_hymenoptera_defaults_are_accurate(hymenoptera_run: Path) -> None:
    m = json.loads((hymenoptera_run / "metrics.json").read_text())
    # Issue 2: >= 0.95 with defaults (0.961 measured: 288 px FixRes input + mirror view).
    assert m["val_accuracy"] >= 0.95, m["val_accuracy"]
    assert m["classes"] == ["ants", "bees"]
    assert m["backbone"]["weights_source"].startswith("package:efficientnet-lite0")
    assert m["train_seconds"] > 0 and isinstance(m["skipped"], list)


def test_hymenoptera_evaluate_and_predict(hymenoptera_run: Path, home: Path) -> None:
    data = shared_dataset("hymenoptera")
    p = graft_cli("evaluate", hymenoptera_run / "model", data, "--json", home=home)
    assert p.returncode == 0, p.stderr
    ev = json.loads(p.stdout)
    m = json.loads((hymenoptera_run / "metrics.json").read_text())
    assert ev["accuracy"] == pytest.approx(m["val_accuracy"], abs=0.01)  # no test/ split: val is evaluated
    ants = sorted((data / "val" / "ants").glob("*.jpg"))[:3]
    bees = sorted((data / "val" / "bees").glob("*.jpg"))[:3]
    p = graft_cli("predict", hymenoptera_run / "model", *ants, *bees, "--json", home=home)
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(rows) == 6 and all(0.5 <= r["probability"] <= 1.0 for r in rows)
    assert sum(r["label"] == ("ants" if "ants" in r["path"] else "bees") for r in rows) >= 5


def test_cats_dogs_defaults_reach_0985(tmp_path: Path, home: Path) -> None:
    out = tmp_path / "run"
    p = graft_cli("train", shared_dataset("cats_dogs_filtered"), "--out", out, "--quiet", "--no-report", home=home)
    assert p.returncode == 0, p.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["val_accuracy"] >= 0.985, m["val_accuracy"]
