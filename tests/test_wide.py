"""Wide features: three backbones in one network (``--features wide``, the ladder's wide rung), and the budget plan."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import graft
from conftest import TINY_BACKBONE, isolated_graft_home, make_synthetic_dataset
from graft.exceptions import ModelFileError

#: Tiny timm networks with the tiny backbone's normalisation: they stand in for Lite1 and Lite2.
MEMBERS = ("test_efficientnet_ln", "test_byobnet")
#: One with another normalisation (0.5/0.5): it would read the shared input wrongly, so it is left out.
OTHER_NORM = "test_efficientnet_gn"


@pytest.fixture(scope="module")
def wide_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A GRAFT_HOME whose weights folder holds the tiny backbone and two tiny members (random weights)."""
    import timm
    import torch
    from safetensors.torch import save_file

    with isolated_graft_home(tmp_path_factory, "wide_home") as home, pytest.MonkeyPatch.context() as mp:
        (home / "weights").mkdir()
        for seed, name in enumerate((TINY_BACKBONE, *MEMBERS, OTHER_NORM)):
            torch.manual_seed(seed)
            m = timm.create_model(name, pretrained=False)
            save_file(
                {k: v.contiguous() for k, v in m.state_dict().items()}, str(home / "weights" / f"{name}.safetensors")
            )
        from graft.features import wide

        mp.setattr(wide, "WIDE_MEMBERS", (*MEMBERS, OTHER_NORM))
        yield home


@pytest.fixture
def in_wide_home(wide_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test runs in :func:`wide_home` (its weights; features cached by the tests before it)."""
    monkeypatch.setenv("GRAFT_HOME", str(wide_home))
    return wide_home


@pytest.fixture(scope="module")
def wide_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("wide") / "d", per_class=60)


def _clf(**kw: Any) -> graft.Classifier:
    return graft.Classifier(TINY_BACKBONE, num_workers=0, precision="fp32", **kw)


@pytest.fixture(scope="module")
def wide_model(wide_home: Path, wide_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    clf = _clf(features="wide").fit(wide_data)
    out = tmp_path_factory.mktemp("wide_model") / "m"
    clf.save(out)
    return clf, out


def test_features_wide_saves_one_network_with_three_backbones_that_predicts_as_validated(
    wide_model: tuple[Any, Path],
) -> None:
    clf, out = wide_model
    info = json.loads((out / "config.json").read_text())["backbone"]
    assert info["architecture"] == "wide"
    assert [m["architecture"] for m in info["members"]] == [TINY_BACKBONE, *MEMBERS]
    assert clf.head_spec_.in_features == info["num_features"] == sum(m["num_features"] for m in info["members"])
    back = graft.load(out)
    assert len(back.model_.backbone.members) == 3
    probs, ok, _bad = back.predict_proba(clf.val_paths_)  # through the composite module, not the members' caches
    assert len(ok) == len(clf.val_paths_)
    np.testing.assert_allclose(probs, clf.val_probs_, atol=1e-4)


def test_the_onnx_graph_of_a_wide_model_matches_pytorch(wide_model: tuple[Any, Path], tmp_path: Path) -> None:
    import onnx

    from graft.export import export_onnx
    from graft.predict import open_predictor

    clf, out = wide_model
    report = export_onnx(out, tmp_path / "wide.onnx")
    assert report.max_abs_diff <= report.tolerance and report.top1_agreement == 1.0
    graph = onnx.load(str(tmp_path / "wide.onnx")).graph
    assert sum(n.op_type == "GlobalAveragePool" or n.op_type == "ReduceMean" for n in graph.node) >= 3
    probs, _ok, _bad = open_predictor(tmp_path / "wide.onnx").predict_proba(clf.val_paths_)
    np.testing.assert_allclose(probs, clf.val_probs_, atol=1e-4)


@pytest.mark.parametrize(
    "members", [[{"architecture": "hf-hub:someone/model", "feature_taps": []}], [], "x", [{"feature_taps": [True]}]]
)
def test_a_damaged_members_list_is_a_one_line_model_error(
    wide_model: tuple[Any, Path], tmp_path: Path, members: Any
) -> None:
    _clf_, out = wide_model
    bad = tmp_path / "m"
    shutil.copytree(out, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["backbone"]["members"] = members
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="config.json"):
        graft.load(bad)


def _shuffled_val_copy(src: Path, dst: Path) -> Path:
    """The dataset with its validation images moved to other class folders (a derangement of the classes)."""
    shutil.copytree(src, dst)
    classes = sorted(p.name for p in (dst / "val").iterdir())
    for c in classes:
        (dst / "val" / c).rename(dst / "val" / f"_{c}")
    for c, to in zip(classes, classes[1:] + classes[:1]):
        (dst / "val" / f"_{c}").rename(dst / "val" / to)
    return dst


def test_the_held_out_slice_not_validation_decides_the_wide_rung(
    in_wide_home: Path, wide_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graft.training.fit import ladder

    # No fine-tuning rung fits: this test is about the choice between the head and the wide rung.
    monkeypatch.setattr(ladder, "epochs_now", lambda *_a: 0)
    runs = [_clf().fit(d, budget="10m") for d in (wide_data, _shuffled_val_copy(wide_data, tmp_path / "s"))]
    tables = [[(r["rung"], r["kept"], r["held_out_accuracy"], r["held_out_loss"]) for r in c.ladder_] for c in runs]
    assert [t[0] for t in tables[0][:2]] == ["head", "wide"]
    assert tables[0] == tables[1]  # the same scores on the same held-out images: the same choice
    val = [[r["val_accuracy"] for r in c.ladder_[:2]] for c in runs]
    assert min(val[0]) > 0.9 and max(val[1]) < 0.2, val  # validation did change, completely
    kept = runs[0].stage_metrics_["ladder"]["kept"]
    assert runs[0].backbone_info_["architecture"] == ("wide" if kept == "wide" else TINY_BACKBONE)


def test_a_kept_wide_rung_becomes_the_model(
    in_wide_home: Path, wide_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graft.training.fit import ladder

    monkeypatch.setattr(ladder, "epochs_now", lambda *_a: 0)
    real = ladder.refit_head_without
    calls: list[int] = []

    def worse_head(*a: Any, **k: Any) -> Any:  # the head (first call) scores 0 on the held-out slice
        st, loss = real(*a, **k)
        calls.append(1)
        return (st if len(calls) > 1 else _zero(st)), loss

    monkeypatch.setattr(ladder, "refit_head_without", worse_head)
    clf = _clf().fit(wide_data, budget="10m")
    assert clf.stage_metrics_["ladder"]["kept"] == "wide" and clf.backbone_info_["architecture"] == "wide"
    clf.save(tmp_path / "m")
    probs, _ok, _bad = graft.load(tmp_path / "m").predict_proba(clf.val_paths_)
    np.testing.assert_allclose(probs, clf.val_probs_, atol=1e-4)


def _zero(st: Any) -> Any:
    import dataclasses

    return dataclasses.replace(st, metrics={**st.metrics, "accuracy": 0.0})


def test_features_wide_with_a_budget_is_refused_in_one_line(wide_data: Path) -> None:
    from graft.exceptions import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="leave out one of the two"):
        _clf(features="wide").fit(wide_data, budget="1m")


def test_no_plan_leaves_more_than_a_quarter_unused_while_a_rung_still_fits() -> None:
    """The plan is maximal: where over 25% of the time is left, no rung can take one more epoch of it."""
    from graft.training.fit.budget_plan import MIN_WHOLE_EPOCHS, MORE, RUNGS, UNUSED_MAX, Costs, plan, planned_seconds

    caps = {"top": RUNGS[1].max_epochs, "all": RUNGS[2].max_epochs, MORE.name: MORE.max_epochs}
    rng = np.random.default_rng(0)
    n_over = 0
    for _ in range(3000):
        top_later = float(rng.uniform(1, 400))
        costs = {
            "top": Costs(top_later * float(rng.uniform(1, 4)), top_later, 2),
            "all": Costs(*(2 * [top_later * float(rng.uniform(1.5, 8))]), 2),
        }
        avail, val_cost = float(rng.uniform(10, 3000)), float(rng.uniform(0, 30))
        e = plan(avail, costs, val_cost)
        left = avail - planned_seconds(e, costs, val_cost)
        assert left >= -1e-6, (e, costs, avail)
        if left <= UNUSED_MAX * avail:
            continue
        n_over += 1

        def one_more(name: str, c: Costs, n: int, start: int, room: tuple[float, float]) -> bool:
            """Whether the rung's next epoch(s) fit in ``room`` (seconds left, validation cost)."""
            extra = c.epochs(n + start) - c.epochs(n) + (room[1] if n == 0 else 0.0)
            return n + start <= caps[name] and extra <= room[0]

        top, whole, room = costs["top"], costs["all"], (left, val_cost)
        assert not one_more("top", top, e["top"], 1, room), (e, costs, avail, left)
        assert not (e["top"] and one_more(MORE.name, top, e[MORE.name], 1, room)), (e, costs, avail, left)
        assert not one_more("all", whole, e["all"], 1 if e["all"] else MIN_WHOLE_EPOCHS, room), (e, costs, avail)
    assert n_over > 0  # the cases where nothing more fits were met, and checked
