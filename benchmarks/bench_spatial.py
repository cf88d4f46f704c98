"""Spatial analysis: segmentation overhead against scikit-learn, and bytes read for a ROI.

``python -m benchmarks.bench_spatial [--quick]`` (``EM2Q_BENCH_QUICK=1`` does the same)

1. **Segmentation** of a 200×200-pixel section × 2,000 features (``--quick``: 60×60 × 500):
   three planted regions (``synthetic.planted_regions``) whose features are lognormal levels
   per region, times a smooth gradient and lognormal pixel noise. ``em2q_msi.spatial.segment``
   with k = 3 (TIC normalisation, sqrt, PCA to 10 components, k-means with 4 restarts, then
   the per-segment means and Cohen's d) against the same steps written as plain numpy +
   scikit-learn calls on the same matrix (``direct``). Printed: both wall times (best of
   ``REPEATS``), the ratio (TARGET <= 1.3), the ARI of both against the planted regions, and
   the time of the automatic choice of k (2–8, Calinski–Harabasz) on its own.
2. **ROI read**: a continuous imzML of ``--size-gb`` (default 4 GB; ``--quick``: 0.08 GB)
   written with pyimzml's ImzMLWriter (not timed), a rectangular ROI of 1,000 pixels
   (40×25) read with the client's ranged reads (``spatial.roi_spectrum_indices`` +
   ``em2q.client._read_indices``: one read per ROI row) through an fsspec filesystem that
   counts the bytes asked of the .ibd. Printed: time, bytes read, the ROI's spectra bytes and
   their ratio (TARGET <= 2).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

REPEATS = 3
TARGET_OVERHEAD = 1.3
TARGET_BYTES = 2.0
ROI_SHAPE = (25, 40)  # rows, columns: 1,000 pixels


def section_matrix(
    nx: int, ny: int, n_features: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix (n_pixels, n_features) float64, planted labels)``."""
    from em2q_msi.synthetic import planted_regions

    rng = np.random.default_rng(seed)
    regions = planted_regions(nx, ny).reshape(-1)
    levels = rng.lognormal(3.0, 1.0, (3, n_features))
    markers = rng.integers(0, 3, n_features)
    levels[markers, np.arange(n_features)] *= 4.0  # each feature marks one region
    rows, cols = np.divmod(np.arange(nx * ny), nx)
    gradient = 0.6 + 0.8 * (rows / max(ny - 1, 1) + cols / max(nx - 1, 1)) / 2
    matrix = levels[regions] * gradient[:, None]
    matrix *= rng.lognormal(-0.02, 0.2, matrix.shape)
    return matrix, regions


def direct(matrix: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """The same segmentation as plain numpy + scikit-learn calls (the baseline)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    tic = matrix.sum(axis=1)
    data = matrix / np.where(tic > 0, tic, 1.0)[:, None]
    np.sqrt(data, out=data)
    scores = PCA(n_components=10, random_state=seed).fit_transform(data)
    return KMeans(k, random_state=seed, n_init=4).fit_predict(scores)


def best_of(function, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def bench_segmentation(nx: int, ny: int, n_features: int, repeats: int) -> float:
    from sklearn.metrics import adjusted_rand_score

    from em2q_msi.parameters import SegmentationParameters
    from em2q_msi.spatial import segment

    matrix, truth = section_matrix(nx, ny, n_features)
    params = SegmentationParameters(k=3)
    direct(matrix[:500], 3)  # imports and first-call set-up out of the timings
    segment(matrix[:500], params)
    t_direct, labels_direct = best_of(lambda: direct(matrix, 3), repeats)
    t_platform, result = best_of(lambda: segment(matrix, params), repeats)
    ratio = t_platform / t_direct
    print(f"segmentation {nx}x{ny} px x {n_features} features, k=3 (best of {repeats}):")
    print(
        f"  direct scikit-learn  {t_direct:8.3f} s   ARI {adjusted_rand_score(truth, labels_direct):.3f}"
    )
    print(
        f"  em2q_msi.segment     {t_platform:8.3f} s   ARI {adjusted_rand_score(truth, result.labels):.3f}"
    )
    print(f"  overhead ratio       {ratio:8.2f} x   TARGET <= {TARGET_OVERHEAD} x")
    started = time.perf_counter()
    chosen = segment(matrix, SegmentationParameters(k_min=2, k_max=8))
    print(
        f"  k by Calinski-H. 2-8 {time.perf_counter() - started:8.3f} s   chose k={chosen.k}, "
        f"ARI {adjusted_rand_score(truth, chosen.labels):.3f}"
    )
    return ratio


class CountingFileSystem(fsspec.AbstractFileSystem):
    """Local files through a non-local fsspec filesystem that counts the bytes read by
    ``cat_file`` (the reader's ranged reads of remote data)."""

    protocol = "em2qcount"
    bytes_read = 0

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.local = LocalFileSystem()

    def info(self, path, **kwargs):
        return self.local.info(self._strip_protocol(path), **kwargs)

    def ls(self, path, detail=True, **kwargs):
        return self.local.ls(self._strip_protocol(path), detail=detail, **kwargs)

    def _open(self, path, mode="rb", **kwargs):
        return self.local._open(self._strip_protocol(path), mode, **kwargs)

    def cat_file(self, path, start=None, end=None, **kwargs):
        data = self.local.cat_file(self._strip_protocol(path), start=start, end=end)
        if str(path).endswith(".ibd"):
            CountingFileSystem.bytes_read += len(data)
        return data


def bench_roi(size_gb: float, workdir: Path) -> float:
    from em2q.client import _read_indices
    from em2q_msi.geometry import PixelGrid
    from em2q_msi.imzml import ImzML
    from em2q_msi.spatial import rectangle, roi_spectrum_indices
    from em2q_msi.synthetic import write_imzml

    n_bins = 10_000
    n_pixels = max(int(size_gb * 1e9 / (n_bins * 4)), 2_000)
    nx = int(np.ceil(np.sqrt(n_pixels * 1.5)))
    ny = max(int(n_pixels // nx), ROI_SHAPE[0] + 2)
    started = time.perf_counter()
    path = write_imzml(workdir / "big", mode="continuous", n_x=nx, n_y=ny, n_values=n_bins)
    written = time.perf_counter() - started
    ibd_bytes = os.path.getsize(Path(path).with_suffix(".ibd"))
    fsspec.register_implementation(CountingFileSystem.protocol, CountingFileSystem, clobber=True)
    reader = ImzML.open(f"{CountingFileSystem.protocol}://{path}", cache_dir=str(workdir))
    grid = PixelGrid.from_coordinates(reader.coordinates)
    top, left = (grid.ny - ROI_SHAPE[0]) // 2, (grid.nx - ROI_SHAPE[1]) // 2
    roi = rectangle(left, top, left + ROI_SHAPE[1], top + ROI_SHAPE[0])
    CountingFileSystem.bytes_read = 0
    started = time.perf_counter()
    indices = roi_spectrum_indices(roi, grid, reader.coordinates)
    block = _read_indices(reader, indices)
    elapsed = time.perf_counter() - started
    spectra_bytes = block.intensity.nbytes  # what the ROI's spectra hold on disk (float32)
    ratio = CountingFileSystem.bytes_read / spectra_bytes
    print(
        f"ROI read: {indices.size} pixels of a {nx}x{ny} px x {n_bins} bins continuous imzML "
        f"({ibd_bytes / 1e9:.2f} GB .ibd, written in {written:.0f} s):"
    )
    print(f"  time                 {elapsed:8.3f} s")
    print(f"  bytes read           {CountingFileSystem.bytes_read / 1e6:8.2f} MB")
    print(f"  ROI spectra bytes    {spectra_bytes / 1e6:8.2f} MB")
    print(f"  bytes ratio          {ratio:8.2f} x   TARGET <= {TARGET_BYTES} x")
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small scale (a minute)")
    parser.add_argument("--size-gb", type=float, default=None, help="ROI dataset size")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("EM2Q_BENCH_QUICK") == "1"
    if quick:
        ratio = bench_segmentation(60, 60, 500, REPEATS)
    else:
        ratio = bench_segmentation(200, 200, 2_000, 1)
    workdir = Path(tempfile.mkdtemp(prefix="bench-spatial-"))
    try:
        size = args.size_gb if args.size_gb is not None else (0.08 if quick else 4.0)
        bytes_ratio = bench_roi(size, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = ratio <= TARGET_OVERHEAD and bytes_ratio <= TARGET_BYTES
    print(f"targets {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
