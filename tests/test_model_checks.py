"""Model folders and ONNX files are checked when opened: one line, never a wrong answer or NaN (issue 27, 3, 5-7)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graft
from conftest import run_cli
from graft.artifact.onnx_meta import METADATA_KEY, onnx_metadata
from graft.artifact.spec import ArtifactSpec
from graft.exceptions import ModelFileError
from graft.transforms.eval import Preprocessing


# ---------------------------------------------------------------------------- ONNX files (item 3, 5b, 7)
def _onnx_file(
    path: Path,
    *,
    classes: int = 2,
    outputs: int = 2,
    size: int = 32,
    meta_size: int | None = None,
    names: tuple[str, str] = ("logits", "probabilities"),
    nan: bool = False,
) -> Path:
    """A tiny graph (mean colour -> linear -> softmax) carrying graft metadata that may disagree with it."""
    w = np.random.default_rng(0).standard_normal((3, outputs)).astype(np.float32)
    if nan:
        w[0, 0] = np.nan
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["pooled"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], [names[0]]),
            helper.make_node("Softmax", [names[0]], [names[1]], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", outputs]) for n in names],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    pre = Preprocessing(input_size=(meta_size or size, meta_size or size))
    spec = ArtifactSpec(tuple(f"c{i}" for i in range(classes)), pre, {"architecture": "tiny"})
    helper.set_model_props(model, {METADATA_KEY: json.dumps(onnx_metadata(spec, opset=17))})
    onnx.save(model, str(path))
    return path


@pytest.fixture
def photo(tmp_path: Path, make_image: Any) -> Path:
    return make_image(tmp_path / "photo.png", size=(40, 30))


def test_a_consistent_onnx_file_predicts(tmp_path: Path, photo: Path) -> None:
    from graft.predict.onnx import OnnxPredictor

    (row,) = OnnxPredictor(_onnx_file(tmp_path / "ok.onnx")).predict([photo], top_k=2)
    assert row["label"] in {"c0", "c1"} and len(row["top_k"]) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": 3}, "lists 3 class(es) but the graph gives 2 outputs"),
        ({"classes": 1}, "lists 1 class(es) but the graph gives 2 outputs"),
        ({"meta_size": 48}, "takes 3x32x32 inputs but its preprocessing makes 3x48x48"),
        ({"names": ("scores", "probabilities")}, "lacks output(s) ['logits']"),
    ],
    ids=["3-names-2-outputs", "1-name-2-outputs", "input-size", "output-names"],
)
def test_an_onnx_file_disagreeing_with_its_metadata_is_one_line(
    tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str], kwargs: dict[str, Any], message: str
) -> None:
    bad = _onnx_file(tmp_path / "bad.onnx", **kwargs)
    code, out, err = run_cli(["predict", bad, photo, "--json"], capsys)
    assert code == 2, err
    assert out == ""
    assert err.startswith("error: ") and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_an_onnx_file_answering_nan_is_refused(tmp_path: Path, photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _onnx_file(tmp_path / "nan.onnx", nan=True)
    code, out, err = run_cli(["predict", bad, photo, "--json"], capsys)
    assert code == 2 and out == "", (out, err)
    assert "non-finite outputs" in err and len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------------------- model folders (items 5a, 6, 7)
def _copy(tiny_model_dir: Path, dst: Path, **preprocessing: Any) -> Path:
    shutil.copytree(tiny_model_dir, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["preprocessing"].update(preprocessing)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input_size": "288"}, "'input_size'"),
        ({"input_size": [224]}, "'input_size'"),
        ({"std": [0, 0.224, 0.225]}, "'std'"),
        ({"std": [float("nan"), 0.224, 0.225]}, "'std'"),
        ({"mean": "0.5"}, "'mean'"),
    ],
    ids=["size-string", "size-one-number", "std-zero", "std-nan", "mean-string"],
)
def test_wrong_types_in_the_preprocessing_blame_the_model_file(
    tmp_path: Path,
    tiny_model_dir: Path,
    synthetic_dataset: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, Any],
    message: str,
) -> None:
    bad = _copy(tiny_model_dir, tmp_path / "bad", **change)
    images = synthetic_dataset / "val" / "red"
    code, out, err = run_cli(["predict", bad, images, "--json"], capsys)
    assert code == 2, (out, err)
    assert out == ""  # nothing per image: the model file is at fault, not each photo
    assert err.startswith(f"error: {bad / 'config.json'}: preprocessing") and message in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_nan_weights_are_refused_by_predict_evaluate_and_serve(
    tmp_path: Path, tiny_model_dir: Path, synthetic_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file, save_file

    bad = shutil.copytree(tiny_model_dir, tmp_path / "nan")
    state = load_file(str(bad / "model.safetensors"))
    key = next(k for k in state if k.startswith("head") and k.endswith("weight"))
    state[key][0, 0] = float("nan")
    save_file(state, str(bad / "model.safetensors"))
    for args in (["predict", bad, synthetic_dataset / "val", "--json"], ["evaluate", bad, synthetic_dataset, "--json"]):
        code, out, err = run_cli(args, capsys)
        assert code == 2 and "NaN" not in out, (args, out, err)
        assert err.startswith("error: ") and "non-finite" in err and len(err.strip().splitlines()) == 1, err
    from graft.serve import create_app

    with pytest.raises(ModelFileError, match="non-finite"):
        create_app(bad, backend="torch")


def test_a_deeply_nested_config_is_one_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    bad = shutil.copytree(tiny_model_dir, tmp_path / "deep")
    (bad / "config.json").write_text('{"format": "graft-model", "x": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(ModelFileError, match="nested too deeply"):
        graft.load(bad)


def test_a_served_model_answering_nan_is_an_error_never_a_null_probability(
    tiny_model_dir: Path, synthetic_dataset: Path
) -> None:
    import torch
    from fastapi.testclient import TestClient

    from graft.predict import open_predictor
    from graft.serve import create_app

    pred: Any = open_predictor(tiny_model_dir, "torch")
    image = (synthetic_dataset / "val" / "red" / "red_08.png").read_bytes()
    with TestClient(create_app(backend=pred)) as client:
        with torch.no_grad():
            next(pred.net.head.parameters()).fill_(float("nan"))  # damaged after it was opened
        r = client.post("/predict", files={"file": ("red.png", image, "image/png")})
    assert r.status_code == 500 and "non-finite outputs" in r.json()["detail"], r.text
