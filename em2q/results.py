"""A measurement's results for one parameter set, read back from storage: the one reader the
web catalog, the notebook client and the CLI share.

Results live where the assets wrote them (``em2q_resources.results_layout``):
``results/<measurement>/<asset>/<parameter hash16 or raw>/all/``, each folder with the asset's
``manifest.json`` (the URLs of what it wrote). A manifest exists only once the asset has been
materialized for that measurement (and parameter set), so a missing one means "not processed
yet" and :class:`ResultNotReady` says what to run.

Ion images for any m/z can be made from the raw data without processing: the imzML is read in
blocks by ranged reads (local file or object storage), never downloaded whole.

Example::

    results = MeasurementResults("example-continuous", "strict", store=store, storage=storage)
    mz, intensity = results.mean_spectrum()
    verdict = results.qc_report()["ok"]
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from em2q_msi import ion_images as ions
from em2q_msi import qc, spatial
from em2q_msi.facts import grid_from_facts, pixel_grid
from em2q_msi.geometry import PixelGrid
from em2q_msi.imzml import ImzML, is_local
from em2q_msi.parameters import ProcessingParameters
from em2q_msi.qc import MeanSpectrumAccumulator
from em2q_resources.catalog import PARAMETER_DEPENDENT_ASSETS, RESULT_ASSETS
from em2q_resources.metadata import DocumentNotFound, load_schema
from em2q_resources.parameter_sets import DEFAULT_NAME, ResolvedParameters, resolve
from em2q_resources.results_layout import (
    manifest_key,
    read_json,
    read_npy,
    read_peak_table,
    read_peak_table_csr,
    read_qc_report,
    result_key,
)
from em2q_resources.storage import StorageResource, measurement_prefixes

if TYPE_CHECKING:
    from em2q_resources.metadata.store import MetadataStore

#: window of an ion image when neither the caller nor the parameter set names one
DEFAULT_ION_IMAGE_PPM = 10.0


class ResultNotReady(LookupError):
    """The asset has not been materialized for this measurement (and parameter set) yet."""

    def __init__(self, asset: str, measurement_id: str, parameter_set: str | None) -> None:
        self.asset = asset
        self.measurement_id = measurement_id
        self.parameter_set = parameter_set
        run = f"em2q run {measurement_id}"
        if parameter_set:
            with_set = f" with parameter set {parameter_set}"
            run += f" --workflow reprocess --parameter-set {parameter_set.split('@v')[0]}"
        else:
            with_set = ""
        super().__init__(
            f"{asset} of measurement {measurement_id!r} is not processed yet{with_set}; run "
            f"`{run}` (or measurement.run(...) in a notebook, or Start workflow on its page)"
        )

    def __str__(self) -> str:  # LookupError would quote the message
        return self.args[0]


def imzml_url(measurement: Any, storage: StorageResource) -> str:
    """The storage URL of a measurement's imzML (its .ibd lies beside it), only when it lies in
    the platform's own storage under ``measurements/<id>/``: a record pointing anywhere else
    (``http://…``, ``file:///etc/passwd``) raises ``UnsafeKey`` and nothing is opened."""
    schema = load_schema()
    for stored in measurement.files or []:
        if stored.role == schema.FileRole.IMZML:
            uploads, _ = measurement_prefixes(measurement.id)
            return storage.checked_url(stored.uri, within=uploads)
    raise DocumentNotFound("imzML file of Measurement", measurement.id)


def open_raw(
    measurement: Any, storage: StorageResource, cache_dir: str | Path | None = None
) -> ImzML:
    """The measurement's imzML, opened for ranged reads of its spectra."""
    return ImzML.open(
        imzml_url(measurement, storage),
        storage_options=storage.storage_options,
        cache_dir=str(cache_dir) if cache_dir else None,
    )


def measurement_grid(measurement: Any, reader: ImzML | None = None) -> PixelGrid:
    """The measurement's pixel grid (bounding box of its coordinates, pixel size) from its
    facts, else from the reader's coordinates."""
    grid = grid_from_facts(measurement.facts)
    if grid is not None:
        return grid
    if reader is None:
        raise ValueError(f"measurement {measurement.id} has no facts yet; give the reader")
    settings = measurement.settings
    return pixel_grid(
        reader, (settings.pixel_size_x_um, settings.pixel_size_y_um) if settings else None
    )


def raw_ion_images(
    reader: ImzML,
    mz_values: list[float] | np.ndarray,
    tolerance_ppm: float,
    grid: PixelGrid,
    *,
    rows_per_block: int | None = None,
) -> np.ndarray:
    """Ion images ``(n_mz, *grid.image_shape)`` summed from the raw spectra (NaN where no
    spectrum was acquired).

    Continuous data: only the bytes of the m/z windows are read (one range per spectrum and
    window) when that is a small share of the data; otherwise, and for processed data, the
    spectra are read block by block.
    """
    values = _window_sums_by_ranges(reader, mz_values, tolerance_ppm)
    if values is not None:
        return ions.ion_images(reader.coordinates, values, grid)
    parts, coordinates = [], []
    for block in reader.iter_blocks(rows_per_block):
        parts.append(ions.ion_intensities(block, mz_values, tolerance_ppm=tolerance_ppm))
        coordinates.append(block.coordinates)
    return ions.ion_images(np.concatenate(coordinates), np.concatenate(parts, axis=1), grid)


#: read the windows' byte ranges when they are at most this share of each spectrum ...
WINDOW_READ_SHARE = 0.125
#: ... and need at most this many ranges (else a few large block reads are faster)
MAX_WINDOW_RANGES = 50_000


def _window_sums_by_ranges(
    reader: ImzML, mz_values: list[float] | np.ndarray, tolerance_ppm: float
) -> np.ndarray | None:
    """Window sums ``(n_mz, n_spectra)`` of continuous data from the windows' bytes only
    (fsspec ``cat_ranges``: concurrent requests on object storage), or None when reading whole
    spectra is the better deal. Same windows as ``em2q_msi.ion_images.ion_intensities``."""
    if reader.mode != "continuous" or reader.n_spectra == 0:
        return None
    mz = reader.mz_axis()
    lower, upper = ions.mz_windows(mz_values, tolerance_ppm=tolerance_ppm)
    first = np.searchsorted(mz, lower, side="left")
    stop = np.searchsorted(mz, upper, side="right")
    width = np.maximum(stop - first, 0)
    read = np.flatnonzero(width)
    n = reader.n_spectra
    if width.sum() > WINDOW_READ_SHARE * mz.size or n * read.size > MAX_WINDOW_RANGES:
        return None
    item = reader.intensity_dtype.itemsize
    offsets = reader.index.intensity_offsets[:n].astype(np.int64)
    starts = np.concatenate([offsets + int(first[w]) * item for w in read]) if read.size else []
    ends = np.concatenate([offsets + int(stop[w]) * item for w in read]) if read.size else []
    out = np.zeros((width.size, n), np.float64)
    if not read.size:
        return out
    if int(starts.min()) < 0 or int(ends.max()) > reader.ibd_size:
        return None  # the block reader names the broken offset
    if is_local(reader.fs):
        chunks = [reader.read_bytes(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]
    else:
        chunks = reader.fs.cat_ranges(
            [reader.ibd_path] * starts.size, starts.tolist(), ends.tolist()
        )
    sums = np.array(
        [np.frombuffer(c, dtype=reader.intensity_dtype).sum(dtype=np.float64) for c in chunks]
    )
    out[read] = sums.reshape(read.size, n)
    return out


@dataclass(frozen=True)
class RoiStatistics:
    """A ROI's mean spectrum (on the measurement's mean-spectrum axis) and QC numbers."""

    mz: np.ndarray
    mean: np.ndarray
    qc: dict[str, float | int]

    @property
    def pixels(self) -> int:
        return int(self.qc["pixels"])


def roi_statistics(
    reader: ImzML,
    grid: PixelGrid,
    geometry: Mapping[str, Any],
    params: ProcessingParameters | None = None,
) -> RoiStatistics:
    """The raw spectra inside a ROI, read once as one range per run of consecutive spectra
    (only the ROI's bytes): their mean spectrum (continuous: the file's axis; processed: the
    platform's ppm bins) and their QC numbers under ``params`` (``qc.region_summary``)."""
    indices = spatial.roi_spectrum_indices(geometry, grid, reader.coordinates)
    if indices.size == 0:
        raise spatial.SpatialError("the ROI holds no acquired pixel")
    accumulator = MeanSpectrumAccumulator.for_measurement(reader.mode, reader.mz_range())
    metrics = []
    for start, stop in spatial.contiguous_runs(indices):
        block = reader.read_block(start, stop)
        accumulator.add(block)
        metrics.append(qc.spectrum_metrics(block, params))
    mz, mean = accumulator.result()
    return RoiStatistics(mz, mean, qc.region_summary(qc.concatenate_metrics(metrics)))


class MeasurementResults:
    """Results of one measurement under one parameter set (name, ``name@vN`` or default)."""

    def __init__(
        self,
        measurement_id: str,
        parameter_set: str | None = None,
        *,
        store: MetadataStore,
        storage: StorageResource,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.measurement_id = measurement_id
        self.parameter_set_name = parameter_set or DEFAULT_NAME
        self.store = store
        self.storage = storage
        self.cache_dir = cache_dir
        self.schema = load_schema()

    # ------------------------------------------------------------------ what is there

    @functools.cached_property
    def measurement(self) -> Any:
        return self.store.get(self.schema.Measurement, self.measurement_id).doc

    @functools.cached_property
    def parameters(self) -> ResolvedParameters:
        """The parameter set resolved to its id and content hash (where its results live)."""
        return resolve(self.store, self.parameter_set_name)

    def _digest(self, asset: str) -> str | None:
        return self.parameters.content_hash if asset in PARAMETER_DEPENDENT_ASSETS else None

    def folder(self, asset: str) -> str:
        return result_key(self.measurement_id, asset, self._digest(asset), None)

    def manifest_key(self, asset: str) -> str:
        return manifest_key(asset, self.measurement_id, None, self._digest(asset))

    def manifest(self, asset: str) -> dict:
        """What ``asset`` wrote for this measurement (and parameter set); ResultNotReady if not."""
        url = self.storage.url(self.manifest_key(asset))
        try:
            return read_json(self.storage, url)
        except FileNotFoundError:
            parameter_set = self.parameters.id if asset in PARAMETER_DEPENDENT_ASSETS else None
            raise ResultNotReady(asset, self.measurement_id, parameter_set) from None

    def available(self) -> dict[str, bool]:
        """Which results exist yet, per asset."""
        found = {}
        for asset in RESULT_ASSETS:
            found[asset] = self.storage.exists(self.manifest_key(asset))
        return found

    # ------------------------------------------------------------------ results

    def qc_report(self) -> dict:
        """The QC verdict (``ok``), each check with value and threshold, and the numbers behind."""
        return read_qc_report(self.storage, self.manifest("qc_report")["qc"])

    def mean_spectrum(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mz, mean intensity)`` over all spectra (processed data: on 5-ppm bins)."""
        outputs = self.manifest("mean_spectrum")["outputs"]
        return read_npy(self.storage, outputs["mz"]), read_npy(self.storage, outputs["intensity"])

    def grid(self) -> PixelGrid:
        """The pixel grid every image of this measurement lies on (bounding box of the acquired
        coordinates; origin, shape, pixel size)."""
        return measurement_grid(self.measurement, None if self.measurement.facts else self.raw)

    @functools.cached_property
    def raw(self) -> ImzML:
        """The measurement's imzML, opened for ranged reads."""
        return open_raw(self.measurement, self.storage, self.cache_dir)

    def tic_image(self) -> np.ndarray:
        """Total ion current per pixel on ``grid()`` (``(rows, cols)``, a 3-D measurement
        ``(planes, rows, cols)``); NaN where no spectrum was acquired (outside the tissue)."""
        return read_npy(self.storage, self.manifest("tic_image")["outputs"]["image"])

    def ion_images(self) -> tuple[np.ndarray, np.ndarray]:
        """The stored ion images: ``(mz values, images (n_mz, *grid().image_shape))``."""
        outputs = self.manifest("ion_images")["outputs"]
        return read_npy(self.storage, outputs["mz"]), read_npy(self.storage, outputs["images"])

    def ion_image(self, mz: float, ppm: float | None = None) -> np.ndarray:
        """The ion image of ``mz`` ± ``ppm`` (default: the parameter set's window) on ``grid()``:
        the stored one when the workflow made it, else summed from the raw spectra."""
        window = self.parameters.params.ion_images
        if ppm is None:
            ppm = window.tolerance_ppm or DEFAULT_ION_IMAGE_PPM
        ions.check_window(mz, ppm)  # IonImageError: inf, nan, ≤ 0 or absurd values
        if window.tolerance_ppm == ppm:
            try:
                stored_mz, images = self.ion_images()
            except ResultNotReady:
                pass
            else:
                match = np.flatnonzero(np.isclose(stored_mz, mz, rtol=0, atol=1e-6))
                if match.size:
                    return images[int(match[0])]
        reader = self.raw
        grid = measurement_grid(self.measurement, reader)
        return raw_ion_images(reader, [mz], ppm, grid)[0]

    def peak_table(self) -> tuple[np.ndarray, np.ndarray]:
        """``(feature_mz, matrix (n_spectra, n_features))``: every spectrum's peaks binned into
        features (spectra in file order)."""
        return read_peak_table(self.storage, self.manifest("peak_table")["outputs"])

    def segmentation(self) -> dict[str, Any]:
        """The segmentation: ``k``, ``segments`` (colour, pixels, top m/z by effect size),
        ``labels`` (per spectrum), ``segment_map`` (on ``grid()``, -1 where not acquired),
        ``feature_mz`` and ``mean_spectra`` (k, n_features), ``png`` (the map's URL)."""
        outputs = self.manifest("segmentation")["outputs"]
        summary = read_json(self.storage, outputs["top_ions"])
        for name in ("labels", "segment_map", "feature_mz", "mean_spectra"):
            summary[name] = read_npy(self.storage, outputs[name])
        summary["png"] = outputs["png"]
        return summary

    def runs(self, *, this_parameter_set: bool = False) -> list[Any]:
        """The measurement's ``WorkflowRun`` records, newest first (optionally only those of
        this parameter set or none)."""
        self.store.refresh()
        runs = self.store.scan(
            self.schema.WorkflowRun, filters={"measurement_id": self.measurement_id}
        )
        ordered = sorted(runs, key=lambda r: r.started_at or "", reverse=True)
        if this_parameter_set:
            own = self.parameters.id
            ordered = [r for r in ordered if r.parameter_set_id in (None, own)]
        return ordered


def peak_table_of(results: MeasurementResults) -> tuple[np.ndarray, np.ndarray, Any]:
    """A measurement's ``peak_table`` under ``results``' parameter set: ``(feature m/z,
    frequency, intensities)``, the intensities a features × spectra ``scipy.sparse`` CSR
    matrix; ResultNotReady if it was not made."""
    return read_peak_table_csr(results.storage, results.manifest("peak_table")["outputs"])


def diff_parameter_sets(
    a: MeasurementResults, b: MeasurementResults, tolerance_ppm: float = 5.0
) -> Any:
    """One measurement's peak tables under two parameter sets compared
    (``em2q_msi.parameter_diff.parameter_set_diff``: gained/lost peaks, overlap, per-feature
    ion-image correlation, TIC ratio)."""
    from em2q_msi.parameter_diff import parameter_set_diff

    mz_a, _, table_a = peak_table_of(a)
    mz_b, _, table_b = peak_table_of(b)
    return parameter_set_diff(mz_a, table_a, mz_b, table_b, tolerance_ppm=tolerance_ppm)
