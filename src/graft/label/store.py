"""The answers of a labelling session: a CSV manifest, each answer on disk before the next image is shown.

The file is ``path,label`` (paths relative to the image folder), so ``graft train FILE.csv
--images FOLDER`` reads it as it is. An answer is one appended line, flushed and fsynced
before the server replies: a crash, a killed server or a closed tab loses nothing already
answered. Undo rewrites the file without its last line, atomically
(:func:`graft.fileio.atomic_write`). On a restart the images already in the file are skipped.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Sequence

from graft.exceptions import DataError
from graft.fileio import atomic_write_text, make_folder

__all__ = ["AnswerStore", "HEADER", "check_classes"]

HEADER = ("path", "label")


def check_classes(classes: Sequence[str]) -> list[str]:
    """The class list, stripped; one-line errors for fewer than two, an empty name or a duplicate."""
    names = [str(c).strip() for c in classes]
    if len(names) < 2:
        raise DataError(f"{len(names)} class(es) given ({', '.join(names) or 'none'}); give at least two, e.g. a,b")
    if any(not n for n in names):
        raise DataError("an empty class name in the class list; remove the extra comma")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise DataError(f"class {n!r} is listed twice; give each class once")
        seen.add(n)
    return names


class AnswerStore:
    """Appends answers to ``path`` (created with its header), knows the answers already there."""

    def __init__(self, path: str | os.PathLike, classes: Sequence[str]) -> None:
        self.path = Path(path)
        self.classes = list(classes)
        self.answers: dict[str, str] = {}  # relative path -> label, in file order
        if self.path.exists() and self.path.stat().st_size:
            self._read()
        else:
            make_folder(self.path.parent, "--out")
            atomic_write_text(self.path, ",".join(HEADER) + "\n")

    def _read(self) -> None:
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if list(reader.fieldnames or [])[:2] != list(HEADER):
                raise DataError(
                    f"{self.path}: not a labels file of graft label (columns path,label); pass another --out"
                )
            for row in reader:
                self.answers[row["path"]] = row["label"]

    def add(self, relpath: str, label: str) -> None:
        """Append one answer and make it durable (flush + fsync) before returning."""
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([relpath, label])
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        self.answers[relpath] = label

    def remove(self, relpath: str) -> None:
        """Take an answer back (undo): the file is rewritten without it, atomically."""
        self.answers.pop(relpath, None)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(HEADER)
        w.writerows(self.answers.items())
        atomic_write_text(self.path, buf.getvalue())
