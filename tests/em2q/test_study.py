"""Studies from the notebook client and the CLI, and their exports (AnnData .h5ad, CSV): one
small synthetic study materialized once with Dagster for the module."""

from __future__ import annotations

import json
import re
import uuid

import anndata
import dagster as dg
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from em2q.cli import main
from em2q.client import Catalog, Study
from em2q.study_results import StaleStudyResult, StudyNotComputed
from em2q_assets.definitions import build_definitions
from em2q_resources import studies
from em2q_resources.auth import Role, User
from em2q_resources.connections import set_up_metadata_store
from em2q_resources.metadata.store import MetadataStore
from em2q_resources.results_layout import read_csr_zarr, read_json, read_npy, study_manifest_key
from em2q_resources.settings import Settings
from tests.em2q_assets.conftest import CHUNKS, register_copy, remember_storage
from tests.em2q_assets.study_data import feed_member, small_study
from tests.em2q_assets.test_assets import materialize_measurement

SCIENTIST = User("sam", Role.SCIENTIST)
ADMIN = User("ada", Role.ADMIN)
STUDY_ASSETS = ["study_reference_peaks", "aligned_features", "study_comparison"]


class StudyPlatform:
    def __init__(self, settings, store, defs, instance, members, synthetic):
        self.settings, self.store, self.defs, self.instance = settings, store, defs, instance
        self.members, self.synthetic = members, synthetic
        self.storage = defs.resources["storage"]

    def materialize(self, study_id: str) -> None:
        self.instance.add_dynamic_partitions("study", [study_id])
        dg.materialize(
            list(self.defs.assets), selection=STUDY_ASSETS, partition_key=study_id,
            instance=self.instance, resources=self.defs.resources,
        )  # fmt: skip

    def env(self) -> dict[str, str]:
        return {
            "EM2Q_ELASTICSEARCH_URL": self.settings.elasticsearch_url,
            "EM2Q_INDEX_PREFIX": self.settings.index_prefix,
            "EM2Q_STORAGE": str(self.settings.storage),
            "EM2Q_CACHE_DIR": str(self.settings.cache_dir),
        }


@pytest.fixture(scope="module")
def platform(elasticsearch_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    prefix = f"study-{uuid.uuid4().hex[:8]}"
    store = MetadataStore.connect(elasticsearch_url, index_prefix=prefix)
    set_up_metadata_store(store)
    settings = remember_storage(
        Settings(
            elasticsearch_url=elasticsearch_url, index_prefix=prefix,
            storage=str(root / "storage"), cache_dir=root / "cache", spectra_chunks=CHUNKS,
        )
    )  # fmt: skip
    defs = build_definitions(settings)
    synthetic = small_study()
    storage = defs.resources["storage"]
    members = [feed_member(store, storage, synthetic, i) for i in range(len(synthetic))]
    found = StudyPlatform(settings, store, defs, dg.DagsterInstance.ephemeral(), members, synthetic)
    studies.create(store, "lesions", title="Lesions", design=["sample.condition"], members=members)
    found.materialize("lesions")
    yield found
    store.drop_all()


def catalog(platform) -> Catalog:
    return Catalog(platform.settings, user=SCIENTIST, store=platform.store)


def cli(platform, *args):
    return CliRunner().invoke(main, list(args), env=platform.env(), catch_exceptions=False)


# -- notebook client -----------------------------------------------------------------------


def test_comparison_is_the_table_the_asset_wrote(platform):
    table = catalog(platform).study("lesions").comparison()
    manifest = read_json(
        platform.storage, platform.storage.url(study_manifest_key("study_comparison", "lesions"))
    )
    assert set(table["contrast"]) == {"TREATED vs CONTROL"}
    assert int(table["significant"].sum()) == manifest["significant"]["TREATED vs CONTROL"]
    assert {"mz", "fold_change", "q_value", "mean_numerator"} <= set(table.columns)


def test_features_is_an_anndata_of_every_members_pixels_with_the_scverse_fields(platform):
    adata = catalog(platform).study("lesions").features()
    synthetic = platform.synthetic
    assert adata.n_obs == len(synthetic) * synthetic.n_pixels
    assert list(adata.obs["measurement_id"].cat.categories) == sorted(platform.members)
    assert set(adata.obs["sample.condition"]) == {"CONTROL", "TREATED"}
    np.testing.assert_array_equal(adata.obsm["spatial"], adata.obs[["x", "y"]].to_numpy())
    aligned = read_json(
        platform.storage, platform.storage.url(study_manifest_key("aligned_features", "lesions"))
    )
    first = platform.members[0]
    matrix, _ = read_csr_zarr(platform.storage, aligned["members"][first]["features"])
    rows = (adata.obs["measurement_id"] == first).to_numpy()
    assert (adata.X[rows] != matrix).nnz == 0
    np.testing.assert_array_equal(
        adata.var["mz"].to_numpy(), read_npy(platform.storage, aligned["axis_mz"])
    )


def test_features_as_a_dataframe_has_one_column_per_feature(platform):
    frame = (
        catalog(platform).study("lesions").features(as_dataframe=True, members=platform.members[:1])
    )
    assert len(frame) == platform.synthetic.n_pixels
    assert "measurement_id" in frame.columns and "x" in frame.columns


def test_the_pca_has_one_row_per_member_with_its_group(platform):
    pca = catalog(platform).study("lesions").pca()
    assert list(pca.index) == platform.members
    assert set(pca["group"]) == {"CONTROL", "TREATED"}
    assert np.sign(pca["PC1"].groupby(pca["group"]).mean()).nunique() == 2  # PC1 splits the groups


def test_a_member_added_since_the_run_makes_the_results_stale_not_mixed(platform):
    cat = catalog(platform)
    first = [platform.members[i] for i in (0, 1, 3, 4)]  # 2 per group: testable
    Study.create("partial", first, catalog=cat)
    platform.materialize("partial")
    study = cat.study("partial").add(platform.members[2])
    with pytest.raises(StaleStudyResult, match="members that its results do not include"):
        study.comparison()
    platform.materialize("partial")
    assert len(study.pca()) == 5


def test_a_study_not_run_yet_says_how_to_run_it(platform):
    study = Study.create("fresh", platform.members, catalog=catalog(platform))
    with pytest.raises(StudyNotComputed, match="em2q study run fresh"):
        study.comparison()


# -- exports -------------------------------------------------------------------------------


def test_the_h5ad_export_reads_back_equal_with_anndata(platform, tmp_path):
    study = catalog(platform).study("lesions")
    path = study.export_h5ad(tmp_path / "lesions.h5ad")
    back = anndata.read_h5ad(path)
    original = study.features()
    assert (back.X != original.X).nnz == 0
    pd.testing.assert_frame_equal(
        back.obs.astype(str), original.obs.astype(str), check_dtype=False, check_index_type=False
    )
    np.testing.assert_array_equal(back.var["mz"], original.var["mz"])
    np.testing.assert_array_equal(back.obsm["spatial"], original.obsm["spatial"])
    assert back.uns["em2q"]["study_id"] == "lesions"


@pytest.fixture(scope="module")
def ex_proc(platform, tmp_path_factory) -> str:
    """The processed example measurement, materialized once for the module's export tests."""
    register_copy(platform.store, tmp_path_factory.mktemp("up"), "Example_Processed", "ex-proc")
    materialize_measurement(platform.defs, platform.instance, "ex-proc")
    return "ex-proc"


def assert_imzml_holds(path, adata) -> None:
    """The imzML at ``path`` holds ``adata``'s pixels with peaks: same x/y, m/z, intensities."""
    from pyimzml.ImzMLParser import ImzMLParser

    matrix = adata.X.tocsr()
    mz = adata.var["mz"].to_numpy()
    xy = adata.obs[["x", "y"]].to_numpy()
    rows = [i for i in range(matrix.shape[0]) if matrix[i].count_nonzero()]
    parser = ImzMLParser(str(path))
    assert [tuple(c[:2]) for c in parser.coordinates] == [tuple(xy[i]) for i in rows]
    assert rows
    for position, row in enumerate(rows):
        read_mz, read_intensity = parser.getspectrum(position)
        values = matrix[row].toarray().ravel()
        columns = np.flatnonzero(values)
        np.testing.assert_array_equal(read_mz, mz[columns])
        np.testing.assert_array_equal(read_intensity, values[columns])


def test_a_measurements_peak_table_exports_as_h5ad_with_pixels_as_rows(platform, ex_proc, tmp_path):
    from pyimzml.ImzMLParser import ImzMLParser

    from tests.em2q_assets.conftest import EXAMPLES

    adata = catalog(platform).measurement(ex_proc).features()
    adata.write_h5ad(tmp_path / "m.h5ad")
    back = anndata.read_h5ad(tmp_path / "m.h5ad")
    parser = ImzMLParser(str(EXAMPLES / "Example_Processed.imzML"))
    assert back.n_obs == len(parser.coordinates)
    assert [tuple(c[:2]) for c in parser.coordinates] == list(
        zip(back.obs["x"], back.obs["y"], strict=True)
    )
    assert back.X.nnz > 0 and (back.X != adata.X).nnz == 0
    np.testing.assert_array_equal(back.var["mz"], adata.var["mz"])
    np.testing.assert_array_equal(back.obsm["spatial"], back.obs[["x", "y"]].to_numpy())


def test_a_measurements_peak_table_exports_as_centroided_imzml_equal_to_the_table(
    platform, ex_proc, tmp_path
):
    measurement = catalog(platform).measurement(ex_proc)
    report = measurement.export_imzml(tmp_path / "peaks.imzML")
    assert_imzml_holds(report.imzml_path, measurement.features())


def test_a_studys_members_export_as_centroided_imzml_on_the_study_axis(platform, tmp_path):
    study = catalog(platform).study("lesions")
    written = study.export_imzml(tmp_path / "out", members=platform.members[:2])
    assert sorted(written) == sorted(platform.members[:2])
    features = study.features()
    for member, report in written.items():
        rows = (features.obs["measurement_id"] == member).to_numpy()
        assert_imzml_holds(report.imzml_path, features[rows])


# -- ROI-level studies ---------------------------------------------------------------------


def _save_rois(platform, name: str, part) -> None:
    """Save ROI ``name`` on every member: ``part(grid)`` gives its rectangle."""
    from em2q_msi.facts import grid_from_facts
    from em2q_resources import rois

    for member in platform.members:
        doc = platform.store.get(platform.store.schema.Measurement, member).doc
        grid = grid_from_facts(doc.facts)
        rois.save(platform.store, ADMIN, member, name, part(grid), grid=grid, replace=True)
    platform.store.refresh()


def test_a_roi_study_of_whole_image_rois_finds_what_the_measurement_study_finds(platform):
    from em2q_msi.spatial import rectangle

    _save_rois(platform, "whole", lambda g: rectangle(0, 0, g.nx, g.ny))
    groups = studies.member_groups(platform.store, studies.get(platform.store, "lesions"))
    cat = catalog(platform)
    Study.create("roi-whole", rois=[(m, "whole", groups[m]) for m in platform.members], catalog=cat)
    platform.materialize("roi-whole")
    by_roi = cat.study("roi-whole").comparison()
    by_measurement = cat.study("lesions").comparison()
    assert int(by_roi["significant"].sum()) > 0
    np.testing.assert_array_equal(by_roi["significant"], by_measurement["significant"])
    np.testing.assert_allclose(by_roi["p_value"], by_measurement["p_value"], rtol=1e-9)
    assert list(cat.study("roi-whole").pca().index) == [f"{m}/whole" for m in platform.members]


def test_roi_groups_without_a_difference_show_no_significant_feature(platform):
    from em2q_msi.spatial import rectangle

    _save_rois(platform, "top", lambda g: rectangle(0, 0, g.nx, 4))
    _save_rois(platform, "bottom", lambda g: rectangle(0, 4, g.nx, g.ny))
    rois = [(m, r, r) for m in platform.members for r in ("top", "bottom")]
    cat = catalog(platform)
    Study.create("roi-halves", rois=rois, catalog=cat)
    platform.materialize("roi-halves")
    table = cat.study("roi-halves").comparison()
    assert set(table["contrast"]) == {"top vs bottom"}
    assert int(table["significant"].sum()) == 0


def test_cli_show_lists_a_roi_studys_replicates(platform):
    from em2q_msi.spatial import rectangle

    _save_rois(platform, "whole", lambda g: rectangle(0, 0, g.nx, g.ny))
    first = platform.members[0]
    Study.create("roi-show", rois=[(first, "whole", "a")], catalog=catalog(platform))
    shown = cli(platform, "study", "show", "roi-show").output
    assert "replicates: each ROI's mean" in shown
    assert re.search(rf"{first}\s+whole\s+a", shown)


def test_cli_creates_a_roi_study_naming_a_missing_roi(platform):
    result = cli(platform, "study", "create", "roi-bad", "--roi", f"{platform.members[0]}:nope=a")
    assert result.exit_code == 1
    assert "has no ROI 'nope'" in result.output


# -- CLI -----------------------------------------------------------------------------------


def test_cli_export_writes_a_measurements_centroided_imzml(platform, ex_proc, tmp_path):
    path = tmp_path / "cli.imzML"
    result = cli(platform, "export", ex_proc, str(path), "--format", "imzml")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli.ibd").exists()
    assert_imzml_holds(path, catalog(platform).measurement(ex_proc).features())


def test_cli_study_export_imzml_writes_one_file_per_member(platform, tmp_path):
    result = cli(platform, "study", "export", "lesions", str(tmp_path / "x"), "--format", "imzml")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "x").glob("*.imzML")) == sorted(
        f"{m}.imzML" for m in platform.members
    )


def test_cli_create_add_show_lists_members_with_their_groups(platform):
    created = cli(platform, "study", "create", "cli-st", "--member", platform.members[0],
                  "--member", platform.members[3], "--json")  # fmt: skip
    assert created.exit_code == 0, created.output
    added = cli(platform, "study", "add", "cli-st", platform.members[1])
    assert added.exit_code == 0, added.output
    shown = json.loads(cli(platform, "study", "show", "cli-st", "--json").output)
    assert shown["member_ids"] == [platform.members[i] for i in (0, 3, 1)]
    assert shown["groups"][platform.members[3]] == "TREATED"
    assert shown["results"] == "not computed"


def test_cli_compare_writes_the_comparison_csv(platform, tmp_path):
    out = tmp_path / "cmp.csv"
    result = cli(platform, "study", "compare", "lesions", "--csv", str(out))
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out)
    expected = catalog(platform).study("lesions").comparison()
    pd.testing.assert_frame_equal(written, expected)


def test_cli_compare_shows_the_significant_features_first(platform):
    result = cli(platform, "study", "compare", "lesions", "--top", "3", "--json")
    rows = json.loads(result.output)
    assert len(rows) == 3 and all(r["significant"] for r in rows)
    assert [r["q_value"] for r in rows] == sorted(r["q_value"] for r in rows)


def test_cli_refuses_a_member_without_the_design_field(platform):
    result = cli(platform, "study", "create", "bad", "--member", platform.members[0],
                 "--design", "sample.condition_detail")  # fmt: skip
    assert result.exit_code == 1
    assert "invalid study" in result.output and "sample.condition_detail" in result.output


def test_cli_export_writes_an_h5ad_anndata_reads(platform, tmp_path):
    path = tmp_path / "x.h5ad"
    result = cli(platform, "study", "export", "lesions", str(path))
    assert result.exit_code == 0, result.output
    assert anndata.read_h5ad(path).n_obs == len(platform.members) * platform.synthetic.n_pixels
