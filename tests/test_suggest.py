"""graft suggest: deterministic, leaves out labelled images and copies, cold start covers every cluster first."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_BACKBONE, _colour_image, run_cli


def _blobs(sizes: list[int], seed: int = 0, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim)) * 6
    X = np.concatenate([centres[i] + rng.normal(size=(s, dim)) for i, s in enumerate(sizes)])
    return X.astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


def test_cold_start_covers_every_cluster_before_a_second_pick() -> None:
    from graft.suggest.rank import cold_start

    X, blob = _blobs([40, 20, 10, 6])
    picks = cold_start(X, 8, seed=0)
    assert len(picks) == 8 and len({p.row for p in picks}) == 8
    firsts = [p.cluster for p in picks[:8]]
    assert sorted(firsts) == list(range(8))  # k-means with k=8: each cluster once before any second pick
    assert set(blob[[p.row for p in picks]]) == {0, 1, 2, 3}  # every real group is represented
    picks = cold_start(X, 12, seed=0)
    clusters = [p.cluster for p in picks]
    assert sorted(clusters[:12]) == list(range(12))
    # with more picks than clusters' first rounds: no cluster repeats until all have one
    X2, _ = _blobs([5, 5, 5])
    rows = cold_start(X2, 3, seed=1)
    assert {p.cluster for p in rows} == {0, 1, 2}
    first = rows[0]
    members = [i for i in range(len(X2)) if True]
    assert first.row in members and "most typical" in first.reason
    assert cold_start(X, 8, seed=0) == cold_start(X, 8, seed=0)
    X3, _ = _blobs([6, 1])  # a lone image is a cluster of "1 image"
    assert [p.reason for p in cold_start(X3, 2, seed=0)] == [
        "most typical of cluster 1 (6 images)",
        "most typical of cluster 2 (1 image)",
    ]


def test_find_copies_by_hash_features_and_within_the_pool() -> None:
    from graft.features.unlabeled import find_copies

    X, _ = _blobs([6, 6], dim=32)
    ref = X[:2] + 0.001  # near copies of rows 0 and 1
    pool = np.concatenate([X, X[7:8]])  # the last row repeats row 7
    digests = [f"h{i}" for i in range(12)] + ["h7"]
    c = find_copies(pool, digests, ref, ["zz", "h5"], min_cos=0.99)
    assert np.flatnonzero(c.by_hash).tolist() == [5]
    assert np.flatnonzero(c.by_features).tolist() == [0, 1]
    assert np.flatnonzero(c.within).tolist() == [12]
    assert c.counts() == {"same_file": 1, "near_copy": 2, "repeat_in_pool": 1}


def test_typical_image_is_nearest_its_centre() -> None:
    from graft.features.unlabeled import unit_centred
    from graft.suggest.rank import cold_start

    X, _ = _blobs([30, 30])
    picks = cold_start(X, 2, seed=0)
    Z = unit_centred(X)
    for p in picks:
        same = [
            q for q in range(len(X)) if np.argmin([np.linalg.norm(Z[q] - Z[r.row]) for r in picks]) == picks.index(p)
        ]
        centre = Z[same].mean(0)
        d = np.linalg.norm(Z[same] - centre, axis=1)
        assert p.row == same[int(np.argmin(d))]


def test_diverse_picks_spread_over_confusing_groups_and_unknowns_form_a_group() -> None:
    from graft.suggest.rank import rank_with_model

    X, blob = _blobs([50, 50, 8])
    probs = np.full((len(X), 2), 0.5, np.float32)
    probs[blob == 0] = [0.55, 0.45]  # blob 0: all near the boundary (most uncertain)
    probs[blob == 1] = [0.6, 0.4]
    probs[blob == 2] = [0.95, 0.05]
    unknown = blob == 2
    margin = rank_with_model(X, probs, None, 10, "margin")
    assert set(blob[[p.row for p in margin]]) == {0}  # plain uncertainty: ten near-copies of one confusion
    diverse = rank_with_model(X, probs, unknown, 10, "diverse")
    assert diverse[0].cluster <= -2 and blob[diverse[0].row] == 2 and "new class" in diverse[0].reason
    assert {0, 1} <= set(blob[[p.row for p in diverse]])
    assert len({p.row for p in diverse}) == 10


def test_neighbours_and_typicality_in_blocks_match_the_whole_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 100,000-image pool must not need a (pool x pool) matrix: blocks of 7 rows give the same answers."""
    from graft.features.unlabeled import unit_centred
    from graft.suggest import rank

    X, blob = _blobs([40, 30, 9])
    Z = unit_centred(X)
    S = Z @ Z.T
    np.fill_diagonal(S, -np.inf)
    whole_nn = np.argsort(-S, 1)[:, :5]
    d = np.sqrt(np.maximum(2.0 - 2.0 * (Z @ Z.T), 0.0))
    np.fill_diagonal(d, np.inf)
    whole_typ = 1.0 / (np.sort(d, 1)[:, :20].mean(1) + 1e-8)
    monkeypatch.setattr(rank, "_BLOCK", 7)
    rows = np.arange(len(Z))
    assert np.array_equal(rank._nearest(Z, rows, 5), whole_nn)
    assert np.allclose(rank._typicality(Z), whole_typ, rtol=1e-6)
    groups = rank.unknown_groups(Z, blob == 2)
    assert len(groups) == 1 and sorted(groups[0].tolist()) == np.flatnonzero(blob == 2).tolist()


def test_untrusted_model_picks_typical_images_of_clusters_without_a_label() -> None:
    from graft.suggest.rank import rank_with_model, skill

    X, blob = _blobs([40, 30, 20, 12])
    labelled = X[blob == 0][:2]  # blob 0 is covered; the rest has no label yet
    pool = np.concatenate([X[blob == 0][2:], X[blob != 0]])
    pb = np.concatenate([blob[blob == 0][2:], blob[blob != 0]])
    probs = np.tile(np.float32([0.9, 0.1]), (len(pool), 1))
    probs[pb == 0] = [0.52, 0.48]  # a chance-level head: the most "uncertain" images all sit in blob 0
    assert skill(None, 2) == 0.0 and skill(0.5, 2) == 0.0 and skill(0.75, 2) == 0.5 and skill(1.0, 4) == 1.0
    # measured on few images, a perfect score is trusted little; on many, nearly fully
    assert skill(1.0, 2, 4) < 0.05 and 0.7 < skill(1.0, 2, 24) < 0.75 and skill(1.0, 2, 400) > 0.98
    cover = rank_with_model(pool, probs, None, 3, "diverse", 0, labeled=labelled, trust=0.0)
    assert sorted(pb[[p.row for p in cover]]) == [1, 2, 3]  # one typical image of each uncovered blob
    assert all("no label yet" in p.reason for p in cover)
    for p in cover:  # the most typical: nearer its blob's centre than most of the blob
        members = pool[pb == pb[p.row]]
        d = np.linalg.norm(members - members.mean(0), axis=1)
        assert np.linalg.norm(pool[p.row] - members.mean(0)) <= np.quantile(d, 0.5)
    trusted = rank_with_model(pool, probs, None, 3, "diverse", 0, labeled=labelled, trust=1.0)
    assert set(pb[[p.row for p in trusted]]) == {0} and all(p.reason == "uncertain" for p in trusted)
    half = rank_with_model(pool, probs, None, 4, "diverse", 0, labeled=labelled, trust=0.5)
    assert sum("no label yet" in p.reason for p in half) == 2 and len({p.row for p in half}) == 4
    assert half == rank_with_model(pool, probs, None, 4, "diverse", 0, labeled=labelled, trust=0.5)


def test_coverage_page_takes_each_predicted_class_in_turn() -> None:
    from graft.suggest.rank import rank_with_model

    X, blob = _blobs([60, 50, 40, 15, 12])
    probs = np.tile(np.float32([0.8, 0.2]), (len(X), 1))
    probs[blob >= 3] = [0.2, 0.8]  # the three largest clusters are all predicted class 0
    page = rank_with_model(X, probs, None, 4, "diverse", 0, labeled=None, trust=0.0)
    assert sorted(probs[[p.row for p in page]].argmax(1).tolist()) == [0, 0, 1, 1]  # not [0, 0, 0, 1]
    assert len({p.row for p in page}) == 4
    one_class = np.tile(np.float32([0.8, 0.2]), (len(X), 1))
    plain = rank_with_model(X, one_class, None, 4, "diverse", 0, labeled=None, trust=0.0)
    assert (blob[[p.row for p in plain]] <= 2).sum() == 3  # one predicted class: coverage's own order


def test_model_trust_reads_the_heads_cross_validated_accuracy() -> None:
    from types import SimpleNamespace

    from graft.suggest.core import model_trust

    spec = SimpleNamespace(classes=["a", "b"], training={"head": {"C": 0.1, "cv_accuracy": {"0.1": 0.8, "1.0": 0.9}}})
    assert model_trust(spec) == pytest.approx(0.6)
    few = SimpleNamespace(
        classes=["a", "b"], training={"head": {"C": 1.0, "cv_accuracy": {"1.0": 1.0}, "cv_images": 4}}
    )
    assert model_trust(few) is not None and model_trust(few) < 0.05  # 4 of 4 right is little evidence
    assert model_trust(SimpleNamespace(classes=["a", "b"], training={})) is None


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, synthetic_dataset: Path) -> Path:
    """Unlabelled images: fresh synthetic images, one byte copy, and two copies of labelled training images."""
    pool = tmp_path_factory.mktemp("pool") / "unlabeled"
    for i in range(18):  # seeds the labelled synthetic set does not use
        _colour_image(pool / f"u{i:02d}.png", i % 3, seed=5000 + i)
    shutil.copy(pool / "u00.png", pool / "u00_copy.png")
    train = sorted((synthetic_dataset / "train").rglob("*.png"))
    shutil.copy(train[0], pool / "was_labelled_a.png")
    shutil.copy(train[5], pool / "was_labelled_b.png")
    return pool


def test_suggest_with_model_is_deterministic_and_leaves_out_labelled_and_copies(
    tiny_model_dir: Path, synthetic_dataset: Path, pool: Path
) -> None:
    from graft.suggest import SuggestOptions, suggest

    # The tiny random-weight backbone maps every same-colour image close together: only exact feature copies count.
    opts = SuggestOptions(n=6, seed=3, labeled=(synthetic_dataset / "train",), near_copy_cos=0.9999)
    a = suggest(tiny_model_dir, pool, opts)
    b = suggest(tiny_model_dir, pool, opts)
    assert [r["path"] for r in a.rows] == [r["path"] for r in b.rows] and len(a.rows) == 6
    names = {Path(r["path"]).name for r in a.rows}
    assert not names & {"u00_copy.png", "was_labelled_a.png", "was_labelled_b.png"}
    assert a.counts["images"] == 21 and a.counts["same_file"] == 2 and a.counts["repeat_in_pool"] >= 1
    assert a.counts["candidates"] <= 18
    assert all(r["guess"] in ("red", "green", "blue", "unknown") for r in a.rows)
    # how many candidates are "unknown", beside the share the model's threshold lets through by design
    assert a.unknown is not None and a.unknown["expected_share"] == 0.05
    everything = suggest(
        tiny_model_dir, pool, SuggestOptions(n=100, seed=3, labeled=opts.labeled, near_copy_cos=0.9999)
    )
    left = {Path(r["path"]).name for r in everything.rows}
    assert "u00.png" in left and not left & {"u00_copy.png", "was_labelled_a.png", "was_labelled_b.png"}
    assert len(everything.rows) == a.counts["candidates"] and everything.unknown == a.unknown
    import graft  # the count is the model's own "unknown" on those candidates

    own = graft.Classifier.load(tiny_model_dir).predict([r["path"] for r in everything.rows])
    assert a.unknown["images"] == sum(r["label"] == "unknown" for r in own)


def test_suggest_leaves_out_the_answers_of_graft_label(tiny_model_dir: Path, pool: Path, tmp_path: Path) -> None:
    from graft.suggest import SuggestOptions, suggest

    answers = tmp_path / "labels.csv"  # what graft label writes: paths relative to the folder it labelled
    answers.write_text("path,label\nu03.png,red\nu04.png,green\n")
    got = suggest(tiny_model_dir, pool, SuggestOptions(n=100, labeled=(answers,), near_copy_cos=0.9999))
    names = {Path(r["path"]).name for r in got.rows}
    assert got.counts["already_labeled"] == 2 and not names & {"u03.png", "u04.png"} and "u05.png" in names
    # each image left out is counted once, under one reason (a labelled image is not also its own copy)
    left_out = sum(v for k, v in got.counts.items() if k not in ("images", "candidates"))
    assert left_out == got.counts["images"] - got.counts["candidates"], got.counts


def test_suggest_leaves_out_the_models_own_training_images_without_labeled(
    tiny_model_dir: Path, pool: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Forgetting --labeled must not ask for the training images again: the model keeps their features."""
    from graft.suggest import SuggestOptions, suggest

    got = suggest(tiny_model_dir, pool, SuggestOptions(n=100, near_copy_cos=0.9999))
    names = {Path(r["path"]).name for r in got.rows}
    assert got.counts["model_training_images"] == 2, got.counts
    assert not names & {"was_labelled_a.png", "was_labelled_b.png"} and "u05.png" in names
    code, out, err = run_cli(["suggest", tiny_model_dir, pool, "--n", 2, "--near-copy-cos", 0.9999], capsys)
    assert code == 0 and "2 model training images" in out, out
    assert "no --labeled: images the model was validated on may be among these" in " ".join(out.split())
    nothing = suggest(tiny_model_dir, pool, SuggestOptions(labeled=(pool,)))  # every image left out
    assert nothing.rows == [] and nothing.counts["candidates"] == 0 and nothing.classes == ["blue", "green", "red"]
    code, out, err = run_cli(["suggest", tiny_model_dir, pool, "--labeled", pool], capsys)
    assert code == 0 and out.splitlines()[0] == "nothing to suggest: no image is left to label", out


def test_cli_says_how_many_candidates_are_unknown_to_the_model(
    tiny_model_dir: Path, pool: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["suggest", tiny_model_dir, pool, "--n", 2, "--near-copy-cos", 0.9999], capsys)
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("unknown to the model: "))
    assert line.endswith("; about 5% of images like its training set)"), line
    code, out, err = run_cli(["suggest", tiny_model_dir, pool, "--n", 2, "--near-copy-cos", 0.9999, "--json"], capsys)
    res = json.loads(out)
    got, candidates = res["unknown_to_the_model"], res["counts"]["candidates"]
    assert code == 0 and got["expected_share"] == 0.05 and got["share"] == round(got["images"] / candidates, 4)


def test_cli_cold_start_writes_a_manifest_graft_can_read_once_labelled(
    pool: Path, tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from graft.data.manifest import read_manifest
    from graft.data.options import ManifestOptions

    out_csv, out_html = tmp_path / "next.csv", tmp_path / "next.html"
    args = ["suggest", pool, "--n", 4, "--backbone", TINY_BACKBONE, "--weights", tiny_weights, "--workers", 0]
    args += ["--near-copy-cos", 0.9999]  # the tiny random backbone: see above
    code, out, err = run_cli(args + ["--csv", out_csv, "--html", out_html], capsys)
    assert code == 0, err
    assert "most typical of cluster 1" in out
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 4 and all(r["label"] == "" for r in rows)
    page = out_html.read_text()
    assert page.count("data:image/png;base64,") == 4 and "<script" not in page
    for i, r in enumerate(rows):
        r["label"] = "a" if i % 2 else "b"
    with out_csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    m = read_manifest(out_csv, ManifestOptions(images=str(pool)))
    assert m.classes == ["a", "b"] and len(m.rows) == 4


def test_bad_inputs_are_one_line(
    tiny_model_dir: Path, tmp_path: Path, pool: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["suggest", tiny_model_dir, empty], capsys)
    assert code == 2 and "no images found" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["suggest", tiny_model_dir, pool, "--backbone", "efficientnet_lite0"], capsys)
    assert code == 2 and "trained on backbone" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["suggest", tiny_model_dir, pool, "--strategy", "best"], capsys)
    assert code == 2 and "strategy" in err
