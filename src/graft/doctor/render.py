"""Render a :class:`DoctorReport`: a self-contained HTML page with thumbnails, and a CSV fix plan.

The page follows :mod:`graft.report.html`: inline CSS, images as base64 data URIs, no
scripts, no network fetches; every file and class name is HTML-escaped.
"""

from __future__ import annotations

import base64
import csv
import io
import os
from pathlib import Path

from graft.doctor.issues import KINDS, DoctorReport, Issue
from graft.fileio import atomic_write_text
from graft.report import html as H

__all__ = ["report_html", "write_html", "fix_plan_rows", "write_fix_plan", "check_output", "MAX_ISSUES_SHOWN"]

MAX_ISSUES_SHOWN = 60  # per kind on the page: thumbnails of thousands of small images help no one
_THUMBS_PER_ISSUE = 4
_THUMB_PX = 112
_TITLES = {
    "corrupt": "Unreadable or corrupt files",
    "leak": "Copies across splits (leaks)",
    "duplicate": "Exact duplicates",
    "label": "Likely label errors",
    "near_duplicate": "Near duplicates",
    "outlier": "Outliers",
    "imbalance": "Class imbalance",
    "small": "Small images",
}


def _thumb(path: str) -> str:
    """A base64 JPEG thumbnail ``<img>``, or a note where the file does not decode."""
    from graft.data.decode import load_image
    from graft.exceptions import ImageDecodeError

    try:
        img = load_image(path, draft_size=(2 * _THUMB_PX, 2 * _THUMB_PX))
    except ImageDecodeError as e:
        return f'<span class="warn">{H.esc(e.reason)}</span>'
    img.thumbnail((_THUMB_PX, _THUMB_PX))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    b64 = base64.b64encode(buf.getvalue()).decode("ascii")
    style = "display:inline-block;margin:2px 4px 2px 0;vertical-align:top"
    return (
        f'<img alt="{H.esc(Path(path).name)}" title="{H.esc(path)}" style="{style}" src="data:image/jpeg;base64,{b64}">'
    )


def _shown(path: str, root: str) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:  # another drive (Windows)
        return path


def _issue_row(n: int, issue: Issue, root: str) -> str:
    files = [p for p in issue.paths if os.path.isfile(p)]
    thumbs = "".join(_thumb(p) for p in files[:_THUMBS_PER_ISSUE])
    names = "<br>".join(
        f"<code>{H.esc(_shown(p, root))}</code> {H.esc(a)}" for p, a in zip(issue.paths[:8], issue.suggested_actions())
    )
    if len(issue.paths) > 8:
        names += f"<br>… and {len(issue.paths) - 8} more"
    return (
        f'<tr><td class="num">{n}</td><td>{thumbs}</td><td>{names}</td>'
        f'<td class="num">{issue.score:.3f}</td><td>{H.esc(issue.detail)}</td></tr>'
    )


def _kind_section(report: DoctorReport, kind: str) -> tuple[str, str, str] | None:
    issues = report.by_kind(kind)
    if not issues:
        return None
    head = "".join(f"<th>{h}</th>" for h in ("#", "images", "files (suggested action)", "score", "detail"))
    rows = "".join(_issue_row(n, i, report.root) for n, i in enumerate(issues[:MAX_ISSUES_SHOWN], 1))
    body = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if len(issues) > MAX_ISSUES_SHOWN:
        body += H.note(f"{len(issues) - MAX_ISSUES_SHOWN} more {kind} issues: see --json or --fix-plan")
    return kind, f"{_TITLES.get(kind, kind)} ({len(issues)})", body


def report_html(report: DoctorReport) -> str:
    """The whole page: a card per kind, one section per kind with issues, then the settings used."""
    counts = report.counts()
    cards = [("images", str(report.n_images)), ("classes", str(len(report.classes)))]
    cards += [(k.replace("_", " "), str(counts[k])) for k in KINDS]
    sections = [s for s in (_kind_section(report, k) for k in KINDS) if s is not None]
    if not report.issues:
        sections.append(("none", "No issues", H.note("No issue found.")))
    flat = [(k, v) for k, v in report.settings.items() if not isinstance(v, dict)]
    flat += [(f"{k}.{kk}", vv) for k, v in report.settings.items() if isinstance(v, dict) for kk, vv in v.items()]
    flat += [(f"seconds: {k}", round(float(v), 2)) for k, v in report.timings.items()]
    sections.append(("settings", "Settings", H.kv_table(flat)))
    subtitle = f"{report.root}  ·  {report.n_images} images  ·  {len(report.issues)} issues"
    return H.page(f"graft doctor: {Path(report.root).name}", subtitle, cards, sections)


def write_html(report: DoctorReport, path: str | os.PathLike) -> Path:
    """Write :func:`report_html` to ``path`` (UTF-8, atomically) and return it."""
    atomic_write_text(path, report_html(report))
    return Path(path)


def fix_plan_rows(report: DoctorReport) -> list[tuple[str, str, str]]:
    """(path, action, reason) per file and issue, most severe first; files needing nothing are left out."""
    rows = []
    for issue in report.issues:
        for path, action in zip(issue.paths, issue.suggested_actions()):
            if action != "none":
                rows.append((path, action, f"{issue.kind}: {issue.detail}"))
    return rows


def write_fix_plan(report: DoctorReport, path: str | os.PathLike) -> Path:
    """Write :func:`fix_plan_rows` as CSV with a ``path,action,reason`` header (nothing is applied)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "action", "reason"])
    writer.writerows(fix_plan_rows(report))
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def check_output(data_dir: str | os.PathLike, path: str | os.PathLike, option: str) -> Path:
    """``path`` if a report can be written there: its folder exists and it is outside the dataset folder.

    Raises:
        InvalidParameterError: the folder is missing, ``path`` is a folder, or it lies inside
            ``data_dir`` (the doctor adds no file to the user's data).
    """
    from graft.validation import invalid_parameter

    out = Path(path).expanduser()
    if out.is_dir():
        raise invalid_parameter(option, "graft doctor", "a file path, not a folder", str(path))
    if not out.resolve().parent.is_dir():
        raise invalid_parameter(option, "graft doctor", "a file in an existing folder", str(path))
    root = Path(data_dir).expanduser().resolve()
    if root.is_dir() and out.resolve().is_relative_to(root):
        raise invalid_parameter(option, "graft doctor", f"a path outside the dataset folder {root}", str(path))
    return out
