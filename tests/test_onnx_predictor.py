"""Torch-free ONNX inference: same outputs as the PyTorch path, never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from graft.exceptions import ModelFileError
from graft.export import export_onnx
from graft.predict.onnx import OnnxPredictor, read_onnx_metadata
from graft.predict.results import softmax, top_k_results


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(tiny_model_dir, out)
    return out


def test_same_outputs_as_pytorch(
    tiny_onnx: Path, tiny_model_dir: Path, synthetic_dataset: Path, tmp_path: Path
) -> None:
    import graft

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not really a jpeg")
    inputs = [str(synthetic_dataset / "val"), str(bad), str(tmp_path / "missing.png")]
    ref = graft.load(tiny_model_dir, device="cpu", precision="fp32").predict(inputs, top_k=3)
    got = OnnxPredictor(tiny_onnx).predict(inputs, top_k=3)
    assert len(got) == len(ref) == 14
    assert [r["path"] for r in got] == [r["path"] for r in ref]
    for g, r in zip(got, ref):
        assert set(g) == set(r)
        if "error" in r:
            assert g["error"] == r["error"]
            continue
        assert g["label"] == r["label"]
        assert abs(g["probability"] - r["probability"]) < 1e-3
        assert [t["label"] for t in g["top_k"]] == [t["label"] for t in r["top_k"]]
        np.testing.assert_allclose(
            [t["probability"] for t in g["top_k"]], [t["probability"] for t in r["top_k"]], atol=1e-3
        )
    assert all(type(g["probability"]) is float for g in got if "probability" in g)  # JSON-ready


def test_cli_predict_onnx_never_imports_torch(tiny_onnx: Path, synthetic_dataset: Path) -> None:
    code = (
        "import sys, json, io, contextlib\n"
        "from graft.cli.main import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        f"        main(['predict', {str(tiny_onnx)!r}, {str(synthetic_dataset / 'val' / 'red')!r}, '--json', '-k', '2'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "rows = [json.loads(l) for l in buf.getvalue().splitlines()]\n"
        "print(json.dumps({'rows': rows, 'torch': 'torch' in sys.modules}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["torch"] is False
    assert len(out["rows"]) == 4 and all(len(r["top_k"]) == 2 for r in out["rows"])


def test_predict_arrays_and_images(tiny_onnx: Path, synthetic_dataset: Path) -> None:
    from graft.data.decode import load_image

    clf = OnnxPredictor(tiny_onnx, batch_size=2)
    paths = sorted((synthetic_dataset / "val" / "green").glob("*.png"))
    imgs = [load_image(p, draft_size=clf.preprocessing.decode_size) for p in paths]
    p_img = clf.predict_images(imgs)  # 4 images in batches of 2
    p_file, ok, failed = clf.predict_proba(paths)
    assert p_img.shape == (4, 3) and not failed and ok == [str(p) for p in paths]
    np.testing.assert_allclose(p_img, p_file, atol=1e-6)
    assert clf.predict_arrays(np.zeros((0, 3, 1, 1), np.float32)).shape == (0, 3)
    assert repr(clf).startswith("OnnxPredictor(")


def test_helpers() -> None:
    p = softmax(np.array([[0.0, np.log(3.0)], [1000.0, 0.0]]))
    np.testing.assert_allclose(p, [[0.25, 0.75], [1.0, 0.0]], atol=1e-6)
    r = top_k_results(p, ["a", "b"], top_k=5)
    assert r[0]["label"] == "b" and len(r[0]["top_k"]) == 2 and r[1]["top_k"][0] == {"label": "a", "probability": 1.0}


def test_foreign_and_missing_files_are_clean_errors(tmp_path: Path, tiny_onnx: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        OnnxPredictor(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(ModelFileError, match="cannot load"):
        OnnxPredictor(junk)
    m = onnx.load(str(tiny_onnx))
    del m.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(m, str(plain))
    with pytest.raises(ModelFileError, match="not exported by graft"):
        read_onnx_metadata(plain)


def test_every_onnx_session_is_opened_by_one_function_that_plans_memory_tensor_by_tensor() -> None:
    """The embedding engine and the predictor share one session factory (graft.onnxrt)."""
    import inspect

    import graft.features.engines as engines
    import graft.predict.onnx as predict_onnx
    from graft.onnxrt import onnx_session

    for module in (engines, predict_onnx):
        src = inspect.getsource(module)
        assert "InferenceSession(" not in src and "SessionOptions(" not in src, module.__name__
    with pytest.raises(ModelFileError, match="^exported backbone: ONNX Runtime cannot load"):
        onnx_session(b"not an onnx graph", name="exported backbone")
