"""Spatial analysis against planted truth: segments, ROI means, colocalisation, affine fits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from em2q_msi.geometry import PixelGrid
from em2q_msi.ion_images import ion_intensities
from em2q_msi.parameters import ParameterError, ProcessingParameters, SegmentationParameters
from em2q_msi.qc import MeanSpectrumAccumulator
from em2q_msi.spatial import (
    SpatialError,
    cohens_d,
    colocalisation,
    colocalised_features,
    contiguous_runs,
    fit_affine,
    group_moments,
    majority_filter,
    mask_to_geometry,
    rectangle,
    roi_mask,
    roi_spectrum_indices,
    segment,
    segment_members,
)
from em2q_msi.synthetic import synthetic_regions


@pytest.fixture(scope="module")
def section():
    return synthetic_regions(nx=30, ny=24, n_bins=1_500, seed=3)


@pytest.fixture(scope="module")
def ion_matrix(section):
    """(n_pixels, n_ions): what a peak table gives the segmentation."""
    return ion_intensities(section.block, section.ion_mz, tolerance_da=1.5).T


def _grid(section) -> PixelGrid:
    return PixelGrid.from_coordinates(section.block.coordinates)


# ---------------------------------------------------------------------- segmentation


def test_kmeans_with_k_chosen_recovers_the_planted_regions(section, ion_matrix):
    result = segment(ion_matrix, SegmentationParameters(k_max=5))
    assert result.k == 3
    assert max(result.k_scores, key=result.k_scores.get) == 3
    assert sorted(result.k_scores) == [2, 3, 4, 5]
    assert adjusted_rand_score(section.labels, result.labels) >= 0.8


@pytest.fixture(scope="module")
def picked_peak_table(tmp_path_factory):
    """A planted-region section written as an imzML file, read back and put through the
    platform's preprocessing, peak picking and binning with the default parameters (what the
    ``peak_table`` asset does): ``(section, (n_pixels, n_features) matrix)``."""
    from em2q_msi.features import bin_peaks
    from em2q_msi.imzml import ImzML
    from em2q_msi.peaks import preprocess_and_pick
    from em2q_msi.synthetic import write_regions_imzml

    section = synthetic_regions(nx=24, ny=18, n_bins=800, seed=4)
    path = write_regions_imzml(tmp_path_factory.mktemp("picked") / "section", section)
    reader = ImzML.open(path, use_cache=False)
    params = ProcessingParameters()
    _, peaks = preprocess_and_pick(reader.read_block(0, len(section.labels)), params)
    table = bin_peaks(
        peaks, params.binning.tolerance_ppm, min_frequency=params.binning.min_frequency
    )
    return section, table.dense().T


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_k_chosen_on_a_picked_peak_table_is_the_number_of_planted_regions(
    picked_peak_table, method
):
    """BIC chose 4–8 segments here (split and zero-inflated features); the Calinski–Harabasz
    choice finds the 3 regions."""
    section, matrix = picked_peak_table
    assert matrix.shape[1] > 500  # a real peak table: many more features than planted ions
    result = segment(matrix, SegmentationParameters(method=method))
    assert result.k == 3
    assert adjusted_rand_score(section.labels, result.labels) >= 0.8


def test_gaussian_mixture_recovers_the_planted_regions(section, ion_matrix):
    result = segment(ion_matrix, SegmentationParameters(method="gmm", k_max=5))
    assert adjusted_rand_score(section.labels, result.labels) >= 0.8


def test_segmentation_of_the_raw_profile_spectra_recovers_the_regions(section):
    result = segment(section.block.intensity, SegmentationParameters(k=3))
    assert adjusted_rand_score(section.labels, result.labels) >= 0.8


def test_top_features_of_each_segment_are_its_region_markers(section, ion_matrix):
    result = segment(ion_matrix, SegmentationParameters(k=3, n_top_features=4))
    for c in range(result.k):
        region = np.bincount(section.labels[result.labels == c]).argmax()
        assert set(section.ion_region[result.top_features[c]]) == {region}


def test_effect_sizes_from_blockwise_moments_equal_a_direct_cohens_d():
    rng = np.random.default_rng(5)
    data = rng.lognormal(0, 1, (9_000, 7))  # more than one block of pixels
    labels = rng.integers(0, 3, 9_000)
    effect = cohens_d(*group_moments(data, labels, 3))
    for c in range(3):
        a, b = data[labels == c], data[labels != c]
        pooled = np.sqrt(
            ((a.shape[0] - 1) * a.var(0, ddof=1) + (b.shape[0] - 1) * b.var(0, ddof=1))
            / (data.shape[0] - 2)
        )
        np.testing.assert_allclose(effect[c], (a.mean(0) - b.mean(0)) / pooled, rtol=1e-9)


def test_segment_mean_spectra_are_the_means_of_their_pixels(ion_matrix):
    result = segment(ion_matrix, SegmentationParameters(k=3))
    for c in range(3):
        np.testing.assert_allclose(
            result.mean_spectra[c], ion_matrix[result.labels == c].mean(axis=0)
        )
    assert list(result.segment_sizes()) == sorted(result.segment_sizes(), reverse=True)


def test_majority_smoothing_removes_isolated_mislabelled_pixels(section):
    rng = np.random.default_rng(0)
    noisy = section.regions.copy()
    flip = rng.random(noisy.shape) < 0.05
    noisy[flip] = (noisy[flip] + 1) % 3
    smoothed = majority_filter(noisy, 3, 1)
    inner = np.s_[2:-2, 2:-2]  # the frame has fewer voters
    wrong_before = np.mean(noisy[inner] != section.regions[inner])
    wrong_after = np.mean(smoothed[inner] != section.regions[inner])
    assert wrong_after < wrong_before / 3


def test_majority_smoothing_in_segment_needs_the_grid(ion_matrix):
    with pytest.raises(SpatialError, match="grid and coordinates"):
        segment(ion_matrix, SegmentationParameters(k=3, spatial_smoothing="majority"))


def test_smoothed_segmentation_keeps_the_planted_regions(section, ion_matrix):
    params = SegmentationParameters(k=3, spatial_smoothing="majority")
    result = segment(ion_matrix, params, grid=_grid(section), coordinates=section.block.coordinates)
    assert adjusted_rand_score(section.labels, result.labels) >= 0.8


def test_too_few_pixels_for_the_segments_are_refused():
    with pytest.raises(SpatialError, match="cannot be split into 8 segments"):
        segment(np.ones((5, 3)), SegmentationParameters(k=8))


def test_segmentation_parameters_are_validated_by_name():
    with pytest.raises(ParameterError, match=r"segmentation\.k_max: must be >= k_min"):
        SegmentationParameters(k_min=5, k_max=3)
    with pytest.raises(ParameterError, match=r"segmentation\.method"):
        ProcessingParameters.from_dict({"segmentation": {"method": "dbscan"}})


def test_default_segmentation_leaves_existing_parameter_hashes_unchanged():
    # the hash of the default set before segmentation existed (docs/processing.md)
    assert ProcessingParameters().digest()[:16] == "4b6c4e877e536fc7"
    changed = ProcessingParameters.from_dict({"segmentation": {"k": 3}})
    assert changed.digest() != ProcessingParameters().digest()


# ---------------------------------------------------------------------- regions of interest


def test_rectangle_roi_over_a_region_gives_its_direct_mean_spectrum(section):
    # columns 1..6 lie in region 0 (the left third of 30 columns), rows 3..19
    geometry = rectangle(1, 3, 7, 20)
    indices = roi_spectrum_indices(geometry, _grid(section), section.block.coordinates)
    assert indices.size == 6 * 17
    assert set(section.labels[indices]) == {0}
    block = section.block
    roi_block = type(block)(block.mz, block.intensity[indices], None, block.coordinates[indices])
    mz, mean = MeanSpectrumAccumulator().add(roi_block).result()
    direct = block.intensity.reshape(24, 30, -1)[3:20, 1:7].mean(axis=(0, 1), dtype=np.float64)
    np.testing.assert_allclose(mean, direct, rtol=1e-10)


def test_polygon_mask_takes_pixels_whose_centres_are_inside():
    triangle = {"type": "Polygon", "coordinates": [[[0, 0], [4.2, 0], [0, 4.2], [0, 0]]]}
    mask = roi_mask(triangle, (4, 4))
    expected = np.array(
        [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool
    )  # centre (c + .5, r + .5) inside x + y < 4.2
    np.testing.assert_array_equal(mask, expected)


def test_polygon_holes_are_left_out():
    outer = [[0, 0], [6, 0], [6, 6], [0, 6], [0, 0]]
    hole = [[2, 2], [4, 2], [4, 4], [2, 4], [2, 2]]
    mask = roi_mask({"type": "Polygon", "coordinates": [outer, hole]}, (6, 6))
    assert mask.sum() == 36 - 4
    assert not mask[2:4, 2:4].any()


def test_feature_and_multipolygon_geometries_are_accepted():
    a, b = rectangle(0, 0, 1, 1)["coordinates"], rectangle(2, 2, 3, 3)["coordinates"]
    feature = {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [a, b]}}
    assert roi_mask(feature, (3, 3)).sum() == 2


@pytest.mark.parametrize(
    "geometry, message",
    [
        ({"type": "Point", "coordinates": [1, 2]}, "not an area"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}, "at least 3"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, "a"], [2, 0]]]}, "list of \\[x, y\\]"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, float("nan")], [2, 0]]]}, "finite"),
        ("not a geometry", "GeoJSON geometry object"),
    ],
)
def test_bad_geometries_are_refused_with_the_problem_named(geometry, message):
    with pytest.raises(SpatialError, match=message):
        roi_mask(geometry, (4, 4))


def test_a_mask_turned_into_a_geometry_gives_the_mask_back(section):
    mask = section.regions == 1  # the disc
    geometry = mask_to_geometry(mask)
    np.testing.assert_array_equal(roi_mask(geometry, mask.shape), mask)
    assert len(geometry["coordinates"]) == np.count_nonzero(mask.any(axis=1))  # a run per row


def test_contiguous_runs_cover_exactly_the_indices():
    indices = np.array([3, 4, 5, 9, 11, 12])
    runs = contiguous_runs(indices)
    assert runs == [(3, 6), (9, 10), (11, 13)]
    assert contiguous_runs(np.array([], dtype=np.int64)) == []


# ---------------------------------------------------------------------- colocalisation


@pytest.mark.parametrize("method", ["pearson", "cosine"])
def test_colocalisation_ranks_ions_of_the_same_region_first(section, ion_matrix, method):
    images = ion_matrix.T
    for target in np.flatnonzero(section.ion_region >= 0)[:3]:
        ranked = colocalisation(images, int(target), method=method)
        same = int(np.sum(section.ion_region == section.ion_region[target])) - 1
        assert target not in ranked.order
        assert set(section.ion_region[ranked.order[:same]]) == {section.ion_region[target]}
        assert np.all(np.diff(ranked.scores) <= 0)


def test_hotspot_clipping_keeps_one_bright_pixel_from_deciding_the_ranking():
    rng = np.random.default_rng(1)
    pattern = np.repeat([0.0, 1.0], 200) + rng.normal(0, 0.05, 400)
    target = pattern + rng.normal(0, 0.05, 400)
    spiked = pattern + rng.normal(0, 0.05, 400)
    spiked[0] = 1e4  # one hotspot
    unrelated = rng.normal(1.0, 0.3, 400)
    unrelated[0] = 1e4  # shares only the hotspot with nothing
    images = np.stack([target, spiked, unrelated])
    assert colocalisation(images, 0, hotspot_percentile=99).order[0] == 1
    assert colocalisation(images, 0, hotspot_percentile=100).scores[0] < 0.2


def test_colocalised_features_start_from_the_feature_nearest_the_mz(section, ion_matrix):
    target_mz = section.ion_mz[5] * (1 + 5e-6)  # 5 ppm off: still that feature
    target, ranked = colocalised_features(section.ion_mz, ion_matrix, target_mz)
    assert target == 5
    same = np.flatnonzero(section.ion_region == section.ion_region[5])
    assert set(ranked.order[: same.size - 1]) == set(same) - {5}


def test_colocalisation_of_an_mz_without_a_feature_names_the_nearest(section, ion_matrix):
    with pytest.raises(SpatialError, match="nearest is"):
        colocalised_features(section.ion_mz, ion_matrix, section.ion_mz[0] + 0.5)


# ---------------------------------------------------------------------- registration


def test_known_affine_is_recovered_from_noisy_landmarks_within_half_a_pixel():
    rng = np.random.default_rng(2)
    angle = np.deg2rad(12.0)
    true = np.array(
        [
            [1.8 * np.cos(angle), -1.8 * np.sin(angle), 40.0],
            [1.6 * np.sin(angle), 1.6 * np.cos(angle), -15.0],
        ]
    )
    source = rng.uniform(0, 200, (6, 2))
    target = source @ true[:, :2].T + true[:, 2] + rng.normal(0, 0.2, (6, 2))
    fit = fit_affine(source, target)
    probe = rng.uniform(0, 200, (50, 2))
    error = np.linalg.norm(fit.apply(probe) - (probe @ true[:, :2].T + true[:, 2]), axis=1)
    assert error.max() < 0.5
    assert fit.residuals_px.shape == (6,)
    assert 0 < fit.rms_px < 0.5


def test_three_exact_landmarks_give_zero_residuals_and_an_inverse():
    source = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    target = source * 2 + [5, 7]
    fit = fit_affine(source, target)
    np.testing.assert_allclose(fit.residuals_px, 0, atol=1e-9)
    np.testing.assert_allclose(
        fit.inverse()[:, :2] @ target[1] + fit.inverse()[:, 2], source[1], atol=1e-9
    )


@pytest.mark.parametrize(
    "source, message",
    [
        ([[0, 0], [1, 1]], "at least 3 landmark pairs"),
        ([[0, 0], [1, 1], [2, 2]], "one line"),
    ],
)
def test_unusable_landmarks_are_refused(source, message):
    with pytest.raises(SpatialError, match=message):
        fit_affine(source, np.asarray(source, float) + 1)


# ---------------------------------------------------------------------- study segmentation


def test_members_segmented_together_give_each_tissue_the_same_segment_everywhere():
    """Two sections of one tissue (same seed: same marker ions per region) of other sizes and
    overall brightness: segmented in one feature space, region r is one segment in both."""
    first = synthetic_regions(nx=20, ny=16, n_bins=600, seed=8)
    second = synthetic_regions(nx=14, ny=18, n_bins=600, seed=8, gradient=(1.5, 2.5))
    np.testing.assert_array_equal(first.ion_region, second.ion_region)
    joint = segment_members(
        {"a": first.block.intensity, "b": second.block.intensity}, SegmentationParameters()
    )
    assert joint.segmentation.k == 3
    mapping = {}
    for member, section in (("a", first), ("b", second)):
        labels = joint.labels_of(member)
        assert labels.size == section.labels.size
        assert adjusted_rand_score(section.labels, labels) >= 0.8
        mapping[member] = [np.bincount(labels[section.labels == r]).argmax() for r in range(3)]
    assert mapping["a"] == mapping["b"] and sorted(mapping["a"]) == [0, 1, 2]


def test_members_on_different_features_are_refused_naming_their_shapes():
    with pytest.raises(SpatialError, match=r"same features, got a: \(4, 3\), b: \(4, 5\)"):
        segment_members({"a": np.ones((4, 3)), "b": np.ones((4, 5))})
