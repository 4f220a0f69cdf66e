"""The export formats graft can write: one module per format registers itself here.

A format is added in one new module of :mod:`graft.export.formats` with a function
decorated by :func:`register_format` (as heads are added with
:func:`graft.network.heads.register_head`). The function writes the file and returns a
:class:`~graft.export.job.Built`: how to run it (for the parity check) and its metadata
read back from the written file. This module imports no format (they import it); looking
a format up by name, which loads them all first, is :mod:`graft.export.catalogue`'s.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from graft.exceptions import GraftError

if TYPE_CHECKING:
    from pathlib import Path

    from graft.export.job import Built, ExportJob

__all__ = ["ExportFormat", "MissingExtraError", "FORMATS", "register_format", "missing_requirement", "require"]

Writer = Callable[["ExportJob", "Path", bool], "Built"]
Reader = Callable[["Path"], dict]


class MissingExtraError(GraftError, ImportError):
    """A converter or runtime an export format needs is not installed (install the extra it names)."""

    exit_code = 2


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Attributes:
        name: the ``--format`` value.
        suffix: the default file name's ending (``""``: a folder).
        extra: the pip extra that installs its converter and runtime.
        requires: modules imported to write and verify it.
        verified_by: ``"running"`` (its own runtime runs here) or ``"inspection"`` (the saved spec is read back).
        int8: how ``--int8`` quantises it, or ``""`` where the converter has no int8 route graft uses.
        write: the writer (see the module docstring).
        read_metadata: reads graft's document back from a written file, without graft's model folder.
    """

    name: str
    suffix: str
    extra: str
    requires: tuple[str, ...]
    verified_by: str
    int8: str
    write: Writer
    read_metadata: Reader

    def install_hint(self) -> str:
        return f'pip install "graft[{self.extra}]"' if self.extra else "pip install graft"


FORMATS: dict[str, ExportFormat] = {}


def register_format(
    name: str, *, suffix: str, extra: str, requires: tuple[str, ...], verified_by: str, int8: str, reader: Reader
) -> Callable[[Writer], Writer]:
    """Decorator: register ``fn`` as the writer of format ``name`` (see :class:`ExportFormat`)."""

    def deco(fn: Writer) -> Writer:
        FORMATS[name] = ExportFormat(name, suffix, extra, requires, verified_by, int8, fn, reader)
        return fn

    return deco


def missing_requirement(fmt: ExportFormat) -> str | None:
    """None when every module ``fmt`` needs imports; else one line naming it and the install command."""
    for mod in fmt.requires:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            return f"--format {fmt.name} needs the Python package '{mod}' ({type(e).__name__}); install it with: {fmt.install_hint()}"
    return None


def require(fmt: ExportFormat) -> None:
    """Raise :class:`MissingExtraError` (exit 2, one line) when ``fmt``'s converter or runtime is missing."""
    msg = missing_requirement(fmt)
    if msg is not None:
        raise MissingExtraError(msg)
