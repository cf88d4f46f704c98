"""The real-world imzML corpus through the real platform, as a lab would send it.

Every file of ``tests.corpus`` is uploaded with the platform's own upload function into the
session's ``dagster dev`` (webserver, daemon, sensors, code server; the session Elasticsearch;
local storage) with its sensors on, exactly as ``em2q upload`` does. Then:

* invalid files are refused at upload with their named problem, and nothing is registered;
* every valid file ends ``READY`` (the sensors ingest it, run its chunks and the automation
  materializes the measurement-level assets), never ``FAILED`` and never stuck;
* its TIC image and ion images equal pyimzML's reading of the same file (float64 sums,
  relative error <= 1e-9) on the bounding box of its coordinates, with not-acquired pixels NaN.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from em2q.results import MeasurementResults
from em2q.setup_file import read_setup
from em2q.upload import InvalidUpload, upload_measurement
from em2q_resources import lifecycle
from em2q_resources.metadata import load_schema
from em2q_resources.settings import PROJECT_ROOT
from em2q_resources.storage import StorageResource
from tests.corpus import build_corpus
from tests.corpus.reference import reference_spectra

S = load_schema()
WAIT_S = 600.0
#: one valid file of each kind goes through the daemon-driven platform (each costs four runs,
#: seconds of code-location start-up apiece on two cores); every valid file is read against
#: pyimzML in tests/em2q_msi/test_corpus_reading.py and the size extremes run through every
#: asset in process in test_corpus_assets.py
THROUGH_THE_PLATFORM = {
    "stage-offset-ellipse",
    "three-d",
    "six-spectra",
    "processed-zlib",
    "continuous-mzf64-intf16",
    "processed-mzf32-inti32",
    "zero-length-spectra",
    "one-mz-value-continuous",
    "random-centroids-f32",
}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(WAIT_S + 300)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    """Every invalid file, and one valid file of each kind."""
    every = build_corpus(tmp_path_factory.mktemp("corpus"))
    chosen = [c for c in every if not c.expect_valid or c.name in THROUGH_THE_PLATFORM]
    assert {c.name for c in chosen if c.expect_valid} == THROUGH_THE_PLATFORM
    return chosen


@pytest.fixture(scope="module")
def uploaded(dagster_platform, corpus, tmp_path_factory):
    """Upload the whole corpus with the sensors on; wait until every upload is final."""
    settings, store = dagster_platform.settings, dagster_platform.store
    storage = StorageResource(root=settings.storage)
    setup = read_setup(PROJECT_ROOT / "examples" / "setup.yaml")
    for declared_by_the_file in ("pixel_size_x_um", "pixel_size_y_um"):
        setup["settings"].pop(declared_by_the_file, None)
    cache = tmp_path_factory.mktemp("corpus-index")
    outcomes: dict[str, object] = {}
    dagster_platform.set_sensors(True)
    try:
        for item in corpus:
            try:
                doc = upload_measurement(
                    item.imzml, ibd_path=item.ibd, setup={**setup, "title": f"corpus {item.name}"},
                    store=store, storage=storage, progress=False, cache_dir=cache,
                )  # fmt: skip
                outcomes[item.name] = doc.id
            except InvalidUpload as refused:
                outcomes[item.name] = refused
        ids = [v for v in outcomes.values() if isinstance(v, str)]
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            store.refresh(S.Measurement)
            pending = [
                i
                for i in ids
                if lifecycle.status_of(store.get(S.Measurement, i).doc) not in lifecycle.FINAL
            ]
            if not pending:
                break
            time.sleep(3)
    finally:
        dagster_platform.set_sensors(False)
    return outcomes


def _valid(corpus):
    return [c for c in corpus if c.expect_valid]


def test_invalid_files_are_refused_at_upload_with_their_named_problem(corpus, uploaded):
    for item in corpus:
        if item.expect_valid:
            continue
        outcome = uploaded[item.name]
        assert isinstance(outcome, InvalidUpload), f"{item.name} was accepted as {outcome}"
        codes = {p.code for p in outcome.problems}
        assert item.problem_code in codes, f"{item.name}: {outcome}"


def test_every_valid_file_ends_ready_or_with_a_qc_verdict_never_a_crash(
    dagster_platform, corpus, uploaded
):
    """READY, or FAILED by the QC verdict on its numbers (the default thresholds judge the
    synthetic spectra too); never a failed run, a crash or a stall."""
    store = dagster_platform.store
    outcomes = {}
    for item in _valid(corpus):
        outcome = uploaded[item.name]
        assert isinstance(outcome, str), f"{item.name} was refused: {outcome}"
        doc = store.get(S.Measurement, outcome).doc
        reason = lifecycle.reason_of(doc)
        outcomes[item.name] = (lifecycle.status_of(doc), reason.kind if reason else None)
    print("\n".join(f"{name}: {status} {kind}" for name, (status, kind) in outcomes.items()))
    judged = {
        (lifecycle.Status.READY, lifecycle.Kind.QC_PASSED),
        (lifecycle.Status.FAILED, lifecycle.Kind.QC),
    }
    assert all(outcome in judged for outcome in outcomes.values()), outcomes
    assert sum(s == lifecycle.Status.READY for s, _ in outcomes.values()) >= len(outcomes) // 2


def _reference_images(imzml: Path, grid, mz_values, tolerance_ppm):
    """pyimzML's spectra summed per pixel on the platform's grid: TIC and m/z windows."""
    coordinates, spectra = reference_spectra(imzml)
    tic = np.full(grid.image_shape, np.nan)
    ions = np.full((len(mz_values), *grid.image_shape), np.nan)
    lower = np.asarray(mz_values) * (1 - tolerance_ppm * 1e-6)
    upper = np.asarray(mz_values) * (1 + tolerance_ppm * 1e-6)
    for (x, y, *z), (mz, intensity) in zip(coordinates, spectra, strict=True):
        z = z[0] if z else 1
        at = grid.indices(np.array([[x, y, z]]))
        at = tuple(int(a[0]) for a in at)
        values = np.asarray(intensity, dtype=np.float64)
        mz = np.asarray(mz, dtype=np.float64)
        tic[at] = math.fsum(values)
        for k in range(len(mz_values)):
            inside = (mz >= lower[k]) & (mz <= upper[k])
            ions[(k, *at)] = math.fsum(values[inside])
    return tic, ions


def test_tic_and_ion_images_equal_pyimzml_on_the_bounding_box(dagster_platform, corpus, uploaded):
    settings, store = dagster_platform.settings, dagster_platform.store
    storage = StorageResource(root=settings.storage)
    for item in _valid(corpus):
        results = MeasurementResults(uploaded[item.name], store=store, storage=storage)
        grid = results.grid()
        coords = reference_spectra(item.imzml)[0]
        low = coords.min(axis=0)
        assert tuple(grid.origin[: len(low)]) == tuple(int(v) for v in low), item.name
        ready = lifecycle.status_of(results.measurement) == lifecycle.Status.READY
        # ion images follow the QC verdict (blocking checks): only READY measurements have them
        mz_values, images = results.ion_images() if ready else ([], None)
        tolerance_ppm = results.parameters.params.ion_images.tolerance_ppm
        tic_ref, ions_ref = _reference_images(item.imzml, grid, mz_values, tolerance_ppm)
        tic = results.tic_image()
        assert tic.shape == tic_ref.shape, item.name
        assert np.array_equal(np.isnan(tic), np.isnan(tic_ref)), f"{item.name}: acquired pixels"
        np.testing.assert_allclose(tic, tic_ref, rtol=1e-9, atol=0, err_msg=item.name)
        if ready:
            assert images.shape == ions_ref.shape, item.name
            np.testing.assert_allclose(images, ions_ref, rtol=1e-9, atol=1e-300, err_msg=item.name)
