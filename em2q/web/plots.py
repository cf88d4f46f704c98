"""Plotly figures of the web catalog, built in Python and drawn in the page by plotly.js.

Spectra are drawn as WebGL lines; a long spectrum (processed data binned at 5 ppm has
~10^5 points) is reduced to the minimum and maximum of each of ``max_points / 2`` m/z buckets,
which keeps every peak visible at any zoom level of the overview.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from em2q_msi.geometry import PixelGrid

#: points per drawn spectrum; beyond this the spectrum is reduced to bucket minima and maxima
MAX_SPECTRUM_POINTS = 20_000
#: behind the (transparent) pixels that were not acquired, so they never read as zero
NOT_ACQUIRED_COLOR = "#e4e4e4"


def decimate(mz: np.ndarray, intensity: np.ndarray, max_points: int = MAX_SPECTRUM_POINTS):
    """The minimum and maximum of each m/z bucket, in m/z order (at most ``max_points``)."""
    mz, intensity = np.asarray(mz), np.asarray(intensity)
    if mz.size <= max_points:
        return mz, intensity
    buckets = max_points // 2
    edges = np.linspace(0, mz.size, buckets + 1).astype(np.int64)
    lows = np.minimum.reduceat(intensity, edges[:-1])
    highs = np.maximum.reduceat(intensity, edges[:-1])
    keep = []
    for start, stop, low, high in zip(edges[:-1], edges[1:], lows, highs, strict=True):
        window = intensity[start:stop]
        first = start + int(np.argmax(window == low))
        second = start + int(np.argmax(window == high))
        keep += sorted({first, second})
    keep_index = np.asarray(keep)
    return mz[keep_index], intensity[keep_index]


def spectra_figure(
    series: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str = "Mean spectrum"
) -> go.Figure:
    """One or more spectra overlaid (one line each, in the legend); drag to zoom an m/z range."""
    figure = go.Figure()
    for label, mz, intensity in series:
        x, y = decimate(mz, intensity)
        figure.add_trace(go.Scattergl(x=x, y=y, mode="lines", name=label, line={"width": 1}))
    figure.update_layout(
        title={"text": title, "x": 0.01},
        xaxis_title="m/z",
        yaxis_title="mean intensity",
        margin={"l": 60, "r": 20, "t": 40, "b": 45},
        legend={"orientation": "h", "y": -0.2},
        showlegend=len(series) > 1,
        template="plotly_white",
        dragmode="zoom",
    )
    return figure


def image_panels(
    images: Sequence[tuple[str, np.ndarray]], grid: PixelGrid | None = None
) -> list[tuple[str, np.ndarray]]:
    """``(label, 2-D image)`` panels: a 3-D measurement's stack becomes one panel per z plane,
    side by side (``label · z=k``)."""
    panels = []
    for label, image in images:
        data = np.asarray(image, dtype=float)
        if data.ndim == 3:
            z_values = grid.z_values if grid is not None and grid.is_3d else range(len(data))
            panels += [
                (f"{label} · z={z}", plane) for z, plane in zip(z_values, data, strict=False)
            ]
        else:
            panels.append((label, data))
    return panels


def images_figure(
    images: Sequence[tuple[str, np.ndarray]],
    title: str = "",
    columns: int = 4,
    grid: PixelGrid | None = None,
) -> go.Figure:
    """Images side by side on one color scale (shared color axis: equal colors, equal values).

    With the measurement's ``grid`` the axes are in µm from its origin (when the pixel size is
    known) with equal scales, so non-square pixels keep their physical aspect; a 3-D stack is
    drawn plane by plane. Pixels not acquired (NaN) are left transparent over a light grey
    background and read "not acquired" on hover, never as zero.
    """
    images = image_panels(images, grid)
    count = max(len(images), 1)
    columns = min(columns, count)
    rows = -(-count // columns)
    figure = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=[label for label, _ in images],
        horizontal_spacing=0.04,
        vertical_spacing=0.12,
    )
    finite = [np.asarray(a, dtype=float)[np.isfinite(a)] for _, a in images]
    top = max((float(v.max()) for v in finite if v.size), default=1.0) or 1.0
    size = grid.pixel_size_um if grid is not None else None
    dx, dy = size if size else (1.0, grid.aspect if grid is not None else 1.0)
    unit = "µm" if size else "px"
    for position, (_, image) in enumerate(images):
        row, column = divmod(position, columns)
        z = np.asarray(image, dtype=float)
        status = np.where(np.isfinite(z), "", "not acquired")
        figure.add_trace(
            go.Heatmap(
                z=z,
                x0=0.0,
                dx=dx,
                y0=0.0,
                dy=dy,
                text=status,
                hovertemplate=f"x %{{x}} {unit}, y %{{y}} {unit}<br>%{{z}} %{{text}}<extra></extra>",
                hoverongaps=True,
                coloraxis="coloraxis",
            ),
            row=row + 1,
            col=column + 1,
        )
        axis = "" if position == 0 else str(position + 1)
        figure.update_layout(
            {
                f"yaxis{axis}": {
                    "autorange": "reversed",
                    "scaleanchor": f"x{axis}",
                    "scaleratio": 1,
                    "showticklabels": False,
                    "showgrid": False,
                    "zeroline": False,
                },
                f"xaxis{axis}": {
                    "showticklabels": False,
                    "constrain": "domain",
                    "showgrid": False,
                    "zeroline": False,
                },
            }  # fmt: skip
        )
    figure.update_layout(
        title={"text": title, "x": 0.01} if title else None,
        coloraxis={"colorscale": "Viridis", "cmin": 0, "cmax": top,
                   "colorbar": {"title": {"text": "intensity"}}},
        plot_bgcolor=NOT_ACQUIRED_COLOR,
        height=300 * rows + 80,
        margin={"l": 20, "r": 20, "t": 90 if title else 70, "b": 20},
        template="plotly_white",
    )  # fmt: skip
    return figure


def figure_json(figure: go.Figure) -> str:
    """The figure as JSON safe to embed in a ``<script type="application/json">`` element."""
    return figure.to_json().replace("</", "<\\/")
