"""The layout's promises: a model is opened and run without the trainer; defaults are stated once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_opening_a_model_for_prediction_imports_no_training_module(tiny_model_dir: Path, make_image) -> None:
    image = make_image(tiny_model_dir.parent / "probe.png")
    code = (
        "import sys\n"
        "from graft.predict.open import open_predictor\n"
        f"p = open_predictor({str(tiny_model_dir)!r}, backend='torch', device='cpu', num_workers=0)\n"
        f"rows = p.predict([{str(image)!r}])\n"
        "assert rows and rows[0]['label'], rows\n"
        "import graft.export, graft.serve.app\n"
        "print(*sorted(m for m in sys.modules if m.startswith('graft.')))\n"
    )
    loaded = _modules_after(code)
    assert "graft.network.net" in loaded and "graft.artifact.model_dir" in loaded  # it did open the model
    assert not {m for m in loaded if m.startswith("graft.training")}, sorted(loaded)


def test_head_types_come_from_the_registry() -> None:
    from torch import nn

    from graft.network import HEAD_TYPES, HeadSpec, build_head

    assert HEAD_TYPES[0] == "linear" and set(HEAD_TYPES) == {"linear", "mlp", "flatten"}
    for name in HEAD_TYPES:
        head = build_head(HeadSpec(name, 8, 3))
        assert isinstance(head[-1], nn.Linear) and head[-1].out_features == 3
    assert HeadSpec("flatten", 8, 3).spatial and not HeadSpec("mlp", 8, 3).spatial


def test_src_has_no_formatter_escapes() -> None:
    src = Path(__file__).resolve().parents[1] / "src" / "graft"
    offenders = [str(p) for p in src.rglob("*.py") if "fmt: skip" in p.read_text() or "fmt: off" in p.read_text()]
    assert not offenders
