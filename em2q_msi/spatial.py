"""Spatial analysis: regions of interest, segmentation, colocalisation, landmark registration.

Pure functions on numpy arrays, no Dagster and no Elasticsearch:

* **ROIs** are GeoJSON geometries (``Polygon``, ``MultiPolygon``, or a ``Feature`` holding one)
  in *image pixel coordinates*: x to the right, y down, pixel ``(row, column)`` of the image
  covers ``[column, column + 1) × [row, row + 1)``. A pixel belongs to a ROI when its centre
  ``(column + 0.5, row + 0.5)`` lies inside (holes, the polygon's later rings, are left out).
  :func:`rectangle` makes the polygon of a drawn box. :func:`roi_mask` rasterises,
  :func:`roi_spectrum_indices` gives the spectra whose pixels are inside (what a ranged read
  fetches), :func:`contiguous_runs` turns those into the few contiguous reads.
* **Segmentation** (:func:`segment`): per-pixel normalisation, optional ``sqrt``, PCA, then
  k-means or a Gaussian mixture (scikit-learn) with the number of segments chosen by the
  Calinski–Harabasz criterion (:func:`choose_k`),
  optionally a majority filter of the segment map; per-segment mean spectra and the features
  that distinguish each segment (Cohen's d of the segment against the other pixels).
* **Colocalisation** (:func:`colocalisation`): ion images clipped at a high percentile
  (hotspot removal), compared by cosine or Pearson correlation, ranked.
* **Registration** (:func:`fit_affine`): the affine transform mapping landmark points of one
  image onto another, fitted by least squares, with per-landmark residuals in pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from em2q_msi.geometry import PixelGrid
from em2q_msi.parameters import SegmentationParameters


class SpatialError(ValueError):
    """Spatial-analysis input that cannot be used: a bad ROI geometry, too few landmarks, a
    matrix whose shape does not match its pixels."""


# ---------------------------------------------------------------------- regions of interest


def rectangle(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    """The GeoJSON polygon of the box between two corners, in image pixel coordinates."""
    left, right = sorted((float(x0), float(x1)))
    top, bottom = sorted((float(y0), float(y1)))
    ring = [[left, top], [right, top], [right, bottom], [left, bottom], [left, top]]
    return {"type": "Polygon", "coordinates": [ring]}


def _ring(ring: Any, where: str) -> np.ndarray:
    try:
        points = np.asarray(ring, dtype=np.float64)
    except (TypeError, ValueError):
        raise SpatialError(f"{where}: expected a list of [x, y] points, got {ring!r}") from None
    if points.ndim != 2 or points.shape[1] < 2 or points.shape[0] < 3:
        raise SpatialError(f"{where}: a ring needs at least 3 [x, y] points, got {ring!r}")
    points = points[:, :2]
    if not np.all(np.isfinite(points)):
        raise SpatialError(f"{where}: coordinates must be finite numbers")
    return points


def polygons(geometry: Mapping[str, Any]) -> list[list[np.ndarray]]:
    """The polygons of a GeoJSON geometry as lists of rings (outer ring first, then holes);
    SpatialError names what is wrong with anything else."""
    if not isinstance(geometry, Mapping):
        raise SpatialError(f"expected a GeoJSON geometry object, got {geometry!r}")
    if geometry.get("type") == "Feature":
        return polygons(geometry.get("geometry") or {})
    kind, coordinates = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        parts = [coordinates]
    elif kind == "MultiPolygon":
        parts = coordinates if isinstance(coordinates, list) else None
    else:
        raise SpatialError(
            f"geometry type {kind!r} is not an area: use 'Polygon' or 'MultiPolygon' "
            "(a rectangle is a Polygon of its 4 corners)"
        )
    if not parts or not all(isinstance(p, list) and p for p in parts):
        raise SpatialError(f"{kind}: expected a list of rings of [x, y] points")
    return [[_ring(r, f"{kind} ring {j}") for j, r in enumerate(rings)] for rings in parts]


def roi_mask(geometry: Mapping[str, Any], image_shape: tuple[int, int]) -> np.ndarray:
    """Boolean image ``(ny, nx)``: True where the pixel centre lies inside the geometry."""
    from matplotlib.path import Path

    ny, nx = (int(v) for v in image_shape)
    rows, cols = np.mgrid[0:ny, 0:nx]
    centres = np.column_stack([cols.ravel() + 0.5, rows.ravel() + 0.5])
    mask = np.zeros(ny * nx, dtype=bool)
    for rings in polygons(geometry):
        inside = Path(rings[0]).contains_points(centres)
        for hole in rings[1:]:
            inside &= ~Path(hole).contains_points(centres)
        mask |= inside
    return mask.reshape(ny, nx)


def roi_spectrum_indices(
    geometry: Mapping[str, Any], grid: PixelGrid, coordinates: np.ndarray
) -> np.ndarray:
    """Ascending indices of the spectra whose pixels lie inside the ROI (every plane of a 3-D
    grid: the ROI is drawn on the image, which shows each plane the same way)."""
    mask = roi_mask(geometry, (grid.ny, grid.nx))
    where = grid.indices(coordinates)
    row, col = where[-2], where[-1]
    return np.flatnonzero(mask[row, col])


def contiguous_runs(indices: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop)]`` ranges covering ascending ``indices``: one read per run of
    consecutive spectra (a ROI row is one run in row-major scan order)."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [idx.size]])
    return [(int(idx[a]), int(idx[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)]


def mask_to_geometry(mask: np.ndarray) -> dict[str, Any]:
    """A ``MultiPolygon`` covering exactly the True pixels of a ``(ny, nx)`` mask: one
    rectangle per run of consecutive True pixels in a row (a segment turned into a ROI);
    :func:`roi_mask` of it gives the mask back."""
    data = np.asarray(mask, dtype=bool)
    if data.ndim != 2:
        raise SpatialError(f"a mask is a 2-D image, got shape {data.shape}")
    padded = np.zeros((data.shape[0], data.shape[1] + 2), np.int8)
    padded[:, 1:-1] = data
    edges = np.diff(padded, axis=1)
    rows_start, cols_start = np.nonzero(edges == 1)
    _, cols_stop = np.nonzero(edges == -1)
    if rows_start.size == 0:
        raise SpatialError("the mask holds no pixel")
    return {
        "type": "MultiPolygon",
        "coordinates": [
            rectangle(int(a), int(r), int(b), int(r) + 1)["coordinates"]
            for r, a, b in zip(rows_start, cols_start, cols_stop, strict=True)
        ],
    }


# ---------------------------------------------------------------------- segmentation


#: how :func:`choose_k` scores each number of segments
K_CRITERION = "calinski_harabasz"


def choose_k(
    scores: np.ndarray, k_min: int, k_max: int, *, seed: int = 0, n_init: int = 4
) -> tuple[int, dict[int, float], np.ndarray]:
    """The number of segments in ``k_min…k_max`` whose k-means partition of the PCA
    ``scores`` has the highest Calinski–Harabasz index (the variance ratio criterion: between-
    over within-segment dispersion, each divided by its degrees of freedom; Caliński &
    Harabasz, *Commun. Stat.* 3(1):1–27, 1974, the best of 30 stopping rules in Milligan &
    Cooper, *Psychometrika* 50:159–179, 1985). Returns ``(k, {k: index}, that k's labels)``.

    Why not the BIC of Gaussian mixtures: on a peak table the PCA scores are not Gaussian per
    tissue (zero-inflated features, peaks split across bins, intensity gradients), and a
    mixture's likelihood keeps rising with more components that model those shapes, so BIC
    picked 4–8 segments for 3 planted regions; the variance ratio asks only how well the
    segments are separated relative to their spread, and picks 3 there.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import calinski_harabasz_score

    index: dict[int, float] = {}
    best: tuple[int, np.ndarray] | None = None
    for k in range(k_min, k_max + 1):
        labels = KMeans(k, random_state=seed, n_init=n_init).fit_predict(scores)
        if np.unique(labels).size < 2:  # all pixels alike: nothing to score
            index[k] = float("-inf")
            continue
        index[k] = float(calinski_harabasz_score(scores, labels))
        if best is None or index[k] > index[best[0]]:
            best = (k, labels)
    if best is None:
        raise SpatialError("the pixels' spectra are all alike: no partition into segments")
    return best[0], index, best[1]


@dataclass(frozen=True)
class Segmentation:
    """A segmentation of ``n_pixels`` spectra.

    ``labels`` (n_pixels,) segment of each spectrum, 0…k-1, numbered by decreasing size;
    ``k`` the number of segments; ``k_scores`` ``{k: score}`` of each k tried when k was
    chosen (:func:`choose_k`, ``k_criterion`` names the score; empty when k was given);
    ``mean_spectra`` (k, n_features) the mean of each segment's spectra as given (before
    normalisation); ``effect_size`` (k, n_features) Cohen's d
    of each segment against the other pixels on the normalised features; ``top_features``
    (k, n_top) feature indices by decreasing effect size; ``explained_variance`` of the PCA
    components used.
    """

    labels: np.ndarray
    k: int
    k_scores: dict[int, float]
    mean_spectra: np.ndarray
    effect_size: np.ndarray
    top_features: np.ndarray
    explained_variance: np.ndarray
    k_criterion: str = K_CRITERION

    def segment_sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.k)


def _pixel_factor(data: np.ndarray, method: str) -> np.ndarray | None:
    """Each pixel's normalisation divisor (zeros become 1), ``None`` for ``none``."""
    if method == "none":
        return None
    if method == "tic":
        factor = data.sum(axis=1, dtype=np.float64)
    elif method == "rms":
        factor = np.sqrt(np.einsum("ij,ij->i", data, data, dtype=np.float64) / data.shape[1])
    else:
        raise SpatialError(f"normalisation must be 'tic', 'rms' or 'none', got {method!r}")
    return np.where(factor > 0, factor, 1.0)


def normalise_pixels(matrix: np.ndarray, method: str) -> np.ndarray:
    """Per-pixel normalisation of a ``(n_pixels, n_features)`` matrix: ``tic`` (rows sum to
    1), ``rms`` (rows have unit root mean square) or ``none``; all-zero rows stay zero."""
    data = np.asarray(matrix, dtype=np.float64)
    factor = _pixel_factor(data, method)
    return data.copy() if factor is None else data / factor[:, None]


def features_for_segmentation(matrix: np.ndarray, params: SegmentationParameters) -> np.ndarray:
    """The matrix the clustering sees: normalised, ``sqrt``-transformed if asked (variance
    stabilisation of count-like intensities), restricted to the ``max_features`` of highest
    variance (0: all)."""
    data = normalise_pixels(matrix, params.normalisation)
    if params.transform == "sqrt":
        np.sqrt(np.maximum(data, 0.0, out=data), out=data)  # in place: the matrix is large
    if 0 < params.max_features < data.shape[1]:
        keep = np.sort(np.argsort(data.var(axis=0))[::-1][: params.max_features])
        data = data[:, keep]
    return data


def majority_filter(
    labels_image: np.ndarray, k: int, radius_pixels: int, valid: np.ndarray | None = None
) -> np.ndarray:
    """Each pixel takes the most frequent label in its ``(2r+1)²`` window (ties keep the
    pixel's own label); pixels outside ``valid`` (not acquired) neither vote nor change."""
    from scipy.ndimage import uniform_filter

    image = np.asarray(labels_image)
    valid = np.ones(image.shape, bool) if valid is None else np.asarray(valid, bool)
    size = 2 * int(radius_pixels) + 1
    votes = np.stack(
        [
            uniform_filter(((image == c) & valid).astype(np.float64), size, mode="constant")
            for c in range(k)
        ]
    )
    own = np.clip(image, 0, k - 1)
    votes[own, *np.indices(image.shape)] += 0.5 / size**2  # a tie keeps the pixel's label
    out = np.argmax(votes, axis=0)
    return np.where(valid, out, image)


def _relabel_by_size(labels: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(k)
    return rank[labels]


#: pixels per block when segment statistics are summed (bounds the temporaries' memory)
_BLOCK_PIXELS = 4096


def group_moments(
    data: np.ndarray, labels: np.ndarray, k: int, factor: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per segment: pixel count (k,), sum and sum of squares (k, n_features) of ``data``'s
    rows (each divided by ``factor`` first when given), summed block by block so no copy of
    the whole matrix is made."""
    n_features = data.shape[1]
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    total = np.zeros((k, n_features))
    squares = np.zeros((k, n_features))
    for a in range(0, data.shape[0], _BLOCK_PIXELS):
        block = np.asarray(data[a : a + _BLOCK_PIXELS], dtype=np.float64)
        if factor is not None:
            block = block / factor[a : a + _BLOCK_PIXELS, None]
        onehot = np.zeros((k, block.shape[0]))
        onehot[labels[a : a + _BLOCK_PIXELS], np.arange(block.shape[0])] = 1.0
        total += onehot @ block
        squares += onehot @ (block * block)
    return counts, total, squares


def cohens_d(counts: np.ndarray, total: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """``(k, n_features)`` standardised mean difference of each segment vs the rest (pooled
    standard deviation; 0 where both are constant), from :func:`group_moments`."""
    n_all, sum_all, sq_all = counts.sum(), total.sum(axis=0), squares.sum(axis=0)
    out = np.zeros_like(total)
    for c in range(total.shape[0]):
        n_a, n_b = counts[c], n_all - counts[c]
        if n_a == 0 or n_b == 0:
            continue
        mean_a, mean_b = total[c] / n_a, (sum_all - total[c]) / n_b
        ss_a = np.maximum(squares[c] - n_a * mean_a**2, 0.0)
        ss_b = np.maximum((sq_all - squares[c]) - n_b * mean_b**2, 0.0)
        pooled = np.sqrt((ss_a + ss_b) / max(n_a + n_b - 2, 1))
        diff = mean_a - mean_b
        scale = np.maximum(np.abs(mean_a), np.abs(mean_b))
        ok = pooled > 1e-12 * np.where(scale > 0, scale, 1.0)  # constant: no effect
        out[c] = np.divide(diff, pooled, out=np.zeros_like(diff), where=ok)
    return out


def segment(
    matrix: np.ndarray,
    params: SegmentationParameters | None = None,
    *,
    grid: PixelGrid | None = None,
    coordinates: np.ndarray | None = None,
) -> Segmentation:
    """Segment the pixels of a ``(n_pixels, n_features)`` intensity matrix (a peak table
    transposed, or ion intensities).

    With ``params.k`` 0 the number of segments is the k in ``k_min…k_max`` chosen by
    :func:`choose_k` on the PCA scores; ``method`` then decides whether the final labels are
    that k's k-means partition (``kmeans``) or a Gaussian mixture with that k (``gmm``).
    ``spatial_smoothing="majority"`` needs ``grid`` and ``coordinates`` (the pixels' places).
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    params = params or SegmentationParameters()
    data = np.asarray(matrix, dtype=np.float64)
    if data.ndim != 2:
        raise SpatialError(f"expected a (n_pixels, n_features) matrix, got shape {data.shape}")
    n_pixels, n_features = data.shape
    k_max = params.k or max(params.k_min, min(params.k_max, n_pixels // 4))
    # (k chosen: a small measurement tries only k with 4 pixels per segment or more)
    if n_pixels <= k_max or n_features < 1:
        raise SpatialError(
            f"{n_pixels} pixels × {n_features} features cannot be split into {k_max} segments"
        )
    features = features_for_segmentation(data, params)
    n_components = min(params.n_components, features.shape[1], n_pixels - 1)
    pca = PCA(n_components=n_components, random_state=params.seed)
    scores = pca.fit_transform(features)
    k_scores: dict[int, float] = {}
    chosen = None
    if params.k:
        k = params.k
    else:
        k, k_scores, chosen = choose_k(
            scores, params.k_min, k_max, seed=params.seed, n_init=params.n_init
        )
    if params.method == "gmm":
        labels = GaussianMixture(k, random_state=params.seed).fit(scores).predict(scores)
    elif chosen is not None:
        labels = chosen
    else:
        labels = KMeans(k, random_state=params.seed, n_init=params.n_init).fit_predict(scores)
    labels = np.asarray(labels, dtype=np.int64)
    if params.spatial_smoothing == "majority":
        if grid is None or coordinates is None:
            raise SpatialError(
                "spatial_smoothing 'majority' needs the pixels' grid and coordinates"
            )
        where = grid.indices(coordinates)
        image = np.full(grid.image_shape, -1, np.int64)
        image[where] = labels
        valid = image >= 0
        if grid.is_3d:
            smoothed = np.stack(
                [
                    majority_filter(image[z], k, params.smoothing_radius_pixels, valid[z])
                    for z in range(grid.nz)
                ]
            )
        else:
            smoothed = majority_filter(image, k, params.smoothing_radius_pixels, valid)
        labels = smoothed[where]
    labels = _relabel_by_size(labels, k)
    counts, total, _ = group_moments(data, labels, k)
    means = total / np.maximum(counts, 1)[:, None]
    effect = cohens_d(*group_moments(data, labels, k, _pixel_factor(data, params.normalisation)))
    n_top = min(params.n_top_features, n_features)
    top = np.argsort(-effect, axis=1, kind="stable")[:, :n_top]
    return Segmentation(
        labels=labels,
        k=k,
        k_scores=k_scores,
        mean_spectra=means,
        effect_size=effect,
        top_features=top,
        explained_variance=pca.explained_variance_ratio_,
    )


@dataclass(frozen=True)
class MemberSegmentation:
    """One segmentation of several measurements' pixels: ``segmentation`` over all their
    spectra stacked (members in ``members`` order), ``offsets`` (n_members + 1,) where each
    member's rows start; a segment number means the same in every member."""

    members: tuple[str, ...]
    offsets: np.ndarray
    segmentation: Segmentation

    def labels_of(self, member: str) -> np.ndarray:
        """The segment of each spectrum of ``member`` (its rows' order)."""
        i = self.members.index(member)
        return self.segmentation.labels[self.offsets[i] : self.offsets[i + 1]]

    def sizes(self) -> dict[str, np.ndarray]:
        """Pixels of each segment per member (a segment may be absent from a member: 0)."""
        k = self.segmentation.k
        return {m: np.bincount(self.labels_of(m), minlength=k) for m in self.members}


def segment_members(
    matrices: Mapping[str, np.ndarray], params: SegmentationParameters | None = None
) -> MemberSegmentation:
    """Segment the pixels of several measurements in one feature space (a study's aligned
    features: column j is the same m/z in every matrix) so that the segments are comparable:
    one per-pixel normalisation, one PCA and one clustering (and one choice of k) fitted on all
    members' pixels together, rather than one per member whose labels would mean different
    tissues. The spatial majority filter is per image, so it is refused here (run it on each
    member's map)."""
    params = params or SegmentationParameters()
    if params.spatial_smoothing != "none":
        raise SpatialError(
            f"spatial_smoothing {params.spatial_smoothing!r} works on one image; segment the "
            "members with spatial_smoothing 'none'"
        )
    if not matrices:
        raise SpatialError("no members to segment")
    members = tuple(matrices)
    widths = {m: np.shape(matrices[m])[-1] for m in members}
    if len(set(widths.values())) != 1 or any(np.ndim(matrices[m]) != 2 for m in members):
        raise SpatialError(
            "the members' matrices must be (n_pixels, n_features) on the same features, got "
            + ", ".join(f"{m}: {np.shape(matrices[m])}" for m in members)
        )
    rows = [np.asarray(matrices[m], dtype=np.float64) for m in members]
    offsets = np.concatenate([[0], np.cumsum([r.shape[0] for r in rows])]).astype(np.int64)
    return MemberSegmentation(members, offsets, segment(np.vstack(rows), params))


def segment_colours(k: int) -> list[str]:
    """``#rrggbb`` of segments 0…k-1: matplotlib's tab10 (tab20 beyond 10 segments), the
    colours of :func:`segment_image_rgba` and of the web page's legend."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [
        "#" + "".join(f"{int(round(v * 255)):02x}" for v in cmap(c % cmap.N)[:3]) for c in range(k)
    ]


def segment_image_rgba(labels_image: np.ndarray, k: int) -> np.ndarray:
    """RGBA ``uint8`` image of a segment map (labels 0…k-1; negative or NaN: not acquired,
    transparent)."""
    data = np.asarray(labels_image, dtype=np.float64)
    valid = np.isfinite(data) & (data >= 0)
    palette = np.array(
        [[int(h[i : i + 2], 16) for i in (1, 3, 5)] + [255] for h in segment_colours(k)],
        dtype=np.uint8,
    )
    rgba = np.zeros((*data.shape, 4), np.uint8)
    rgba[valid] = palette[data[valid].astype(np.int64) % max(k, 1)]
    return rgba


# ---------------------------------------------------------------------- colocalisation


def clip_hotspots(images: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Each image (rows of ``(n_images, n_pixels)``) clipped at its ``percentile`` of finite
    values: a few very bright pixels (hotspots) would otherwise decide the comparison."""
    data = np.asarray(images, dtype=np.float64)
    if not 0 < percentile <= 100:
        raise SpatialError(f"percentile must be in (0, 100], got {percentile!r}")
    if percentile == 100:
        return data.copy()
    ceiling = np.nanpercentile(data, percentile, axis=1, keepdims=True)
    return np.minimum(data, ceiling)


@dataclass(frozen=True)
class Colocalisation:
    """Images ranked by similarity to the ``target``: ``order`` (indices, most similar
    first, target left out) and ``scores`` (their similarity, in that order)."""

    target: int
    order: np.ndarray
    scores: np.ndarray


def similarity(images: np.ndarray, method: str = "pearson") -> np.ndarray:
    """``(n, n)`` similarity of the rows of ``(n, n_pixels)``: ``cosine`` or ``pearson``
    (cosine of the mean-centred images); NaN pixels (not acquired in any image) are left
    out; a constant image is similar to nothing (0)."""
    data = np.asarray(images, dtype=np.float64)
    keep = np.all(np.isfinite(data), axis=0)
    data = data[:, keep]
    if method == "pearson":
        data = data - data.mean(axis=1, keepdims=True)
    elif method != "cosine":
        raise SpatialError(f"method must be 'cosine' or 'pearson', got {method!r}")
    norms = np.linalg.norm(data, axis=1)
    unit = np.divide(data, norms[:, None], out=np.zeros_like(data), where=norms[:, None] > 0)
    return unit @ unit.T


def colocalisation(
    images: np.ndarray,
    target: int,
    *,
    method: str = "pearson",
    hotspot_percentile: float = 99.0,
    pixel_normalisation: np.ndarray | None = None,
) -> Colocalisation:
    """Rank the other images of ``images`` (``(n, n_pixels)`` or ``(n, ny, nx)``) by their
    similarity to image ``target``. ``pixel_normalisation`` (n_pixels,), e.g. the TIC: each
    pixel is divided by it first (zeros left as they are)."""
    data = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    if not 0 <= target < data.shape[0]:
        raise SpatialError(f"target {target} is not one of the {data.shape[0]} images")
    if pixel_normalisation is not None:
        factor = np.asarray(pixel_normalisation, dtype=np.float64).reshape(-1)
        if factor.size != data.shape[1]:
            raise SpatialError(f"{factor.size} normalisation factors for {data.shape[1]} pixels")
        data = data / np.where(factor > 0, factor, 1.0)
    scores = similarity(clip_hotspots(data, hotspot_percentile), method)[target]
    others = np.array([i for i in range(data.shape[0]) if i != target], dtype=np.int64)
    order = others[np.argsort(-scores[others], kind="stable")]
    return Colocalisation(target=target, order=order, scores=scores[order])


def colocalised_features(
    feature_mz: np.ndarray,
    matrix: np.ndarray,
    mz: float,
    *,
    tolerance_ppm: float = 20.0,
    method: str = "pearson",
    hotspot_percentile: float = 99.0,
    normalisation: str = "tic",
) -> tuple[int, Colocalisation]:
    """The features of a peak table (``matrix`` (n_pixels, n_features)) whose images are most
    like the image of the feature nearest ``mz`` (within ``tolerance_ppm``); each pixel first
    normalised by its ``tic`` (sum over features) or ``rms``, or not (``none``). Returns the
    target feature's index and the ranking."""
    axis = np.asarray(feature_mz, dtype=np.float64)
    if axis.size == 0:
        raise SpatialError("the peak table has no features")
    target = int(np.argmin(np.abs(axis - mz)))
    if abs(axis[target] - mz) > mz * tolerance_ppm * 1e-6:
        raise SpatialError(
            f"no feature within {tolerance_ppm:g} ppm of m/z {mz:g}; the nearest is "
            f"{axis[target]:.4f}"
        )
    data = np.asarray(matrix, dtype=np.float64)
    factor = None
    if normalisation == "tic":
        factor = data.sum(axis=1)
    elif normalisation == "rms":
        factor = np.sqrt(np.mean(data**2, axis=1))
    elif normalisation != "none":
        raise SpatialError(f"normalisation must be 'tic', 'rms' or 'none', got {normalisation!r}")
    ranked = colocalisation(
        data.T, target, method=method, hotspot_percentile=hotspot_percentile,
        pixel_normalisation=factor,
    )  # fmt: skip
    return target, ranked


# ---------------------------------------------------------------------- registration


@dataclass(frozen=True)
class AffineFit:
    """``matrix`` (2, 3): ``[x', y'] = matrix @ [x, y, 1]``; ``residuals_px`` the distance of
    each transformed source landmark from its target; ``rms_px`` their root mean square."""

    matrix: np.ndarray
    residuals_px: np.ndarray
    rms_px: float

    def apply(self, points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return xy @ self.matrix[:, :2].T + self.matrix[:, 2]

    def inverse(self) -> np.ndarray:
        """The (2, 3) matrix of the inverse transform."""
        full = np.vstack([self.matrix, [0.0, 0.0, 1.0]])
        return np.linalg.inv(full)[:2]


def fit_affine(
    source: np.ndarray | Sequence[Sequence[float]], target: np.ndarray | Sequence[Sequence[float]]
) -> AffineFit:
    """Least-squares affine transform taking ``source`` landmarks ``(n, 2)`` onto ``target``
    (n ≥ 3, not all on one line)."""
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape:
        raise SpatialError(
            f"landmarks must be two (n, 2) lists of the same length, got {src.shape} and {dst.shape}"
        )
    if src.shape[0] < 3:
        raise SpatialError(
            f"an affine transform needs at least 3 landmark pairs, got {src.shape[0]}"
        )
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        raise SpatialError("landmark coordinates must be finite numbers")
    design = np.column_stack([src, np.ones(src.shape[0])])
    if np.linalg.matrix_rank(design) < 3:
        raise SpatialError("the landmarks lie on one line: place at least 3 not in a row")
    spread = np.linalg.svd(dst - dst.mean(axis=0), compute_uv=False)
    if spread[0] == 0 or spread[1] <= 1e-9 * spread[0]:
        raise SpatialError(
            "the target landmarks lie on one line: the fitted transform would fold the image "
            "onto a line (a degenerate fit); place at least 3 not in a row"
        )
    solution, *_ = np.linalg.lstsq(design, dst, rcond=None)
    matrix = solution.T
    residuals = np.linalg.norm(design @ solution - dst, axis=1)
    return AffineFit(matrix, residuals, float(np.sqrt(np.mean(residuals**2))))
