"""graft doctor: corrupt files, duplicates, leaks, label errors, outliers; the library, the CLI and their outputs."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _datasets import shared_dataset
from conftest import TINY_BACKBONE, isolated_graft_home, make_synthetic_dataset, run_cli
from graft.backbones.options import BackboneOptions
from graft.doctor import KINDS, DoctorReport, Issue, doctor, fix_plan_rows, report_html
from graft.doctor.duplicates import near_pairs
from graft.doctor.labels import find_label_errors
from graft.features.options import EmbedOptions

EVIL = '<img src=x onerror="alert(1)"> & [red]x[bold]'  # HTML and rich markup in a file name


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` -> sha256 of its bytes (with mtimes, to see a rewrite)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() + f"@{p.stat().st_mtime_ns}"
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------- unit: tiny model, planted problems
@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic dataset with an exact copy and a resized re-encoded copy of train images in val, and a corrupt file."""
    root = make_synthetic_dataset(tmp_path_factory.mktemp("planted") / "colours")
    exact = root / "val" / "red" / f"{EVIL}.png"
    shutil.copy(root / "train" / "red" / "red_00.png", exact)
    resized = root / "val" / "green" / "resized copy.jpg"
    Image.open(root / "train" / "green" / "green_01.png").resize((40, 40), Image.Resampling.LANCZOS).save(
        resized, quality=80
    )
    corrupt = root / "train" / "blue" / "truncated.jpg"
    corrupt.write_bytes((root / "train" / "blue" / "blue_00.png").read_bytes()[:60])
    return {"root": root, "exact": exact, "resized": resized, "corrupt": corrupt}


@pytest.fixture(scope="module")
def planted_run(
    tmp_path_factory: pytest.TempPathFactory, planted: dict[str, Path], tiny_weights: Path
) -> tuple[DoctorReport, dict[str, str], dict[str, str]]:
    """(report, files before, files after) of one doctor run on :func:`planted`."""
    before = tree_digest(planted["root"])
    with isolated_graft_home(tmp_path_factory, "doctor_home"):
        report = doctor(
            planted["root"],
            backbone=BackboneOptions(TINY_BACKBONE, weights=tiny_weights),
            embed=EmbedOptions(num_workers=0, precision="fp32"),
        )
    return report, before, tree_digest(planted["root"])


def test_planted_copies_across_splits_are_leaks(planted: dict[str, Path], planted_run) -> None:
    report = planted_run[0]
    leaks = [set(i.paths) for i in report.by_kind("leak")]
    assert {str(planted["root"] / "train/red/red_00.png"), str(planted["exact"])} in leaks
    assert {str(planted["root"] / "train/green/green_01.png"), str(planted["resized"])} in leaks
    assert not report.by_kind("duplicate") and not report.by_kind("near_duplicate")
    exact = next(i for i in report.by_kind("leak") if str(planted["exact"]) in i.paths)
    assert exact.score == 1.0 and exact.actions == ("keep", "remove")  # keep the training copy


def test_corrupt_file_is_reported(planted: dict[str, Path], planted_run) -> None:
    corrupt = planted_run[0].by_kind("corrupt")
    assert [i.paths for i in corrupt] == [(str(planted["corrupt"]),)]
    assert planted_run[0].issues[0].kind == "corrupt"  # most severe first


def test_user_files_are_untouched(planted_run) -> None:
    _, before, after = planted_run
    assert before == after


def test_report_is_sorted_by_severity(planted_run) -> None:
    report = planted_run[0]
    ranks = [KINDS.index(i.kind) for i in report.issues]
    assert ranks == sorted(ranks)


def test_cli_json_fix_plan_and_html(
    planted: dict[str, Path], tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree_digest(planted["root"])
    html, plan = tmp_path / "doctor.html", tmp_path / "fix.csv"
    args = ["doctor", planted["root"], "--backbone", TINY_BACKBONE, "--weights", tiny_weights, "--workers", "0"]
    code, out, _ = run_cli([*args, "--json", "--html", html, "--fix-plan", plan], capsys)
    assert code == 0
    data = json.loads(out)  # one JSON object, nothing else on stdout
    assert set(data) >= {"issues", "counts", "n_images", "classes", "settings"}
    assert data["issues"] and all(set(i) >= {"kind", "paths", "score", "detail"} for i in data["issues"])
    assert {i["kind"] for i in data["issues"]} <= set(KINDS)
    assert data["counts"]["leak"] == 2 and data["counts"]["corrupt"] == 1

    rows = list(csv.DictReader(io.StringIO(plan.read_text(encoding="utf-8"))))
    assert rows and set(rows[0]) == {"path", "action", "reason"}
    actions = {(r["path"], r["action"]) for r in rows}
    assert (str(planted["exact"]), "remove") in actions and (str(planted["corrupt"]), "remove") in actions
    assert (str(planted["root"] / "train/red/red_00.png"), "keep") in actions

    page = html.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page) and "<script" not in page
    assert "data:image/jpeg;base64," in page
    assert EVIL not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert tree_digest(planted["root"]) == before

    code, out, _ = run_cli([*args, "--limit", "50"], capsys)  # the table, rich markup in names shown as is
    assert code == 0 and "[red]x[bold]" in out and "leak" in out


def test_cli_errors_are_one_line_with_exit_code_2(planted: dict[str, Path], capsys) -> None:
    code, _, err = run_cli(["doctor", planted["root"], "--html", planted["root"] / "doctor.html"], capsys)
    assert code == 2 and "outside the dataset folder" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["doctor", planted["root"] / "missing"], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(["doctor", planted["root"], "--checks", "leak,typo"], capsys)
    assert code == 2 and "'checks'" in err and len(err.strip().splitlines()) == 1


def test_checks_selects_kinds(planted: dict[str, Path], tiny_weights: Path) -> None:
    report = doctor(
        planted["root"],
        backbone=BackboneOptions(TINY_BACKBONE, weights=tiny_weights),
        embed=EmbedOptions(num_workers=0),
        checks=["leak", "small"],
    )
    assert {i.kind for i in report.issues} == {"leak", "small"} and len(report.by_kind("leak")) == 2


def test_graft_doctor_is_callable_from_the_package(planted_run) -> None:
    import graft

    assert callable(graft.doctor) and graft.doctor.DoctorReport is DoctorReport


def test_html_and_fix_plan_without_a_model() -> None:
    issues = [
        Issue("small", ("/d/a.png",), 1.5, "small"),
        Issue("label", ("/d/<b>.png",), 0.4, "labelled 'x' <i>", ("relabel:y",)),
    ]
    report = DoctorReport("/d", issues, 2, ["x", "y"])
    assert [i.kind for i in report.issues] == ["label", "small"]
    assert fix_plan_rows(report)[0] == ("/d/<b>.png", "relabel:y", "label: labelled 'x' <i>")
    page = report_html(report)
    assert "<b>.png" not in page and "&lt;i&gt;" in page


# ---------------------------------------------------------------------------- unit: the methods on plain arrays
def test_label_errors_are_confident_disagreements() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    probs = np.full((90, 3), 0.05)
    probs[np.arange(90), labels] = 0.9
    probs += rng.uniform(0, 0.02, probs.shape)
    probs[5] = [0.03, 0.95, 0.02]  # labelled 0, as sure a 1 as typical 1s are
    probs[40] = [0.3, 0.4, 0.3]  # labelled 1, merely unsure: no class is above its threshold
    probs /= probs.sum(1, keepdims=True)
    found = find_label_errors(probs, labels)
    assert [(c.row, c.suggested) for c in found] == [(5, 1)] and found[0].margin > 0.5


def test_near_pairs_rules() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 32)).astype(np.float32)
    T = rng.normal(size=(60, 256)).astype(np.float32)
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    X[1] = X[0] + 0.05 * rng.normal(size=32)  # a near copy in feature space, a layout kept
    T[1] = T[0]
    pairs = near_pairs(X, T)
    assert [(p.i, p.j) for p in pairs] == [(0, 1)]


# ---------------------------------------------------------------------------- integration: real data, default backbone
@pytest.fixture(scope="module")
def flipped(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A copy of hymenoptera with 5% of training labels flipped and 4 resized/re-encoded train images planted in val.

    One doctor run serves the label, leak and no-false-duplicate checks (the copy is embedded once).
    """
    src = shared_dataset("hymenoptera")
    root = tmp_path_factory.mktemp("hym") / "hymenoptera"
    for split in ("train", "val"):
        shutil.copytree(src / split, root / split)
    rng = np.random.default_rng(0)
    train = sorted(p for p in (root / "train").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    flip = set(rng.choice(len(train), round(0.05 * len(train)), replace=False).tolist())
    moved = []
    for i in sorted(flip):
        p = train[i]
        q = root / "train" / ("bees" if p.parent.name == "ants" else "ants") / p.name
        p.rename(q)
        moved.append(str(q))
    rest = [p for i, p in enumerate(train) if i not in flip]
    planted = []
    for k, i in enumerate(rng.choice(len(rest), 4, replace=False)):
        img = Image.open(rest[i]).convert("RGB")
        scale, quality = [(0.5, 75), (0.7, 85), (1.0, 60), (0.8, 90)][k]
        img = img.resize((int(img.width * scale), int(img.height * scale)), Image.Resampling.LANCZOS)
        copy = root / "val" / rest[i].parent.name / f"copy{k}_{rest[i].stem}.jpg"
        img.save(copy, quality=quality)
        planted.append({str(rest[i]), str(copy)})
    with isolated_graft_home(tmp_path_factory, "doctor_integration"):
        t0 = time.perf_counter()
        report = doctor(root)
        seconds = time.perf_counter() - t0
    return {"report": report, "flipped": set(moved), "planted": planted, "seconds": seconds}


@pytest.mark.integration
def test_flipped_labels_are_found(flipped: dict) -> None:
    found = {i.paths[0] for i in flipped["report"].by_kind("label")}
    hits = len(found & flipped["flipped"])
    precision, recall = hits / max(len(found), 1), hits / len(flipped["flipped"])
    print(
        f"label issues: {len(found)}, flipped: {len(flipped['flipped'])}, precision {precision:.2f}, recall {recall:.2f}"
    )
    assert precision >= 0.7 and recall >= 0.7, (precision, recall)


@pytest.mark.integration
def test_planted_copies_are_leaks(flipped: dict) -> None:
    leaks = [set(i.paths) for i in flipped["report"].by_kind("leak")]
    assert all(any(pair <= leak for leak in leaks) for pair in flipped["planted"]), leaks


@pytest.mark.integration
def test_hymenoptera_has_no_false_duplicates(flipped: dict) -> None:
    planted = set().union(*flipped["planted"])
    kinds = ("duplicate", "near_duplicate", "leak")
    false = [i for i in flipped["report"].issues if i.kind in kinds and not set(i.paths) <= planted]
    assert not false, false


@pytest.fixture(scope="module")
def sign_digits_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One GRAFT_HOME for the sign_digits tests: the 2,062 images are embedded once."""
    return tmp_path_factory.mktemp("doctor_sign_digits")


@pytest.mark.integration
def test_sign_digits_has_no_false_duplicates(sign_digits_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAFT_HOME", str(sign_digits_home))  # no label/outlier cross-validation: faster
    report = doctor(shared_dataset("sign_digits"), checks=("duplicate", "near_duplicate", "leak", "small"))
    dups = [i for i in report.issues if i.kind in ("duplicate", "near_duplicate", "leak")]
    assert not dups, dups
    assert len(report.by_kind("small")) == 1  # 100 px hand signs: one dataset-wide issue, not 2,062


@pytest.mark.integration
def test_planted_label_flips_are_found_on_every_planting(sign_digits_home: Path, monkeypatch: pytest.MonkeyPatch):
    """5% of training labels flipped, three random plantings: the doctor's label issues, as `graft doctor` finds them.

    The former rule found these with precision 0.70 and recall 0.74 (one planting of hymenoptera with recall 0.45
    is what the issue reported); bench/doctor_labels.py measures both datasets over 5 plantings.
    """
    import dataclasses

    from graft.backbones.options import BackboneOptions
    from graft.config import resolve_device
    from graft.doctor.checks import label_issues
    from graft.doctor.core import _corpus, _embed
    from graft.doctor.labels import out_of_fold_probs
    from graft.features.dataset import scan_splits
    from graft.features.options import EmbedOptions
    from graft.progress import NullProgress

    monkeypatch.setenv("GRAFT_HOME", str(sign_digits_home))
    splits = scan_splits(shared_dataset("sign_digits"))
    corpus = _corpus(splits)
    emb = _embed(splits, corpus, BackboneOptions(), 0, EmbedOptions(device=resolve_device("cpu")), NullProgress())
    k, scores = len(corpus.classes), []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        train = [i for i in emb.rows if corpus.split_of[i] == "train"]
        flip = {int(i) for i in rng.choice(train, round(0.05 * len(train)), replace=False)}
        records = [
            dataclasses.replace(r, label=int(rng.choice([c for c in range(k) if c != r.label]))) if i in flip else r
            for i, r in enumerate(corpus.records)
        ]
        noisy = dataclasses.replace(corpus, records=records)
        rows, probs = out_of_fold_probs(emb.X, np.array([records[i].label for i in emb.rows]), k)
        found = {i.paths[0] for i in label_issues(noisy, probs, emb.rows[rows])}
        flipped = {noisy.path(i) for i in flip}
        hits = len(found & flipped)
        scores.append((hits / max(len(found), 1), hits / len(flipped)))
    precision, recall = np.mean(scores, axis=0)
    assert precision >= 0.8 and recall >= 0.8, scores
