"""The EM²Q code location plus one step that does nothing, for ``bench_run_start``.

A run of :data:`NOOP_JOB` pays everything a real run of the platform pays before and after its
step (a fresh process, ``import dagster``, ``em2q_assets.definitions``, the instance, the run's
events) and nothing else: its step needs no Elasticsearch and no storage, so the benchmark needs
no services. Loaded by the benchmark's code server as ``benchmarks.run_start_location:defs``.
"""

from __future__ import annotations

import dagster as dg

from em2q_assets.definitions import defs as em2q_defs

NOOP_JOB = "run_start_noop_job"


@dg.asset(io_manager_key="run_start_io", group_name="benchmarks")
def run_start_noop() -> int:
    """A step with no work: a run of it is the per-run overhead alone."""
    return 0


defs = dg.Definitions.merge(
    em2q_defs,
    dg.Definitions(
        assets=[run_start_noop],
        jobs=[dg.define_asset_job(NOOP_JOB, selection=[run_start_noop])],
        resources={"run_start_io": dg.InMemoryIOManager()},
    ),
)
