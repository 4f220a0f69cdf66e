"""Errors a user can cause: one message template, one exit code per kind of mistake, bugs not swallowed.

Fast: nothing is trained and no model is loaded. Every test runs with its own
GRAFT_HOME (the autouse fixture in conftest.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image
from torch import nn

from conftest import run_cli
from graft.cli.main import main
from graft.exceptions import GraftError, InvalidParameterError
from graft.validation import Interval, Options, check_choice, check_param, invalid_parameter

TEMPLATE = re.compile(r"^The '[^']+' parameter of [\w. ]+ must be .+; got .+ instead\.$", re.S)


def assert_clean_error(err: str, *fragments: str) -> None:
    """stderr ends with one ``error: ...`` line (progress lines may come before), no traceback.

    The whole message must be on that one line (not wrapped at the terminal width), so a
    log keeps it greppable; ``fragments`` are looked for in it.
    """
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [i for i, ln in enumerate(lines) if ln.startswith("error: ")]
    assert len(errors) == 1, f"expected one 'error:' line on stderr:\n{err}"
    assert errors[0] == len(lines) - 1, f"the error message spans several lines:\n{err}"
    for f in fragments:
        assert f in lines[-1], (f, err)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    p = tmp_path / "img.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(p)
    return p


@pytest.fixture
def no_model(tmp_path: Path) -> Path:
    return tmp_path / "no-such-model"


# --------------------------------------------------------------------------- (a) the template
def test_check_choice_message() -> None:
    with pytest.raises(InvalidParameterError) as ei:
        check_choice("head", "conv", ("linear", "mlp", "flatten"), "Classifier")
    assert str(ei.value) == (
        "The 'head' parameter of Classifier must be one of 'linear', 'mlp', 'flatten'; got 'conv' instead."
    )
    assert check_choice("head", "mlp", ("linear", "mlp"), "Classifier") == "mlp"


@pytest.mark.parametrize(
    ("value", "constraints", "message"),
    [
        (
            1.5,
            (Interval(0, 1, closed="left"),),
            "The 'dropout' parameter of HeadSpec must be a number in the range [0, 1); got 1.5 instead.",
        ),
        (
            0,
            (Interval(0, None, closed="right"),),
            "The 'dropout' parameter of HeadSpec must be a number > 0; got 0 instead.",
        ),
        (
            "x",
            (Interval(0, 1),),
            "The 'dropout' parameter of HeadSpec must be a number in the range [0, 1]; got 'x' instead.",
        ),
        (float("nan"), (Interval(),), "The 'dropout' parameter of HeadSpec must be a number; got nan instead."),
        (True, (Interval(),), "The 'dropout' parameter of HeadSpec must be a number; got True instead."),
        (
            2.0,
            (Interval(1, integer=True),),
            "The 'dropout' parameter of HeadSpec must be an int >= 1; got 2.0 instead.",
        ),
        ("x", (Interval(), None), "The 'dropout' parameter of HeadSpec must be a number or None; got 'x' instead."),
    ],
)
def test_check_param_message(value: Any, constraints: tuple[Any, ...], message: str) -> None:
    with pytest.raises(InvalidParameterError) as ei:
        check_param("dropout", value, "HeadSpec", *constraints)
    assert str(ei.value) == message


def test_check_param_accepts_valid_values() -> None:
    assert check_param("x", 0.5, "f", Interval(0, 1)) == 0.5
    assert check_param("x", None, "f", Interval(), None) is None
    assert check_param("x", 3, "f", Interval(1, integer=True)) == 3
    assert check_param("x", "auto", "f", Options(("auto",)), Interval(0, integer=True)) == "auto"


def test_invalid_parameter_is_a_value_error_with_exit_code_2() -> None:
    e = invalid_parameter("steps", "attack", "an int >= 1", 0)
    assert isinstance(e, GraftError) and isinstance(e, ValueError) and e.exit_code == 2
    assert str(e) == "The 'steps' parameter of attack must be an int >= 1; got 0 instead."


def _target(n_classes: int = 2) -> Any:
    from graft.explain.target import ExplainTarget
    from graft.transforms.eval import Preprocessing

    return ExplainTarget(
        nn.Linear(2, n_classes), Preprocessing(input_size=(32, 32)), [f"c{i}" for i in range(n_classes)], "t"
    )


def _cases() -> list[tuple[str, Callable[[], Any], str]]:
    """(id, call, a regex its message must match): the library's own parameter checks."""
    from graft.backbones.resolution import feature_preprocessing
    from graft.cli.explain import parse_epsilon
    from graft.config import resolve_device
    from graft.explain import attack, dream
    from graft.features.embedder import choose_precision
    from graft.network import HeadSpec
    from graft.training.finetune.policy import FineTunePolicy
    from graft.transforms.eval import Preprocessing
    from graft.transforms.train import build_feature_view_transform, build_train_transform, resolve_augment_views

    rgb = np.zeros((32, 32, 3), np.uint8)
    pre = Preprocessing(input_size=(32, 32))
    return [
        ("crop_pct", lambda: Preprocessing(crop_pct=0.0), r"'crop_pct' parameter of Preprocessing .*\(0, 1\]"),
        ("interpolation", lambda: Preprocessing(interpolation="cubic"), r"'interpolation' parameter of Preprocessing"),
        ("crop_mode", lambda: Preprocessing(crop_mode="stretch"), r"'crop_mode' parameter of Preprocessing"),
        ("strength", lambda: build_train_transform(pre, strength="heavy"), r"'strength' .* one of 'default'"),
        ("view", lambda: build_feature_view_transform(pre, -1, seed=0), r"'view' parameter .* >= 0; got -1"),
        ("augment_views", lambda: resolve_augment_views("many", 10), r"'augment_views' parameter"),
        ("input_size", lambda: feature_preprocessing(nn.Identity(), pre, 8), r"'input_size' .* at least 32; got 8"),
        ("input_size_word", lambda: feature_preprocessing(nn.Identity(), pre, "huge"), r"'input_size' .*'huge'"),
        ("input_size_nan", lambda: feature_preprocessing(nn.Identity(), pre, float("nan")), r"'input_size'"),
        ("device", lambda: resolve_device("gpu"), r"'device' parameter of resolve_device .*'cuda:N'; got 'gpu'"),
        ("device_cuda_typo", lambda: resolve_device("cudaa"), r"'device' parameter of resolve_device"),
        ("unfreeze", lambda: FineTunePolicy(unfreeze=0), r"'unfreeze' parameter of FineTunePolicy"),
        ("backbone_lr_ratio", lambda: FineTunePolicy(backbone_lr_ratio=0), r"'backbone_lr_ratio' .* \(0, 10\]"),
        ("head_type", lambda: HeadSpec("conv", 8, 2), r"'type' parameter of HeadSpec must be one of 'linear'"),
        ("head_dropout", lambda: HeadSpec("linear", 8, 2, dropout=1.0), r"'dropout' parameter of HeadSpec .*\[0, 1\)"),
        ("precision", lambda: choose_precision("int8", "cpu"), r"'precision' parameter of choose_precision"),
        ("epsilon", lambda: attack(_target(), rgb, epsilon=0.0), r"'epsilon' parameter of attack .*\(0, 1\]"),
        ("epsilon_grey", lambda: attack(_target(), rgb, epsilon=0.001), r"'epsilon' .* grey level"),
        ("attack_steps", lambda: attack(_target(), rgb, steps=0), r"'steps' parameter of attack must be an int >= 1"),
        ("attack_target", lambda: attack(_target(), rgb, target_index=5), r"'target_index' parameter of attack"),
        ("dream_class", lambda: dream(_target(), 7), r"'class_index' parameter of dream .*\[0, 1\]; got 7"),
        ("dream_steps", lambda: dream(_target(), 0, steps=0), r"'steps' parameter of dream"),
        ("dream_objective", lambda: dream(_target(), 0, objective="prob"), r"'objective' parameter of dream"),
        ("cli_epsilon", lambda: parse_epsilon("lots"), r"'--epsilon' parameter of graft attack .*got 'lots'"),
    ]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_library_parameter_checks_use_the_template(case: tuple[str, Callable[[], Any], str]) -> None:
    _, call, pattern = case
    with pytest.raises(InvalidParameterError, match=pattern) as ei:
        call()
    assert isinstance(ei.value, ValueError) and ei.value.exit_code == 2
    assert TEMPLATE.match(str(ei.value)), str(ei.value)


def test_cuda_asked_without_a_gpu_names_device_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from graft.config import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidParameterError, match="--device cpu") as ei:
        resolve_device("cuda")
    assert TEMPLATE.match(str(ei.value))
    assert resolve_device("auto") == "cpu" and resolve_device("CPU") == "cpu"


def test_lookups_are_graft_errors_with_their_hints() -> None:
    from graft.explain import get_layer, resolve_class

    classes = ["tabby cat", "tiger cat", "dog"]
    with pytest.raises(InvalidParameterError, match=r"'cat' matches 2 classes \(0: tabby cat; 1: tiger cat\)"):
        resolve_class(classes, "cat")
    with pytest.raises(InvalidParameterError, match=r"no class matches 'zzz'; classes are: tabby cat, tiger cat, dog"):
        resolve_class(classes, "zzz")
    with pytest.raises(InvalidParameterError, match="class index 9 is out of range"):
        resolve_class(classes, "9")
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(InvalidParameterError, match=r"no layer named '2' in the network; list them"):
        get_layer(net, "2")
    for e in (InvalidParameterError("x"),):
        assert isinstance(e, ValueError) and e.exit_code == 2


# --------------------------------------------------------------------------- (b) same mistake, same exit code
@pytest.mark.parametrize(
    "args",
    [
        ["predict", "{model}", "{image}"],
        ["evaluate", "{model}", "{data}"],
        ["export", "{model}", "--out", "{out}"],
        ["serve", "{model}"],
        ["explain", "{model}", "{image}", "--device", "cpu"],
        ["features", "{model}", "{image}", "--device", "cpu"],
        ["dream", "{model}", "0", "--device", "cpu"],
        ["attack", "{model}", "{image}", "--untargeted", "--device", "cpu"],
    ],
    ids=lambda a: a[0],
)
def test_missing_model_folder_is_exit_2_everywhere(
    args: list[str],
    no_model: Path,
    image: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    import graft.serve

    def no_server(*_a: Any, **_k: Any) -> None:
        raise AssertionError("serve started a server for a model folder that does not exist")

    monkeypatch.setattr(uvicorn, "run", no_server)
    monkeypatch.setattr(uvicorn.Server, "run", no_server)
    monkeypatch.setattr(graft.serve, "run_server", no_server)
    fill = {"model": str(no_model), "image": str(image), "data": str(tmp_path), "out": str(tmp_path / "m.onnx")}
    code, _, err = run_cli([a.format(**fill) for a in args], capsys)
    assert code == 2, err
    assert_clean_error(err, "no-such-model")
    assert not (tmp_path / "m.onnx").exists()


def test_bad_choice_option_of_train_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["train", tmp_path, "--head", "nonsense"], capsys)
    assert code == 2, err
    assert "Traceback" not in err and "nonsense" in err


def test_unknown_option_is_exit_2(no_model: Path, image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["explain", no_model, image, "--epsilon", "abc"], capsys)
    assert code == 2, err
    assert "Traceback" not in err


def test_attack_bad_epsilon_is_exit_2(no_model: Path, image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["attack", no_model, image, "--untargeted", "--epsilon", "abc"], capsys)
    assert code == 2, err
    assert_clean_error(err, "'--epsilon' parameter", "'abc'")


@pytest.mark.parametrize("flags", [[], ["--target", "c0", "--untargeted"]], ids=["neither", "both"])
def test_attack_needs_exactly_one_of_target_or_untargeted(
    flags: list[str], no_model: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["attack", no_model, image, *flags], capsys)
    assert code == 2, err
    assert_clean_error(err, "exactly one of --target CLASS or --untargeted")


def test_features_without_image_is_exit_2(
    no_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import graft.explain

    monkeypatch.setattr(graft.explain, "load_target", lambda *a, **k: _target())
    code, _, err = run_cli(["features", no_model, "--device", "cpu"], capsys)
    assert code == 2, err
    assert_clean_error(err, "missing IMAGE")


def test_bad_device_is_exit_2(no_model: Path, image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["explain", no_model, image, "--device", "gpu"], capsys)
    assert code == 2, err
    assert_clean_error(err, "'device' parameter of resolve_device", "'gpu'")


def test_unknown_class_is_exit_2(
    no_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import graft.explain

    monkeypatch.setattr(graft.explain, "load_target", lambda *a, **k: _target(3))
    code, _, err = run_cli(["dream", no_model, "zebra", "--device", "cpu"], capsys)
    assert code == 2, err
    assert_clean_error(err, "no class matches 'zebra'", "c0, c1, c2")


# --------------------------------------------------------------------------- (c) bugs keep their traceback
@pytest.mark.parametrize(
    ("module", "name", "args"),
    [
        ("graft.predict", "open_predictor", ["predict", "{model}", "{image}"]),
        ("graft.explain", "load_target", ["explain", "{model}", "{image}", "--device", "cpu"]),
        ("graft.report", "write_report", ["report", "{model}"]),
    ],
    ids=["predict", "explain", "report"],
)
@pytest.mark.parametrize("exc", [RuntimeError, ValueError, KeyError], ids=lambda e: e.__name__)
def test_a_bug_is_not_swallowed(
    module: str,
    name: str,
    args: list[str],
    exc: type[Exception],
    no_model: Path,
    image: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    def broken(*_a: Any, **_k: Any) -> None:
        raise exc("internal bug")

    monkeypatch.setattr(importlib.import_module(module), name, broken)
    argv = [a.format(model=no_model, image=image) for a in args]
    with pytest.raises(exc, match="internal bug"):
        main(argv)
