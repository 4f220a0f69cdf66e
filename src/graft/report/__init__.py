"""The run report: one self-contained HTML page about a training run.

``write_report(RUN_DIR)`` reads what ``graft train`` wrote (data.json, history.json,
metrics.json, val_predictions.json, run.json, model/) and writes ``RUN_DIR/report.html``
(figures embedded as base64 PNGs, no scripts, no network) plus the PNGs in
``RUN_DIR/report/``. Figures use matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

from graft.report.build import write_report

__all__ = ["write_report"]
