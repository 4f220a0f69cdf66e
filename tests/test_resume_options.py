"""--resume honours what it can (where the data moved, --no-report) and refuses what it cannot (issue 27, item 12)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import TINY_BACKBONE, run_cli


def test_resume_refuses_new_settings_follows_a_moved_dataset_and_keeps_no_report(
    tmp_path: Path, synthetic_dataset: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "colours"
    shutil.copytree(synthetic_dataset, data)
    run = tmp_path / "run"
    tiny = ["--backbone", TINY_BACKBONE, "--weights", tiny_weights, "--workers", "0", "--precision", "fp32"]
    code, _, err = run_cli(["train", data, "--out", run, "--quiet", "--no-report", *tiny], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "--resume", run, "--epochs", "3", "--backbone", "resnet18"], capsys)
    assert code == 2 and "--backbone, --epochs cannot change" in err and len(err.strip().splitlines()) == 1
    moved = tmp_path / "moved"
    data.rename(moved)
    code, _, err = run_cli(["train", "--resume", run, "--quiet"], capsys)
    assert code == 2 and f"was at {data} and is gone" in err and f"graft train NEW_PLACE --resume {run}" in err
    code, _, err = run_cli(["train", moved, "--resume", run, "--quiet"], capsys)
    assert code == 0, err
    assert not (run / "report.html").exists()  # the run was started with --no-report
