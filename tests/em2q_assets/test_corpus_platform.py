"""The real-world imzML corpus through the real platform, as a lab would send it.

Every invalid file of ``tests.corpus`` and one valid file of each kind are uploaded with the
platform's own upload function (what ``em2q upload`` and the web form call) into a
``dagster dev`` of this module's own (webserver, daemon, sensors, code server; the session
Elasticsearch; local storage), its sensors on from the start. Then:

* invalid files are refused at upload with their named problem, and nothing is registered;
* every valid file ends ``READY`` (the sensors ingest it, run its chunks and the automation
  materializes the measurement-level assets), never ``FAILED`` and never stuck;
* its TIC image and ion images equal pyimzML's reading of the same file (float64 sums,
  relative error <= 1e-9) on the bounding box of its coordinates, with not-acquired pixels NaN.
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from em2q.platform import dagster_dev
from em2q.results import MeasurementResults, ResultNotReady
from em2q.setup_file import read_setup
from em2q.upload import InvalidUpload, upload_measurement
from em2q_msi.ion_images import mz_windows
from em2q_msi.parameters import ProcessingParameters
from em2q_resources import lifecycle
from em2q_resources.metadata import MetadataStore, load_schema
from em2q_resources.settings import PROJECT_ROOT, Settings
from em2q_resources.storage import StorageResource
from tests.corpus import build_corpus
from tests.corpus.reference import reference_spectra
from tests.em2q_assets.conftest import remember_storage
from tests.fixtures.dagster import DagsterPlatform, free_port

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


#: QC thresholds every synthetic file passes, so every asset after the blocking checks runs
#: too; with the shipped defaults 8 of these 9 files are judged FAILED on median SNR (9.65,
#: and 0 for one-point or equal centroids) — a verdict on the data, not a crash
CORPUS_QC = {
    "qc": {"min_median_snr": 0.0, "min_tic_coverage": 0.5, "max_empty_pixel_fraction": 0.5}
}


@pytest.fixture(scope="module")
def corpus_platform(elasticsearch_url, tmp_path_factory):
    """A ``dagster dev`` of its own (sensors on from the start), its default parameter set
    holding the lab's QC thresholds."""
    root = tmp_path_factory.mktemp("corpus-platform")
    port = free_port()
    settings = remember_storage(
        Settings(
            elasticsearch_url=elasticsearch_url,
            index_prefix=f"test-corpus-{uuid.uuid4().hex[:8]}",
            storage=str(root / "storage"),
            cache_dir=root / "cache",
            spectra_chunks=2,
            dagster_url=f"http://127.0.0.1:{port}",
        )
    )
    store = MetadataStore.connect(elasticsearch_url, index_prefix=settings.index_prefix)
    store.ensure_indices()
    values = {**ProcessingParameters.defaults().to_dict(), **CORPUS_QC}
    store.save_parameter_set("default", values, author="corpus", comment="lab QC thresholds")
    try:
        with dagster_dev(settings, elasticsearch_url, port=port, max_concurrent_runs=4) as url:
            yield DagsterPlatform(url, settings, store)
    finally:
        store.drop_all()


def _finished(store, storage, measurement_id: str) -> bool:
    """Final, and when READY also its ion images made (automation runs them after QC)."""
    doc = store.get(S.Measurement, measurement_id).doc
    status = lifecycle.status_of(doc)
    if status == lifecycle.Status.FAILED:
        return True
    if status != lifecycle.Status.READY:
        return False
    try:
        MeasurementResults(measurement_id, store=store, storage=storage).manifest("ion_images")
    except ResultNotReady:
        return False
    return True


@pytest.fixture(scope="module")
def uploaded(corpus_platform, corpus, tmp_path_factory):
    """Upload the corpus as a technician does; wait until every upload is finished."""
    settings, store = corpus_platform.settings, corpus_platform.store
    storage = StorageResource(root=settings.storage)
    setup = read_setup(PROJECT_ROOT / "examples" / "setup.yaml")
    for declared_by_the_file in ("pixel_size_x_um", "pixel_size_y_um"):
        setup["settings"].pop(declared_by_the_file, None)
    cache = tmp_path_factory.mktemp("corpus-index")
    outcomes: dict[str, object] = {}
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
        if all(_finished(store, storage, i) for i in ids):
            break
        time.sleep(3)
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


def test_every_valid_file_ends_ready(corpus_platform, corpus, uploaded):
    store = corpus_platform.store
    not_ready = {}
    for item in _valid(corpus):
        outcome = uploaded[item.name]
        assert isinstance(outcome, str), f"{item.name} was refused: {outcome}"
        doc = store.get(S.Measurement, outcome).doc
        if lifecycle.status_of(doc) != lifecycle.Status.READY:
            not_ready[item.name] = doc.status_reason
    assert not not_ready, not_ready


def _reference_images(imzml: Path, grid, mz_values, tolerance_ppm):
    """pyimzML's spectra summed per pixel on the platform's grid: TIC and m/z windows."""
    coordinates, spectra = reference_spectra(imzml)
    tic = np.full(grid.image_shape, np.nan)
    ions = np.full((len(mz_values), *grid.image_shape), np.nan)
    lower, upper = mz_windows(mz_values, tolerance_ppm)  # the same window bounds, to the bit
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


def test_tic_and_ion_images_equal_pyimzml_on_the_bounding_box(corpus_platform, corpus, uploaded):
    settings, store = corpus_platform.settings, corpus_platform.store
    storage = StorageResource(root=settings.storage)
    for item in _valid(corpus):
        results = MeasurementResults(uploaded[item.name], store=store, storage=storage)
        grid = results.grid()
        coords = reference_spectra(item.imzml)[0]
        low = coords.min(axis=0)
        assert tuple(grid.origin[: len(low)]) == tuple(int(v) for v in low), item.name
        mz_values, images = results.ion_images()
        tolerance_ppm = results.parameters.params.ion_images.tolerance_ppm
        tic_ref, ions_ref = _reference_images(item.imzml, grid, mz_values, tolerance_ppm)
        tic = results.tic_image()
        assert tic.shape == tic_ref.shape, item.name
        assert np.array_equal(np.isnan(tic), np.isnan(tic_ref)), f"{item.name}: acquired pixels"
        np.testing.assert_allclose(tic, tic_ref, rtol=1e-9, atol=0, err_msg=item.name)
        assert images.shape == ions_ref.shape, item.name
        np.testing.assert_allclose(images, ions_ref, rtol=1e-9, atol=1e-300, err_msg=item.name)
