"""QC trends: each QC number of an instrument's measurements over time, as control charts
(rolling baseline ± 3σ, ``em2q_msi.qc_trends``), from the catalog's QC records."""

from __future__ import annotations

import math
from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from em2q.web.deps import Backends, CurrentUser
from em2q.web.pages import render
from em2q_msi.qc_trends import ControlChart, control_chart
from em2q_resources.auth import Action, require
from em2q_resources.metadata.qc_records import instrument_history, instruments, numbers_of

router = APIRouter()

_W, _H, _PAD = 640, 180, 36


def chart_svg(chart: ControlChart, labels: list[str]) -> Markup:
    """One control chart as inline SVG: values joined by a line, the limits as a band, points
    out of control in red (each point's title names its measurement and value)."""
    finite = [
        v for a in (chart.values, chart.lower, chart.upper) for v in a.tolist() if math.isfinite(v)
    ]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 1.0, high + 1.0
    n = max(chart.values.size, 2)

    def x(i: int) -> float:
        return _PAD + i * (_W - 2 * _PAD) / (n - 1)

    def y(v: float) -> float:
        return _H - _PAD / 2 - (v - low) / (high - low) * (_H - _PAD)

    parts = [
        f'<svg class="control-chart" data-metric="{escape(chart.metric)}" viewBox="0 0 {_W} {_H}" '
        f'width="{_W}" height="{_H}" role="img" aria-label="control chart of {escape(chart.metric)}">'
    ]
    band = [(i, lo, up) for i, (lo, up) in enumerate(zip(chart.lower, chart.upper, strict=True))
            if math.isfinite(lo)]  # fmt: skip
    if band:
        top = " ".join(f"{x(i):.1f},{y(up):.1f}" for i, _, up in band)
        bottom = " ".join(f"{x(i):.1f},{y(lo):.1f}" for i, lo, _ in reversed(band))
        parts.append(f'<polygon class="limits" points="{top} {bottom}" fill="#dde8f5"/>')
        centre = " ".join(
            f"{x(i):.1f},{y(c):.1f}" for i, c in enumerate(chart.centre) if math.isfinite(c)
        )
        parts.append(
            f'<polyline class="centre" points="{centre}" fill="none" stroke="#7a9cc6" stroke-dasharray="4 3"/>'
        )  # noqa: E501
    line = " ".join(
        f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(chart.values) if math.isfinite(v)
    )
    parts.append(f'<polyline class="values" points="{line}" fill="none" stroke="#333"/>')
    for i, (v, bad) in enumerate(zip(chart.values, chart.out_of_control, strict=True)):
        if math.isfinite(v):
            cls, colour = ("out", "#c0392b") if bad else ("in", "#333")
            parts.append(
                f'<circle class="{cls}" cx="{x(i):.1f}" cy="{y(v):.1f}" r="{4 if bad else 2.5}" '
                f'fill="{colour}"><title>{escape(labels[i])}: {v:.4g}</title></circle>'
            )
    parts.append(f'<text x="4" y="12" font-size="11">{high:.4g}</text>')
    parts.append(f'<text x="4" y="{_H - 4}" font-size="11">{low:.4g}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


@router.get("/qc-trends", response_class=HTMLResponse)
def qc_trends_page(
    request: Request,
    user: CurrentUser,
    connections: Backends,
    instrument: str = "",
    p: str = "default@v1",
):
    require(user, Action.READ)
    store = connections.store
    known = instruments(store)
    chosen = instrument or (known[0][0] if known else "")
    charts = []
    if chosen:
        history = instrument_history(store, chosen, p or None)
        labels = [f"{r.measurement_id} ({r.acquired_at[:10]})" for r in history]
        metrics = sorted({m.name for r in history for m in r.metrics})
        for metric in metrics:
            chart = control_chart(
                metric, [numbers_of(r).get(metric, float("nan")) for r in history]
            )
            outside = [labels[i] for i in chart.out_of_control.nonzero()[0]]
            charts.append((metric, chart_svg(chart, labels), outside))
    return render(
        request,
        "qc_trends.html",
        instruments=known,
        instrument=chosen,
        parameter_set=p,
        charts=charts,
    )
