"""Never lose work II, the smaller defects (issue 27, items 11 and 14-17): each test here failed before its fix.

Ctrl-C and SIGTERM end a run with one line and a resumable run folder; a damaged ONNX
export in the runtime cache is rebuilt once; predict walks folders as train does; names
cannot steer the terminal; and the cosmetic list.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import TINY_BACKBONE, run_cli


def _graft_env(home: Path) -> dict[str, str]:
    return {**os.environ, "GRAFT_HOME": str(home), "HF_HUB_OFFLINE": "1"}


# ---------------------------------------------------------------------------- 11. Ctrl-C and SIGTERM
@pytest.mark.parametrize(("sig", "code", "name"), [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_interrupt_prints_how_to_resume_and_marks_the_run(
    tmp_path: Path, synthetic_dataset: Path, tiny_weights: Path, sig: int, code: int, name: str
) -> None:
    out = tmp_path / "run"
    args: list[Any] = ["train", synthetic_dataset, "--out", out, "--backbone", TINY_BACKBONE, "--weights"]
    args += [tiny_weights, "--precision", "fp32", "--quiet", "--no-report", "--workers", "0", "--fine-tune"]
    args += ["--epochs", "50", "--patience", "100"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "graft.cli.main", *map(str, args)],
        env=_graft_env(tmp_path / "home"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "run.json").exists():  # training has started (50 epochs: it is far from done)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "no run.json appeared"
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"interrupted ({name})" in err and f"`graft train --resume {out}`" in err, err
    assert "Traceback" not in err, err
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"


# ---------------------------------------------------------------------------- 14. a damaged ONNX cache
@pytest.mark.parametrize("damage", [b"", b"garbage, not a protobuf"])
def test_a_damaged_cached_backbone_export_is_rebuilt_once(
    damage: bytes, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import timm
    import torch

    from graft.features import engines, onnx_cache

    torch.manual_seed(0)
    net = timm.create_model(TINY_BACKBONE, pretrained=False, num_classes=0).eval()
    key = lambda: "tiny-damaged"  # noqa: E731
    build = lambda: engines.build_engine(net, (64, 64), device="cpu", precision="fp32", n_images=1000, key=key)  # noqa: E731
    assert isinstance(build(), engines.OrtEngine)
    (cached,) = onnx_cache.cache_dir().glob("*.onnx")
    cached.write_bytes(damage)  # a disk error, a partial restore
    with caplog.at_level("WARNING", logger="graft"):
        engine = build()
        assert isinstance(engine, engines.OrtEngine)  # not the 3x slower PyTorch fallback
        assert isinstance(build(), engines.OrtEngine)
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and "damaged" in said[0] and str(cached) in said[0], said  # said once, rebuilt once
    assert cached.stat().st_size > 1000
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(engine(x), engines.TorchEngine(net, "cpu", "fp32")(x), rtol=1e-4, atol=1e-4)


def test_a_damaged_cached_model_export_is_rebuilt(tiny_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    from graft.features import onnx_cache
    from graft.predict import open_predictor

    first = open_predictor(tiny_model_dir, backend="onnx", fallback=False)
    (cached,) = onnx_cache.cache_dir().glob("*.onnx")
    cached.write_bytes(cached.read_bytes()[:1000])  # truncated
    with caplog.at_level("WARNING", logger="graft"):
        again = open_predictor(tiny_model_dir, backend="onnx", fallback=False)
    assert again.name == first.name == "onnxruntime"
    assert any("damaged" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------- 15. one folder walk
def test_predict_reads_a_folder_as_train_and_evaluate_do(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from conftest import make_synthetic_dataset
    from graft.data import scan_split

    elsewhere = make_synthetic_dataset(tmp_path / "elsewhere", classes=("blue",), per_class=3, split=False)
    folder = make_synthetic_dataset(tmp_path / "folder", classes=("green", "red"), per_class=3, split=False)
    (folder / "blue").symlink_to(elsewhere / "blue")  # a class folder kept elsewhere: train and evaluate read it
    (folder / "red" / "up").symlink_to("../..")  # a cycle inside a class: left out everywhere, with a warning
    records, _, _ = scan_split(folder, classes=["blue", "green", "red"], warn=lambda _m: None)
    code, out, err = run_cli(["predict", tiny_model_dir, folder, "--json"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(str(r.path) for r in records)
    assert len(rows) == 9 and all("label" in r for r in rows)
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "ignored link" in said and "up" in said, said  # never silent


# ---------------------------------------------------------------------------- 16. names cannot steer the terminal
def test_names_with_terminal_escapes_print_as_text(
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    make_image: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "in"
    make_image(folder / "clear\x1b[2J.png")
    make_image(folder / "clip\x1b]52;c;ZXZpbA==\x07.png")  # OSC 52: write the clipboard
    (folder / "csi\x9b31m.png").write_bytes(b"not an image")  # C1 CSI; an error row names it
    (folder / "rtl\u202egnp.png").write_bytes(b"")  # a right-to-left override, in an error row
    (folder / "link\x1b[1m").symlink_to(tmp_path / "nowhere")  # a warning names it
    monkeypatch.chdir(folder)  # short names: the table shows them whole
    for extra in ([], ["--csv"]):
        code, out, err = run_cli(["predict", tiny_model_dir, ".", *extra], capsys)
        assert code == 0, err
        for ch in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert ch not in out + err, (ch, out, err)
        assert "clear\\x1b[2J.png" in out and "csi\\x9b31m.png" in out, out  # short enough for the table
        assert "link\\x1b[1m" in err, err
    assert "clip\\x1b]52;c;ZXZpbA==\\x07.png" in out and "rtl\\u202egnp.png" in out, out


# ---------------------------------------------------------------------------- 17. the cosmetic list
def test_a_confusion_matrix_of_many_classes_is_summarised() -> None:
    import numpy as np

    from graft.metrics import compute_metrics, format_metrics_table

    rng = np.random.default_rng(0)
    classes = [f"class_{i:03d}" for i in range(300)]
    y = np.repeat(np.arange(300), 10)
    probs = rng.dirichlet(np.full(300, 0.05), size=len(y))
    probs[np.arange(len(y)), y] += 0.5
    probs[y == 7, 8] += 2.0  # the most frequent confusion: every class_007 image called class_008
    text = format_metrics_table(compute_metrics(y, probs / probs.sum(1, keepdims=True), classes))
    assert len(text) < 50_000, len(text)  # 928 kB before
    assert "300 classes, too many to print" in text and "class_007 -> class_008: 10" in text
    small = format_metrics_table(compute_metrics(y[:40], probs[:40, :4] + 1e-3, classes[:4]))
    assert "confusion matrix (rows: true, columns: predicted)" in small  # a few classes: the whole matrix


def test_export_names_the_ood_score_output(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["export", tiny_model_dir, "--out", tmp_path / "m.onnx", "--quiet"], capsys)
    assert code == 0, err
    assert "outputs logits+probabilities+ood_score" in out, out


def test_failure_line_has_no_stray_full_stop() -> None:
    from graft.launch import failure_line

    class F:
        exitcode, message, timestamp, pid = 2, "data/ has no images.", 0, 42

    line = failure_line({1: F()})
    assert ".;" not in line and line == "rank 1 failed: data/ has no images; the other processes were stopped"


def test_model_weights_get_the_permissions_of_any_new_file(tiny_model_dir: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("model.safetensors", "config.json"):
        assert (tiny_model_dir / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


@pytest.mark.parametrize(("a", "b"), [("Cats", "cats"), ("caf\u00e9", "cafe\u0301")])
def test_class_names_equal_after_case_folding_or_normalisation_are_refused(
    tmp_path: Path, a: str, b: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "ds", classes=(a, b, "dogs"), per_class=4, split=False)
    code, _, err = run_cli(["train", root, "--out", tmp_path / "run", "--quiet"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert repr(a) in err and repr(b) in err and "differ only in case or Unicode form" in err


def test_curve_out_refuses_the_run_of_another_dataset(tmp_path: Path, synthetic_dataset: Path) -> None:
    from graft.artifact.run_folder import RunFolder
    from graft.curve import check_outputs
    from graft.exceptions import DataError

    other, mine = RunFolder(tmp_path / "other_run"), RunFolder(tmp_path / "my_run")
    other.write(RunFolder.RUN, {"status": "done", "data_dir": str(tmp_path / "flowers")})
    mine.write(RunFolder.RUN, {"status": "done", "data_dir": str(synthetic_dataset.resolve())})
    with pytest.raises(DataError, match="the run of another dataset"):
        check_outputs(synthetic_dataset, out=other.path)
    check_outputs(synthetic_dataset, out=mine.path)  # its own run, or a new folder, is fine
    check_outputs(synthetic_dataset, out=tmp_path / "new")


def test_a_rank_killed_after_the_run_finished_is_not_a_failure(
    tmp_path: Path, synthetic_dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from graft.artifact.run_folder import RunFolder

    out, finish = tmp_path / "run", {"done": True}

    def workers(_args: Any) -> None:  # rank 0 wrote the run, then rank 1 was killed in its clean-up
        if finish["done"]:
            RunFolder(out).write(RunFolder.RUN, {"status": "done", "data_dir": str(synthetic_dataset)})
        killed = ProcessFailure(local_rank=1, pid=42, exitcode=-signal.SIGKILL, error_file=str(tmp_path / "none"))
        raise ChildFailedError("graft", {1: killed})

    monkeypatch.setattr(torchrun, "run", workers)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))  # the launcher sets it
    args = ["train", synthetic_dataset, "--out", out, "--devices", "2", "--quiet", "--overwrite"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert "rank 1 failed: killed by SIGKILL" in err and "after the job had finished" in err, err
    finish["done"] = False  # killed before the run was written: a failure, as before
    code, _, err = run_cli(args, capsys)
    assert code == 1 and "error: rank 1 failed: killed by SIGKILL" in err, err


def test_no_cuda_runtime_notice_on_a_cpu_only_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    import torch
    import torch.utils.cpp_extension as cpp

    from graft.training.finetune.speed import CompiledStep

    CompiledStep(torch.nn.Linear(2, 2))  # what fine-tuning does before torch.compile's first call
    heard: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: heard.append(record.getMessage())  # type: ignore[method-assign]
    cpp.logger.addHandler(handler)
    try:
        monkeypatch.setenv("CUDA_HOME", "/usr/local/cuda-from-a-toolkit")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert cpp._find_cuda_home() == "/usr/local/cuda-from-a-toolkit"  # the call that printed it
    finally:
        cpp.logger.removeHandler(handler)
    assert not [m for m in heard if "No CUDA runtime" in m], heard
