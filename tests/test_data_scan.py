"""Tests for graft.data.scan: layouts, splitting, skips, errors, evaluate/predict inputs."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from _datasets import shared_dataset
from graft.data import DatasetSplits, ImageRecord, SkippedFile, collect_image_paths, scan_dataset, scan_split
from graft.data.decode import load_image
from graft.exceptions import DataError


def _paths(recs: list[ImageRecord]) -> list[str]:
    return [r.path.as_posix() for r in recs]


def _write_bad(path: Path, content: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# ---------------------------------------------------------------------------- split-folder layout
def test_train_val_folders(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path / "train", {"cat": 4, "dog": 3})
    make_class_tree(tmp_path / "val", {"cat": 2, "dog": 1})
    ds = scan_dataset(tmp_path)
    assert ds.layout == "split-folders"
    assert ds.classes == ["cat", "dog"]
    assert set(ds.splits) == {"train", "val"}
    assert ds.split_dirs == {"train": "train", "val": "val"}
    assert ds.class_counts("train") == {"cat": 4, "dog": 3}
    assert ds.class_counts("val") == {"cat": 2, "dog": 1}
    rec = ds.splits["train"][0]
    assert rec.label == 0 and (rec.width, rec.height) == (16, 16) and rec.path.is_file()
    assert all(r.path.parent.parent.name == "val" for r in ds.splits["val"])
    assert ds.imbalance_ratio() == pytest.approx(4 / 3)


def test_case_insensitive_split_names(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path / "Train", {"a": 2, "b": 2})
    make_class_tree(tmp_path / "Validation", {"a": 1, "b": 1})
    make_class_tree(tmp_path / "TESTING", {"a": 1, "b": 1})
    ds = scan_dataset(tmp_path)
    assert ds.split_dirs == {"train": "Train", "val": "Validation", "test": "TESTING"}
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 4, "val": 2, "test": 2}


def test_train_only_gets_stratified_val(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path / "training", {"a": 10, "b": 5})
    ds = scan_dataset(tmp_path, val_fraction=0.2)
    assert ds.layout == "split-folders" and ds.split_dirs == {"train": "training"}
    assert ds.class_counts("val") == {"a": 2, "b": 1}
    assert ds.class_counts("train") == {"a": 8, "b": 4}


def test_val_folder_missing_class(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path / "train", {"a": 2, "b": 2, "c": 2})
    make_class_tree(tmp_path / "val", {"a": 1, "b": 1})
    with pytest.raises(DataError) as exc:
        scan_dataset(tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / "val") in msg and "'c'" in msg and "automatically" in msg


def test_val_folder_extra_class(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path / "train", {"a": 2, "b": 2})
    make_class_tree(tmp_path / "val", {"a": 1, "b": 1, "zebra": 1})
    with pytest.raises(DataError, match="zebra"):
        scan_dataset(tmp_path)


def test_stray_folder_and_partial_test_split_warn(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path / "train", {"a": 5, "b": 5})
    make_class_tree(tmp_path / "test", {"a": 1})
    make_class_tree(tmp_path / "extras", {"a": 1})
    (tmp_path / "train" / "labels.csv").write_text("x")
    warned: list[str] = []
    ds = scan_dataset(tmp_path, warn=warned.append)
    assert any("extras" in w for w in warned) and any("test folder" in w and "'b'" in w for w in warned)
    assert ds.class_counts("test") == {"a": 1, "b": 0} and ds.class_counts("val") == {"a": 1, "b": 1}
    assert ds.split_dirs == {"train": "train", "test": "test"}
    assert [Path(p).name for p in ds.ignored] == ["labels.csv"]
    assert ds.imbalance_ratio("test") == float("inf")


def test_split_folder_without_train(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path / "val", {"a": 1, "b": 1})
    with pytest.raises(DataError, match="no train folder"):
        scan_dataset(tmp_path)


def test_duplicate_split_folders(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path / "train", {"a": 2, "b": 2})
    make_class_tree(tmp_path / "val", {"a": 1, "b": 1})
    make_class_tree(tmp_path / "valid", {"a": 1, "b": 1})
    with pytest.raises(DataError, match="two val folders"):
        scan_dataset(tmp_path)


# ---------------------------------------------------------------------------- class-folder layout
def test_auto_split_stratified_and_deterministic(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path, {"a": 20, "b": 10, "c": 5})
    ds = scan_dataset(tmp_path, val_fraction=0.2, seed=3)
    assert ds.layout == "auto-split" and ds.split_dirs == {}
    assert ds.class_counts("val") == {"a": 4, "b": 2, "c": 1}
    assert ds.class_counts("train") == {"a": 16, "b": 8, "c": 4}
    again = scan_dataset(tmp_path, val_fraction=0.2, seed=3)
    assert _paths(again.splits["val"]) == _paths(ds.splits["val"])
    assert _paths(again.splits["train"]) == _paths(ds.splits["train"])
    other = scan_dataset(tmp_path, val_fraction=0.2, seed=4)
    assert _paths(other.splits["val"]) != _paths(ds.splits["val"])
    all_paths = _paths(ds.splits["train"]) + _paths(ds.splits["val"])
    assert len(all_paths) == len(set(all_paths)) == 35


def test_auto_split_stable_when_class_added(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path, {"a": 20, "b": 10})
    before = [r for r in scan_dataset(tmp_path).splits["val"] if r.path.parent.name == "a"]
    make_class_tree(tmp_path, {"c": 5})
    after = [r for r in scan_dataset(tmp_path).splits["val"] if r.path.parent.name == "a"]
    assert _paths(before) == _paths(after)


def test_auto_split_with_test_fraction(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path, {"a": 20, "b": 10})
    ds = scan_dataset(tmp_path, val_fraction=0.2, test_fraction=0.1)
    assert set(ds.splits) == {"train", "val", "test"}
    assert ds.class_counts("test") == {"a": 2, "b": 1}
    assert ds.class_counts("val") == {"a": 4, "b": 2}
    assert ds.class_counts("train") == {"a": 14, "b": 7}
    seen = [p for s in ds.splits.values() for p in _paths(s)]
    assert len(seen) == len(set(seen)) == 30


def test_class_too_small_to_split(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path, {"a": 5, "b": 1})
    with pytest.raises(DataError, match="'b'.*only 1"):
        scan_dataset(tmp_path)


def test_nested_images_hidden_and_non_image_files(tmp_path: Path, make_class_tree, make_image) -> None:
    make_class_tree(tmp_path, {"a": 3, "b": 3})
    make_image(tmp_path / "a" / "sub" / "deeper" / "x.JPG")
    (tmp_path / "README.md").write_text("about")
    (tmp_path / "LICENSE").write_text("license")
    (tmp_path / "a" / "notes.txt").write_text("n")
    (tmp_path / "b" / ".DS_Store").write_bytes(b"\0")
    make_image(tmp_path / ".git" / "x" / "y.png")  # hidden folders are not classes
    make_image(tmp_path / "__MACOSX" / "a" / "y.png")
    make_image(tmp_path / "b" / ".thumbs" / "t.png")  # hidden sub-folder inside a class
    ds = scan_dataset(tmp_path, val_fraction=0.3)
    assert ds.classes == ["a", "b"]
    assert sum(ds.class_counts("train").values()) + sum(ds.class_counts("val").values()) == 7
    assert any(p.endswith("x.JPG") for s in ds.splits.values() for p in _paths(s))
    names = sorted(Path(p).name for p in ds.ignored)
    assert names == [".DS_Store", "LICENSE", "README.md", "notes.txt"]
    assert ds.summary()["n_ignored"] == 4


# ---------------------------------------------------------------------------- skipped files
def test_broken_files_skipped_with_warning(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path, {"a": 5, "b": 5})
    _write_bad(tmp_path / "a" / "empty.jpg")
    _write_bad(tmp_path / "b" / "text.png", b"not an image")
    warned: list[str] = []
    ds = scan_dataset(tmp_path, warn=warned.append)
    assert sorted(Path(s.path).name for s in ds.skipped) == ["empty.jpg", "text.png"]
    assert all(isinstance(s, SkippedFile) and s.reason for s in ds.skipped)
    assert len(warned) == 2 and all(w.startswith("skipped ") for w in warned)
    assert ds.skipped[0].to_dict().keys() == {"path", "reason"}
    assert sum(len(v) for v in ds.splits.values()) == 10


def test_default_warn_uses_logging(tmp_path: Path, make_class_tree, caplog) -> None:
    make_class_tree(tmp_path, {"a": 3, "b": 3})
    _write_bad(tmp_path / "a" / "empty.jpg")
    with caplog.at_level(logging.WARNING, logger="graft"):
        scan_dataset(tmp_path)
    assert any("empty.jpg" in r.getMessage() for r in caplog.records)


def test_strict_mode(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path, {"a": 3, "b": 3})
    bad = _write_bad(tmp_path / "a" / "empty.jpg")
    with pytest.raises(DataError) as exc:
        scan_dataset(tmp_path, strict=True, warn=lambda m: None)
    assert str(bad) in str(exc.value) and "--strict" in str(exc.value)


def test_pixel_limit_skip(tmp_path: Path, make_class_tree, make_image) -> None:
    make_class_tree(tmp_path, {"a": 3, "b": 3}, size=(16, 16))
    make_image(tmp_path / "a" / "big.png", size=(200, 200))
    ds = scan_dataset(tmp_path, max_pixels=10_000, warn=lambda m: None)
    assert [Path(s.path).name for s in ds.skipped] == ["big.png"] and "too large" in ds.skipped[0].reason


def test_progress_counts_every_probed_file(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path, {"a": 4, "b": 3})
    _write_bad(tmp_path / "a" / "empty.jpg")
    done: list[int] = []
    scan_dataset(tmp_path, progress=done.append, warn=lambda m: None)
    assert sum(done) == 8


# ---------------------------------------------------------------------------- errors
def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        scan_dataset(tmp_path / "nope")


def test_root_is_file(tmp_path: Path, make_image) -> None:
    with pytest.raises(DataError, match="not a folder"):
        scan_dataset(make_image(tmp_path / "a.png"))


def test_fewer_than_two_classes(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path, {"only": 4})
    with pytest.raises(DataError, match="at least two class folders.*'only'"):
        scan_dataset(tmp_path)
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="found none"):
        scan_dataset(tmp_path / "x")


def test_empty_class_folder(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "readme.txt").write_text("x")
    with pytest.raises(DataError) as exc:
        scan_dataset(tmp_path)
    assert str(tmp_path / "c") in str(exc.value) and "no usable images" in str(exc.value)


def test_class_with_only_broken_images(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path, {"a": 3, "b": 3})
    _write_bad(tmp_path / "c" / "x.jpg")
    with pytest.raises(DataError, match="all unreadable"):
        scan_dataset(tmp_path, warn=lambda m: None)


def test_bad_fractions(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path, {"a": 3, "b": 3})
    with pytest.raises(DataError, match="no images"):
        scan_dataset(tmp_path, val_fraction=0.0)
    with pytest.raises(DataError, match="val_fraction"):
        scan_dataset(tmp_path, val_fraction=1.5)
    with pytest.raises(DataError, match="below 1"):
        scan_dataset(tmp_path, val_fraction=0.6, test_fraction=0.5)


def test_summary_is_json_ready(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path, {"a": 6, "b": 3})
    ds = scan_dataset(tmp_path)
    summary = json.loads(json.dumps(ds.summary()))
    assert summary["layout"] == "auto-split"
    assert summary["counts"]["train"] == {"a": 5, "b": 2}
    assert summary["n_skipped"] == 0
    assert isinstance(ds, DatasetSplits)


# ---------------------------------------------------------------------------- scan_split
def test_scan_split_prefers_test_then_val(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path / "train", {"a": 3, "b": 3})
    make_class_tree(tmp_path / "valid", {"a": 2, "b": 2})
    recs, classes, skipped = scan_split(tmp_path)
    assert len(recs) == 4 and all(r.path.parent.parent.name == "valid" for r in recs)
    assert classes == ["a", "b"] and skipped == []
    make_class_tree(tmp_path / "Test", {"a": 1, "b": 1})
    recs, _, _ = scan_split(tmp_path)
    assert len(recs) == 2 and all(r.path.parent.parent.name == "Test" for r in recs)
    for name in ("val", "VALID", "valid"):
        assert len(scan_split(tmp_path, name)[0]) == 4
    assert len(scan_split(tmp_path, "train")[0]) == 6


def test_scan_split_maps_model_classes(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path, {"b": 2, "c": 1})
    model_classes = ["c", "a", "b"]
    recs, classes, _ = scan_split(tmp_path, classes=model_classes)
    assert classes == model_classes
    assert sorted((r.path.parent.name, r.label) for r in recs) == [("b", 2), ("b", 2), ("c", 0)]
    with pytest.raises(DataError, match=r"not classes of the model.*\['x', 'y'\]"):
        scan_split(tmp_path, classes=["x", "y"])


def test_scan_split_errors(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path / "train", {"a": 2, "b": 2})
    with pytest.raises(DataError, match="--split train"):
        scan_split(tmp_path)
    with pytest.raises(DataError, match="no 'test' split"):
        scan_split(tmp_path, "test")
    with pytest.raises(DataError, match="does not exist"):
        scan_split(tmp_path / "missing")


# ---------------------------------------------------------------------------- collect_image_paths
def test_collect_image_paths(tmp_path: Path, make_image) -> None:
    a = make_image(tmp_path / "one.png")
    make_image(tmp_path / "dir" / "b.jpg")
    make_image(tmp_path / "dir" / "sub" / "a.JPG")
    (tmp_path / "dir" / "notes.txt").write_text("x")
    make_image(tmp_path / "glob" / "x1.png")
    make_image(tmp_path / "glob" / "x2.png")
    inputs = [
        str(a),
        str(tmp_path / "dir"),
        str(tmp_path / "glob" / "*.png"),
        str(a),
        str(tmp_path / "nothing*.png"),
        str(tmp_path / "missing.jpg"),
    ]
    paths, skipped = collect_image_paths(inputs)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "one.png",
        "dir/b.jpg",
        "dir/sub/a.JPG",
        "glob/x1.png",
        "glob/x2.png",
    ]
    assert [s.path for s in skipped] == [str(tmp_path / "nothing*.png"), str(tmp_path / "missing.jpg")]
    assert all(s.reason == "no such file or no image matched" for s in skipped)
    rec_paths, _ = collect_image_paths([str(tmp_path / "**" / "*.png")])
    assert {p.name for p in rec_paths} == {"one.png", "x1.png", "x2.png"}


# ---------------------------------------------------------------------------- real datasets
def _timed_scan(name: str, **kw) -> DatasetSplits:
    root = shared_dataset(name)
    t0 = time.perf_counter()
    ds = scan_dataset(root, **kw)
    print(f"scan {name}: {time.perf_counter() - t0:.2f}s, {sum(len(v) for v in ds.splits.values())} images")
    return ds


@pytest.mark.integration
def test_hymenoptera() -> None:
    ds = _timed_scan("hymenoptera")
    assert ds.classes == ["ants", "bees"] and set(ds.splits) == {"train", "val"}
    assert ds.layout == "split-folders" and ds.split_dirs == {"train": "train", "val": "val"}
    gif = shared_dataset("hymenoptera") / "train" / "ants" / "imageNotFound.gif"
    # The placeholder is a valid 300x300 GIF, so it is kept (a real image of the ants class).
    assert any(r.path == gif and (r.width, r.height) == (300, 300) for r in ds.splits["train"])
    assert ds.skipped == []
    assert load_image(gif).size == (300, 300)
    assert len(ds.splits["train"]) == 245 and len(ds.splits["val"]) == 153


@pytest.mark.integration
def test_sign_digits() -> None:
    ds = _timed_scan("sign_digits")
    assert ds.classes == [str(i) for i in range(10)] and ds.layout == "auto-split"
    assert sorted(Path(p).name for p in ds.ignored) == ["LICENSE", "README.md"]
    big = [r for s in ds.splits.values() for r in s if r.width == 3024]
    assert len(big) == 3 and all(r.height == 3024 and r.label == 7 for r in big)
    assert sum(len(v) for v in ds.splits.values()) == 2062 and not ds.skipped


@pytest.mark.integration
def test_cats_dogs_filtered() -> None:
    ds = _timed_scan("cats_dogs_filtered")
    assert ds.classes == ["cats", "dogs"] and ds.split_dirs == {"train": "train", "val": "validation"}
    assert len(ds.splits["train"]) == 2000 and len(ds.splits["val"]) == 1000


@pytest.mark.integration
def test_flowers() -> None:
    ds = _timed_scan("flowers_kaggle_128", val_fraction=0.2, seed=0)
    assert ds.classes == ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    total = {c: ds.class_counts("train")[c] + ds.class_counts("val")[c] for c in ds.classes}
    assert sum(total.values()) == 4317
    for c in ds.classes:
        assert ds.class_counts("val")[c] == int(total[c] * 0.2 + 0.5)
