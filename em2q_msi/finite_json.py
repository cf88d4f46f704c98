"""JSON of numbers that may not be finite: the one place where NaN and ±inf become ``null``.

Strict JSON has no NaN or Infinity (``json.dumps(..., allow_nan=False)`` raises, browsers and
Elasticsearch refuse them), yet a statistic can legitimately be undefined: the SNR of a spectrum
whose noise is zero, a median over no values. The producer of such a number says *why* next to
it (``"median_snr": null, "median_snr_reason": "..."``, a QC check's ``detail``); every JSON
writer of the platform goes through :func:`clean` / :func:`dumps`, so an undefined number can
never crash a step.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def clean(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python values and non-finite floats as None
    (dict keys as strings, tuples as lists)."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def finite_or_none(value: float | None) -> float | None:
    """A float, or None where it is missing or not finite."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON (no NaN/Infinity tokens) of ``clean(value)``."""
    return json.dumps(clean(value), allow_nan=False, **kwargs)
