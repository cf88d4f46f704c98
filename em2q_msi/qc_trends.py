"""QC trends: Shewhart-style control charts of each QC number over time, per instrument.

A measurement's QC numbers (``qc_numbers`` of its ``qc.json``) are compared with a rolling
baseline of the same instrument's previous measurements: the mean and standard deviation of
the last ``window`` values before it (in acquisition order), limits at ``mean ± sigmas × σ``.
A point is *out of control* when it falls outside its limits; points with fewer than
``min_baseline`` earlier values have no limits (an instrument's first measurements are not
judged). The point itself is never part of its own baseline, so one outlier cannot widen the
limits that should catch it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: earlier values a baseline averages (the rolling window, in measurements)
DEFAULT_WINDOW = 20
#: fewer earlier values than this: no limits yet
DEFAULT_MIN_BASELINE = 5
DEFAULT_SIGMAS = 3.0
#: the summaries of ``qc.json`` charted by their median (besides each check's value)
_MEDIANS = ("snr", "noise", "peaks_per_spectrum")


@dataclass(frozen=True)
class ControlChart:
    """One metric of one instrument, in acquisition order (arrays of one length)."""

    metric: str
    values: np.ndarray
    centre: np.ndarray  # the baseline mean before each point (NaN: no baseline yet)
    lower: np.ndarray
    upper: np.ndarray

    @property
    def out_of_control(self) -> np.ndarray:
        """Points outside their limits (False where there are no limits)."""
        with np.errstate(invalid="ignore"):
            return (self.values < self.lower) | (self.values > self.upper)

    def to_dict(self) -> dict[str, Any]:
        def plain(a: np.ndarray) -> list[float | None]:
            return [float(v) if math.isfinite(v) else None for v in a]

        return {
            "metric": self.metric,
            "values": plain(self.values),
            "centre": plain(self.centre),
            "lower": plain(self.lower),
            "upper": plain(self.upper),
            "out_of_control": [bool(v) for v in self.out_of_control],
        }


def qc_numbers(report: Mapping[str, Any]) -> dict[str, float]:
    """The charted numbers of one ``qc.json``: each check's value and the median SNR, noise
    and peaks per spectrum; values that are not finite numbers are left out."""
    numbers: dict[str, float] = {}
    for check in report.get("checks", []):
        value = check.get("value")
        if isinstance(value, int | float) and math.isfinite(value):
            numbers[str(check["name"])] = float(value)
    for name in _MEDIANS:
        value = (report.get(name) or {}).get("median")
        if isinstance(value, int | float) and math.isfinite(value):
            numbers[f"{name}_median"] = float(value)
    return numbers


def control_chart(
    metric: str,
    values: Sequence[float] | np.ndarray,
    *,
    window: int = DEFAULT_WINDOW,
    min_baseline: int = DEFAULT_MIN_BASELINE,
    sigmas: float = DEFAULT_SIGMAS,
) -> ControlChart:
    """Rolling baseline and ±``sigmas``·σ limits of ``values`` (in time order)."""
    if window < 2 or not 2 <= min_baseline <= window:
        raise ValueError(f"need 2 ≤ min_baseline ≤ window, got {min_baseline} and {window}")
    if not sigmas > 0:
        raise ValueError(f"sigmas must be positive, got {sigmas}")
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    centre, lower, upper = (np.full(n, np.nan) for _ in range(3))
    for i in range(n):
        earlier = x[max(0, i - window) : i]
        earlier = earlier[np.isfinite(earlier)]
        if earlier.size < min_baseline:
            continue
        mean, sd = float(earlier.mean()), float(earlier.std(ddof=1))
        centre[i], lower[i], upper[i] = mean, mean - sigmas * sd, mean + sigmas * sd
    return ControlChart(metric, x, centre, lower, upper)


def out_of_limits(
    history: Sequence[Mapping[str, float]],
    current: Mapping[str, float],
    *,
    window: int = DEFAULT_WINDOW,
    min_baseline: int = DEFAULT_MIN_BASELINE,
    sigmas: float = DEFAULT_SIGMAS,
) -> dict[str, tuple[float, float, float]]:
    """``{metric: (value, lower, upper)}`` for each of ``current``'s numbers outside the limits
    of the ``history`` before it (the instrument's earlier measurements, oldest first)."""
    found = {}
    for metric, value in current.items():
        earlier = [h[metric] for h in history if metric in h]
        chart = control_chart(
            metric, [*earlier, value], window=window, min_baseline=min_baseline, sigmas=sigmas
        )
        if chart.out_of_control[-1]:
            found[metric] = (value, float(chart.lower[-1]), float(chart.upper[-1]))
    return found
