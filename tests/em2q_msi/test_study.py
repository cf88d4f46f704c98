"""Study comparison against ground truth: planted features, planted changes, planted scaling,
and brute-force reference implementations of the clustering, alignment and FDR steps."""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from em2q_msi import study
from em2q_msi.parameters import ParameterError, StudyParameters
from em2q_msi.synthetic import SyntheticStudy, synthetic_study

STANDARD_MZ = 556.2771  # leucine enkephalin, a common internal standard / lock mass


def _nearest_within(axis: np.ndarray, mz: np.ndarray, ppm: float) -> np.ndarray:
    """Index of the closest ``axis`` value within ``ppm`` of each ``mz``, −1 if none (a loop)."""
    out = np.full(mz.size, -1)
    for i, m in enumerate(mz):
        if axis.size:
            j = int(np.argmin(np.abs(axis - m)))
            if abs(axis[j] - m) <= axis[j] * ppm * 1e-6:
                out[i] = j
    return out


@functools.lru_cache(maxsize=8)
def _synthetic(seed: int, standard: bool = False, **kwargs) -> SyntheticStudy:
    """Synthetic studies shared by the tests (made once per module run)."""
    return synthetic_study(
        seed=seed, internal_standard_mz=STANDARD_MZ if standard else None, **kwargs
    )


_PREPARED: dict = {}


def _prepared(data: SyntheticStudy, params: StudyParameters):
    """A synthetic study's pixel peaks and reference (computed once per study and settings)."""
    key = (id(data), params)
    if key in _PREPARED:
        return _PREPARED[key][1:]
    peaks = [data.measurement(i) for i in range(len(data))]
    own = [
        study.measurement_peaks(
            p.mz, p.intensity, p.offsets, params.tolerance_ppm, params.min_pixel_frequency
        )
        for p in peaks
    ]
    reference = study.reference_peaks(
        [m.mz for m in own], params.tolerance_ppm, params.min_frequency
    )
    _PREPARED[key] = (data, peaks, reference)
    return peaks, reference


def _run(data: SyntheticStudy, params: StudyParameters):
    """The whole core on a synthetic study: reference, aligned means, comparison."""
    peaks, reference = _prepared(data, replace(params, normalisation="none", reference_mz=None))
    means = np.array(
        [
            study.measurement_means(
                study.align_to_reference(
                    p.mz, p.intensity, p.offsets, reference.mz, params.tolerance_ppm
                ),
                study.normalisation_factors(p.mz, p.intensity, p.offsets, params),
            ).mean
            for p in peaks
        ]
    )
    comparison = study.compare_groups(means, data.truth.groups, reference.mz, params)
    return reference, means, comparison


# -- reference -------------------------------------------------------------------------------


def test_reference_recovers_every_planted_feature_within_3_ppm_and_nothing_else():
    data = _synthetic(0)
    params = StudyParameters()
    reference, _, _ = _run(data, params)
    match = _nearest_within(reference.mz, data.truth.feature_mz, 3.0)
    assert np.all(match >= 0)
    assert np.unique(match).size == data.truth.feature_mz.size  # one feature per planted one
    assert reference.n_features == data.truth.feature_mz.size  # noise peaks made none
    assert np.all(reference.frequency == 1.0)


def _brute_force_reference(peak_mz: list[np.ndarray], tolerance_ppm: float, min_frequency: float):
    """Connected components of the graph linking any two peaks within ``tolerance_ppm`` of the
    lower one, by union-find over all pairs; then frequency and m/z by plain loops."""
    points = [(float(m), k) for k, arr in enumerate(peak_mz) for m in arr]
    parent = list(range(len(points)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (a, _) in enumerate(points):
        for j, (b, _) in enumerate(points):
            if i < j and abs(a - b) <= min(a, b) * tolerance_ppm * 1e-6:
                parent[find(i)] = find(j)
    clusters: dict[int, list[tuple[float, int]]] = {}
    for i, point in enumerate(points):
        clusters.setdefault(find(i), []).append(point)
    out = []
    for members in clusters.values():
        by_measurement: dict[int, list[float]] = {}
        for m, k in members:
            by_measurement.setdefault(k, []).append(m)
        frequency = len(by_measurement) / len(peak_mz)
        if frequency >= min_frequency:
            mz = sum(sum(v) / len(v) for v in by_measurement.values()) / len(by_measurement)
            out.append((mz, len(by_measurement)))
    return sorted(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_clustering_equals_a_brute_force_single_linkage(seed):
    rng = np.random.default_rng(seed)
    centres = np.sort(rng.uniform(100, 1000, 40))
    centres[5] = centres[4] * (1 + 12e-6)  # two features that chain at 10 ppm with jitter
    centres[9] = centres[8] * (1 + 30e-6)  # two that do not
    peak_mz = []
    for _ in range(7):
        present = rng.random(centres.size) < 0.7
        jitter = rng.normal(0, 4, centres.size) * 1e-6
        extra = rng.uniform(100, 1000, 5)  # peaks of one measurement only
        peak_mz.append(rng.permutation(np.concatenate([(centres * (1 + jitter))[present], extra])))
    for tolerance, min_frequency in [(10.0, 0.0), (10.0, 0.5), (3.0, 0.3)]:
        ref = study.reference_peaks(peak_mz, tolerance, min_frequency)
        expected = _brute_force_reference(peak_mz, tolerance, min_frequency)
        assert ref.n_measurements.tolist() == [n for _, n in expected]
        np.testing.assert_allclose(ref.mz, [m for m, _ in expected], rtol=1e-12)


def test_reference_change_flags_a_feature_that_moved_beyond_the_drift_tolerance():
    old = study.reference_peaks([np.array([200.0, 400.0, 600.0])] * 3, 10.0, 0.5)
    moved = study.reference_peaks([np.array([200.0, 400.0 * (1 + 5e-6), 600.0])] * 3, 10.0, 0.5)
    change = study.reference_change(old, moved, drift_tolerance_ppm=2.0)
    assert change.moved.tolist() == [1]
    assert change.stale
    np.testing.assert_allclose(change.moved_ppm, [0.0, 5.0, 0.0], atol=1e-6)


def test_reference_change_flags_an_added_feature_and_maps_a_removed_one_to_minus_one():
    old = study.reference_peaks([np.array([200.0, 400.0])] * 2, 10.0, 0.5)
    new = study.reference_peaks([np.array([200.0, 300.0])] * 2, 10.0, 0.5)
    change = study.reference_change(old, new)
    assert change.old_to_new.tolist() == [0, -1]
    assert change.added.tolist() == [1]
    assert change.removed.tolist() == [1]
    assert change.stale


def test_adding_a_replicate_leaves_the_reference_within_the_drift_tolerance():
    data = synthetic_study(n_replicates=4, seed=3)
    params = StudyParameters()
    own = []
    for i in range(len(data)):
        p = data.measurement(i)
        own.append(study.measurement_peaks(p.mz, p.intensity, p.offsets).mz)
    before = study.reference_peaks(own[:-1], params.tolerance_ppm, params.min_frequency)
    after = study.reference_peaks(own, params.tolerance_ppm, params.min_frequency)
    change = study.reference_change(before, after, params.drift_tolerance_ppm)
    assert not change.stale
    assert np.all(change.old_to_new >= 0)


# -- alignment -------------------------------------------------------------------------------


def _csr(pixels: list[tuple[np.ndarray, np.ndarray]]):
    mz = np.concatenate([m for m, _ in pixels])
    intensity = np.concatenate([v for _, v in pixels]).astype(np.float32)
    offsets = np.concatenate(([0], np.cumsum([m.size for m, _ in pixels])))
    return mz, intensity, offsets


def test_alignment_equals_a_per_peak_loop_summing_peaks_of_one_pixel_in_one_feature():
    rng = np.random.default_rng(4)
    reference = np.sort(rng.uniform(100, 1000, 50))
    pixels = []
    for _ in range(30):
        on = reference[rng.random(reference.size) < 0.5]
        near = on * (1 + rng.normal(0, 5, on.size) * 1e-6)
        twin = on[:3] * (1 + 2e-6)  # a second peak of the pixel in the same feature
        far = rng.uniform(100, 1000, 10)
        mz = np.sort(np.concatenate([near, twin, far]))
        pixels.append((mz, rng.exponential(100.0, mz.size)))
    pixels.append((np.zeros(0), np.zeros(0)))  # an empty pixel keeps its row
    mz, intensity, offsets = _csr(pixels)
    aligned = study.align_to_reference(mz, intensity, offsets, reference, tolerance_ppm=10.0)
    expected = np.zeros((len(pixels), reference.size))
    for row, (pixel_mz, pixel_intensity) in enumerate(pixels):
        match = _nearest_within(reference, pixel_mz, 10.0)
        for j, value in zip(match, pixel_intensity.astype(np.float32), strict=True):
            if j >= 0:
                expected[row, j] += value
    assert aligned.shape == expected.shape
    np.testing.assert_allclose(aligned.toarray(), expected, rtol=1e-6)


def test_alignment_accepts_pixels_whose_peaks_are_not_sorted():
    reference = np.array([200.0, 300.0])
    mz, intensity, offsets = _csr([(np.array([300.0, 200.0, 300.0]), np.array([1.0, 2.0, 4.0]))])
    aligned = study.align_to_reference(mz, intensity, offsets, reference)
    np.testing.assert_allclose(aligned.toarray(), [[2.0, 5.0]])


# -- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        StudyParameters(normalisation="tic"),
        StudyParameters(normalisation="rms"),
        StudyParameters(normalisation="median"),
        StudyParameters(normalisation="reference_peak", reference_mz=STANDARD_MZ),
    ],
    ids=lambda p: p.normalisation,
)
def test_normalisation_removes_the_planted_per_measurement_scaling(params):
    # The same study generated without the scaling (identical random draws otherwise).
    scaled = _synthetic(5, standard=True, scaling_range=(0.25, 4.0))
    unscaled = _synthetic(5, standard=True, scaling_range=(1.0, 1.0))
    assert np.ptp(np.log2(scaled.truth.scaling)) > 1.0  # the scaling is there to remove
    _, with_scaling, _ = _run(scaled, params)
    _, without_scaling, _ = _run(unscaled, params)
    np.testing.assert_allclose(with_scaling, without_scaling, rtol=1e-4)


def test_without_normalisation_the_planted_scaling_stays():
    params = StudyParameters(normalisation="none")
    scaled = _synthetic(5, scaling_range=(0.25, 4.0))
    unscaled = _synthetic(5, scaling_range=(1.0, 1.0))
    _, with_scaling, _ = _run(scaled, params)
    _, without_scaling, _ = _run(unscaled, params)
    np.testing.assert_allclose(
        with_scaling, without_scaling * scaled.truth.scaling[:, None], rtol=1e-4
    )


def test_median_and_rms_factors_equal_per_pixel_numpy():
    rng = np.random.default_rng(6)
    pixels = [(np.sort(rng.uniform(100, 900, n)), rng.exponential(5.0, n)) for n in (1, 2, 7, 0, 8)]
    mz, intensity, offsets = _csr(pixels)
    median = study.normalisation_factors(
        mz, intensity, offsets, StudyParameters(normalisation="median")
    )
    rms = study.normalisation_factors(mz, intensity, offsets, StudyParameters(normalisation="rms"))
    for row, (_, values) in enumerate(pixels):
        values = values.astype(np.float32).astype(np.float64)
        assert median[row] == pytest.approx(np.median(values) if values.size else 0.0)
        assert rms[row] == pytest.approx(np.sqrt(np.mean(values**2)) if values.size else 0.0)


def test_pixels_without_the_internal_standard_are_left_out_of_the_means():
    reference = np.array([300.0])
    pixels = [
        (np.array([300.0, 500.0]), np.array([6.0, 2.0])),  # 300 / standard = 3
        (np.array([300.0]), np.array([9.0])),  # no standard: left out
        (np.array([300.0, 500.0]), np.array([1.0, 1.0])),  # 1
    ]
    mz, intensity, offsets = _csr(pixels)
    params = StudyParameters(normalisation="reference_peak", reference_mz=500.0)
    factors = study.normalisation_factors(mz, intensity, offsets, params)
    means = study.measurement_means(
        study.align_to_reference(mz, intensity, offsets, reference), factors
    )
    assert means.pixels_used == 2
    np.testing.assert_allclose(means.mean, [2.0])


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"normalisation": "total"}, "study.normalisation"),
        ({"normalisation": "reference_peak"}, "study.reference_mz"),
        ({"normalisation": "reference_peak", "reference_mz": -1.0}, "study.reference_mz"),
        ({"normalisation": "tic", "reference_mz": 500.0}, "study.reference_mz"),
        (
            {
                "normalisation": "reference_peak",
                "reference_mz": 500.0,
                "reference_tolerance_ppm": 0,
            },
            "study.reference_tolerance_ppm",
        ),
    ],
)
def test_a_bad_normalisation_parameter_is_refused_naming_it(values, named):
    with pytest.raises(ParameterError, match=rf"^{named}: "):
        StudyParameters.from_dict(values)


def test_study_parameters_round_trip_and_refuse_a_malformed_contrast():
    params = StudyParameters.from_dict(
        {"contrasts": ["treated vs control"], "test": "mann_whitney"}
    )
    assert StudyParameters.from_dict(params.to_dict()) == params
    assert params.contrast_pairs() == (("treated", "control"),)
    assert params.digest() != StudyParameters().digest()
    with pytest.raises(ParameterError, match=r"^study\.contrasts\[0\]: "):
        StudyParameters.from_dict({"contrasts": ["treated/control"]})


# -- comparison ------------------------------------------------------------------------------


def test_comparison_finds_the_planted_changes_with_recall_and_fdr_on_target():
    data = _synthetic(0, standard=True)
    params = StudyParameters(normalisation="reference_peak", reference_mz=STANDARD_MZ)
    reference, _, comparison = _run(data, params)
    (contrast,) = comparison.contrasts
    assert (contrast.numerator, contrast.denominator) == ("group2", "group1")
    planted = _nearest_within(reference.mz, data.truth.feature_mz, 3.0)
    changed = np.zeros(reference.n_features, bool)
    changed[planted[data.truth.changed]] = True
    found = contrast.q_value <= 0.05
    recall = (found & changed).sum() / changed.sum()
    false_discovery = (found & ~changed).sum() / max(found.sum(), 1)
    assert recall >= 0.9
    assert false_discovery <= 0.10
    # the fold changes found are the planted ones (up to replicate noise)
    truth_fold = data.truth.fold[data.truth.changed]
    observed = contrast.log2_fold_change[planted[data.truth.changed]]
    np.testing.assert_allclose(observed, np.log2(truth_fold), atol=0.5)


def test_mann_whitney_cannot_reach_significance_with_three_replicates_per_group():
    # The smallest two-sided exact p-value of 3 vs 3 is 2 / C(6, 3) = 0.1: a property of the
    # design that the comparison reports as it is, rather than treating pixels as replicates.
    data = _synthetic(0, standard=True)
    params = StudyParameters(
        normalisation="reference_peak", reference_mz=STANDARD_MZ, test="mann_whitney"
    )
    _, _, comparison = _run(data, params)
    assert np.nanmin(comparison.contrasts[0].p_value) == pytest.approx(0.1)
    assert not comparison.contrasts[0].significant.any()


def test_benjamini_hochberg_equals_the_step_up_formula():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5, np.nan, 0.2])
    finite = p[np.isfinite(p)]
    n = finite.size
    order = np.argsort(finite)
    expected = np.empty(n)
    for rank, i in enumerate(order, start=1):
        expected[i] = min(min(finite[order[k - 1]] * n / k, 1.0) for k in range(rank, n + 1))
    q = study.benjamini_hochberg(p)
    assert np.isnan(q[5])
    np.testing.assert_allclose(q[np.isfinite(p)], expected)


def test_fold_change_and_cohens_d_follow_their_definitions():
    values = np.array([[4.0, 1.0], [6.0, 1.0], [1.0, 1.0], [3.0, 1.0]])
    params = StudyParameters(transform="none", contrasts=("b vs a",))
    comparison = study.compare_groups(
        values, ["b", "b", "a", "a"], np.array([100.0, 200.0]), params
    )
    (c,) = comparison.contrasts
    np.testing.assert_allclose(c.fold_change[0], 5.0 / 2.0)
    np.testing.assert_allclose(c.log2_fold_change[0], np.log2(2.5))
    np.testing.assert_allclose(c.cohens_d[0], (5.0 - 2.0) / np.sqrt(2.0))
    assert np.isnan(c.p_value[1])  # the same in every measurement: no test
    table = comparison.table()
    assert list(table["contrast"].unique()) == ["b vs a"]
    assert table.shape[0] == 2


def test_a_group_with_one_measurement_is_refused_naming_it():
    values = np.ones((3, 2))
    with pytest.raises(study.StudyError, match="group 'lonely' has 1 measurement"):
        study.compare_groups(values, ["a", "a", "lonely"], np.array([100.0, 200.0]))


def test_a_contrast_naming_an_unknown_group_is_refused_naming_it():
    params = StudyParameters(contrasts=("treated vs control",))
    with pytest.raises(study.StudyError, match=r"study\.contrasts\[0\].*'treated'"):
        study.compare_groups(np.ones((4, 1)), ["a", "a", "control", "control"], [100.0], params)


def test_pca_separates_the_groups_and_its_variances_are_the_covariance_eigenvalues():
    data = _synthetic(0, standard=True)
    params = StudyParameters(normalisation="reference_peak", reference_mz=STANDARD_MZ)
    _, means, _ = _run(data, params)
    result = study.pca(means, n_components=2)
    first = result.scores[:, 0]
    groups = data.truth.groups
    assert np.all(np.sign(first[groups == "group1"]) == -np.sign(first[groups == "group2"][0]))
    x = np.log2(1 + means / np.median(means[means > 0]))
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    np.testing.assert_allclose(
        result.explained_variance_ratio, eigenvalues[:2] / eigenvalues.sum(), rtol=1e-8
    )


def test_measurement_peaks_keep_features_frequent_enough_at_their_mean_mz():
    rng = np.random.default_rng(7)
    common, rare = 400.0, 700.0
    pixels = []
    for i in range(200):
        mz = [rng.uniform(100, 1000, 30)]  # noise: ~6,000 peaks, never 10 within 5 ppm
        if i % 2 == 0:  # in 50 % of the pixels, ± 2 ppm
            mz.append([common * (1 + rng.uniform(-2, 2) * 1e-6)])
        if i % 25 == 0:  # in 4 %
            mz.append([rare])
        mz = np.sort(np.concatenate(mz))
        pixels.append((mz, np.ones(mz.size)))
    mz, intensity, offsets = _csr(pixels)
    peaks = study.measurement_peaks(mz, intensity, offsets, 10.0, min_pixel_frequency=0.05)
    assert peaks.mz.size == 1
    near = np.abs(mz - common) <= common * 5e-6
    np.testing.assert_allclose(peaks.mz, [mz[near].mean()], rtol=1e-12)
    np.testing.assert_allclose(peaks.frequency, [0.5])
    rarer = study.measurement_peaks(mz, intensity, offsets, 10.0, min_pixel_frequency=0.03)
    assert _nearest_within(rarer.mz, np.array([common, rare]), 3.0).tolist() == [0, 1]


# -- ROI-level comparison ------------------------------------------------------------------


def _sections_with_rois(fold: float, seed: int = 5):
    """4 sections of 8 × 6 pixels, 30 features: a "tumour" ROI (left half) and a "healthy"
    ROI (right half) each; feature 3 is ``fold`` × higher in the tumour pixels."""
    rng = np.random.default_rng(seed)
    nx, ny, n_features = 8, 6, 30
    x = np.tile(np.arange(nx), ny)
    tumour, healthy = np.flatnonzero(x < nx // 2), np.flatnonzero(x >= nx // 2)
    sections = []
    for _ in range(4):
        base = rng.uniform(50, 150, n_features) * rng.uniform(0.8, 1.25)  # per-section level
        pixels = base * rng.lognormal(0.0, 0.2, (nx * ny, n_features))
        pixels[tumour, 3] *= fold
        sections.append((sp.csr_array(pixels), np.ones(nx * ny), tumour, healthy))
    return sections, np.linspace(100.0, 900.0, n_features)


def _roi_comparison(fold: float):
    sections, mz = _sections_with_rois(fold)
    values, labels = [], []
    for aligned, factors, tumour, healthy in sections:
        values.append(study.roi_means(aligned, factors, [tumour, healthy], ["tumour", "healthy"]))
        labels += ["tumour", "healthy"]
    params = StudyParameters(contrasts=("tumour vs healthy",))
    return study.compare_groups(np.vstack(values), labels, mz, params).contrasts[0]


def test_a_planted_difference_between_roi_groups_is_significant_and_only_it():
    contrast = _roi_comparison(fold=3.0)
    assert np.flatnonzero(contrast.significant).tolist() == [3]
    assert contrast.fold_change[3] == pytest.approx(3.0, rel=0.15)


def test_roi_groups_without_a_difference_show_nothing_significant():
    contrast = _roi_comparison(fold=1.0)
    assert not contrast.significant.any()


def test_each_roi_mean_is_the_normalised_mean_of_its_own_pixels():
    aligned = sp.csr_array(np.array([[2.0, 0.0], [4.0, 6.0], [8.0, 2.0]]))
    factors = np.array([1.0, 2.0, 0.0])  # the third pixel has no signal to normalise by
    means = study.roi_means(aligned, factors, [np.array([0, 1]), np.array([1, 2])])
    np.testing.assert_allclose(means, [[2.0, 1.5], [2.0, 3.0]])


def test_a_roi_without_a_usable_pixel_is_refused_naming_it():
    aligned = sp.csr_array(np.ones((3, 2)))
    with pytest.raises(study.StudyError, match="tumour holds no pixel with signal"):
        study.roi_means(aligned, np.array([1.0, 0.0, 0.0]), [np.array([1, 2])], ["tumour"])
