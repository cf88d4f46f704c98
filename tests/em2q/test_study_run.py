"""A study run launched through the Dagster webserver (``Study.run``, ``em2q study run``): the
running code location has the study assets, the partition is added and the run computes the
comparison the client reads."""

from __future__ import annotations

from em2q.client import Catalog, Study
from em2q_resources.auth import Role, User
from em2q_resources.storage import StorageResource
from tests.em2q_assets.study_data import feed_member, small_study

SCIENTIST = User("sam", Role.SCIENTIST)


def test_a_study_run_in_the_running_dagster_computes_its_comparison(dagster_platform):
    settings, store = dagster_platform.settings, dagster_platform.store
    storage = StorageResource(root=settings.storage)
    synthetic = small_study()
    members = [feed_member(store, storage, synthetic, i) for i in range(len(synthetic))]
    catalog = Catalog(settings, user=SCIENTIST, store=store)
    study = Study.create("run-st", members, catalog=catalog)
    run_id = study.run()
    status = catalog.dagster().wait(run_id, timeout_s=300)
    assert status.ok, status.to_dict()
    table = study.comparison()
    assert set(table["contrast"]) == {"TREATED vs CONTROL"}
    assert table["significant"].sum() > 0
    assert len(study.pca()) == len(members)
