"""Which measurements a run touched and the root error of a failed run, read from real Dagster
runs (an ephemeral instance, assets that fail for real)."""

from pathlib import Path

import dagster as dg

from em2q_assets.adapters import Partition, run_step
from em2q_assets.provenance import StepContext
from em2q_assets.run_failures import measurements_of_run, run_failure_reason
from em2q_resources.lifecycle import Kind

URL = "http://dagster.example/runs/"


def test_measurements_are_read_from_partition_range_and_measurement_tags():
    assert measurements_of_run({"dagster/partition": "m1"}) == ["m1"]
    assert measurements_of_run({"dagster/partition": "m1|3"}) == ["m1"]
    range_tags = {
        "dagster/asset_partition_range_start": "m2|0",
        "dagster/asset_partition_range_end": "m2|7",
    }
    assert measurements_of_run(range_tags) == ["m2"]
    assert measurements_of_run({"em2q/measurement": "m3", "dagster/backfill": "abc"}) == ["m3"]
    assert measurements_of_run({"dagster/backfill": "abc"}) == []


chunks = dg.MultiPartitionsDefinition(
    {"measurement": dg.StaticPartitionsDefinition(["m"]),
     "spectra_chunk": dg.StaticPartitionsDefinition(["0", "1"])}
)  # fmt: skip


def failing_chunk(step: StepContext, partition: Partition, inputs, parameters):
    if partition.chunk == 1:
        try:
            Path("/nonexistent-em2q/chunk.bin").read_bytes()
        except OSError as exc:
            raise ValueError("cannot read the chunk's spectra") from exc
    return None


@dg.asset(partitions_def=chunks, backfill_policy=dg.BackfillPolicy.single_run())
def spectra_chunks(context: dg.AssetExecutionContext):
    return run_step(context, failing_chunk, None, inputs={}, chunk_count=2)


@dg.asset(deps=[spectra_chunks], partitions_def=chunks)
def downstream(context: dg.AssetExecutionContext):
    return None


def test_the_root_error_is_the_original_exception_with_its_step_and_chunk():
    instance = dg.DagsterInstance.ephemeral()
    tags = {
        "dagster/asset_partition_range_start": "m|0",
        "dagster/asset_partition_range_end": "m|1",
    }
    result = dg.materialize(
        [spectra_chunks, downstream], instance=instance, tags=tags, raise_on_error=False
    )
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    reason = run_failure_reason(instance, run, "run failed", URL + run.run_id)
    assert reason.kind == Kind.RUN_FAILED
    assert reason.error_type == "FileNotFoundError"  # the original, not the wrapper
    assert "No such file or directory" in reason.error_message
    assert "raised as ValueError: cannot read the chunk's spectra" in reason.error_message
    assert (reason.asset, reason.partition) == ("spectra_chunks", "m|1")
    assert (reason.run_id, reason.run_url) == (run.run_id, URL + run.run_id)
    assert reason.message.startswith("spectra_chunks failed: FileNotFoundError")
