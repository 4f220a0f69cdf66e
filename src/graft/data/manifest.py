"""Labels from a manifest: CSV, TSV, JSON Lines or Parquet rows naming an image, its label(s), maybe its split.

Kaggle sets ship ``train.csv`` (``id,label``) beside a flat ``images/`` folder; annotation tools
(Label Studio, CVAT, FiftyOne) export CSV or JSON Lines; multi-label sets list several labels
in one cell (``"blue|dress"``) or one 0/1 column per label. :func:`read_manifest` reads all of
these into :class:`Manifest` rows, checked row by row: every problem is one line naming the
file, the row and the fix (:class:`~graft.exceptions.DataError`), never a parser's traceback.

A manifest is untrusted input: a path may not leave the images folder (``..``, an absolute
path or a link pointing out), and nothing in it is executed or fetched.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graft.data.decode import has_image_extension
from graft.data.options import ManifestOptions
from graft.exceptions import DataError

__all__ = [
    "LABEL_COLUMNS",
    "MANIFEST_SUFFIXES",
    "PATH_COLUMNS",
    "SPLIT_COLUMNS",
    "Manifest",
    "ManifestRow",
    "find_manifest",
    "read_manifest",
]

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
#: Column names recognised without ``--path-col`` / ``--label-col`` / ``--split-col`` (any case).
PATH_COLUMNS = (
    "path",
    "filepath",
    "file_path",
    "file",
    "filename",
    "file_name",
    "image",
    "image_path",
    "id",
    "image_id",
)
LABEL_COLUMNS = ("label", "labels", "class", "classes", "tags", "category", "target")
SPLIT_COLUMNS = ("split", "subset", "set")
#: Separators tried, in order, for several labels in one cell; a space only in a column named
#: ``labels``/``tags``/``classes`` (elsewhere "golden retriever" is one class name).
SEPARATORS = ("|", ";", ",")
_PLURAL = ("labels", "tags", "classes")
_SPLIT_VALUES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
_IMAGE_DIRS = ("", "images", "train", "imgs")  # where a bare id's image is looked for, beside the manifest
_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".JPG", ".JPEG", ".PNG")


@dataclass(frozen=True)
class ManifestRow:
    """One usable row: the image, its label indices, its split (None: not given) and its row number."""

    path: Path
    labels: tuple[int, ...]
    split: str | None
    row: int


@dataclass
class Manifest:
    """A checked manifest: classes (sorted), rows, and the rows left out with why."""

    path: Path
    images: Path
    classes: list[str]
    rows: list[ManifestRow]
    multi_label: bool
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of listed images not found
    merged: int = 0  # duplicate rows with identical labels, merged


def find_manifest(data: str | os.PathLike) -> Path | None:
    """The manifest ``data`` names: the file itself, or the one manifest file directly in the folder.

    Raises:
        DataError: the folder holds several manifest files (the user must pick one).
    """
    p = Path(data)
    if p.is_file():
        return p if p.suffix.lower() in MANIFEST_SUFFIXES else None
    if not p.is_dir():
        return None
    found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in MANIFEST_SUFFIXES)
    if len(found) > 1:
        names = ", ".join(f.name for f in found)
        raise DataError(f"{p} holds several manifests ({names}); pass the one to use, e.g. graft train {found[0]}")
    return found[0] if found else None


def read_manifest(path: str | os.PathLike, options: ManifestOptions | None = None) -> Manifest:
    """Read and check a manifest (see the module docstring); images are located, not opened."""
    opts = options or ManifestOptions()
    path = Path(path)
    table, columns = _read_table(path)
    if not table:
        raise DataError(f"{path} has no rows; add one row per image (a path column and a label column)")
    cols = _columns(path, columns, opts)
    images = Path(opts.images).expanduser() if opts.images else path.parent
    if not images.is_dir():
        raise DataError(f"--images {images} is not a folder; pass the folder the manifest's paths are relative to")
    labels_of, multi = _label_reader(path, table, columns, cols, opts)
    raw: list[tuple[str, tuple[str, ...], str | None, int]] = []
    for row_no, rec in table:
        rel = str(rec.get(cols["path"], "") or "").strip()
        if not rel:
            raise DataError(f"{path}, row {row_no}: the {cols['path']!r} column is empty; give every row an image path")
        names = labels_of(row_no, rec)
        split = _split_of(path, row_no, rec, cols.get("split"))
        raw.append((rel, names, split, row_no))
    classes = sorted({n for _, names, _, _ in raw for n in names})
    if len(classes) < 2:
        raise DataError(f"{path} names {len(classes)} label(s) {classes}; a classifier needs at least two")
    return _locate(path, images, raw, classes, multi, explicit_root=opts.images is not None)


# ---------------------------------------------------------------------------- reading the table
def _read_table(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """``[(row number, {column: value})]`` and the column names; row numbers count the header as row 1."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror or e})") from None
    text = _decode(path, data)
    if suffix == ".jsonl":
        return _read_jsonl(path, text)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
    try:
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        rows = [(i + 2, {k: v for k, v in r.items() if k is not None}) for i, r in enumerate(reader)]
    except csv.Error as e:
        raise DataError(f"{path}, row {reader.line_num}: not valid CSV ({e}); check its quotes") from None
    return [(n, r) for n, r in rows if any(str(v or "").strip() for v in r.values())], columns


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # a BOM (Excel's "CSV UTF-8") is dropped
    except UnicodeDecodeError as e:
        row = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}, row {row}: not UTF-8 text (byte {data[e.start]:#04x}); save the file as UTF-8"
        ) from None


def _read_jsonl(path: Path, text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    columns: dict[str, None] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {n}: not a JSON object ({e.msg}); one object per line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}, line {n}: a JSON {type(obj).__name__}, not an object; one object per line")
        rows.append((n, obj))
        columns.update(dict.fromkeys(obj))
    return rows, list(columns)


def _read_parquet(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f'{path}: reading Parquet needs pyarrow: pip install -e ".[parquet]" (or save the manifest as CSV)'
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise DataError(f"{path} is not a readable Parquet file ({e})") from None
    return [(i + 1, r) for i, r in enumerate(table.to_pylist())], list(table.column_names)


# ---------------------------------------------------------------------------- columns and labels
def _pick(columns: list[str], given: str | None, known: tuple[str, ...], what: str, path: Path) -> str | None:
    if given is not None:
        if given not in columns:
            raise DataError(f"{path} has no column {given!r} (columns: {', '.join(columns)}); check --{what}-col")
        return given
    lower = {c.lower(): c for c in columns}
    return next((lower[k] for k in known if k in lower), None)


def _columns(path: Path, columns: list[str], opts: ManifestOptions) -> dict[str, str]:
    cols = {"path": _pick(columns, opts.path_col, PATH_COLUMNS, "path", path)}
    if cols["path"] is None:
        raise DataError(
            f"{path} has no image path column (columns: {', '.join(columns)}); name it path, file, filename, "
            "image or id, or pass --path-col"
        )
    cols["label"] = _pick(columns, opts.label_col, LABEL_COLUMNS, "label", path)
    cols["split"] = _pick(columns, opts.split_col, SPLIT_COLUMNS, "split", path)
    return {k: v for k, v in cols.items() if v is not None}


def _label_reader(path: Path, table: list, columns: list[str], cols: dict[str, str], opts: ManifestOptions) -> Any:
    """``(labels_of(row_no, record) -> names, multi_label)`` for a label column or one 0/1 column per label."""
    if "label" in cols:
        col = cols["label"]
        sep = opts.label_sep if opts.label_sep is not None else _detect_separator(table, col)

        def from_cell(row_no: int, rec: dict[str, Any]) -> tuple[str, ...]:
            names = _split_cell(rec.get(col), sep)
            if not names:
                raise DataError(f"{path}, row {row_no}: the {col!r} column is empty; label the image or remove the row")
            return names

        return from_cell, sep is not None
    onehot = [c for c in columns if c not in cols.values() and _is_binary(table, c)]
    if len(onehot) < 2:
        raise DataError(
            f"{path} has no label column (columns: {', '.join(columns)}); name it label, labels, class or tags, "
            "pass --label-col, or give one 0/1 column per label"
        )

    def from_onehot(row_no: int, rec: dict[str, Any]) -> tuple[str, ...]:
        names = tuple(c for c in onehot if str(rec.get(c, "")).strip() in ("1", "1.0", "True", "true"))
        if not names:
            raise DataError(f"{path}, row {row_no}: no label column is 1; label the image or remove the row")
        return names

    multi = any(sum(str(r.get(c, "")).strip() in ("1", "1.0", "True", "true") for c in onehot) > 1 for _, r in table)
    return from_onehot, multi


def _detect_separator(table: list, col: str) -> str | None:
    cells = [str(r.get(col) or "") for _, r in table]
    for sep in SEPARATORS:
        if any(sep in c for c in cells):
            return sep
    if col.lower() in _PLURAL and any(" " in c.strip() for c in cells):
        return " "
    return None


def _split_cell(value: Any, sep: str | None) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):  # JSON Lines / Parquet lists
        parts = [str(v) for v in value]
    else:
        text = "" if value is None else str(value)
        parts = text.split(sep) if sep is not None else [text]
    return tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))


def _is_binary(table: list, col: str) -> bool:
    values = {str(r.get(col, "")).strip() for _, r in table}
    return bool(values) and values <= {"0", "1", "0.0", "1.0", "True", "False", "true", "false"}


def _split_of(path: Path, row_no: int, rec: dict[str, Any], col: str | None) -> str | None:
    if col is None:
        return None
    value = str(rec.get(col) or "").strip()
    if not value:
        return None
    split = _SPLIT_VALUES.get(value.lower())
    if split is None:
        raise DataError(f"{path}, row {row_no}: unknown split {value!r}; use train, val or test (any case)")
    return split


# ---------------------------------------------------------------------------- images
def _locate(
    path: Path,
    images: Path,
    raw: list[tuple[str, tuple[str, ...], str | None, int]],
    classes: list[str],
    multi: bool,
    *,
    explicit_root: bool,
) -> Manifest:
    index = {c: i for i, c in enumerate(classes)}
    root = images.resolve()
    rows: dict[Path, ManifestRow] = {}  # by real path: two spellings of one file are one image
    out = Manifest(path, images, classes, [], multi)
    for rel, names, split, row_no in raw:
        found = _find_image(path, root, rel, row_no, explicit_root)
        if found is None:
            out.missing.append((str(images / rel), f"listed in {path.name} row {row_no} but not found"))
            continue
        labels = tuple(sorted(index[n] for n in names))
        row = ManifestRow(found[0], labels, split, row_no)
        earlier = rows.get(found[1])
        if earlier is not None:
            if earlier.labels != labels or earlier.split != split:
                raise DataError(
                    f"{path}, rows {earlier.row} and {row_no}: the same image {rel!r} with different labels or "
                    "splits; keep one row"
                )
            out.merged += 1
            continue
        rows[found[1]] = row
    out.rows = list(rows.values())
    return out


def _find_image(path: Path, root: Path, rel: str, row_no: int, explicit_root: bool) -> tuple[Path, Path] | None:
    """The image a row names, inside ``root`` (as named, and its real path); None when it is not there.

    Raises:
        DataError: the path leaves ``root`` (``..``, absolute, or a link out of it).
    """
    p = Path(rel)
    if p.is_absolute() and not explicit_root:
        raise DataError(
            f"{path}, row {row_no}: absolute path {rel!r}; write paths relative to the manifest's folder, "
            "or pass --images FOLDER and paths inside it"
        )
    candidates = [root / sub / p for sub in _IMAGE_DIRS] if not p.is_absolute() else [p]
    if not p.suffix or not has_image_extension(p.name):
        candidates += [c.with_name(c.name + ext) for c in candidates for ext in _EXTENSIONS]
    for cand in candidates:
        if cand.is_file():
            real = cand.resolve()
            if not real.is_relative_to(root):
                raise DataError(
                    f"{path}, row {row_no}: {rel!r} leads outside {root}; graft reads only images inside the "
                    "manifest's folder (or --images FOLDER)"
                )
            return cand, real
    if not Path(os.path.normpath(root / p)).is_relative_to(root):
        raise DataError(
            f"{path}, row {row_no}: {rel!r} leads outside {root}; graft reads only images inside the manifest's "
            "folder (or --images FOLDER)"
        )
    return None
