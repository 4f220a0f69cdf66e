"""``graft label``: a local web page to label images one at a time, every answer saved at once.

:class:`LabelSession` holds the queue and the answers (:class:`AnswerStore`, a ``path,label``
CSV manifest appended and fsynced per answer); :func:`create_label_app` serves it;
:func:`open_session` builds a session from a folder, a class list and an optional order.
"""

from __future__ import annotations

from graft.label.app import create_label_app
from graft.label.session import Item, LabelSession, queue_from_csv, queue_from_folder
from graft.label.store import AnswerStore, check_classes

__all__ = [
    "AnswerStore",
    "Item",
    "LabelSession",
    "check_classes",
    "create_label_app",
    "open_session",
    "queue_from_csv",
    "queue_from_folder",
]


def open_session(folder: str, classes: list[str], out: str, queue: list[Item] | None = None) -> LabelSession:
    """A session over ``folder`` (every image, or ``queue``'s order), answers in ``out`` (resumed if it exists).

    Raises:
        DataError: no images, a bad class list, ``out`` inside the image folder, or not a labels file.
    """
    import os
    from pathlib import Path

    from graft.exceptions import DataError
    from graft.features.unlabeled import unlabeled_images

    root = Path(folder)
    paths = unlabeled_images(root)
    names = check_classes(classes)
    if Path(out).resolve().is_relative_to(root.resolve()):
        raise DataError(
            f"--out {out} is inside the image folder {root}; write the labels elsewhere (nothing there changes)"
        )
    items = queue if queue is not None else queue_from_folder(root, paths)
    if not os.access(Path(out).resolve().parent, os.W_OK) and Path(out).resolve().parent.exists():
        raise DataError(f"--out {out}: its folder is not writable; pass another path")
    return LabelSession(root, items, AnswerStore(out, names))
