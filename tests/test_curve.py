"""graft curve: validation accuracy against training images per class, from cached features."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _datasets import shared_dataset
from conftest import TINY_BACKBONE, isolated_graft_home, make_synthetic_dataset, run_cli
from graft.curve import (
    FEW_SHOT_C,
    CurveOptions,
    LearningCurve,
    curve_from_features,
    default_sizes,
    save_curve,
    slope_per_doubling,
    verdict,
)
from graft.exceptions import InvalidParameterError
from graft.training.head.linear_probe import fit_linear_head

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _blobs(per_class: int = 40, n_classes: int = 3, dim: int = 24, noise: float = 2.5, seed: int = 0):
    """Gaussian class clusters, overlapping enough that more training rows help: (X, y, X_val, y_val)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (n_classes, dim))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(n_classes), n)
        return (centres[y] + noise * rng.normal(0, 1, (len(y), dim))).astype(np.float32), y

    X, y = draw(per_class)
    Xv, yv = draw(60)
    return X, y, Xv, yv


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 colour classes: 10 training and 5 validation images each."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("curve") / "colours", per_class=15)


@pytest.fixture(scope="module")
def tiny_curve(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_weights: Path) -> LearningCurve:
    import graft
    from graft.backbones.options import BackboneOptions
    from graft.features.options import EmbedOptions

    with isolated_graft_home(tmp_path_factory, "curve_home"):
        return graft.learning_curve(
            tiny_data,
            backbone=BackboneOptions(TINY_BACKBONE, weights=tiny_weights),
            embed=EmbedOptions(num_workers=0, precision="fp32"),
            curve=CurveOptions(seeds=3),
        )


# --------------------------------------------------------------------------- the numbers
def test_default_sizes_run_1_2_5_up_to_all() -> None:
    assert default_sizes(124) == [1, 2, 5, 10, 20, 50, 100, 124]
    assert default_sizes(10) == [1, 2, 5, 10]
    assert default_sizes(1) == [1]
    assert default_sizes(1500)[-3:] == [500, 1000, 1500]


def test_shapes_error_bars_and_full_size_is_a_plain_fit() -> None:
    X, y, Xv, yv = _blobs()
    c = curve_from_features((X, y), (Xv, yv), 3, seeds=3)
    n = len(c.sizes)
    assert c.sizes == [1, 2, 5, 10, 20, 40]
    assert len(c.mean) == len(c.std) == len(c.per_seed) == len(c.n_images) == n
    assert [len(a) for a in c.per_seed] == [3] * (n - 1) + [1]  # one seed where all draw the same images
    assert all(s >= 0 for s in c.std) and c.std[-1] == 0.0
    assert c.n_images == [3, 6, 15, 30, 60, 120] and c.n_val == 180 and c.n_classes == 3
    assert all(0.0 <= a <= 1.0 for a in c.mean)
    plain = fit_linear_head(X, y, 3, seed=0)  # same features, same C rule (CV), same seed
    assert abs(c.mean[-1] - float((plain.logits(Xv).argmax(1) == yv).mean())) <= 1e-6
    assert "points per doubling" in c.verdict and c.slope is not None
    d = c.to_dict()
    assert json.loads(json.dumps(d))["mean"] == c.mean


def test_accuracy_rises_on_a_learnable_set() -> None:
    X, y, Xv, yv = _blobs(per_class=64)
    c = curve_from_features((X, y), (Xv, yv), 3, seeds=4)
    assert c.mean[-1] >= c.mean[0] + 0.1, c.mean
    assert all(b >= a - 0.03 for a, b in zip(c.mean, c.mean[1:])), c.mean  # monotone up to seed noise


def test_one_image_per_class_uses_the_fixed_C_and_cv_runs_once_per_size(monkeypatch: pytest.MonkeyPatch) -> None:
    import graft.training.head.linear_probe as lp

    seen: list[tuple[int, float | None]] = []
    real = lp.fit_linear_head

    def spy(X, y, n_classes, **kw):
        seen.append((len(y), kw.get("C")))
        return real(X, y, n_classes, **kw)

    monkeypatch.setattr(lp, "fit_linear_head", spy)
    X, y, Xv, yv = _blobs(per_class=6)
    curve_from_features((X, y), (Xv, yv), 3, sizes=[1, 2, 6], seeds=2)
    by_size = {n: [c for m, c in seen if m == n] for n in (3, 6, 18)}
    assert by_size[3] == [FEW_SHOT_C, FEW_SHOT_C] and by_size[18] == [None]
    # Two images per class: the first seed's cross-validation chooses C, the second seed reuses it.
    assert by_size[6][0] is None and isinstance(by_size[6][1], float) and len(seen) == 5


def test_sizes_are_clipped_and_parameters_checked() -> None:
    X, y, Xv, yv = _blobs(per_class=8)
    c = curve_from_features((X, y), (Xv, yv), 3, sizes=[3, 1000, 3], seeds=2)
    assert c.sizes == [3, 8] and c.n_images == [9, 24]
    assert (
        curve_from_features((X, y), (Xv, yv), 3, sizes=[3], seeds=2, jobs=1).per_seed == c.per_seed
    )  # jobs: speed only
    import graft

    with pytest.raises(InvalidParameterError, match="'seeds' parameter of learning_curve"):
        graft.learning_curve("nowhere", curve=CurveOptions(seeds=0))
    with pytest.raises(InvalidParameterError, match="'sizes'"):
        graft.learning_curve("nowhere", curve=CurveOptions(sizes=[0, 5]))


def test_slope_and_verdict_threshold() -> None:
    slope, span = slope_per_doubling([10, 20, 40], [0.80, 0.85, 0.90])
    assert slope == pytest.approx(5.0) and span == pytest.approx(2.0)
    assert verdict(slope, span) == (
        "+5.0 points per doubling of the training images over the last two doublings: labelling more is likely to help."
    )
    # 1-2-5 sizes: the start of the last two doublings (25 images) is interpolated in log2.
    slope, span = slope_per_doubling([10, 20, 50, 100], [0.70, 0.94, 0.95, 0.955])
    assert span == pytest.approx(2.0) and slope == pytest.approx((95.5 - (94 + np.log2(1.25) / np.log2(2.5))) / 2)
    assert "unlikely to help" in verdict(slope, span)
    assert slope_per_doubling([7], [0.5]) == (None, 0.0) and "no slope" in verdict(None, 0.0)
    slope, span = slope_per_doubling([1, 2, 3], [0.5, 0.6, 0.7])  # a short curve: its whole span
    assert span == pytest.approx(np.log2(3)) and "1.6 doublings" in verdict(slope, span)


# --------------------------------------------------------------------------- images, files, report
def test_learning_curve_on_images(tiny_curve: LearningCurve, tiny_data: Path) -> None:
    c = tiny_curve
    assert c.sizes == [1, 2, 5, 10] and c.n_images == [3, 6, 15, 30] and c.n_val == 15
    assert c.classes == ["blue", "green", "red"] and c.backbone == TINY_BACKBONE
    assert c.data_dir == str(tiny_data.resolve()) and c.split == {"val_fraction": 0.2, "seed": 0}
    assert set(c.seconds) == {"scan_and_embed", "fits"} and c.verdict


def test_report_shows_the_curve_and_the_scratch_baseline(tiny_curve: LearningCurve, tmp_path: Path) -> None:
    from graft.report import write_report

    run = tmp_path / "run"
    run.mkdir()
    stages = {"head": {"val_accuracy": 0.9}, "baseline_scratch": {"val_accuracy": 0.41, "epochs": 2}}
    (run / "metrics.json").write_text(json.dumps({"val_accuracy": 0.9, "classes": tiny_curve.classes}))
    assert '<section id="curve">' not in write_report(run).read_text()  # no curve.json: no section
    (run / "metrics.json").write_text(json.dumps({"val_accuracy": 0.9, "stages": stages}))
    json_path, png = save_curve(tiny_curve, run)
    assert json_path == run / "curve.json" and png == run / "report" / "curve.png"
    assert json.loads(json_path.read_text())["mean"] == tiny_curve.mean
    assert png.read_bytes().startswith(PNG_MAGIC)
    doc = write_report(run).read_text()
    section = doc.split('<section id="curve">', 1)[1].split("</section>", 1)[0]
    assert tiny_curve.verdict.split(":")[0] in section and "from scratch, all" in section
    assert (
        "0.41" in section
        and "matches that with 1 image(s) per class" in section
        and 'src="data:image/png;base64,' in section
    )
    assert "could not be rendered" not in doc
    (run / "run.json").write_text(json.dumps({"data_dir": "/elsewhere", "params": {"seed": 1, "val_fraction": 0.2}}))
    section = write_report(run).read_text().split('<section id="curve">', 1)[1].split("</section>", 1)[0]
    assert "the run trained on /elsewhere" in section and "the run seed 1" in section


# --------------------------------------------------------------------------- command line
def test_cli_json_png_and_run_folder(
    tiny_data: Path, tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--backbone", TINY_BACKBONE, "--weights", tiny_weights, "--workers", 0, "--precision", "fp32"]
    png, run = tmp_path / "figs" / "c.png", tmp_path / "run"
    code, out, err = run_cli(["curve", tiny_data, *common, "--seeds", 2, "--json", "--png", png, "--out", run], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["sizes"] == [1, 2, 5, 10] and len(d["per_seed"][0]) == 2 and d["verdict"]
    assert png.read_bytes().startswith(PNG_MAGIC) and (run / "report" / "curve.png").is_file()
    assert json.loads((run / "curve.json").read_text())["mean"] == d["mean"]
    code, out, err = run_cli(["curve", tiny_data, *common, "--seeds", 2, "--sizes", "1,5", "-q"], capsys)
    assert code == 0, err
    text = " ".join(out.split())  # rich wraps at the terminal width
    assert "points per doubling" in text and "all (10 max)" in text and "│ 5 │ 15 │ 2 │" in text


def test_cli_errors_are_one_line(tmp_path: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["curve", tmp_path / "nope", "-q"], capsys)
    assert code == 2 and "nope" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["curve", tiny_data, "--out", tiny_data / "run", "-q"], capsys)
    assert code == 2 and "inside the dataset folder" in err
    code, _, err = run_cli(["curve", tiny_data, "--sizes", "1,x", "-q"], capsys)
    assert code == 2 and "'sizes' parameter of graft curve" in err


# --------------------------------------------------------------------------- real data
@pytest.mark.integration
def test_hymenoptera_curve_with_the_default_backbone(tmp_path: Path) -> None:
    data = shared_dataset("hymenoptera")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # GRAFT_HOME: this test's own, cold feature cache
    p = subprocess.run(
        [sys.executable, "-m", "graft.cli.main", "curve", str(data), "--seeds", "2", "--json", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["sizes"] == [1, 2, 5, 10, 20, 50, 100, 124] and d["n_val"] == 153
    assert d["mean"][-1] >= 0.94 and d["mean"][0] < d["mean"][3] < d["mean"][-1] + 0.01
    assert d["slope"] is not None and "points per doubling" in d["verdict"]
    assert (tmp_path / "curve.json").is_file() and (tmp_path / "report" / "curve.png").is_file()
