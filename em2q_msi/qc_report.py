"""``qc.json``: the one format of a QC report, written by the platform's ``qc_report`` asset and
by ``python -m em2q_msi.steps qc``, read back by the web, the notebook client and the CLI.

The verdict and its checks (``QCSummary``), the per-spectrum TIC in file order, SNR/noise/peak
count statistics, and what was assessed (``about``). Strict JSON with sorted keys, so the
bytes depend only on the numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from em2q_msi import finite_json
from em2q_msi.qc import QCError, QCSummary


def value_stats(values: np.ndarray, not_finite: str = "not a number") -> dict[str, Any]:
    """min, median and max over the finite values; values that are not finite numbers (e.g.
    the SNR of a spectrum whose noise is 0) are left out, counted, and ``reason`` says why."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    out: dict[str, Any] = {"min": None, "median": None, "max": None}
    if finite.size:
        out = {
            "min": float(finite.min()),
            "median": float(np.median(finite)),
            "max": float(finite.max()),
        }
    left_out = int(values.size - finite.size)
    if values.size == 0:
        out["reason"] = "no spectra"
    elif left_out:
        out["not_finite"] = left_out
        out["reason"] = f"{left_out} of {values.size} spectra left out: {not_finite}"
    return out


def build_qc_report(
    metrics: Mapping[str, np.ndarray], summary: QCSummary, about: Mapping[str, Any]
) -> dict[str, Any]:
    """The content of ``qc.json``: the verdict and its checks (``ok``, ``n_spectra``,
    ``checks``, ``pixels``), the per-spectrum TIC in file order, SNR/noise/peak-count
    statistics, and ``about``: what was assessed (the platform: ``measurement_id`` and
    ``parameter_set``; the step CLI: ``source``, m/z range, ``parameters_digest``)."""
    report: dict[str, Any] = {
        **summary.to_dict(),
        "per_spectrum_tic": [float(v) for v in metrics["tic"]],
        "snr": value_stats(metrics["snr"], "noise estimate 0, SNR not a number"),
        "noise": value_stats(metrics["noise"]),
        "peaks_per_spectrum": value_stats(metrics["n_peaks"]),
    }
    clash = sorted(set(about) & set(report))
    if clash:
        raise QCError(f"qc.json: 'about' fields {clash} would overwrite the report's own")
    return {**report, **about}


def qc_report_bytes(report: Mapping[str, Any]) -> bytes:
    """``qc.json``'s bytes: strict JSON, sorted keys (no NaN: ``finite_json``)."""
    return finite_json.dumps(report, sort_keys=True, indent=1).encode()


def parse_qc_report(data: bytes, where: str = "qc.json") -> dict[str, Any]:
    """A ``qc.json`` read back; QCError naming ``where`` when it is not a QC report."""
    try:
        report = json.loads(data)
    except ValueError as exc:
        raise QCError(f"{where}: not JSON: {exc}") from exc
    if not isinstance(report, dict) or not isinstance(report.get("ok"), bool):
        raise QCError(f"{where}: not a QC report (no boolean 'ok')")
    if not isinstance(report.get("checks"), list):
        raise QCError(f"{where}: not a QC report (no list of 'checks')")
    return report
