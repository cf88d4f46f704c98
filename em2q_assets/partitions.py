"""How measurements and their spectra are partitioned.

``measurement`` is dynamic: the ``new_measurements`` sensor adds one partition per upload.
Spectra-level assets are partitioned by ``measurement × spectra_chunk`` (chunk *i of K* of the
measurement's spectra, contiguous in file order); measurement-level assets read all chunks of
one measurement through ``MultiToSingleDimensionPartitionMapping``.

Scale: Dagster advises at most 100,000 partitions per asset. With K = 8 chunks that is 12,500
measurements for the spectra-level assets (100,000 for measurement-level ones). A deployment
beyond that keeps the per-measurement partitions and retires old ones from the dynamic
partition set (their results and metadata stay in storage and Elasticsearch), or raises K only
for new code locations — see docs/scaling.md.
"""

from __future__ import annotations

import dagster as dg

MEASUREMENT = "measurement"
SPECTRA_CHUNK = "spectra_chunk"


def chunk_keys(chunk_count: int) -> list[str]:
    """Zero-padded so that the UI sorts chunks in file order."""
    width = len(str(chunk_count - 1))
    return [str(i).zfill(width) for i in range(chunk_count)]


measurement_partitions = dg.DynamicPartitionsDefinition(name=MEASUREMENT)
#: one partition per study (added when a study is created: ``em2q study create``, the client)
STUDY = "study"
study_partitions = dg.DynamicPartitionsDefinition(name=STUDY)


def spectra_partitions(chunk_count: int) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition(
        {
            MEASUREMENT: measurement_partitions,
            SPECTRA_CHUNK: dg.StaticPartitionsDefinition(chunk_keys(chunk_count)),
        }
    )


def by_measurement() -> dg.MultiToSingleDimensionPartitionMapping:
    return dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=MEASUREMENT)


def split_key(partition_key: str | dg.MultiPartitionKey) -> tuple[str, int | None]:
    """``(measurement id, chunk index or None)`` of a partition key of either kind."""
    if isinstance(partition_key, dg.MultiPartitionKey):
        keys = partition_key.keys_by_dimension
        return keys[MEASUREMENT], int(keys[SPECTRA_CHUNK])
    return str(partition_key), None
