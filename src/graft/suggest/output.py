"""Writing suggestions: JSON, a CSV manifest with an empty label column, a self-contained HTML page."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from graft.fileio import atomic_write_text
from graft.suggest.core import Suggestions

__all__ = ["CSV_COLUMNS", "write_csv", "write_html", "write_json"]

#: The CSV's columns: ``path`` (relative to the unlabelled folder) and ``label`` are what graft's manifest
#: loader reads once the labels are filled in (``graft train FILE.csv --images FOLDER``); the rest say why.
CSV_COLUMNS = ("path", "label", "rank", "score", "reason", "guess", "probability")


def write_json(s: Suggestions, path: str | os.PathLike) -> Path:
    """The suggestions, counts and unreadable files as JSON."""
    atomic_write_text(Path(path), json.dumps(s.to_dict(), indent=2))
    return Path(path)


def write_csv(s: Suggestions, path: str | os.PathLike) -> Path:
    """One row per suggestion, in rank order, with an empty ``label`` column to fill in."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in s.rows:
        w.writerow({**r, "path": r["relpath"], "label": ""})
    atomic_write_text(Path(path), buf.getvalue())
    return Path(path)


def write_html(s: Suggestions, path: str | os.PathLike, cols: int = 5) -> Path:
    """One offline HTML file: counts, then every suggestion's thumbnail (embedded) with its rank and reason."""
    from graft.report.html import kv_table, page, photo_grid

    photos = [
        (
            Path(r["path"]),
            [f"#{r['rank']} {r['relpath']}", r["reason"]] + ([f"guess: {r['guess']}"] if r.get("guess") else []),
            "#a33" if r.get("guess") == "unknown" else "#222",
        )
        for r in s.rows
    ]
    counts = kv_table((k.replace("_", " "), v) for k, v in s.counts.items())
    html = page(
        "What to label next",
        f"{len(s.rows)} suggestions from {s.folder} ({s.method})",
        [("suggested", str(len(s.rows))), ("candidates", str(s.counts.get("candidates", 0)))]
        + ([("unknown to the model", f"{s.unknown['images']} ({s.unknown['share']:.0%})")] if s.unknown else []),
        [("counts", "Images", counts), ("suggestions", "Suggestions, most useful first", photo_grid(photos, cols))],
    )
    atomic_write_text(Path(path), html)
    return Path(path)
