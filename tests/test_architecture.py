"""The layout's promises: a model is opened and run without the trainer; defaults are stated once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


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


def test_classifier_is_a_scikit_learn_estimator_where_that_applies() -> None:
    """The checks of ``sklearn.utils.estimator_checks`` that need no numeric X (graft takes image paths)."""
    import warnings

    from sklearn.base import clone
    from sklearn.utils import estimator_checks as ec

    import graft
    from graft.exceptions import InvalidParameterError

    clf = graft.Classifier(head="mlp", C=0.5, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a check that only warns has failed too
        for check in (
            ec.check_parameters_default_constructible,
            ec.check_no_attributes_set_in_init,
            ec.check_get_params_invariance,
            ec.check_set_params,
            ec.check_estimator_cloneable,
            ec.check_estimator_repr,
            ec.check_do_not_raise_errors_in_init_or_set_params,
        ):
            check("Classifier", clone(clf))
    copy = clone(clf)
    assert copy is not clf and copy.get_params() == clf.get_params() and copy.head == "mlp"
    assert copy.set_params(dropout=0.5) is copy and copy.dropout == 0.5 and clf.dropout == 0.2
    assert repr(clf) == "Classifier(head='mlp', C=0.5, seed=3)"
    with pytest.raises(InvalidParameterError, match="'dropuot' parameter of Classifier.set_params"):
        copy.set_params(dropuot=0.5)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"head": "conv"}, "The 'head' parameter of Classifier must be one of 'linear', 'mlp', 'flatten'"),
        ({"C": 0}, "The 'C' parameter of Classifier must be a number > 0 or None; got 0 instead."),
        ({"val_fraction": 1.0}, "The 'val_fraction' parameter of Classifier must be a number in the range (0, 1)"),
        ({"augment_views": -1}, "The 'augment_views' parameter of Classifier must be one of 'auto' or an int >= 0"),
        ({"precision": "fp8"}, "The 'precision' parameter of Classifier must be one of 'auto', 'fp32', 'bf16', 'fp16'"),
        ({"class_weight": "inverse"}, "The 'class_weight' parameter of Classifier must be one of None, 'balanced'"),
    ],
)
def test_declared_constraints_are_checked_in_one_place(params: dict, message: str, tmp_path: Path) -> None:
    import graft
    from graft.exceptions import InvalidParameterError

    with pytest.raises(InvalidParameterError) as ei:
        graft.Classifier(**params).fit(tmp_path)  # refused before the folder is read
    assert str(ei.value).startswith(message)


def test_each_default_is_stated_once() -> None:
    """The facade, the run options and the command line read their defaults from the options objects."""
    import inspect

    import graft
    from graft.cli.train import train
    from graft.training.finetune.options import FineTuneConfig
    from graft.training.head.options import HeadOptions

    sig = inspect.signature(graft.Classifier.__init__).parameters
    assert sig["dropout"].default == HeadOptions.dropout and sig["hidden"].default == HeadOptions.hidden
    cli = inspect.signature(train).parameters
    assert cli["epochs"].default.default == FineTuneConfig.epochs
    assert cli["lr"].default.default == FineTuneConfig.lr
    assert cli["ft_batch_size"].default.default == FineTuneConfig.batch_size
    assert cli["head"].default.default == HeadOptions.head


def test_engines_are_registered_by_name_and_graft_runtime_picks_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new runtime is one registered builder; GRAFT_RUNTIME forces it, and the CPU auto-tuning times it."""
    import timm
    import torch

    from graft.features import autotune, engines

    built: list[str] = []

    class Recording(engines.Engine):
        name = "recording"

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(x), 4)

    def build(req: engines.EngineRequest) -> engines.Engine:
        built.append(req.precision)
        return Recording()

    monkeypatch.setitem(
        engines.ENGINES,
        "recording",
        engines.EngineKind("recording", ("fp32",), build, lambda: True, lambda r, n: False),
    )
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    monkeypatch.setenv("GRAFT_RUNTIME", "recording")
    engine = engines.build_engine(model, (32, 32), device="cpu", precision="fp32", n_images=1)
    assert isinstance(engine, Recording) and built == ["fp32"]
    monkeypatch.delenv("GRAFT_RUNTIME")
    engine = engines.build_engine(model, (32, 32), device="cpu", precision="fp32", n_images=1)
    assert isinstance(engine, engines.TorchEngine)  # it does not pay on its own: the default path
    names = list(autotune._candidates(model, (32, 32), None))
    assert "recording-fp32" in names and names[0] == "torch-bf16" and names[-1] == "torch-fp32"
