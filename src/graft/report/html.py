"""Self-contained HTML: inline CSS, images as base64 data URIs, no scripts, no network fetches."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["esc", "img_tag", "photo_grid", "table", "kv_table", "section", "page", "note"]

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:16px 24px 48px}
header{background:#2d3e50;color:#fff;padding:18px 24px}
header h1{margin:0 0 4px;font-size:22px} header p{margin:0;opacity:.85;font-size:14px}
h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px;font-size:19px}
h3{font-size:16px;margin:18px 0 6px}
nav{font-size:13px;margin:10px 0} nav a{margin-right:12px;color:#2d6da3}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0} td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;margin:8px 0;background:#fff}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px} .card span{font-size:12px;color:#666}
.note{color:#666;font-size:13px} .warn{color:#a33;font-size:13px}
.grid{display:grid;gap:10px;margin:8px 0}
.grid figure{margin:0;font-size:12px;line-height:1.35} .grid img{width:100%;margin:0 0 3px}
code{background:#eee;padding:1px 4px;border-radius:3px;font-size:12px;word-break:break-all}
"""


def esc(value: Any) -> str:
    """HTML-escape ``str(value)``."""
    return html.escape(str(value), quote=True)


def img_tag(path: Path, alt: str) -> str:
    """An ``<img>`` whose source is the image file itself (base64), so the page needs no other file."""
    path = Path(path)
    mime = "image/jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "image/png"
    b64 = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:{mime};base64,{b64}">'


def photo_grid(photos: Sequence[tuple[Path, Sequence[str], str]], cols: int) -> str:
    """Images (each a file, its caption lines and their colour) in a grid of ``cols`` columns.

    Captions are HTML text under each image, not pixels drawn by matplotlib: they stay
    sharp and searchable, and the grid costs a JPEG encode per image instead of a figure.
    """
    cells = "".join(
        f"<figure>{img_tag(path, ' / '.join(lines))}"
        f'<figcaption style="color:{esc(colour)}">{"<br>".join(esc(t) for t in lines)}</figcaption></figure>'
        for path, lines, colour in photos
    )
    return f'<div class="grid" style="grid-template-columns:repeat({int(cols)},1fr)">{cells}</div>'


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f'<td class="num">{v:.4f}</td>'
    if isinstance(v, int) and not isinstance(v, bool):
        return f'<td class="num">{v}</td>'
    return f"<td>{esc(v)}</td>"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain table; floats shown with 4 decimals, numbers right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(items: Iterable[tuple[str, Any]]) -> str:
    """Two-column key/value table."""
    return "<table><tbody>" + "".join(f"<tr><th>{esc(k)}</th>{_cell(v)}</tr>" for k, v in items) + "</tbody></table>"


def note(text: str, warn: bool = False) -> str:
    return f'<p class="{"warn" if warn else "note"}">{esc(text)}</p>'


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, subtitle: str, cards: Sequence[tuple[str, str]], sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: header, summary cards, a table of contents and the sections."""
    card_html = "".join(f'<div class="card"><b>{esc(v)}</b><span>{esc(k)}</span></div>' for k, v in cards)
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(section(a, t, b) for a, t, b in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
        f'<main><div class="cards">{card_html}</div><nav>{nav}</nav>{body}</main></body></html>\n'
    )
