"""The graft command line: the contract other tools rely on, and clean errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_BACKBONE, isolated_graft_home, run_cli
from graft.cli.main import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, synthetic_dataset: Path, tiny_weights: Path) -> Path:
    out = tmp_path_factory.mktemp("run") / "r1"
    with isolated_graft_home(tmp_path_factory, "cli_home"):
        try:
            main(
                [
                    "train",
                    str(synthetic_dataset),
                    "--out",
                    str(out),
                    "--backbone",
                    TINY_BACKBONE,
                    "--weights",
                    str(tiny_weights),
                    "--workers",
                    "0",
                    "--precision",
                    "fp32",
                    "--quiet",
                    "--no-report",
                ]
            )
        except SystemExit as e:
            assert e.code == 0
    return out


def test_train_writes_the_run_directory_contract(tiny_run: Path) -> None:
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert isinstance(m["val_accuracy"], float) and m["val_accuracy"] >= 0.8
    assert isinstance(m["train_seconds"], float) and m["train_seconds"] > 0
    assert m["classes"] == ["blue", "green", "red"]
    assert m["skipped"] == []
    assert (tiny_run / "model" / "config.json").exists() and (tiny_run / "model" / "model.safetensors").exists()
    for name in ("history.json", "data.json", "val_predictions.json", "run.json"):
        assert json.loads((tiny_run / name).read_text())
    run = json.loads((tiny_run / "run.json").read_text())
    assert run["seed"] == 0 and "torch" in run["versions"]


def test_evaluate_json(tiny_run: Path, synthetic_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["evaluate", tiny_run / "model", synthetic_dataset, "--json"], capsys)
    assert code == 0
    m = json.loads(out)
    assert m["accuracy"] >= 0.8 and m["n"] == 12
    code, out, _ = run_cli(["evaluate", tiny_run / "model", synthetic_dataset, "--split", "train"], capsys)
    assert code == 0 and "confusion matrix" in out and "precision" in out


def test_predict_json_csv_and_table(
    tiny_run: Path, synthetic_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    folder = synthetic_dataset / "val" / "green"
    code, out, _ = run_cli(["predict", tiny_run / "model", folder, bad, "--json", "-k", "2"], capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.strip().splitlines()]
    good = [r for r in rows if "label" in r]
    assert len(good) == 4 and all(r["label"] == "green" for r in good)
    assert all({"path", "label", "probability"} <= set(r) for r in good)
    assert [r for r in rows if "error" in r][0]["path"].endswith("bad.png")
    code, out, _ = run_cli(["predict", tiny_run / "model", str(folder / "*.png"), "--csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4 and rows[0]["label"] == "green"
    code, out, _ = run_cli(["predict", tiny_run / "model", folder], capsys)
    assert code == 0 and "green" in out


def test_user_errors_are_one_line_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["train", tmp_path / "nope", "--quiet"], capsys)
    assert code == 2 and "nope" in err and "Traceback" not in err
    code, _, err = run_cli(["evaluate", tmp_path, tmp_path], capsys)
    assert code == 2 and "config.json" in err
    (tmp_path / "only" / "cls").mkdir(parents=True)
    code, _, err = run_cli(["train", tmp_path / "only", "--quiet"], capsys)
    assert code == 2 and "Traceback" not in err


def test_unknown_backbone_suggests_close_names(synthetic_dataset: Path) -> None:
    # A real subprocess: exit code, stderr and no traceback as a user sees them.
    p = subprocess.run(
        [sys.executable, "-m", "graft.cli.main", "train", str(synthetic_dataset), "--backbone", "resnet5", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    assert "resnet50" in p.stderr and "Traceback" not in p.stderr


def test_backbones_lists_offline_weights(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["backbones", "--json"], capsys)
    names = {b["name"] for b in json.loads(out)}
    assert code == 0 and {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"} <= names
