"""The transfer ladder under a time budget (``fit(..., budget=...)``, ``graft train --budget``)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest

import graft
from conftest import TINY_BACKBONE, make_synthetic_dataset, run_cli
from graft.exceptions import InvalidParameterError


@pytest.fixture(scope="module")
def ladder_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 40 training images: enough to hold out a 10% slice (12 images)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("ladder") / "d", per_class=60)


@pytest.fixture(autouse=True)
def _no_wide_members(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the fine-tuning rungs: no backbone to add, no wide rung (tests/test_wide.py)."""
    from graft.features import wide

    monkeypatch.setattr(wide, "WIDE_MEMBERS", ())


def _clf(weights: Path) -> graft.Classifier:
    return graft.Classifier(TINY_BACKBONE, weights=weights, num_workers=0, precision="fp32")


def test_plan_gives_the_whole_backbone_the_larger_share_and_drops_it_when_it_cannot_fit() -> None:
    from graft.training.fit.budget_plan import TOP_SHARE, Costs, plan, plan_lines

    costs = {"top": Costs(first=10.0, later=2.0, views=2), "all": Costs(first=30.0, later=30.0, views=2)}
    plan300 = plan(300.0, costs, val_cost=1.0)
    assert 1 <= plan300["top"] <= 6 and costs["top"].epochs(plan300["top"]) <= 300 * TOP_SHARE
    assert plan300["all"] >= 2 and costs["top"].epochs(plan300["top"]) + costs["all"].epochs(plan300["all"]) <= 300
    short = plan(50.0, costs, val_cost=1.0)  # two whole-backbone epochs (60 s) do not fit
    assert short == {"top": 6, "all": 0, "top+": 2}  # what "top" at its cap leaves goes to more of it
    lines = plan_lines(20.0, 80.0, 50.0, short, costs, 5.0)  # one epoch (30 s) would: the plan says why not
    assert "all (whole backbone): skipped, 2 epochs (~60 s) do not fit" in lines[2]
    assert (
        "top (last 2 block groups): skipped, one epoch (~10 s) does not fit"
        in plan_lines(20.0, 80.0, 5.0, {"top": 0, "all": 0}, costs, 5.0)[1]
    )
    assert plan(5.0, costs, val_cost=1.0) == {"top": 0, "all": 0, "top+": 0}


def test_a_held_out_accuracy_tie_goes_to_the_lower_held_out_loss_else_to_the_cheaper_rung() -> None:
    from graft.training.fit.ladder import better

    assert better((0.98, 0.30), (0.97, 0.01))  # higher accuracy wins whatever the loss
    assert not better((0.96, 0.01), (0.97, 0.30))
    assert better((0.98, 0.10), (0.98, 0.12))  # a tie: the lower loss wins
    assert not better((0.98, 0.12), (0.98, 0.10))
    assert not better((0.98, 0.10), (0.98, 0.10))  # a full tie keeps the earlier, cheaper rung
    assert not better((0.98, None), (0.98, 0.5)) and not better((0.98, 0.1), (0.98, None))
    assert not better((None, None), (0.5, 0.5)) and better((0.5, None), (None, None))


def test_a_rung_left_out_of_the_plan_comes_back_when_an_earlier_one_stopped_early() -> None:
    from graft.training.fit.budget_plan import Costs, epochs_now

    top, whole = Costs(first=10.0, later=2.0, views=2), Costs(first=30.0, later=30.0, views=2)
    assert epochs_now(1, 6, top, 1000.0) == 6  # the first rung keeps its planned share
    assert epochs_now(1, 6, top, 25.0) == 4  # or what of it still fits: 10 + 10 + 2 + 2 s
    assert epochs_now(2, 0, whole, 59.0) == 0  # left out, and 2 epochs still do not fit
    assert epochs_now(2, 0, whole, 95.0) == 3  # left out, but "top" stopped early: back in
    assert epochs_now(2, 4, whole, 40.0) == 0  # planned, but one epoch is all that fits now: skipped
    assert epochs_now(2, 4, whole, 65.0) == 2
    assert epochs_now(2, 4, whole, 10_000.0) == 12  # planned: up to its cap


def test_a_45_s_budget_ends_within_one_epoch_of_it_and_writes_the_ladder_table(
    ladder_data: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graft.training.fit import budget_plan, ladder, rungs

    # Uncapped epochs and patience: only the budget can end the rungs (the plan and the climb).
    uncapped = tuple(dataclasses.replace(r, max_epochs=r.max_epochs * 1000) for r in ladder.RUNGS)
    monkeypatch.setattr(ladder, "RUNGS", uncapped)
    monkeypatch.setattr(budget_plan, "RUNGS", uncapped)
    more = dataclasses.replace(budget_plan.MORE, max_epochs=budget_plan.MORE.max_epochs * 1000)
    monkeypatch.setattr(ladder, "MORE", more)
    monkeypatch.setattr(budget_plan, "MORE", more)
    monkeypatch.setattr(rungs, "LADDER_CONFIG", dataclasses.replace(rungs.LADDER_CONFIG, patience=10_000))
    t0 = time.perf_counter()
    clf = _clf(tiny_weights).fit(ladder_data, budget="45s")
    wall = time.perf_counter() - t0
    longest = max(r["seconds"] for r in clf.history_["ladder"])
    assert wall <= 45 + longest + 2, f"{wall:.1f} s for a 45 s budget (longest epoch {longest:.1f} s)"
    assert wall >= 30, (
        "the rungs should use most of the budget when nothing else ends them",
        clf.ladder_,
        clf.stage_metrics_["ladder"],
    )
    rungs = clf.ladder_
    names = [r["rung"] for r in rungs]  # "top+" follows where "all" left time for an epoch of it
    assert names[:3] == ["head", "top", "all"] and names[3:] in ([], ["top+"]) and sum(r["kept"] for r in rungs) == 1
    assert any(r["note"] == "stopped by the budget" for r in rungs[1:]), (rungs, clf.stage_metrics_["ladder"])
    for r in rungs:
        assert r["held_out_accuracy"] is not None and r["val_accuracy"] is not None
        assert r["held_out_loss"] is not None and r["held_out_loss"] >= 0
    assert rungs[1]["epochs_run"] > 0 and rungs[2]["epochs_run"] > 0
    assert clf.stage_metrics_["ladder"]["plan"][0].startswith("budget 45 s: ")


def test_no_rung_trains_or_stops_on_validation_images(
    ladder_data: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graft.training.fit import rungs

    calls: list[tuple[list[str], list[str]]] = []
    real = rungs.train_network
    monkeypatch.setattr(
        rungs, "train_network", lambda *a, **k: calls.append((list(a[2][0]), list(a[3][0]))) or real(*a, **k)
    )
    clf = _clf(tiny_weights).fit(ladder_data, budget=20)
    val = {str(p) for p in clf.val_paths_}
    train = {str(r.path) for r in clf.data_.splits["train"]}
    assert calls, "the ladder should have fine-tuned"
    for fit_paths, stop_paths in calls:
        assert not (set(fit_paths) | set(stop_paths)) & val
        assert set(stop_paths) <= train and not set(stop_paths) & set(fit_paths)


def test_a_kept_rung_is_recalibrated_saved_and_predicts_as_validated(
    ladder_data: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from graft.training.fit import ladder

    real = ladder.refit_head_without

    def worse_head(*a, **k):  # the frozen head scores 0 on the held-out slice: a fine-tuned rung must win
        st, loss = real(*a, **k)
        return dataclasses.replace(st, metrics={**st.metrics, "accuracy": 0.0}), loss

    monkeypatch.setattr(ladder, "refit_head_without", worse_head)
    # One epoch of the first fine-tuning rung whatever the machine's load (on a busy 2-core machine
    # stage 1 alone can take most of a 20 s budget): this test is about what happens to a kept rung.
    monkeypatch.setattr(ladder, "epochs_now", lambda i, *_a: 1 if i == 1 else 0)
    clf = _clf(tiny_weights).fit(ladder_data, budget=20)
    assert clf.fine_tuned_ and not clf.ladder_[0]["kept"]
    summary = clf.stage_metrics_["fine_tune"]
    assert summary["rung"] in {"top", "all"} and summary["calibration_images"] == 12
    assert summary["temperature"] is not None and summary["temperature"] > 0
    clf.save(tmp_path / "m")
    back = graft.load(tmp_path / "m")
    assert back.ladder_ == clf.ladder_ and back.fine_tuned_
    probs, _ok, _bad = back.predict_proba(clf.val_paths_)
    np.testing.assert_allclose(probs, clf.val_probs_, atol=2e-4)


def test_too_small_a_dataset_keeps_the_head_and_says_why(synthetic_dataset: Path, tiny_weights: Path) -> None:
    clf = _clf(tiny_weights).fit(synthetic_dataset, budget="1m")  # 8 training images per class
    assert [r["rung"] for r in clf.ladder_] == ["head"] and clf.ladder_[0]["kept"]
    assert "too few training images" in clf.ladder_[0]["note"] and not clf.fine_tuned_


@pytest.mark.parametrize("bad", ["20", "5d", "-1m", 0])
def test_a_budget_needs_a_unit_and_a_positive_duration(bad: object, synthetic_dataset: Path) -> None:
    with pytest.raises(InvalidParameterError, match="The 'budget' parameter of Classifier.fit must be"):
        graft.Classifier().fit(synthetic_dataset, budget=bad)  # type: ignore[arg-type]


def test_cli_budget_writes_the_ladder_and_rejects_bad_durations(
    ladder_data: Path, tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [
        "train",
        ladder_data,
        "--backbone",
        TINY_BACKBONE,
        "--weights",
        tiny_weights,
        "--no-report",
        "--workers",
        "0",
        "--precision",
        "fp32",
    ]
    code, out, err = run_cli([*base, "--out", tmp_path / "run", "--budget", "20s"], capsys)
    assert code == 0 and "transfer ladder" in out and "spent before fine-tuning" in out + err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [r["rung"] for r in metrics["ladder"]][:3] == ["head", "top", "all"] and metrics["budget_seconds"] == 20
    code, _out, err = run_cli([*base, "--out", tmp_path / "r2", "--budget", "20"], capsys)
    assert code == 2 and "'budget' parameter of graft train" in err and len(err.strip().splitlines()) == 1
    code, _out, err = run_cli([*base, "--out", tmp_path / "r3", "--budget", "1m", "--fine-tune"], capsys)
    assert code == 2 and "--fine-tune" in err
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


def test_a_killed_budget_run_continues_the_rung_in_progress_with_the_budget_left(
    ladder_data: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from graft.progress import NullProgress
    from graft.training.finetune import callbacks, train
    from graft.training.fit import ladder

    class Lines(NullProgress):
        def __init__(self) -> None:
            self.lines: list[str] = []

        def message(self, text: str) -> None:
            self.lines.append(text)

    from graft.training.fit.budget_plan import Costs

    # 1 epoch of "top", 2 of "all" and none of "top+", whatever the machine's load
    monkeypatch.setattr(ladder, "epochs_now", lambda i, *_a: {1: 1, 2: 2}.get(i, 0))
    monkeypatch.setattr(ladder, "probe", lambda *_a: Costs(1.0, 1.0, 1))  # no timing probe: not the point here
    ckpt = tmp_path / "checkpoints"
    real_save = callbacks.Checkpointer.save

    def killed_after_first_epoch_of_all(self, net, meta, optimizer, *, improved):  # type: ignore[no-untyped-def]
        real_save(self, net, meta, optimizer, improved=improved)
        if self.folder.name == "ladder-all" and meta["epoch"] == 1:
            raise KeyboardInterrupt  # kill -9 after the checkpoint: the run dies mid-rung

    monkeypatch.setattr(callbacks.Checkpointer, "save", killed_after_first_epoch_of_all)
    with pytest.raises(KeyboardInterrupt):
        _clf(tiny_weights).fit(ladder_data, budget="10m", checkpoint_dir=ckpt)
    recorded = json.loads((ckpt / "ladder.json").read_text())
    assert recorded["rungs"] == {"top": {"planned": 1, "run": 1}, "all": {"planned": 2}}
    monkeypatch.setattr(callbacks.Checkpointer, "save", real_save)

    trained: list[str] = []
    real_epoch = train._run_epoch
    monkeypatch.setattr(
        train, "_run_epoch", lambda loop, *a: trained.append(f"{loop.env.stage} {a[0]}") or real_epoch(loop, *a)
    )
    monkeypatch.setattr(ladder, "probe", lambda *_a: pytest.fail("a resumed climb must not probe again"))
    progress = Lines()
    clf = _clf(tiny_weights)
    clf.progress = progress
    clf.fit(ladder_data, budget="10m", checkpoint_dir=ckpt, resume=True)
    assert trained == ["ladder all 2"], "only the rung in progress trains, from its next epoch"
    assert any(s.startswith("budget ladder: continuing the climb;") for s in progress.lines)
    epochs = [(r["stage"], r["epoch"]) for r in clf.history_["ladder"]]
    assert epochs == [("ladder top", 1), ("ladder all", 1), ("ladder all", 2)]
    assert [r["epochs_run"] for r in clf.ladder_] == [0, 1, 2]
    assert json.loads((ckpt / "ladder.json").read_text())["spent_seconds"] > recorded["spent_seconds"]


def test_a_damaged_ladder_record_starts_the_climb_again(tmp_path: Path) -> None:
    from graft.training.fit.ladder_state import STATE_FILE, read_state

    (tmp_path / STATE_FILE).write_text('{"spent_seconds": "NaN", "costs": {}}')
    state, note = read_state(tmp_path, 0.0, resume=True)
    assert not state.resumed and state.estimate is None and note is not None and "starts again" in note
    fresh, none = read_state(tmp_path, 0.0, resume=False)
    assert not fresh.resumed and none is None


def test_rungs_train_on_pseudo_labelled_images_labelled_without_the_held_out_slice(
    ladder_data: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--unlabeled with a budget: where CV keeps a method, the rungs fine-tune on its pseudo-labels too."""
    from conftest import _colour_image
    from graft.training.fit import ladder, rungs
    from graft.training.head import semi

    monkeypatch.setattr("graft.training.fit.unlabeled.NEAR_COPY_COS", 0.9999)  # tiny backbone: exact copies only
    pool = tmp_path / "pool"
    for i in range(30):
        _colour_image(pool / f"u{i:02d}.png", i % 3, seed=9100 + i)
    real_choose = semi._choose

    def always_helps(cv, *a, **k):  # the guard keeps self-training whatever the tiny model's CV says
        right, held_out, rows = cv
        right = {**right, "none": np.zeros_like(right["none"]), "self_training": np.ones_like(right["none"])}
        return real_choose((right, held_out, rows), *a, **k)

    monkeypatch.setattr(semi, "_choose", always_helps)
    seen: list[int] = []
    real_for_rungs = semi.pseudo_labels_for_rungs
    monkeypatch.setattr(
        semi,
        "pseudo_labels_for_rungs",
        lambda s, lab, *a, **k: seen.append(len(lab[1])) or real_for_rungs(s, lab, *a, **k),
    )
    calls: list[list[str]] = []
    real = rungs.train_network
    monkeypatch.setattr(rungs, "train_network", lambda *a, **k: calls.append(list(a[2][0])) or real(*a, **k))
    head_fits: list[object] = []
    real_refit = ladder.refit_head_without
    monkeypatch.setattr(ladder, "refit_head_without", lambda *a: head_fits.append(a[-1]) or real_refit(*a))
    clf = _clf(tiny_weights).fit(ladder_data, budget=20, unlabeled=pool)
    assert (
        len(head_fits) == 1 and head_fits[0] is not None
    )  # the head rung: the kept method, refitted without the slice
    assert clf.head_info_["unlabeled"]["method"] == "self_training", str(clf.head_info_["unlabeled"])
    rec = clf.stage_metrics_["ladder"]["unlabeled"]
    assert rec["method"] == "self_training" and 0 < rec["pseudo_labelled"] <= rec["labelled"]
    # labelled from the 108 images outside the 12 held out (each with its augmented views), not from all 120
    assert rec["labelled"] == 108 and len(seen) == 1 and seen[0] % 108 == 0 and seen[0] % 120 != 0
    assert calls, "the ladder should have fine-tuned"
    pooled = {str(p) for p in pool.iterdir()}
    used = [len(set(fit_paths) & pooled) for fit_paths in calls]  # the timing probes train on a few images only
    assert max(used) == rec["pseudo_labelled"], used
    assert not {p for fit_paths in calls for p in fit_paths} & {str(p) for p in clf.val_paths_}


def test_the_rungs_training_set_keeps_multi_label_targets_and_adds_pseudo_labels_only_when_given() -> None:
    """A multi-label climb (0/1 rows, no --unlabeled) gets its labelled set as it is; single-label gains the pool."""
    from graft.progress import NullProgress
    from graft.training.finetune.options import TrainEnv
    from graft.training.fit import ladder

    paths = [f"img{i}.png" for i in range(6)]
    held = np.array([False, False, False, False, True, True])
    Y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    Y[0, 1] = 1  # an image with two labels
    env = TrainEnv(num_workers=0, balanced=True)
    args = ((paths[:0], np.zeros(0)), ["a", "b", "c"], lambda _n: np.zeros(0), NullProgress())
    ctx = ladder._context(env, None, (paths, Y, held), *args)  # type: ignore[arg-type]
    (train_paths, train_y), (held_paths, _), _ = ctx.sets
    assert train_paths == paths[:4] and train_y.shape == (4, 3) and held_paths == paths[4:]
    y = np.array([0, 1, 2, 0, 1, 2])
    extra = (["pool/u0.png", "pool/u1.png"], np.array([2, 2]))
    ctx = ladder._context(env, None, (paths, y, held), *args, extra)  # type: ignore[arg-type]
    assert ctx.sets[0][0] == paths[:4] + extra[0] and ctx.sets[0][1].tolist() == [0, 1, 2, 0, 2, 2]
    assert ctx.env.class_weight is not None and ctx.env.class_weight[2] < ctx.env.class_weight[1]  # counts the pool
