"""ONNX export of the tiny model: parity, metadata, dynamic batch, int8, clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from graft.artifact.onnx_meta import METADATA_KEY
from graft.exceptions import ExportError, InvalidParameterError, ModelFileError
from graft.export import export_onnx
from graft.predict.onnx import read_onnx_metadata


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, run_copy: Path):
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(run_copy, out), out


def _torch_logits(model_dir: Path, batch: np.ndarray) -> np.ndarray:
    import torch

    from graft.artifact.model_dir import load_model

    with torch.inference_mode():
        return load_model(model_dir).net(torch.from_numpy(batch)).numpy()


def test_parity_report_on_training_images(exported, run_copy: Path, synthetic_dataset: Path) -> None:
    report, out = exported
    assert out.is_file() and report.path == out
    assert report.size_bytes == out.stat().st_size > 10_000
    assert report.check_source == f"training data {synthetic_dataset}"
    assert report.n_check == 8
    assert report.max_abs_diff < 1e-4
    assert report.top1_agreement == 1.0
    assert report.batch_sizes == [1, 8]
    assert report.quantization is None
    assert "max |logit diff|" in "\n".join(report.lines())


def test_metadata_round_trip(exported, run_copy: Path) -> None:
    _, out = exported
    cfg = json.loads((run_copy / "config.json").read_text())
    meta = read_onnx_metadata(out)
    assert meta["format"] == "graft-onnx"
    assert meta["classes"] == cfg["classes"] == ["blue", "green", "red"]
    assert meta["preprocessing"] == cfg["preprocessing"]
    assert meta["backbone"]["architecture"] == cfg["backbone"]["architecture"]
    assert meta["graft_version"]
    assert meta["metrics"]["accuracy"] == cfg["metrics"]["accuracy"]
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props[METADATA_KEY]) == meta
    assert json.loads(props["classes"]) == cfg["classes"]


def test_dynamic_batch_and_probabilities_output(exported, run_copy: Path) -> None:
    _, out = exported
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits", "probabilities", "ood_score"]
    assert sess.get_inputs()[0].shape[0] == "batch"
    h, w = read_onnx_metadata(out)["preprocessing"]["input_size"]
    x = np.random.default_rng(1).standard_normal((5, 3, h, w)).astype(np.float32)
    ref = _torch_logits(run_copy, x)
    for n in (1, 5):
        logits, probs, ood = sess.run(None, {"input": x[:n]})
        assert logits.shape == (n, 3) and probs.shape == (n, 3) and ood.shape == (n,)
        np.testing.assert_allclose(logits, ref[:n], atol=1e-4)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_check_images_and_synthetic_fallback(tmp_path: Path, tiny_model_dir: Path, synthetic_dataset: Path) -> None:
    r = export_onnx(tiny_model_dir, tmp_path / "a.onnx", check_images=[synthetic_dataset / "val" / "red"])
    assert r.check_source == "given" and r.n_check == 4
    r = export_onnx(tiny_model_dir, tmp_path / "b.onnx")  # no run.json beside it: synthetic images
    assert r.check_source == "synthetic" and r.max_abs_diff < 1e-4


def test_quantize_int8_reports(tmp_path: Path, run_copy: Path) -> None:
    r = export_onnx(run_copy, tmp_path / "q.onnx", quantize="int8")
    q = r.quantization
    assert q is not None and q["method"] == "static" and q["n_calibration"] == 24
    assert q["n_val"] == 12 and 0.0 <= q["val_accuracy_int8"] <= 1.0
    assert q["accuracy_drop"] == pytest.approx(q["val_accuracy_fp32"] - q["val_accuracy_int8"])
    assert q["int8_bytes"] == (tmp_path / "q.onnx").stat().st_size
    assert q["fp32_latency_ms"] > 0 and q["int8_latency_ms"] > 0
    assert read_onnx_metadata(tmp_path / "q.onnx")["quantization"] == "int8-static"
    text = "\n".join(r.lines())
    assert "val accuracy (12 images)" in text and "MB ->" in text


def test_parity_failure_is_loud_and_writes_nothing(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "never.onnx"
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(tiny_model_dir, out, tolerance=-1.0)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir()]  # temp files cleaned up


def test_bad_model_dir_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(ModelFileError, match="config.json is missing"):
        export_onnx(tmp_path / "notamodel", tmp_path / "x.onnx")
    with pytest.raises(InvalidParameterError, match="'quantize' parameter of export_onnx"):
        export_onnx(tmp_path / "notamodel", tmp_path / "x.onnx", quantize="int4")


def test_cli_export(tmp_path: Path, run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from graft.cli.main import main

    out = tmp_path / "cli.onnx"
    with pytest.raises(SystemExit) as e:
        main(["export", str(run_copy), "--out", str(out), "--json"])
    assert e.value.code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["path"] == str(out) and rep["top1_agreement"] == 1.0 and out.is_file()

    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "m.onnx")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "does not exist" in err and "Traceback" not in err

    with pytest.raises(SystemExit) as e:
        main(["export", str(run_copy), "--out", str(tmp_path / "t.onnx"), "--tolerance", "-1"])
    assert e.value.code == 1
    assert "differs from PyTorch" in capsys.readouterr().err
