"""Processing parameter sets: one frozen dataclass per step, validated on construction.

A parameter set is stored as a JSON document (nested ``{step: {name: value}}``), hashed, and chosen
per run, so every value is a JSON scalar or a list of numbers, and every name carries its unit
(``window_points``, ``tolerance_ppm``). ``ProcessingParameters.from_dict`` is strict: an unknown
step or field, a wrong type or an out-of-range value raises ``ParameterError`` naming the field,
e.g. ``peak_picking.snr_threshold: expected a number, got 'abc'``.
"""

from __future__ import annotations

import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


class ParameterError(ValueError):
    """A parameter set has an unknown name, a value of the wrong type or out of range."""


def _fail(step: str, name: str, message: str) -> ParameterError:
    return ParameterError(f"{step}.{name}: {message}")


def _check_choice(step: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(step, name, f"expected one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_range(
    step: str,
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
) -> None:
    if low is not None and (value < low or (value == low and not low_inclusive)):
        relation = ">=" if low_inclusive else ">"
        raise _fail(step, name, f"must be {relation} {low}, got {value!r}")
    if high is not None and value > high:
        raise _fail(step, name, f"must be <= {high}, got {value!r}")


def _coerce(step: str, name: str, hint: Any, value: Any) -> Any:
    """Check ``value`` against the field's type hint; return it in the dataclass's own type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _coerce(step, name, inner, value)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _fail(step, name, f"expected a list of numbers, got {value!r}")
        return tuple(_coerce(step, f"{name}[{i}]", args[0], v) for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(step, name, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(step, name, f"expected an integer, got {value!r}")
        if isinstance(value, float) and not value.is_integer():
            raise _fail(step, name, f"expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(step, name, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise _fail(step, name, f"expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _fail(step, name, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported parameter type {hint!r} for {step}.{name}")  # pragma: no cover


class _Step:
    """Shared construction and validation of one step's parameters."""

    step: ClassVar[str]

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            value = _coerce(self.step, f.name, hints[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        self._validate()

    def _validate(self) -> None:  # pragma: no cover - overridden
        pass

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        if not isinstance(values, dict):
            raise ParameterError(f"{cls.step}: expected an object of parameters, got {values!r}")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise _fail(
                cls.step, unknown[0], f"unknown parameter (known: {', '.join(sorted(known))})"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class SmoothingParameters(_Step):
    """Smoothing along each spectrum, in data points (not m/z), so it follows the sampling.

    ``savgol``: Savitzky–Golay, ``window_points`` odd, polynomial order ``polyorder``; the edges are
    fitted on the first/last full window (scipy's ``mode="interp"``, as OpenMS does).
    ``gaussian``: Gaussian kernel of standard deviation ``sigma_points``, truncated at 4 σ, edges
    reflected (scipy's ``gaussian_filter1d`` default).
    """

    step: ClassVar[str] = "smoothing"
    method: str = "savgol"
    window_points: int = 11
    polyorder: int = 3
    sigma_points: float = 2.0

    def _validate(self) -> None:
        _check_choice(self.step, "method", self.method, ("savgol", "gaussian", "none"))
        _check_range(self.step, "window_points", self.window_points, low=3)
        if self.window_points % 2 == 0:
            raise _fail(self.step, "window_points", f"must be odd, got {self.window_points}")
        _check_range(self.step, "polyorder", self.polyorder, low=0)
        if self.polyorder >= self.window_points:
            raise _fail(
                self.step,
                "polyorder",
                f"must be less than window_points ({self.window_points}), got {self.polyorder}",
            )
        _check_range(self.step, "sigma_points", self.sigma_points, low=0.0, low_inclusive=False)


@dataclass(frozen=True)
class BaselineParameters(_Step):
    """Baseline removal, in data points.

    ``tophat``: morphological white top-hat (signal minus its opening) with a flat structuring
    element of ``window_points`` points; choose it wider than the widest peak.
    ``snip``: SNIP clipping with ``iterations`` passes (half-window 1…iterations points).
    """

    step: ClassVar[str] = "baseline"
    method: str = "tophat"
    window_points: int = 101
    iterations: int = 20

    def _validate(self) -> None:
        _check_choice(self.step, "method", self.method, ("tophat", "snip", "none"))
        _check_range(self.step, "window_points", self.window_points, low=3)
        if self.window_points % 2 == 0:
            raise _fail(self.step, "window_points", f"must be odd, got {self.window_points}")
        _check_range(self.step, "iterations", self.iterations, low=1)


@dataclass(frozen=True)
class NormalisationParameters(_Step):
    """Per-spectrum intensity normalisation (independent of the other spectra and of chunking).

    ``tic``: divide by the sum of intensities (the spectrum then sums to 1); ``rms``: divide by the
    root mean square; ``median``: divide by the median of the non-zero intensities. Spectra whose
    factor is zero are left unchanged.
    """

    step: ClassVar[str] = "normalisation"
    method: str = "tic"

    def _validate(self) -> None:
        _check_choice(self.step, "method", self.method, ("tic", "rms", "median", "none"))


@dataclass(frozen=True)
class PeakPickingParameters(_Step):
    """Local maxima above ``snr_threshold`` × noise, centroided by a 3-point Gaussian fit.

    ``noise``: ``mad`` (1.4826 × median absolute deviation of the spectrum's positive
    intensities) or ``std`` (standard deviation of the positive intensities).
    ``min_distance_points``: of two maxima closer than this (in points), only the higher is kept.
    """

    step: ClassVar[str] = "peak_picking"
    snr_threshold: float = 3.0
    noise: str = "mad"
    min_distance_points: int = 1

    def _validate(self) -> None:
        _check_range(self.step, "snr_threshold", self.snr_threshold, low=0.0)
        _check_choice(self.step, "noise", self.noise, ("mad", "std"))
        _check_range(self.step, "min_distance_points", self.min_distance_points, low=1)


@dataclass(frozen=True)
class BinningParameters(_Step):
    """Peak binning across spectra into features.

    Sorted peak m/z values are split wherever consecutive values are more than ``tolerance_ppm``
    apart; a feature is kept if it occurs in at least ``min_frequency`` (fraction, 0–1) of spectra.
    """

    step: ClassVar[str] = "binning"
    tolerance_ppm: float = 10.0
    min_frequency: float = 0.0

    def _validate(self) -> None:
        _check_range(self.step, "tolerance_ppm", self.tolerance_ppm, low=0.0, low_inclusive=False)
        _check_range(self.step, "min_frequency", self.min_frequency, low=0.0, high=1.0)


@dataclass(frozen=True)
class IonImageParameters(_Step):
    """Ion images of the m/z values ``mz`` ± a window: ``tolerance_ppm`` or ``tolerance_da``."""

    step: ClassVar[str] = "ion_images"
    mz: tuple[float, ...] = ()
    tolerance_ppm: float | None = 10.0
    tolerance_da: float | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> IonImageParameters:
        # Naming only a Da window means "no ppm window", rather than a conflict with the default.
        if isinstance(values, dict) and "tolerance_da" in values and "tolerance_ppm" not in values:
            values = {**values, "tolerance_ppm": None}
        return super().from_dict(values)

    def _validate(self) -> None:
        for i, value in enumerate(self.mz):
            _check_range(self.step, f"mz[{i}]", value, low=0.0, low_inclusive=False)
        if (self.tolerance_ppm is None) == (self.tolerance_da is None):
            raise _fail(
                self.step,
                "tolerance_ppm",
                "give exactly one of tolerance_ppm and tolerance_da (the other null)",
            )
        for name in ("tolerance_ppm", "tolerance_da"):
            value = getattr(self, name)
            if value is not None:
                _check_range(self.step, name, value, low=0.0, low_inclusive=False)


@dataclass(frozen=True)
class QCParameters(_Step):
    """Thresholds of the "good enough to analyse further?" summary.

    ``lock_masses`` (m/z) are searched in the mean spectrum's peaks within
    ``lock_mass_search_ppm``; each must be found within ``max_lock_mass_error_ppm``.
    TIC coverage is the fraction of spectra whose TIC is at least ``low_tic_fraction`` × the
    median TIC; it must reach ``min_tic_coverage``. The median over spectra of the
    base-peak SNR must reach ``min_median_snr``. Empty pixels (grid positions without a spectrum,
    or with an all-zero one) may be at most ``max_empty_pixel_fraction`` of the grid.
    """

    step: ClassVar[str] = "qc"
    lock_masses: tuple[float, ...] = ()
    lock_mass_search_ppm: float = 50.0
    max_lock_mass_error_ppm: float = 5.0
    min_median_snr: float = 10.0
    low_tic_fraction: float = 0.1
    min_tic_coverage: float = 0.9
    max_empty_pixel_fraction: float = 0.05

    def _validate(self) -> None:
        for i, value in enumerate(self.lock_masses):
            _check_range(self.step, f"lock_masses[{i}]", value, low=0.0, low_inclusive=False)
        positive = ("lock_mass_search_ppm", "max_lock_mass_error_ppm")
        for name in positive:
            _check_range(self.step, name, getattr(self, name), low=0.0, low_inclusive=False)
        _check_range(self.step, "min_median_snr", self.min_median_snr, low=0.0)
        for name in ("low_tic_fraction", "min_tic_coverage", "max_empty_pixel_fraction"):
            _check_range(self.step, name, getattr(self, name), low=0.0, high=1.0)


SEGMENTATION_METHODS = ("kmeans", "gmm")


@dataclass(frozen=True)
class SegmentationParameters(_Step):
    """Segmentation of a measurement's pixels on its peak table (``em2q_msi.spatial.segment``).

    Each pixel's features are normalised (``normalisation``: ``tic``, ``rms`` or ``none``),
    optionally ``transform``-ed (``sqrt`` or ``none``), reduced to the ``max_features`` of
    highest variance (0: all), projected on ``n_components`` principal components, then
    clustered by ``method``: ``kmeans`` (``n_init`` restarts) or ``gmm`` (Gaussian mixture).
    ``k`` segments, or with ``k`` 0 the k in ``k_min``…``k_max`` whose k-means partition has
    the highest Calinski–Harabasz index (``spatial.choose_k``). ``spatial_smoothing``: ``majority`` replaces each pixel's segment by the
    most frequent one within ``smoothing_radius_pixels`` (``none``: off).
    ``n_top_features``: distinguishing features reported per segment; ``seed`` makes the
    result repeatable.
    """

    step: ClassVar[str] = "segmentation"
    method: str = "kmeans"
    k: int = 0
    k_min: int = 2
    k_max: int = 8
    n_components: int = 10
    normalisation: str = "tic"
    transform: str = "sqrt"
    max_features: int = 0
    spatial_smoothing: str = "none"
    smoothing_radius_pixels: int = 1
    n_init: int = 4
    n_top_features: int = 10
    seed: int = 0

    def _validate(self) -> None:
        _check_choice(self.step, "method", self.method, SEGMENTATION_METHODS)
        if self.k != 0:
            _check_range(self.step, "k", self.k, low=2, high=20)
        _check_range(self.step, "k_min", self.k_min, low=2, high=20)
        _check_range(self.step, "k_max", self.k_max, low=2, high=20)
        if self.k_max < self.k_min:
            raise _fail(self.step, "k_max", f"must be >= k_min ({self.k_min}), got {self.k_max}")
        _check_range(self.step, "n_components", self.n_components, low=1, high=1000)
        _check_choice(self.step, "normalisation", self.normalisation, ("tic", "rms", "none"))
        _check_choice(self.step, "transform", self.transform, ("sqrt", "none"))
        _check_range(self.step, "max_features", self.max_features, low=0)
        _check_choice(self.step, "spatial_smoothing", self.spatial_smoothing, ("none", "majority"))
        _check_range(
            self.step, "smoothing_radius_pixels", self.smoothing_radius_pixels, low=1, high=10
        )
        _check_range(self.step, "n_init", self.n_init, low=1, high=100)
        _check_range(self.step, "n_top_features", self.n_top_features, low=1, high=1000)
        _check_range(self.step, "seed", self.seed, low=0)


#: steps of ``ProcessingParameters`` added later, hashed only when not at their defaults
LATER_STEPS = ("segmentation",)


@dataclass(frozen=True)
class ProcessingParameters:
    """A whole parameter set: one validated parameter object per processing step."""

    smoothing: SmoothingParameters = field(default_factory=SmoothingParameters)
    baseline: BaselineParameters = field(default_factory=BaselineParameters)
    normalisation: NormalisationParameters = field(default_factory=NormalisationParameters)
    peak_picking: PeakPickingParameters = field(default_factory=PeakPickingParameters)
    binning: BinningParameters = field(default_factory=BinningParameters)
    ion_images: IonImageParameters = field(default_factory=IonImageParameters)
    qc: QCParameters = field(default_factory=QCParameters)
    segmentation: SegmentationParameters = field(default_factory=SegmentationParameters)

    @classmethod
    def defaults(cls) -> ProcessingParameters:
        return cls()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ProcessingParameters:
        """Build from nested ``{step: {name: value}}``; missing steps and names take defaults."""
        if not isinstance(values, dict):
            raise ParameterError(f"expected an object of steps, got {values!r}")
        hints = typing.get_type_hints(cls)
        steps = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - steps)
        if unknown:
            raise ParameterError(
                f"{unknown[0]}: unknown processing step (known: {', '.join(sorted(steps))})"
            )
        return cls(**{name: hints[name].from_dict(value) for name, value in values.items()})

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested JSON-ready dict; ``from_dict(to_dict())`` gives an equal object."""
        return {f.name: getattr(self, f.name).to_dict() for f in fields(self)}

    def digest(self) -> str:
        """SHA-256 of the canonical JSON form: the content hash results are stored under.

        Steps added after sets were first hashed (:data:`LATER_STEPS`) enter it only when they
        differ from their defaults, so every existing set keeps its hash and result folder."""
        values = self.to_dict()
        for name in LATER_STEPS:
            if values[name] == type(getattr(self, name))().to_dict():
                del values[name]
        text = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


STUDY_NORMALISATIONS = ("tic", "rms", "median", "reference_peak", "none")
STUDY_TESTS = ("welch", "mann_whitney")
STUDY_TRANSFORMS = ("log2", "none")
CONTRAST_SEPARATOR = " vs "


@dataclass(frozen=True)
class StudyParameters(_Step):
    """How a study's measurements are put on one feature axis and compared (``em2q_msi.study``).

    Not part of ``ProcessingParameters`` (whose hash names every stored result): a study's
    parameters are their own set, validated the same way, with their own ``digest``.

    ``tolerance_ppm``: peaks closer than this (relative to the lower m/z) form one feature, in a
    measurement's peak list, in the reference and when pixels are aligned to it.
    ``min_pixel_frequency``: a measurement's peak list keeps features found in at least this
    fraction (0–1) of its pixels. ``min_frequency``: the reference keeps features found in at
    least this fraction (0–1) of the measurements. ``normalisation`` of each pixel before the
    measurement-level means: ``tic`` (sum of the pixel's peak intensities), ``rms`` (root mean
    square of them), ``median`` (their median), ``reference_peak`` (the intensity within
    ``reference_mz`` ± ``reference_tolerance_ppm``: an internal standard) or ``none``.
    ``test``: ``welch`` (Welch's t-test) or ``mann_whitney`` (two-sided, exact for small groups)
    on measurement-level means, after ``transform``: ``log2`` (of the mean plus half the study's
    smallest positive mean, so absent features stay finite; multiplicative changes and noise
    become additive, as in proteomics and metabolomics tools) or ``none``; p-values are
    corrected by Benjamini–Hochberg and a feature is significant at q ≤ ``max_q``. ``contrasts``: ``"numerator vs denominator"`` group pairs (fold
    change = numerator / denominator); empty means every later group vs the first (sorted).
    ``drift_tolerance_ppm``: when the reference is rebuilt (a measurement added), an existing
    feature that moves more than this marks the existing alignments stale.
    """

    step: ClassVar[str] = "study"
    tolerance_ppm: float = 10.0
    min_pixel_frequency: float = 0.05
    min_frequency: float = 0.5
    normalisation: str = "tic"
    reference_mz: float | None = None
    reference_tolerance_ppm: float = 10.0
    test: str = "welch"
    transform: str = "log2"
    max_q: float = 0.05
    contrasts: tuple[str, ...] = ()
    drift_tolerance_ppm: float = 2.0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudyParameters:
        contrasts = values.get("contrasts", []) if isinstance(values, dict) else []
        if not isinstance(contrasts, list | tuple):
            raise _fail(
                cls.step,
                "contrasts",
                f"expected a list of 'numerator{CONTRAST_SEPARATOR}denominator' strings, "
                f"got {contrasts!r}",
            )
        return super().from_dict(values)

    def _validate(self) -> None:
        _check_range(self.step, "tolerance_ppm", self.tolerance_ppm, low=0.0, low_inclusive=False)
        for name in ("min_pixel_frequency", "min_frequency"):
            _check_range(self.step, name, getattr(self, name), low=0.0, high=1.0)
        _check_choice(self.step, "normalisation", self.normalisation, STUDY_NORMALISATIONS)
        if self.normalisation == "reference_peak":
            if self.reference_mz is None:
                raise _fail(
                    self.step,
                    "reference_mz",
                    "required with normalisation 'reference_peak': the internal standard's m/z",
                )
            _check_range(self.step, "reference_mz", self.reference_mz, low=0.0, low_inclusive=False)
        elif self.reference_mz is not None:
            raise _fail(
                self.step,
                "reference_mz",
                f"only used with normalisation 'reference_peak' (normalisation is "
                f"{self.normalisation!r}); leave it null",
            )
        _check_range(
            self.step,
            "reference_tolerance_ppm",
            self.reference_tolerance_ppm,
            low=0.0,
            low_inclusive=False,
        )
        _check_choice(self.step, "test", self.test, STUDY_TESTS)
        _check_choice(self.step, "transform", self.transform, STUDY_TRANSFORMS)
        _check_range(self.step, "max_q", self.max_q, low=0.0, high=1.0, low_inclusive=False)
        for i, contrast in enumerate(self.contrasts):
            parts = [p.strip() for p in contrast.split(CONTRAST_SEPARATOR)]
            if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
                raise _fail(
                    self.step,
                    f"contrasts[{i}]",
                    f"expected 'numerator{CONTRAST_SEPARATOR}denominator' with two different "
                    f"groups, got {contrast!r}",
                )
        _check_range(
            self.step, "drift_tolerance_ppm", self.drift_tolerance_ppm, low=0.0, low_inclusive=False
        )

    def contrast_pairs(self) -> tuple[tuple[str, str], ...]:
        """The contrasts as ``(numerator, denominator)`` group pairs."""
        pairs = (tuple(c.split(CONTRAST_SEPARATOR)) for c in self.contrasts)
        return tuple((a.strip(), b.strip()) for a, b in pairs)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON form, like ``ProcessingParameters.digest``."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
