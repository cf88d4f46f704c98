"""The notebook client against the real platform: catalog, ranged spectra reads, parameter sets,
runs through Dagster, results, and the roles."""

from __future__ import annotations

import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser

from em2q.client import Catalog, ParameterSet
from em2q_msi.parameters import ParameterError, ProcessingParameters
from em2q_msi.preprocess import preprocess
from em2q_resources import lifecycle
from em2q_resources.auth import Forbidden, Role, TokensFile, Unauthenticated, User
from em2q_resources.metadata import DocumentNotFound, load_schema
from em2q_resources.settings import Settings
from em2q_resources.workflows import WorkflowNotPublished
from tests.em2q_assets.conftest import EXAMPLES, register_copy
from tests.fixtures.dagster import materialize_measurement

S = load_schema()
ADMIN = User("ada", Role.ADMIN)
SCIENTIST = User("sam", Role.SCIENTIST)
TECHNICIAN = User("tess", Role.TECHNICIAN)


@pytest.fixture(scope="module")
def platform(dagster_platform, tmp_path_factory):
    root = tmp_path_factory.mktemp("client")
    store = dagster_platform.store
    register_copy(store, root / "a", "Example_Continuous", "cl-cont", title="Kidney lipids")
    register_copy(
        store, root / "b", "Example_Processed", "cl-proc", title="Brain metabolites",
        settings={**_setup_settings(), "polarity": "NEGATIVE"},
    )  # fmt: skip
    store.refresh()
    return dagster_platform


def _setup_settings():
    from em2q.setup_file import read_setup
    from em2q_resources.settings import PROJECT_ROOT

    return read_setup(PROJECT_ROOT / "examples" / "setup.yaml")["settings"]


def catalog(platform, user=SCIENTIST) -> Catalog:
    return Catalog(platform.settings, user=user, store=platform.store)


def parser(stem: str) -> ImzMLParser:
    return ImzMLParser(str(EXAMPLES / f"{stem}.imzML"))


def test_search_returns_a_table_with_the_same_filters_as_the_cli(platform):
    cat = catalog(platform, TECHNICIAN)
    assert list(cat.search("kidney").index) == ["cl-cont"]
    negative = cat.search(settings__polarity="NEGATIVE")
    assert list(negative.index) == ["cl-proc"]
    assert negative.loc["cl-proc", "title"] == "Brain metabolites"
    both = cat.search(  # other tests share the platform's catalog: only ours
        where=["settings.polarity=POSITIVE,NEGATIVE"], id=["cl-cont", "cl-proc"], sort=["-title"]
    )
    assert list(both.index) == ["cl-cont", "cl-proc"]


@pytest.mark.parametrize("stem, measurement_id", [("Example_Continuous", "cl-cont"), ("Example_Processed", "cl-proc")])  # fmt: skip
def test_spectra_of_image_rows_and_columns_are_exactly_those_pixels(platform, stem, measurement_id):
    m = catalog(platform).measurement(measurement_id)
    block = m.spectra(rows=slice(0, 1), cols=(1, 3))
    reference = parser(stem)
    expected = [i for i, (x, y, _) in enumerate(reference.coordinates) if y == 1 and 2 <= x <= 3]
    assert [tuple(c[:2]) for c in block.coordinates] == [
        tuple(reference.coordinates[i][:2]) for i in expected
    ]
    for position, i in enumerate(expected):
        mz, intensity = block.spectrum(position)
        np.testing.assert_allclose(mz, reference.getspectrum(i)[0])
        np.testing.assert_allclose(intensity, reference.getspectrum(i)[1])


def test_region_mask_and_indices_select_the_same_spectra(platform):
    m = catalog(platform).measurement("cl-cont")
    x, y, _ = m.coordinates[4]
    mask = np.zeros((int(m.coordinates[:, 1].max()), int(m.coordinates[:, 0].max())), bool)
    mask[y - 1, x - 1] = True
    by_region = m.spectra(region=mask)
    by_index = m.spectra(indices=[4])
    np.testing.assert_array_equal(by_region.intensity, by_index.intensity)
    np.testing.assert_array_equal(m.spectrum(int(x), int(y))[1], by_index.intensity[0])
    with pytest.raises(KeyError, match="no spectrum at x=999"):
        m.spectrum(999, 1)


def test_mean_spectrum_of_an_unprocessed_measurement_comes_from_the_raw_data(platform):
    mz, intensity = catalog(platform).measurement("cl-cont").mean_spectrum()
    reference = parser("Example_Continuous")
    spectra = [reference.getspectrum(i)[1] for i in range(len(reference.coordinates))]
    np.testing.assert_allclose(intensity, np.mean(spectra, axis=0), rtol=1e-5)
    assert mz.shape == intensity.shape


def test_a_slice_can_be_preprocessed_with_a_saved_parameter_set(platform):
    cat = catalog(platform, SCIENTIST)
    saved = ParameterSet.save(
        "client-smooth", {"smoothing": {"window_points": 7}}, "wider window", catalog=cat
    )
    again = ParameterSet.save(
        "client-smooth", {"smoothing": {"window_points": 7}}, "same", catalog=cat
    )
    assert saved.id == again.id == "client-smooth@v1"
    assert saved.author == "sam"
    row = cat.measurement("cl-cont").spectra(rows=0)
    assert row.intensity.shape[0] == 3  # the 3×3 example's first row
    smoothed = preprocess(row, saved.params)
    # the saved set came back with its values: the same result as the values used directly
    direct = preprocess(row, ProcessingParameters.from_dict({"smoothing": {"window_points": 7}}))
    np.testing.assert_array_equal(smoothed.intensity, direct.intensity)
    assert not np.array_equal(smoothed.intensity, preprocess(row, ProcessingParameters()).intensity)
    with pytest.raises(ParameterError):
        ParameterSet.save("client-bad", {"smoothing": {"window_points": -3}}, catalog=cat)


def test_results_of_a_processed_measurement_are_read_back(platform):
    materialize_measurement(platform.settings, "cl-cont")
    m = catalog(platform, TECHNICIAN).measurement("cl-cont")
    assert m.results().qc_report()["ok"] is True  # the example passes the default QC
    assert m.tic_image().ndim == 2
    assert set(m.runs()["asset"]) >= {"raw_measurement", "qc_report"}


def test_run_launches_the_workflow_with_the_parameter_set(platform):
    cat = catalog(platform, SCIENTIST)
    chosen = ParameterSet.save("client-run", {"peak_picking": {"snr_threshold": 6}}, catalog=cat)
    launch = cat.measurement("cl-proc").run("reprocess", chosen)
    status = launch.status()
    assert status.tags["em2q/parameter_set"] == "client-run@v1"
    assert status.assets["preprocessed_chunks"]["targeted"] == 2
    assert launch.url.startswith(platform.url)
    launch.api.cancel(launch.id)  # keep the platform's run slots for the notebook test


@pytest.mark.parametrize("user", [TECHNICIAN, SCIENTIST], ids=["technician", "scientist"])
def test_only_admins_delete_and_publish(platform, user):
    cat = catalog(platform, user)
    with pytest.raises(Forbidden, match=f"{user.name} has the {user.role} role.*may not delete"):
        cat.delete("cl-proc")
    with pytest.raises(Forbidden, match="may not publish workflow; it needs the admin role"):
        cat.publish_workflow("reprocess")
    assert platform.store.exists(S.Measurement, "cl-proc")


def test_technician_may_not_save_parameter_sets_or_run_unpublished_workflows(platform):
    cat = catalog(platform, TECHNICIAN)
    with pytest.raises(Forbidden, match="may not save parameter set; it needs the scientist"):
        ParameterSet.save("client-tech", {"smoothing": {"window_points": 5}}, catalog=cat)
    assert platform.store.parameter_sets("client-tech") == []
    with pytest.raises(WorkflowNotPublished, match="not published yet"):
        cat.measurement("cl-cont").run("reprocess")
    assert not cat.workflows().loc["reprocess", "you_may_start"]


def test_admin_deletes_a_measurement_with_its_files_and_records(platform, tmp_path):
    store = platform.store
    register_copy(store, tmp_path / "c", "Example_Continuous", "cl-gone")
    materialize_measurement(platform.settings, "cl-gone")
    cat = catalog(platform, ADMIN)
    assert cat.storage.exists("results/cl-gone")
    cat.delete("cl-gone")
    assert not store.exists(S.Measurement, "cl-gone")
    assert not cat.storage.exists("results/cl-gone")
    store.refresh()
    assert store.search(S.WorkflowRun, filters={"measurement_id": "cl-gone"}).total == 0
    with pytest.raises(DocumentNotFound):
        cat.delete("cl-gone")


def test_api_token_decides_who_the_catalog_acts_as(platform, tmp_path):
    tokens = tmp_path / "tokens.yaml"
    _, token = TokensFile(tokens).add("tess", "technician")
    settings = platform.settings.with_overrides(auth_mode="token", tokens_file=tokens)
    cat = Catalog(settings, token=token, store=platform.store)
    assert cat.user == TECHNICIAN
    with pytest.raises(Unauthenticated, match="not recognised"):
        Catalog(settings, token="guess", store=platform.store)
    with pytest.raises(Unauthenticated, match="no API token"):
        Catalog(settings, store=platform.store)


def test_why_tells_the_status_the_root_error_where_it_happened_and_the_next_action(
    metadata_store, tmp_path
):
    register_copy(metadata_store, tmp_path, "Example_Continuous", "why-1")
    lifecycle.start(metadata_store, "why-1", "ingest", actor=lifecycle.Actor.STEP, run_id="r1")
    lifecycle.fail(
        metadata_store,
        "why-1",
        lifecycle.Reason(
            lifecycle.Kind.RUN_FAILED, "spectra_chunks failed: OSError: disk full",
            error_type="OSError", error_message="disk full", asset="spectra_chunks",
            partition="why-1|1", run_id="r2", run_url="http://dagster/runs/r2",
        ),
        actor=lifecycle.Actor.WATCHER,
    )  # fmt: skip
    m = Catalog(Settings(), user=TECHNICIAN, store=metadata_store).measurement("why-1")
    assert m.status == "FAILED"
    assert (m.status_reason.error_type, m.status_reason.partition) == ("OSError", "why-1|1")
    assert m.why().splitlines() == [
        "why-1: FAILED — spectra_chunks failed: OSError: disk full "
        "(in spectra_chunks, partition why-1|1, run r2)",
        "run: http://dagster/runs/r2",
        "next: retry once the cause is gone: `em2q run why-1 --workflow standard` "
        "(or Retry on its page)",
    ]
