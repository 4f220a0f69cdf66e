"""Dataset doctor: corrupt files, duplicates, train/val leaks, likely label errors, outliers, imbalance, small images.

``graft.doctor(DATA_DIR)`` returns a :class:`DoctorReport`; :func:`write_html` and
:func:`write_fix_plan` render it. Nothing here writes to the dataset folder.

``graft.doctor`` is both this package and the function: importing a subpackage binds
its module to the parent's attribute, which would shadow a plain function of the same
name, so the module itself is made callable and forwards to :func:`doctor`.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from graft.doctor.core import doctor
from graft.doctor.issues import KINDS, DoctorReport, Issue
from graft.doctor.render import check_output, fix_plan_rows, report_html, write_fix_plan, write_html

__all__ = [
    "doctor",
    "DoctorReport",
    "Issue",
    "KINDS",
    "report_html",
    "write_html",
    "fix_plan_rows",
    "write_fix_plan",
    "check_output",
]


class _CallableModule(types.ModuleType):
    """``graft.doctor(data_dir, ...)`` calls :func:`doctor` even once ``graft.doctor`` is this module."""

    def __call__(self, *args: Any, **kwargs: Any) -> DoctorReport:
        return doctor(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
