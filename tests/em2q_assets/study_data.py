"""A synthetic study fed into a test platform as measurement results: each member's pixel
peaks written where ``preprocessed_chunks`` writes them (results layout, manifest last), and
its ``Measurement`` document with the group as ``sample.condition``."""

from __future__ import annotations

from em2q_msi.synthetic import synthetic_study
from em2q_resources import parameter_sets
from em2q_resources.metadata.synthetic import measurement
from em2q_resources.results_layout import manifest_key, result_key, write_json, write_npy
from em2q_resources.storage import StorageResource

#: the synthetic study's groups as sample conditions
CONDITIONS = {"group1": "CONTROL", "group2": "TREATED"}


def small_study(**overrides):
    """2 groups × 3 replicates, 100 pixels, 200 features: well under a second to generate."""
    return synthetic_study(**{"n_pixels": 60, **overrides})


def member_id(name: str) -> str:
    return f"m-{name}"


def feed_member(store, storage: StorageResource, study, i: int, parameter_set: str = "default"):
    """Write member ``i`` 's peaks as its preprocessed chunk 0 and register it; returns its id."""
    peaks = study.measurement(i)
    name = study.names[i]
    mid = member_id(name)
    digest = parameter_sets.resolve(store, parameter_set).content_hash
    folder = result_key(mid, "preprocessed_chunks", digest, 0)
    outputs = {
        f"peaks_{field}": write_npy(storage, f"{folder}/peaks_{field}.npy", getattr(peaks, field))
        for field in ("mz", "intensity", "snr", "offsets", "coordinates")
    }
    manifest = {
        "measurement_id": mid, "chunk": 0, "folder": folder, "parameter_set": parameter_set,
        "parameter_hash": digest, "first_spectrum": 0, "outputs": outputs,
    }  # fmt: skip
    write_json(storage, manifest_key("preprocessed_chunks", mid, 0, digest), manifest)
    s = store.schema
    doc = measurement(s, 100 + i, id=mid)
    doc.sample.condition = s.SampleCondition._NAMES_TO_VALUES[CONDITIONS[study.truth.groups[i]]]
    if not store.exists(s.Measurement, mid):
        store.create(doc, refresh=True)
    return mid
