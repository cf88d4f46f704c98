"""Reading a study's results (and a measurement's feature matrix) for people: the notebook
client, the CLI and the web read them here, from where the study assets wrote them
(``em2q_resources.results_layout``: ``studies/<study>/<asset>/…``), without Dagster.

Exports follow the scverse conventions, so scanpy, squidpy and friends read them:
``obs`` one row per pixel (``x``, ``y``, ``measurement_id``, the design fields, ``group``),
``var`` one row per feature (index the m/z as text, column ``mz``), ``X`` the intensities
(CSR), ``obsm['spatial']`` the pixel coordinates, ``uns['em2q']`` where it came from.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from em2q.results import ResultNotReady
from em2q_resources import studies
from em2q_resources.parameter_sets import resolve
from em2q_resources.results_layout import (
    exists,
    manifest_key,
    member_peak_manifests,
    read_bytes,
    read_csr_zarr,
    read_json,
    read_npy,
    study_manifest_key,
)

if TYPE_CHECKING:
    import anndata

    from em2q_resources.metadata.store import MetadataStore
    from em2q_resources.storage import StorageResource

STUDY_ASSETS = ("study_reference_peaks", "aligned_features", "study_comparison")


class StudyNotComputed(ResultNotReady):
    """A study asset that has not been materialized for the study yet."""

    def __init__(self, asset: str, study_id: str) -> None:
        self.asset, self.measurement_id, self.parameter_set = asset, study_id, None
        LookupError.__init__(
            self,
            f"{asset} of study {study_id!r} is not computed yet: run `em2q study run "
            f"{study_id}` (or study.run() in a notebook, or materialize the study's assets in "
            "Dagster)",
        )


class StaleStudyResult(LookupError):
    """A study result made for another feature axis or other members than the current ones."""

    def __str__(self) -> str:
        return self.args[0]


def study_manifest(storage: StorageResource, study_id: str, asset: str) -> dict:
    """What a study asset last wrote; :class:`ResultNotReady` when it has not run yet."""
    key = study_manifest_key(asset, study_id)
    if not exists(storage, key):
        raise StudyNotComputed(asset, study_id)
    return read_json(storage, storage.url(key))


def current_manifests(store: MetadataStore, storage: StorageResource, study_id: str) -> dict:
    """The three study manifests, checked to belong together and to the study's members now
    (else :class:`StaleStudyResult`: materialize the study's assets again)."""
    found = {asset: study_manifest(storage, study_id, asset) for asset in STUDY_ASSETS}
    reference = found["study_reference_peaks"]
    members = list(studies.member_groups(store, studies.get(store, study_id)))
    if reference["members"] != members:
        raise StaleStudyResult(
            f"study {study_id!r} has members that its results do not include yet: materialize "
            "its assets again (`em2q study run`)"
        )
    for asset in STUDY_ASSETS[1:]:
        if found[asset]["axis_hash"] != reference["axis_hash"]:
            raise StaleStudyResult(
                f"study {study_id!r}: {asset} was made on an earlier feature axis (the "
                "reference moved: the reference_drift check); materialize it again"
            )
    return found


#: the study's segmentation (``em2q_resources.catalog.STUDY_ASSETS``, after
#: ``aligned_features``): shown when computed, not needed by the comparison pages
SEGMENTATION_ASSET = "study_segmentation"


def study_segmentation(store: MetadataStore, storage: StorageResource, study_id: str) -> dict:
    """What ``study_segmentation`` last wrote (``k``, ``note``, per member its ``labels``,
    ``segment_map`` and ``png``, ``outputs['top_ions']``), checked to be of the study's
    members and feature axis now: :class:`StudyNotComputed` or :class:`StaleStudyResult`."""
    found = study_manifest(storage, study_id, SEGMENTATION_ASSET)
    aligned = study_manifest(storage, study_id, "aligned_features")
    members = list(studies.member_groups(store, studies.get(store, study_id)))
    if found["axis_hash"] != aligned["axis_hash"] or list(found["members"]) != members:
        raise StaleStudyResult(
            f"study {study_id!r}: its segmentation was made on other members or an earlier "
            "feature axis; materialize study_segmentation again (`em2q study run`)"
        )
    return found


def comparison_table(storage: StorageResource, manifest: dict) -> pd.DataFrame:
    """The comparison as a long table (one row per feature and contrast)."""
    return pd.read_csv(io.BytesIO(read_bytes(storage, manifest["outputs"]["table_csv"])))


def pca_table(storage: StorageResource, manifest: dict) -> pd.DataFrame:
    """One row per member: its group and PCA scores (``PC1``, ``PC2``)."""
    pca = read_json(storage, manifest["outputs"]["pca"])
    scores = np.asarray(pca["scores"], dtype=np.float64).reshape(len(pca["members"]), -1)
    table = pd.DataFrame(
        scores, index=pd.Index(pca["members"], name="measurement_id"),
        columns=[f"PC{i + 1}" for i in range(scores.shape[1])],
    )  # fmt: skip
    table.insert(0, "group", pca["groups"])
    table.attrs["explained_variance_ratio"] = pca["explained_variance_ratio"]
    return table


def _obs(
    coordinates: np.ndarray, measurement_id: str, fields: dict[str, str], start: int
) -> pd.DataFrame:
    n = coordinates.shape[0]
    frame = pd.DataFrame(
        {
            "x": coordinates[:, 0].astype(np.int64),
            "y": coordinates[:, 1].astype(np.int64),
            "measurement_id": np.full(n, measurement_id, dtype=object),
            **{name: np.full(n, value, dtype=object) for name, value in fields.items()},
        },
        index=pd.Index([f"{measurement_id}:{start + i}" for i in range(n)], dtype=object),
    )
    return frame


def _var(mz: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {"mz": np.asarray(mz, dtype=np.float64)},
        index=pd.Index([f"{v:.6f}" for v in mz], dtype=object, name="feature"),
    )


def study_anndata(
    store: MetadataStore,
    storage: StorageResource,
    study_id: str,
    members: Sequence[str] | None = None,
) -> anndata.AnnData:
    """The study's pixels × features matrix of ``members`` (default all), one AnnData."""
    import anndata
    import scipy.sparse as sp

    found = current_manifests(store, storage, study_id)
    aligned, reference = found["aligned_features"], found["study_reference_peaks"]
    study = studies.get(store, study_id)
    design = list(study.design or [])
    chosen = list(members) if members is not None else list(aligned["members"])
    docs = {m.id: m for m in (store.get(store.schema.Measurement, i).doc for i in chosen)}
    matrices, frames = [], []
    for member in chosen:
        if member not in aligned["members"]:
            raise KeyError(f"{member!r} is not a member of study {study_id!r}")
        matrix, arrays = read_csr_zarr(storage, aligned["members"][member]["features"])
        fields = {path: studies.field_value(docs[member], path) or "" for path in design}
        fields["group"] = aligned["groups"][member]
        frames.append(_obs(arrays["coordinates"], member, fields, 0))
        matrices.append(sp.csr_matrix(matrix))
    obs = pd.concat(frames)
    for column in ["measurement_id", *design, "group"]:
        obs[column] = pd.Categorical(obs[column].astype(object))
    axis = read_npy(storage, aligned["axis_mz"])
    adata = anndata.AnnData(
        X=sp.vstack(matrices, format="csr") if matrices else sp.csr_matrix((0, axis.size)),
        obs=obs,
        var=_var(axis),
    )
    adata.obsm["spatial"] = obs[["x", "y"]].to_numpy(dtype=np.float64)
    adata.uns["em2q"] = {
        "study_id": study_id,
        "parameter_set": reference["parameter_set"],
        "axis_hash": reference["axis_hash"],
        "design": design,
        "normalisation": reference["study_parameters"]["normalisation"],
        "values": "raw peak intensities summed per feature (not normalised)",
    }
    return adata


def measurement_anndata(
    store: MetadataStore,
    storage: StorageResource,
    measurement_id: str,
    parameter_set: str | None = None,
    design: Sequence[str] = ("sample.condition", "sample.organ"),
) -> anndata.AnnData:
    """A measurement's ``peak_table`` (spectra × features, in file order) as an AnnData."""
    import anndata
    import scipy.sparse as sp

    resolved = resolve(store, parameter_set or "default")
    key = manifest_key("peak_table", measurement_id, None, resolved.content_hash)
    if not exists(storage, key):
        raise ResultNotReady("peak_table", measurement_id, resolved.id)
    outputs = read_json(storage, storage.url(key))["outputs"]
    shape = tuple(read_json(storage, outputs["shape"]))
    matrix = sp.coo_matrix(
        (
            read_npy(storage, outputs["matrix_value"]),
            (read_npy(storage, outputs["matrix_row"]), read_npy(storage, outputs["matrix_col"])),
        ),
        shape=shape,
    )
    mz = read_npy(storage, outputs["feature_mz"])
    matrix = matrix.T  # stored features × spectra (``em2q_msi.features.FeatureTable``)
    chunks = member_peak_manifests(storage, measurement_id, resolved.content_hash)
    coordinates = np.concatenate(
        [read_npy(storage, c["outputs"]["peaks_coordinates"]) for c in chunks]
    )
    doc = store.get(store.schema.Measurement, measurement_id).doc
    fields = {path: studies.field_value(doc, path) or "" for path in design}
    obs = _obs(coordinates, measurement_id, fields, 0)
    adata = anndata.AnnData(X=sp.csr_matrix(matrix, dtype=np.float32), obs=obs, var=_var(mz))
    adata.obsm["spatial"] = obs[["x", "y"]].to_numpy(dtype=np.float64)
    adata.uns["em2q"] = {"measurement_id": measurement_id, "parameter_set": resolved.id}
    return adata


def write_h5ad(adata: anndata.AnnData, path: Any) -> None:
    """Write ``adata`` as ``.h5ad`` (pandas 3 strings allowed, as anndata 0.12 asks)."""
    import anndata

    anndata.settings.allow_write_nullable_strings = True
    adata.write_h5ad(path)


def write_imzml(adata: anndata.AnnData, path: Any, polarity: str | None = None) -> Any:
    """Write one measurement's pixels of ``adata`` (from :func:`measurement_anndata`, or one
    member of :func:`study_anndata`) as a centroided imzML (processed mode) at ``path``:
    ``em2q_msi.imzml_export.write_centroided_imzml``'s report (paths, spectra, peaks)."""
    from em2q_msi.imzml_export import InvalidExport, write_centroided_imzml

    measured = set(adata.obs["measurement_id"]) if "measurement_id" in adata.obs else set()
    if len(measured) > 1:
        raise InvalidExport(
            f"an imzML file holds one measurement; these pixels are of {len(measured)}: "
            "export each member on its own (study_imzml)"
        )
    coordinates = adata.obs[["x", "y"]].to_numpy(dtype=np.int64)
    return write_centroided_imzml(
        path, adata.X, adata.var["mz"].to_numpy(), coordinates, polarity=polarity
    )


def study_imzml(
    store: MetadataStore,
    storage: StorageResource,
    study_id: str,
    folder: Any,
    members: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Each member's aligned features (the study's m/z axis) as ``<folder>/<member>.imzML``
    (+ ``.ibd``); ``{member: report}``. One file per member: an imzML is one acquisition."""
    from pathlib import Path

    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    adata = study_anndata(store, storage, study_id, members)
    written = {}
    for member in adata.obs["measurement_id"].cat.categories:
        rows = (adata.obs["measurement_id"] == member).to_numpy()
        written[str(member)] = write_imzml(adata[rows], target / f"{member}.imzML")
    return written


def polarity_of(measurement: Any) -> str | None:
    """The measurement's polarity as imzML writers name it (``positive``/``negative``), when
    it is one of the two."""
    name = studies.field_value(measurement, "settings.polarity")
    return name.lower() if name in ("POSITIVE", "NEGATIVE") else None


def measurement_imzml(
    store: MetadataStore,
    storage: StorageResource,
    measurement_id: str,
    path: Any,
    parameter_set: str | None = None,
) -> Any:
    """The measurement's ``peak_table`` (one parameter set) as a centroided imzML at ``path``."""
    adata = measurement_anndata(store, storage, measurement_id, parameter_set)
    doc = store.get(store.schema.Measurement, measurement_id).doc
    return write_imzml(adata, path, polarity=polarity_of(doc))


@dataclass(frozen=True)
class ComparedFeature:
    """A study whose comparison holds a feature at a searched m/z: where to look at it."""

    study_id: str
    feature: int
    mz: float
    #: the smallest q-value of the feature over the study's contrasts (NaN: untestable)
    q_value: float


def studies_comparing(
    store: MetadataStore,
    storage: StorageResource,
    mz: float,
    ppm: float,
    measurement_ids: Sequence[str],
) -> dict[str, list[ComparedFeature]]:
    """``{measurement id: [ComparedFeature, …]}``: the studies each of ``measurement_ids`` is a
    member of whose current comparison has a feature within ``mz ± ppm`` (the m/z search links
    its hits to them). Studies not computed yet, or stale, are left out."""
    if not measurement_ids:
        return {}
    page = store.search(
        store.schema.Study, filters={"member_ids": sorted(set(measurement_ids))}, page_size=100
    )
    wanted = set(measurement_ids)
    found: dict[str, list[ComparedFeature]] = {}
    for study in page.hits:
        try:
            manifests = current_manifests(store, storage, study.id)
        except (ResultNotReady, StaleStudyResult):
            continue
        axis = read_npy(storage, manifests["aligned_features"]["axis_mz"])
        if axis.size == 0:
            continue
        nearest = int(np.argmin(np.abs(axis - mz)))
        if abs(float(axis[nearest]) - mz) > mz * ppm * 1e-6:
            continue
        table = comparison_table(storage, manifests["study_comparison"])
        q = table.loc[table["feature"] == nearest, "q_value"].min()
        hit = ComparedFeature(study.id, nearest, float(axis[nearest]), float(q))
        for member in wanted.intersection(study.member_ids or []):
            found.setdefault(member, []).append(hit)
    return found
