"""A synthetic study fed into a platform as measurement results: each member's pixel peaks
written where ``preprocessed_chunks`` writes them (results layout, manifest last), and its
``Measurement`` document with the group as ``sample.condition``. Shared by the tests and the
benchmarks (``bench_study``), which import nothing from the tests."""

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


def feed_region_member(
    store, storage: StorageResource, mid: str, regions, ion_mz, ion_region, seed: int,
    parameter_set: str = "default",
) -> str:  # fmt: skip
    """A member whose pixels carry planted regions: each pixel of region ``r`` (``regions``
    (ny, nx)) has every ion of ``ion_mz``, those marking ``r`` (``ion_region``) about 10×
    higher than the others; written as its preprocessed chunk 0 and registered (CONTROL)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ny, nx = regions.shape
    rows, cols = np.mgrid[0:ny, 0:nx]
    labels = regions.reshape(-1)
    n_ions = ion_mz.size
    high = np.where(ion_region[None, :] == labels[:, None], 80.0, 8.0)
    intensity = high * rng.lognormal(0.0, 0.2, high.shape) * rng.uniform(0.5, 2.0)
    mz = np.tile(ion_mz * (1 + rng.normal(0, 1e-6, n_ions)), labels.size)
    coordinates = np.column_stack([cols.reshape(-1) + 1, rows.reshape(-1) + 1])
    arrays = {
        "mz": mz.astype(np.float64),
        "intensity": intensity.reshape(-1).astype(np.float32),
        "snr": np.full(mz.size, 50, np.float32),
        "offsets": np.arange(labels.size + 1, dtype=np.int64) * n_ions,
        "coordinates": coordinates.astype(np.int64),
    }
    digest = parameter_sets.resolve(store, parameter_set).content_hash
    folder = result_key(mid, "preprocessed_chunks", digest, 0)
    outputs = {
        f"peaks_{field}": write_npy(storage, f"{folder}/peaks_{field}.npy", value)
        for field, value in arrays.items()
    }
    manifest = {
        "measurement_id": mid, "chunk": 0, "folder": folder, "parameter_set": parameter_set,
        "parameter_hash": digest, "first_spectrum": 0, "outputs": outputs,
    }  # fmt: skip
    write_json(storage, manifest_key("preprocessed_chunks", mid, 0, digest), manifest)
    s = store.schema
    doc = measurement(s, 200 + seed, id=mid)
    doc.facts = None  # the grid is the pixels' bounding box, not the random synthetic facts
    doc.sample.condition = s.SampleCondition._NAMES_TO_VALUES["CONTROL"]
    if not store.exists(s.Measurement, mid):
        store.create(doc, refresh=True)
    return mid
