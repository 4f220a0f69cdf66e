"""Damaged checkpoints, full or read-only disks and failed runs never cost work or print a traceback (issue 27)."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import graft
from conftest import TINY_BACKBONE, run_cli
from graft.progress import NullProgress


class Recorder(NullProgress):
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.messages: list[str] = []

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def message(self, text: str) -> None:
        self.messages.append(text)


# ---------------------------------------------------------------------------- item 5: a damaged checkpoint
@pytest.fixture(scope="module")
def fitted(synthetic_dataset: Path, tiny_weights: Path) -> graft.Classifier:
    return graft.Classifier(TINY_BACKBONE, weights=tiny_weights, num_workers=0, precision="fp32").fit(synthetic_dataset)


def _train(clf: graft.Classifier, folder: Path, epochs: int, resume: bool, progress: Any = None) -> Any:
    from graft.training.finetune.options import FineTuneConfig, TrainEnv
    from graft.training.finetune.train import train_network
    from graft.transforms.train import build_train_transform

    paths = [str(p) for p in sorted((Path(clf.data_.root) / "train").rglob("*.png"))]
    labels = np.array([clf.classes_.index(Path(p).parent.name) for p in paths])
    config = FineTuneConfig(epochs=epochs, batch_size=8)
    return train_network(
        clf.model_,
        clf.model_.backbone,
        (paths, labels),
        (paths, labels),
        transforms=(build_train_transform(clf.preprocessing_), clf.preprocessing_),
        config=config,
        policy=config.policy(),
        env=TrainEnv(precision="fp32", num_workers=0, checkpoint_dir=folder, resume=resume, progress=progress),
    )


def test_resume_from_a_damaged_checkpoint_falls_back_to_the_previous_good_one(
    tmp_path: Path, fitted: graft.Classifier
) -> None:
    ck = tmp_path / "ck"
    _train(fitted, ck, epochs=1, resume=False)
    weights = ck / "last" / "state.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)  # a kill or a full disk mid-write, outside graft
    rec = Recorder()
    res = _train(fitted, ck, epochs=2, resume=True, progress=rec)
    assert [r["epoch"] for r in res.history] == [1, 2]
    assert any("is damaged" in w and str(ck / "last") in w for w in rec.warnings), rec.warnings
    assert any(f"continuing from {ck / 'best'} (epoch 1)" in w for w in rec.warnings), rec.warnings
    assert any(f"resumed fine_tune from {ck / 'best'} at epoch 2" in m for m in rec.messages), rec.messages
    # Garbage in both: fine-tuning starts again from the stage-1 model, and says so.
    for name in ("best", "last"):
        (ck / name / "state.json").write_text("{not json")
    rec = Recorder()
    res = _train(fitted, ck, epochs=1, resume=True, progress=rec)
    assert [r["epoch"] for r in res.history] == [1]
    assert any("starts again" in w for w in rec.warnings), rec.warnings


# ---------------------------------------------------------------------------- item 4: full or read-only disks
@contextmanager
def _file_size_limit(n_bytes: int) -> Iterator[None]:
    """Writes past ``n_bytes`` fail with EFBIG, in Python and in compiled libraries alike (a full disk, portably)."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, handler)


def test_a_disk_that_fills_while_saving_the_model_is_one_line_and_leaves_no_temporary(
    tmp_path: Path, fitted: graft.Classifier
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with _file_size_limit(64 * 1024), pytest.raises(graft.GraftError) as e:
        fitted.save(run / "model")
    assert isinstance(e.value, OSError) and e.value.exit_code == 1
    assert str(e.value).startswith(f"cannot write to {run}: ") and "\n" not in str(e.value)
    assert list(run.iterdir()) == []  # no model, and no .model.tmpPID folder either


def _refuse_mkdir(monkeypatch: pytest.MonkeyPatch, under: Path) -> None:
    """Every folder made under ``under`` fails as on a read-only mount."""
    real = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self == under or under in self.parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


def test_a_read_only_graft_home_is_one_line(
    tmp_path: Path,
    tiny_model_dir: Path,
    synthetic_dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "ro_home"
    monkeypatch.setenv("GRAFT_HOME", str(home))
    _refuse_mkdir(monkeypatch, home)
    code, out, err = run_cli(["predict", tiny_model_dir, synthetic_dataset / "val" / "red"], capsys)
    assert code == 1, err
    assert err.startswith(f"error: cannot write to {home}") and "read-only" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_a_read_only_out_folder_is_one_line(
    tmp_path: Path,
    synthetic_dataset: Path,
    tiny_weights: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "ro" / "run"
    _refuse_mkdir(monkeypatch, tmp_path / "ro")
    args = ["train", synthetic_dataset, "--out", out, "--backbone", TINY_BACKBONE, "--weights", tiny_weights]
    code, _, err = run_cli([*args, "--quiet", "--no-report"], capsys)
    assert code == 1, err
    assert err.startswith(f"error: cannot write to {out}: it is on a read-only file system"), err
    assert "--out" in err and len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------------------- item 8: a failed run's retry
def test_a_run_that_failed_before_training_does_not_block_its_retry(
    tmp_path: Path, synthetic_dataset: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from graft.run import check_run_dir

    out = tmp_path / "run"
    args = ["--out", out, "--backbone", TINY_BACKBONE, "--weights", tiny_weights, "--quiet", "--no-report"]
    code, _, err = run_cli(["train", tmp_path / "no-such-data", *args], capsys)  # a typo in the data folder
    assert code == 2 and "does not exist" in err, err
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    check_run_dir(out, synthetic_dataset)  # the corrected command may use the folder
    # A run that got as far as writing checkpoints still has work to lose: refused, as before.
    (out / "checkpoints" / "last").mkdir(parents=True)
    (out / "checkpoints" / "last" / "state.json").write_text("{}")
    with pytest.raises(graft.DataError, match="already holds a previous graft run"):
        check_run_dir(out, synthetic_dataset)
