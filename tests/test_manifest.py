"""Labels from manifests: CSV, TSV, JSON Lines; single and multi-label; every bad row is one line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from _datasets import shared_dataset
from graft.data.manifest import read_manifest
from graft.data.manifest_splits import iterative_split, manifest_splits
from graft.data.options import ManifestOptions, SplitOptions
from graft.data.scan import scan_dataset
from graft.data.source import scan_labelled
from graft.exceptions import DataError


@pytest.fixture
def flat(tmp_path: Path, make_image: Callable[..., Path]) -> Path:
    """A Kaggle-style set: 12 images in a flat images/ folder, ids without extensions in the CSV."""
    for i in range(12):
        make_image(tmp_path / "images" / f"im{i:02d}.jpg", seed=i)
    return tmp_path


def _csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_kaggle_csv_ids_beside_an_images_folder_split_per_class(flat: Path) -> None:
    rows = "".join(f"im{i:02d},{'cat' if i % 2 else 'dog'}\n" for i in range(12))
    m = _csv(flat / "train.csv", "id,label\n" + rows)
    splits = scan_labelled(flat, SplitOptions(val_fraction=0.25))  # the folder's one manifest
    assert splits.classes == ["cat", "dog"] and splits.layout == "manifest" and not splits.multi_label
    assert sorted(len(r) for r in splits.splits.values()) == [4, 8]  # 2 of each class's 6
    assert {r.path.name for recs in splits.splits.values() for r in recs} == {f"im{i:02d}.jpg" for i in range(12)}
    again = scan_labelled(m, SplitOptions(val_fraction=0.25))
    assert [r.path for r in again.splits["val"]] == [r.path for r in splits.splits["val"]]  # seeded
    assert {splits.classes[r.label] for r in splits.splits["val"]} == {"cat", "dog"}  # stratified


def test_bom_crlf_quotes_tsv_and_jsonl_read_alike(flat: Path) -> None:
    labels = ["a b" if i % 2 else "c" for i in range(12)]
    rows = "".join(f'"im{i:02d}.jpg","{lab}"\r\n' for i, lab in enumerate(labels))
    csv_m = read_manifest(_csv(flat / "m.csv", "\ufefffile,class\r\n" + rows))
    tsv_m = read_manifest(
        _csv(flat / "m.tsv", "file\tclass\n" + "".join(f"im{i:02d}.jpg\t{b}\n" for i, b in enumerate(labels)))
    )
    jl = "".join(json.dumps({"image": f"im{i:02d}.jpg", "label": b}) + "\n" for i, b in enumerate(labels))
    jsonl_m = read_manifest(_csv(flat / "m.jsonl", jl))
    for m in (csv_m, tsv_m, jsonl_m):
        assert m.classes == ["a b", "c"] and not m.multi_label  # a space is no separator in a 'class' column
        assert [r.labels for r in m.rows] == [((0,) if i % 2 else (1,)) for i in range(12)]


def test_multi_label_cells_and_one_hot_columns(flat: Path) -> None:
    cell = read_manifest(
        _csv(
            flat / "a.csv",
            "path,labels\n"
            + "".join(f'im{i:02d}.jpg,"x,y"\n' if i % 3 == 0 else f"im{i:02d}.jpg,z\n" for i in range(12)),
        )
    )
    assert cell.multi_label and cell.classes == ["x", "y", "z"] and cell.rows[0].labels == (0, 1)
    onehot = read_manifest(
        _csv(
            flat / "b.csv",
            "path,red,blue,round\n" + "".join(f"im{i:02d}.jpg,{i % 2},{1 - i % 2},{int(i < 6)}\n" for i in range(12)),
        )
    )
    assert onehot.multi_label and onehot.classes == ["blue", "red", "round"]
    assert onehot.rows[0].labels == (0, 2) and onehot.rows[11].labels == (1,)
    sp = manifest_splits(cell, SplitOptions(val_fraction=0.25))
    assert sp.multi_label and all(r.label == -1 and r.labels for recs in sp.splits.values() for r in recs)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,label\nim00.jpg,a\nim01.jpg,\n", "m.csv, row 3: the 'label' column is empty"),
        ("path,name\nim00.jpg,a\n", "has no label column"),
        ("thing,label\nim00.jpg,a\n", "has no image path column"),
        ("path,label,split\nim00.jpg,a,train\nim01.jpg,b,holdout\n", "m.csv, row 3: unknown split 'holdout'"),
        ("path,label\nim00.jpg,a\nim01.jpg,b\nim00.jpg,b\n", "m.csv, rows 2 and 4: the same image"),
        ("path,label\nim00.jpg,a\n../outside.jpg,b\n", "m.csv, row 3: '../outside.jpg' leads outside"),
        ("path,label\n/etc/hostname,a\nim01.jpg,b\n", "m.csv, row 2: absolute path"),
        ('path,label\nim00.jpg,"a\n', "m.csv"),
    ],
)
def test_bad_rows_are_one_line_naming_file_and_row(flat: Path, text: str, message: str) -> None:
    (flat.parent / "outside.jpg").write_bytes(b"x")
    with pytest.raises(DataError) as ei:
        read_manifest(_csv(flat / "m.csv", text))
    assert message in str(ei.value) and "\n" not in str(ei.value)


def test_non_utf8_names_the_row_and_links_out_are_refused(flat: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.raises(DataError, match=r"m.csv, row 3: not UTF-8"):
        read_manifest(_csv(flat / "m.csv", "path,label\nim00.jpg,a\nim01.jpg,caf\xe9\n", encoding="latin-1"))
    secret = tmp_path_factory.mktemp("elsewhere") / "secret.jpg"
    secret.write_bytes((flat / "images" / "im00.jpg").read_bytes())
    os.symlink(secret, flat / "images" / "link.jpg")
    with pytest.raises(DataError, match="leads outside"):
        read_manifest(_csv(flat / "m.csv", "path,label\nim00.jpg,a\nlink.jpg,b\n"))


def test_duplicates_merge_missing_images_skip_and_strict_refuses(flat: Path) -> None:
    (flat / "images" / "broken.jpg").write_bytes(b"not an image")
    text = "path,label\n" + "".join(f"im{i:02d}.jpg,{'ab'[i % 2]}\n" for i in range(12))
    m = _csv(flat / "m.csv", text + "im00.jpg,a\ngone.jpg,a\nbroken.jpg,b\n")
    warned: list[str] = []
    sp = scan_labelled(m, warn=warned.append)
    assert {s.path.split("/")[-1] for s in sp.skipped} == {"gone.jpg", "broken.jpg"}
    assert any("duplicate row" in w for w in warned) and sum(len(r) for r in sp.splits.values()) == 12
    with pytest.raises(DataError, match="2 listed image"):
        scan_labelled(m, strict=True)


def test_a_folder_of_class_folders_with_a_stray_csv_stays_a_folder(tmp_path: Path, make_class_tree) -> None:
    make_class_tree(tmp_path, {"cat": 4, "dog": 4})
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    warned: list[str] = []
    assert scan_labelled(tmp_path, warn=warned.append).layout == "auto-split"
    assert any("notes.csv" in w for w in warned)
    (tmp_path / "more.csv").write_text("a,b\n1,2\n")
    assert scan_labelled(tmp_path).layout == "auto-split"  # two stray CSVs: still the folders
    (tmp_path / "cat" / "x.csv").write_text("a\n")
    (tmp_path / "cat" / "y.csv").write_text("a\n")
    with pytest.raises(DataError, match="several manifests"):
        scan_labelled(tmp_path / "cat")


def test_iterative_stratification_keeps_every_label_in_each_part() -> None:
    rng = np.random.default_rng(0)
    Y = rng.random((300, 8)) < np.array([0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.02])
    parts = iterative_split(Y, {"val": 0.2, "train": 0.8}, seed=1)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(300))
    for j in range(8):
        val, train = Y[parts["val"], j].sum(), Y[parts["train"], j].sum()
        assert val >= 1 and train >= 1, (j, val, train)
        assert abs(val - 0.2 * Y[:, j].sum()) <= 1.0  # each label's share, to within one image
    assert {k: v.tolist() for k, v in iterative_split(Y, {"val": 0.2, "train": 0.8}, seed=1).items()} == {
        k: v.tolist() for k, v in parts.items()
    }


def test_a_csv_listing_hymenoptera_gives_the_folder_splits_exactly(tmp_path: Path) -> None:
    root = shared_dataset("hymenoptera")
    folder = scan_dataset(root)
    lines = ["path,label,split"]
    for split, recs in folder.splits.items():
        lines += [f"{r.path.relative_to(root).as_posix()},{folder.classes[r.label]},{split}" for r in recs]
    m = tmp_path / "hymenoptera.csv"
    m.write_text("\n".join(reversed(lines[1:])) and "\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    listed = scan_labelled(m, manifest=ManifestOptions(images=str(root)))
    assert listed.classes == folder.classes
    for split in folder.splits:
        assert [(r.path.resolve(), r.label) for r in listed.splits[split]] == [
            (r.path.resolve(), r.label) for r in folder.splits[split]
        ]


def test_train_doctor_and_embed_read_a_manifest_from_the_command_line(
    tmp_path: Path, synthetic_dataset: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CSV beside a flat folder (Kaggle style), with renamed columns: the same commands as for folders."""
    from conftest import TINY_BACKBONE, run_cli

    rows = ["file_name,category"]
    for split in ("train", "val"):
        for img in sorted((synthetic_dataset / split).rglob("*.png")):
            rows.append(f"{split}/{img.parent.name}/{img.name},{img.parent.name}")
    (tmp_path / "pics").symlink_to(synthetic_dataset, target_is_directory=True)
    manifest = tmp_path / "labels.csv"
    manifest.write_text("\n".join(rows) + "\n")
    tiny = ["--backbone", TINY_BACKBONE, "--weights", tiny_weights, "--workers", "0", "--precision", "fp32"]
    where = ["--images", tmp_path / "pics", "--path-col", "file_name", "--label-col", "category"]
    code, out, err = run_cli(
        ["train", manifest, "--out", tmp_path / "run", "--no-report", "--quiet", *tiny, *where], capsys
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["classes"] == sorted(p.name for p in (synthetic_dataset / "train").iterdir())
    assert sum(metrics["counts"]["train"].values()) + sum(metrics["counts"]["val"].values()) == len(rows) - 1
    assert json.loads((tmp_path / "run" / "run.json").read_text())["params"]["manifest"]["label_col"] == "category"
    code, out, err = run_cli(["embed", manifest, "--out", tmp_path / "f.npz", "--quiet", *tiny, *where], capsys)
    assert code == 0, err
    assert len(np.load(tmp_path / "f.npz")["paths"]) == len(rows) - 1
    code, out, err = run_cli(["train", manifest, "--out", tmp_path / "bad", "--quiet", *tiny], capsys)  # no --images
    assert code == 2 and "labels.csv has no usable images" in err and "Traceback" not in err
    assert "listed in labels.csv row 2 but not found" in err


def test_a_multi_label_split_fingerprint_reads_the_labels(flat: Path) -> None:
    """evaluate trusts a re-made split only when the fingerprint matches: a changed label set must change it."""
    rows = "".join(f"im{i:02d}.jpg,{'a|b' if i % 2 else 'c'},{'val' if i < 4 else 'train'}\n" for i in range(12))
    before = scan_labelled(_csv(flat / "m.csv", "path,labels,split\n" + rows)).fingerprint()
    after = scan_labelled(_csv(flat / "m.csv", "path,labels,split\n" + rows.replace("a|b", "a", 1))).fingerprint()
    assert before != after


def test_embed_writes_a_label_matrix_for_a_multi_label_manifest(flat: Path, tiny_weights: Path) -> None:
    from conftest import TINY_BACKBONE
    from graft.backbones.options import BackboneOptions
    from graft.embed import embed_folder
    from graft.features.options import EmbedOptions

    rows = "".join(f"im{i:02d}.jpg,{'a|b' if i % 2 else 'c'}\n" for i in range(12))
    m = _csv(flat / "m.csv", "path,labels\n" + rows)
    out = flat / "f.npz"
    embed_folder(
        m, out, backbone=BackboneOptions(TINY_BACKBONE, weights=tiny_weights), embed=EmbedOptions(num_workers=0)
    )
    z = np.load(out)
    assert z["labels"].shape == (12, 3) and list(z["classes"]) == ["a", "b", "c"]
    by_path = dict(zip([Path(p).name for p in z["paths"]], z["labels"].tolist()))
    assert by_path["im01.jpg"] == [1, 1, 0] and by_path["im00.jpg"] == [0, 0, 1]
