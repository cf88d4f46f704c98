"""``ManifestIOManager``: assets hand over small JSON manifests, big arrays stay in storage.

Each asset writes its arrays and images itself (``em2q_resources.results_layout``) and returns
a manifest: the URLs of what it wrote plus the numbers people look at. The manifest is stored
at ``results_layout.manifest_key``, in the asset's content-addressed result folder; parameter-dependent assets (definition metadata
``em2q/parameter_dependent``, set from the asset catalogue's declaration) put it under the parameter-set hash named in the manifest, so
results of different parameter sets never overwrite each other. Reading them back, the hash is
that of the consuming run's own parameter set (the ``parameter_set`` resource this IO manager
declares as a field, as configured for that run in the launchpad).
"""

# no `from __future__ import annotations`: Dagster must see the resource types of the fields to
# bind the IO manager's parameter_set to the run's (configured-at-launch) one

from typing import Any

import dagster as dg

from em2q_assets.partitions import split_key
from em2q_resources.metadata.resource import ParameterSetResource
from em2q_resources.results_layout import (
    manifest_key,
    read_json,
    study_manifest_key,
    write_json,
)
from em2q_resources.storage import StorageResource

#: definition metadata of an asset the catalogue declares parameter-dependent
PARAMETER_DEPENDENT = "em2q/parameter_dependent"
#: definition metadata of a study asset (partitioned by study; manifests under ``studies/``)
PER_STUDY = "em2q/per_study"


class ManifestIOManager(dg.ConfigurableIOManager):
    storage: StorageResource
    #: the run's parameter set: the hash parameter-dependent inputs are read under
    parameter_set: ParameterSetResource

    @staticmethod
    def _key(asset: str, partition_key: Any, parameter_hash: str | None) -> str:
        measurement_id, chunk = split_key(partition_key)
        return manifest_key(asset, measurement_id, chunk, parameter_hash)

    def handle_output(self, context: dg.OutputContext, obj: dict) -> None:
        """One manifest per partition; a range run (all chunks of a measurement in one step)
        hands over ``{chunk: manifest}``."""
        if obj is None:
            return
        asset = context.asset_key.path[-1]
        keys = context.asset_partition_keys if context.has_asset_partitions else []
        if (context.definition_metadata or {}).get(PER_STUDY):
            write_json(self.storage, study_manifest_key(asset, context.asset_partition_key), obj)
            return
        if len(keys) > 1:
            by_chunk = {}
            for key in keys:
                multi = (
                    key if isinstance(key, dg.MultiPartitionKey) else _as_output_multi(context, key)
                )
                by_chunk[multi] = obj[split_key(multi)[1]]
        else:
            by_chunk = {context.asset_partition_key if keys else None: obj}
        for key, manifest in by_chunk.items():
            digest = None
            if (context.definition_metadata or {}).get(PARAMETER_DEPENDENT):
                digest = manifest.get("parameter_hash")
                if not digest:
                    raise dg.Failure(f"{asset} manifest lacks parameter_hash")
            write_json(self.storage, self._key(asset, key, digest), manifest)

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        if (upstream.definition_metadata or {}).get(PER_STUDY):
            key = study_manifest_key(context.asset_key.path[-1], context.asset_partition_key)
            return read_json(self.storage, self.storage.url(key))
        dependent = None
        if (upstream.definition_metadata or {}).get(PARAMETER_DEPENDENT):
            dependent = self.parameter_set.resolve().content_hash
        asset = context.asset_key.path[-1]
        keys = context.asset_partition_keys if context.has_asset_partitions else []
        downstream_multi = context.has_partition_key and isinstance(
            context.partition_key, dg.MultiPartitionKey
        )
        if len(keys) == 1 and (downstream_multi or not isinstance(keys[0], dg.MultiPartitionKey)):
            return read_json(self.storage, self.storage.url(self._key(asset, keys[0], dependent)))
        manifests = {}
        for key in keys:
            multi = key if isinstance(key, dg.MultiPartitionKey) else _as_multi(context, key)
            manifests[split_key(multi)[1]] = read_json(
                self.storage, self.storage.url(self._key(asset, multi, dependent))
            )
        return dict(sorted(manifests.items()))


def _as_multi(context: dg.InputContext, key: str) -> dg.MultiPartitionKey:
    partitions_def = context.upstream_output.asset_partitions_def
    return partitions_def.get_partition_key_from_str(key)


def _as_output_multi(context: dg.OutputContext, key: str) -> dg.MultiPartitionKey:
    return context.asset_partitions_def.get_partition_key_from_str(key)
