"""The notebook client: the catalog, a measurement's spectra and results, parameter sets, runs.

Everything is read on demand: ``Measurement.spectra(rows=..., cols=...)`` reads only those
spectra from the imzML in storage (ranged reads, local or S3), results come from where the
workflows wrote them (:mod:`em2q.results`), runs are launched through the Dagster webserver
(:mod:`em2q.dagster_api`). Roles are the platform's (:mod:`em2q_resources.auth`): technicians
read, upload and run published workflows; scientists also save parameter sets; admins also
publish workflows and delete.

Example::

    from em2q.client import Catalog, ParameterSet

    catalog = Catalog()                       # EM2Q_* settings, else the running `em2q dev`
    table = catalog.search("kidney", settings__polarity="POSITIVE")
    m = catalog.measurement(table.index[0])
    block = m.spectra(rows=slice(0, 2))       # an em2q_msi SpectraBlock with its m/z axis
    strict = ParameterSet.save("strict", {"peak_picking": {"snr_threshold": 5}}, "fewer peaks")
    launch = m.run("reprocess", strict)       # a Dagster backfill; launch.wait()
    m.results(strict).qc_report()["ok"]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from em2q.connect import Connections, connect
from em2q.dagster_api import DagsterAPI, WorkflowStatus
from em2q.filters import keyword_filters, parse_filters
from em2q.results import MeasurementResults, ResultNotReady, measurement_grid, open_raw
from em2q_msi import spatial
from em2q_msi.geometry import PixelGrid
from em2q_msi.imzml import ImzML
from em2q_msi.parameters import ProcessingParameters
from em2q_msi.qc import MeanSpectrumAccumulator
from em2q_msi.spectra import SpectraBlock
from em2q_resources import lifecycle, rois
from em2q_resources import parameter_sets as ps
from em2q_resources import workflows as wf
from em2q_resources.auth import Action, Authenticator, Role, Unauthenticated, User, require
from em2q_resources.connections import NoElasticsearch as NoCatalog
from em2q_resources.metadata import DocumentNotFound, load_schema, peak_index
from em2q_resources.metadata.schema import to_document
from em2q_resources.settings import Settings
from em2q_resources.storage import StorageResource, measurement_prefixes

if TYPE_CHECKING:
    from em2q_resources.metadata.store import MetadataStore

__all__ = [
    "Catalog",
    "Study",
    "DeletionPlan",
    "DeletionRefused",
    "Measurement",
    "NoCatalog",
    "ParameterSet",
    "Roi",
    "WorkflowLaunch",
    "delete_measurement",
    "deletion_plan",
]


def _claimed_user(signed_in: User, claimed: User) -> User:
    """``claimed`` when local mode lets the local user act as it (trying out what a technician
    sees): a role no higher than the local user's. A claim never raises anyone's rights (and
    outside local mode the caller refuses it before this)."""
    order = list(Role)
    if order.index(Role(claimed.role)) > order.index(Role(signed_in.role)):
        raise Unauthenticated(
            f"you are {signed_in}; Catalog(user=…) may not act with the {claimed.role} role"
        )
    return claimed


def measurement_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a catalog table (CLI, notebook)."""
    settings = doc.get("settings", {})
    sample = doc.get("sample") or {}
    facts = doc.get("facts") or {}
    return {
        "id": doc["id"],
        "title": doc["title"],
        "status": doc["status"],
        "polarity": settings.get("polarity"),
        "analyzer": settings.get("analyzer"),
        "source": settings.get("source"),
        "resolving_power": settings.get("resolving_power"),
        "organism": sample.get("organism"),
        "organ": sample.get("organ"),
        "pixels_x": facts.get("pixels_x"),
        "pixels_y": facts.get("pixels_y"),
        "spectra": facts.get("spectra_count"),
        "operator": doc.get("operator"),
        "uploaded_at": doc.get("uploaded_at"),
    }


class Catalog:
    """The platform as one object: search, measurements, parameter sets, workflows.

    ``settings`` default to the ``EM2Q_*`` environment (and a running ``em2q dev``). Who you
    are comes from a login, never from a claim: ``token`` (an API token, checked by the
    configured authenticator), else the local user (``EM2Q_LOCAL_ROLE``) in local mode. ``user``
    is accepted only in local mode and with a role no higher than the local user's (a notebook
    trying out what a technician sees); in token or header mode it raises ``Unauthenticated``.
    """

    _current: Catalog | None = None

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        token: str | None = None,
        user: User | None = None,
        store: MetadataStore | None = None,
        storage: StorageResource | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.connections: Connections = connect(self.settings, store=store, storage=storage)
        self.store = self.connections.store
        self.storage = self.connections.storage
        authenticator = Authenticator.from_settings(self.settings)
        if user is not None and authenticator.mode != "local":
            raise Unauthenticated(
                f"Catalog(user=…) is not a way to sign in with EM2Q_AUTH_MODE={authenticator.mode}"
                ": pass token=… (your API token)"
            )
        if token is not None:
            self.user = authenticator.user_for_token(token)
        else:
            self.user = authenticator.authenticate({})
        if user is not None:
            self.user = _claimed_user(self.user, user)
        self.schema = load_schema()
        Catalog._current = self

    @classmethod
    def current(cls) -> Catalog:
        """The catalog made last in this process (or a new one from the environment)."""
        return cls._current or cls()

    def __repr__(self) -> str:
        return f"Catalog({self.store.url}, prefix={self.settings.index_prefix!r}, user={self.user})"

    @property
    def cache_dir(self) -> Path:
        return self.settings.cache_dir / "imzml-index"

    def dagster(self) -> DagsterAPI:
        return self.connections.dagster

    # ------------------------------------------------------------------ search

    def search(
        self,
        text: str | None = None,
        *,
        where: Sequence[str] = (),
        sort: Sequence[str] = (),
        limit: int = 1000,
        mz: float | None = None,
        ppm: float = 3.0,
        min_tic_fraction: float = 0.0,
        **filters: Any,
    ) -> pd.DataFrame:
        """Measurements matching full ``text`` and filters, one row each (index: id).

        Filters as in the CLI and the web page: ``where=["settings.resolving_power>=5e4"]``, or
        keywords with ``__`` for dots: ``settings__polarity="POSITIVE"``,
        ``sample__organism=["Mus musculus", "Homo sapiens"]``, ``facts__spectra_count=(100,
        None)`` (a range). ``sort``: paths, ``-path`` for descending.

        ``mz``: only measurements whose peak table holds ``mz ± ppm`` with at least
        ``min_tic_fraction`` of the TIC (0.01: 1 %); the matched feature's ``match_mz``,
        ``match_ppm_error``, ``match_tic_fraction`` and ``match_parameter_set`` are columns.
        """
        require(self.user, Action.READ)
        merged = {**parse_filters(where), **keyword_filters(filters)}
        order = [(s[1:], True) if s.startswith("-") else s for s in sort]
        rows, token = [], None
        matches: dict[str, Any] = {}
        while len(rows) < limit:
            size = min(1000, limit - len(rows))
            if mz is None:
                page = self.store.search(
                    self.schema.Measurement, text=text, filters=merged, sort=order,
                    page_size=size, page_token=token,
                )  # fmt: skip
            else:
                from em2q_resources.metadata.peak_index import search_mz

                found = search_mz(
                    self.store, mz, ppm, min_tic_fraction, text=text, filters=merged,
                    facets=(), sort=order, page_size=size, page_token=token,
                )  # fmt: skip
                page = found.page
                matches.update(found.matches)
            rows += [measurement_row(to_document(m)) for m in page.hits]
            token = page.next_page_token
            if token is None:
                break
        columns = list(measurement_row({"id": "", "title": "", "status": ""}))
        frame = pd.DataFrame(rows, columns=columns).set_index("id")
        if mz is not None:
            for column, attribute in (
                ("match_mz", "mz"),
                ("match_ppm_error", "ppm_error"),
                ("match_tic_fraction", "tic_fraction"),
                ("match_parameter_set", "parameter_set_id"),
            ):
                frame[column] = [getattr(matches[i], attribute) for i in frame.index]
        return frame

    def measurement(self, measurement_id: str) -> Measurement:
        require(self.user, Action.READ)
        return Measurement(self, self.store.get(self.schema.Measurement, measurement_id).doc)

    def upload(self, imzml: str | Path, setup: dict | str | Path, **kwargs: Any) -> Measurement:
        """Validate and register an imzML/ibd pair (see ``em2q.upload.upload_measurement``)."""
        from em2q.upload import upload_measurement

        require(self.user, Action.UPLOAD)
        kwargs.setdefault("progress", False)
        kwargs.setdefault("cache_dir", self.cache_dir)
        kwargs["uploaded_by"] = self.user.name
        kwargs.setdefault("dagster", self.dagster())  # the ingest run starts at once
        doc = upload_measurement(
            imzml, setup=setup, store=self.store, storage=self.storage, **kwargs
        )
        return Measurement(self, doc)

    def delete(self, measurement_id: str) -> None:
        """Delete a measurement, its files, results and records (admins only)."""
        delete_measurement(self.store, self.storage, measurement_id, self.user)

    # ------------------------------------------------------------------ parameter sets

    def parameter_sets(self) -> pd.DataFrame:
        """Every saved version of every parameter set (index: id)."""
        require(self.user, Action.READ)
        self.store.refresh()
        page = self.store.search(
            self.schema.ParameterSet, sort=["name", ("version", True)], page_size=1000
        )
        rows = [
            {"id": p.id, "name": p.name, "version": p.version, "author": p.author,
             "created_at": p.created_at, "comment": p.comment, "content_hash": p.content_hash}
            for p in page.hits
        ]  # fmt: skip
        columns = ["id", "name", "version", "author", "created_at", "comment", "content_hash"]
        return pd.DataFrame(rows, columns=columns).set_index("id")

    def parameter_set(self, name_or_id: str = ps.DEFAULT_NAME) -> ParameterSet:
        require(self.user, Action.READ)
        return ParameterSet(ps.resolve(self.store, name_or_id).id, self)

    # ------------------------------------------------------------------ provenance

    def stale(
        self,
        parameter_set: ParameterSet | str | None = None,
        since_code_version: str | None = None,
        measurement_ids: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """The partitions whose code, parameter set or inputs changed since their results were
        made (``em2q stale``; ``measurement_ids`` keeps only those), with the recorded seconds
        a rerun would take."""
        from em2q import provenance

        require(self.user, Action.READ)
        name = str(parameter_set) if parameter_set is not None else None
        report = provenance.stale(self.store, name, since_code_version, measurement_ids)
        return pd.DataFrame(provenance.as_rows(report))

    def verify(self, measurement_id: str | None = None) -> Any:
        """Re-hash stored results against their records (``em2q verify``); ``.problems``."""
        from em2q import provenance

        require(self.user, Action.READ)
        return provenance.verify(self.store, self.storage, measurement_id)

    # ------------------------------------------------------------------ workflows

    def workflows(self) -> pd.DataFrame:
        """The code-defined workflows, whether published, and whether you may start them."""
        published = wf.published(self.store)
        yours = {w.name for w in wf.startable(self.store, self.user)}
        rows = [
            {"name": w.name, "published": w.name in published, "you_may_start": w.name in yours,
             "assets": ", ".join(w.assets), "description": w.description}
            for w in wf.WORKFLOWS.values()
        ]  # fmt: skip
        return pd.DataFrame(rows).set_index("name")

    def publish_workflow(self, name: str, description: str | None = None) -> Any:
        """Make a code-defined workflow startable by technicians (admins only)."""
        return wf.publish(self.store, name, self.user, description=description)

    # ------------------------------------------------------------------ studies

    def study(self, study_id: str) -> Study:
        require(self.user, Action.READ)
        return Study(self, study_id)

    def studies(self) -> pd.DataFrame:
        """Every study: title, members, design, parameter set (index: id)."""
        from em2q_resources import studies

        require(self.user, Action.READ)
        self.store.refresh()
        rows = [
            {"id": s.id, "title": s.title, "members": len(s.member_ids or []),
             "design": ", ".join(s.design or []), "parameter_set": s.parameter_set}
            for s in studies.list_studies(self.store)
        ]  # fmt: skip
        columns = ["id", "title", "members", "design", "parameter_set"]
        return pd.DataFrame(rows, columns=columns).set_index("id")


class Study:
    """A study: measurements compared between the groups of a design (``em2q_resources.studies``).

    Example::

        st = Study.create("lesions", ["m-1", "m-2", ...], design=["sample.condition"])
        st.add("m-7")
        st.run()                          # reference, alignment (new members only), comparison
        st.comparison()                   # one row per feature and contrast
        st.features()                     # AnnData: pixels × features, obsm["spatial"]
    """

    def __init__(self, catalog: Catalog, study_id: str) -> None:
        from em2q_resources import studies

        self.catalog = catalog
        self.id = study_id
        self.doc = studies.get(catalog.store, study_id)

    def __repr__(self) -> str:
        return f"Study({self.id!r}, {len(self.members)} members, design={self.design})"

    @classmethod
    def create(
        cls,
        study_id: str,
        members: Sequence[str] = (),
        *,
        design: Sequence[str] = ("sample.condition",),
        title: str | None = None,
        parameter_set: str = ps.DEFAULT_NAME,
        description: str | None = None,
        catalog: Catalog | None = None,
        groups: Mapping[str, str] | None = None,
        rois: Sequence[tuple[str, str, str]] | None = None,
    ) -> Study:
        """Define a study: its members, grouping fields and the parameter set whose ``study``
        values compare them; or ``groups={member: label}`` to group them by hand (no design);
        or ``rois=[(measurement, roi name, group), …]`` to compare ROIs (each ROI's mean is a
        replicate; the members are their measurements)."""
        from em2q_resources import studies

        catalog = catalog or Catalog.current()
        require(catalog.user, Action.START_WORKFLOW)
        studies.create(
            catalog.store, study_id, title=title or study_id,
            design=[] if groups is not None or rois else list(design), members=list(members),
            parameter_set=parameter_set, description=description, author=catalog.user.name,
            groups=groups, rois=list(rois) if rois else None,
        )  # fmt: skip
        return cls(catalog, study_id)

    @property
    def members(self) -> list[str]:
        return list(self.doc.member_ids or [])

    @property
    def design(self) -> list[str]:
        return list(self.doc.design or [])

    def groups(self) -> dict[str, str]:
        """``{member: group}`` from the design fields (members still in the catalog)."""
        from em2q_resources import studies

        return studies.member_groups(self.catalog.store, self.doc)

    def missing(self) -> list[str]:
        """Members deleted from the catalog since they were added (left out of the results)."""
        from em2q_resources import studies

        return studies.missing_members(self.catalog.store, self.doc)

    def add(self, *measurement_ids: str) -> Study:
        """Add measurements; the next :meth:`run` aligns only them (plus the reference)."""
        from em2q_resources import studies

        require(self.catalog.user, Action.START_WORKFLOW)
        self.doc = studies.add_members(self.catalog.store, self.id, list(measurement_ids))
        return self

    def run(self) -> str:
        """Materialize the study's assets in Dagster; returns the run id."""
        require(self.catalog.user, Action.START_WORKFLOW)
        return self.catalog.dagster().request_study(self.id, self.catalog.user)

    def features(self, as_dataframe: bool = False, members: Sequence[str] | None = None) -> Any:
        """Pixels × features of the members: an AnnData (scverse conventions), or with
        ``as_dataframe`` a DataFrame (rows: pixels, columns: feature m/z, plus obs columns)."""
        from em2q.study_results import study_anndata

        adata = study_anndata(self.catalog.store, self.catalog.storage, self.id, members)
        if not as_dataframe:
            return adata
        values = pd.DataFrame(
            adata.X.toarray(), index=adata.obs_names, columns=adata.var["mz"].to_numpy()
        )
        return pd.concat([adata.obs, values], axis=1)

    def comparison(self) -> pd.DataFrame:
        """One row per feature and contrast: m/z, group means, fold change, p and q values."""
        from em2q.study_results import comparison_table, current_manifests

        found = current_manifests(self.catalog.store, self.catalog.storage, self.id)
        return comparison_table(self.catalog.storage, found["study_comparison"])

    def segmentation(self) -> dict[str, Any]:
        """The study's segmentation (one numbering for all members): ``k``, ``note``,
        ``segments`` (colour, pixels, top m/z by effect size) and ``maps`` ``{member: segment
        map (rows × columns, -1 not acquired)}``; ``StudyNotComputed`` before it is run."""
        from em2q.study_results import study_segmentation
        from em2q_resources.results_layout import read_json, read_npy

        require(self.catalog.user, Action.READ)
        storage = self.catalog.storage
        found = study_segmentation(self.catalog.store, storage, self.id)
        summary = read_json(storage, found["outputs"]["top_ions"])
        return {
            "k": found["k"],
            "note": found["note"],
            "segments": summary["segments"],
            "maps": {m: read_npy(storage, v["segment_map"]) for m, v in found["members"].items()},
        }

    def pca(self) -> pd.DataFrame:
        """The members' PCA scores and groups (``attrs['explained_variance_ratio']``)."""
        from em2q.study_results import current_manifests, pca_table

        found = current_manifests(self.catalog.store, self.catalog.storage, self.id)
        return pca_table(self.catalog.storage, found["study_comparison"])

    def export_h5ad(self, path: str | Path) -> Path:
        """The study's feature matrix as ``.h5ad`` (``anndata.read_h5ad`` reads it back)."""
        from em2q.study_results import write_h5ad

        write_h5ad(self.features(), path)
        return Path(path)

    def export_imzml(self, folder: str | Path, members: Sequence[str] | None = None) -> dict:
        """Each member's aligned features as a centroided imzML ``<folder>/<member>.imzML``
        (pyimzml reads them back; METASPACE and Cardinal take them): ``{member: report}``."""
        from em2q.study_results import study_imzml

        require(self.catalog.user, Action.READ)
        return study_imzml(self.catalog.store, self.catalog.storage, self.id, folder, members)


class ParameterSet:
    """A saved, immutable, versioned parameter set (``name@vN``)."""

    def __init__(self, saved: Any, catalog: Catalog) -> None:
        if isinstance(saved, str):
            saved = catalog.store.get_parameter_set(saved)
        self._saved = saved
        self.catalog = catalog
        self.id: str = saved.id
        self.name: str = saved.name
        self.version: int = saved.version
        self.author: str = saved.author
        self.created_at: str = saved.created_at
        self.comment: str | None = saved.comment
        self.values: dict[str, dict[str, Any]] = ps.values_from_documents(saved.values)
        #: the one hash (over the normalised values): its results' folder
        self.content_hash: str = ps.content_hash(self.values)

    @property
    def params(self) -> ProcessingParameters:
        """The values as the processing core's parameters (defaults filled in)."""
        return ps.validate(self.values)

    def __repr__(self) -> str:
        return f"ParameterSet({self.id!r}, by {self.author}, {self.comment!r})"

    def __str__(self) -> str:
        return self.id

    @classmethod
    def save(
        cls,
        name: str,
        values: Mapping[str, Mapping[str, Any]] | ProcessingParameters,
        comment: str | None = None,
        *,
        catalog: Catalog | None = None,
    ) -> ParameterSet:
        """Save ``values`` ({step: {name: value}}) as a new version of ``name`` (scientists and
        admins). The same values as a saved version return that version; never overwrites."""
        catalog = catalog or Catalog.current()
        require(catalog.user, Action.SAVE_PARAMETER_SET)
        saved = ps.save(catalog.store, name, values, author=catalog.user.name, comment=comment)
        return cls(saved, catalog)

    @classmethod
    def get(cls, name_or_id: str, *, catalog: Catalog | None = None) -> ParameterSet:
        return (catalog or Catalog.current()).parameter_set(name_or_id)


@dataclass
class WorkflowLaunch:
    """A started workflow (a Dagster backfill): follow it here or in the Dagster UI."""

    id: str
    workflow: str
    measurement_id: str
    parameter_set: str
    url: str
    api: DagsterAPI

    def status(self) -> WorkflowStatus:
        return self.api.run_status(self.id)

    def wait(self, timeout_s: float = 1800.0) -> WorkflowStatus:
        return self.api.wait(self.id, timeout_s=timeout_s)

    def _repr_html_(self) -> str:
        return f'{self.workflow} on {self.measurement_id}: <a href="{self.url}">{self.id}</a>'


class Measurement:
    """One measurement: its metadata, its spectra (read on demand) and its results."""

    def __init__(self, catalog: Catalog, doc: Any) -> None:
        self.catalog = catalog
        self.doc = doc
        self.id: str = doc.id
        self._reader: ImzML | None = None

    def __repr__(self) -> str:
        return f"Measurement({self.id!r}, {self.doc.title!r}, {self.status})"

    @property
    def status(self) -> str:
        return load_schema().MeasurementStatus._VALUES_TO_NAMES[self.doc.status]

    @property
    def status_reason(self) -> lifecycle.Reason | None:
        """Why it is in its status: kind, message, root error (type, message), asset and
        partition it happened in, the Dagster run and link, and ``next_action``."""
        return lifecycle.reason_of(self.doc)

    def refresh(self) -> Measurement:
        """Read the document again (status and reason move while it is processed)."""
        require(self.catalog.user, Action.READ)
        self.doc = self.catalog.store.get(load_schema().Measurement, self.id).doc
        return self

    def why(self) -> str:
        """The status, why, and the one action that helps (read fresh from the catalog)."""
        self.refresh()
        reason = self.status_reason
        if reason is None:
            return f"{self.id}: {self.status} {self.doc.status_reason or ''}".rstrip()
        lines = [f"{self.id}: {self.status} — {reason.summary()}"]
        if reason.run_url:
            lines.append(f"run: {reason.run_url}")
        lines.append(f"next: {reason.advice(self.id)}")
        return "\n".join(lines)

    @property
    def metadata(self) -> dict[str, Any]:
        """The Measurement document as JSON-ready data."""
        return to_document(self.doc)

    @property
    def reader(self) -> ImzML:
        """The imzML in storage, opened for ranged reads."""
        require(self.catalog.user, Action.READ)
        if self._reader is None:
            self._reader = open_raw(self.doc, self.catalog.storage, self.catalog.cache_dir)
        return self._reader

    @property
    def coordinates(self) -> np.ndarray:
        """1-based imzML pixel coordinates ``(x, y, z)`` of every spectrum, in file order."""
        return self.reader.coordinates

    @property
    def grid(self) -> PixelGrid:
        """The pixel grid of its images: the bounding box of the acquired coordinates
        (``origin`` (x, y, z), ``shape`` (nz, ny, nx), ``pixel_size_um``); image index
        ``[row, col]`` is imzML ``(origin_x + col, origin_y + row)``."""
        return measurement_grid(self.doc, self.reader)

    # ------------------------------------------------------------------ spectra

    def spectrum_indices(
        self,
        *,
        rows: slice | range | int | tuple[int, int] | None = None,
        cols: slice | range | int | tuple[int, int] | None = None,
        region: np.ndarray | None = None,
    ) -> np.ndarray:
        """File-order indices of the spectra in image ``rows``/``cols`` (0-based, y/x, on
        ``grid``) or in a boolean ``region`` mask of the image's shape."""
        coordinates = self.coordinates
        where = self.grid.indices(coordinates)
        row, col = where[-2], where[-1]
        keep = np.ones(len(coordinates), bool)
        for axis, selection in ((row, rows), (col, cols)):
            if selection is not None:
                keep &= _in_selection(axis, selection)
        if region is not None:
            mask = np.asarray(region, bool)
            if mask.ndim != len(where):
                raise ValueError(f"region has {mask.ndim} dimensions, the images have {len(where)}")
            inside = np.all([w < n for w, n in zip(where, mask.shape, strict=True)], axis=0)
            keep &= inside
            keep[inside] &= mask[tuple(w[inside] for w in where)]
        return np.flatnonzero(keep)

    def spectra(
        self,
        *,
        rows: slice | range | int | tuple[int, int] | None = None,
        cols: slice | range | int | tuple[int, int] | None = None,
        region: np.ndarray | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> SpectraBlock:
        """Only the selected spectra, read from storage: an ``em2q_msi`` SpectraBlock (``mz``:
        the shared axis of continuous data, else per spectrum with ``offsets``; ``intensity``;
        ``coordinates``), ready for ``em2q_msi.preprocess`` and ``em2q_msi.peaks``."""
        if indices is None:
            chosen = self.spectrum_indices(rows=rows, cols=cols, region=region)
        else:
            chosen = np.unique(np.asarray(indices, dtype=np.int64))
            if chosen.size and (chosen[0] < 0 or chosen[-1] >= self.reader.n_spectra):
                raise IndexError(f"spectrum indices must lie in 0..{self.reader.n_spectra - 1}")
        if chosen.size == 0:
            raise ValueError(f"the selection holds no spectra of {self.id}")
        return _read_indices(self.reader, chosen)

    def spectrum(self, x: int, y: int) -> tuple[np.ndarray, np.ndarray]:
        """``(mz, intensity)`` of the pixel at imzML coordinates ``(x, y)`` (1-based)."""
        coordinates = self.coordinates
        hit = np.flatnonzero((coordinates[:, 0] == x) & (coordinates[:, 1] == y))
        if hit.size == 0:
            raise KeyError(f"{self.id} has no spectrum at x={x}, y={y}")
        return self.reader.spectrum(int(hit[0]))

    def mean_spectrum(self, parameter_set: ParameterSet | str | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """``(mz, mean intensity)``: the workflow's result, or computed from the raw spectra
        when the measurement has not been processed yet."""
        try:
            return self.results(parameter_set).mean_spectrum()
        except ResultNotReady:
            pass
        reader = self.reader
        accumulator = MeanSpectrumAccumulator.for_measurement(reader.mode, reader.mz_range())
        for block in reader.iter_blocks():
            accumulator.add(block)
        return accumulator.result()

    def ion_image(
        self, mz: float, ppm: float | None = None, parameter_set: ParameterSet | str | None = None
    ) -> np.ndarray:
        """The ion image of ``mz`` ± ``ppm`` on ``grid`` (``(rows, cols)``, 3-D: ``(planes, rows,
        cols)``), NaN where no spectrum was acquired."""
        return self.results(parameter_set).ion_image(mz, ppm)

    def tic_image(self) -> np.ndarray:
        return self.results().tic_image()

    # ------------------------------------------------------------------ processing

    def run(
        self,
        workflow: str = "standard",
        parameter_set: ParameterSet | str | None = None,
        *,
        wait: bool = False,
    ) -> WorkflowLaunch:
        """Launch a workflow on this measurement with a parameter set (technicians: published
        workflows only). ``wait=True`` returns once it finished."""
        name = str(parameter_set) if parameter_set is not None else None
        api = self.catalog.dagster()
        launched = api.launch_workflow(workflow, self.id, name, self.catalog.user)
        launch = WorkflowLaunch(
            launched, workflow, self.id, name or "default", api.ui_url_for_run(launched), api
        )
        if wait:
            launch.wait()
        return launch

    def results(self, parameter_set: ParameterSet | str | None = None) -> MeasurementResults:
        """This measurement's results under a parameter set (default: ``default``)."""
        require(self.catalog.user, Action.READ)
        return MeasurementResults(
            self.id,
            str(parameter_set) if parameter_set is not None else None,
            store=self.catalog.store,
            storage=self.catalog.storage,
            cache_dir=self.catalog.cache_dir,
        )

    def certificate(
        self, asset: str, parameter_set: ParameterSet | str | None = None, *, rerun: bool = False
    ) -> Any:
        """The reproducibility certificate of ``asset`` (``em2q certificate``): ``.ok``,
        ``.problems``, ``.to_dict()``; ``rerun=True`` recomputes it in a scratch place."""
        from em2q import provenance

        require(self.catalog.user, Action.START_WORKFLOW if rerun else Action.READ)
        name = str(parameter_set) if parameter_set is not None else None
        store, storage = self.catalog.store, self.catalog.storage
        certified = provenance.certificate(store, storage, self.id, asset, name)
        if rerun:
            provenance.rerun(certified, store, storage, self.catalog.settings)
        return certified

    def features(self, parameter_set: ParameterSet | str | None = None) -> Any:
        """The peak table (spectra × features) as an AnnData: ``obs`` x, y, measurement id and
        sample fields, ``var`` m/z, ``obsm['spatial']``; ``.write_h5ad`` exports it."""
        from em2q.study_results import measurement_anndata

        require(self.catalog.user, Action.READ)
        name = str(parameter_set) if parameter_set is not None else None
        return measurement_anndata(self.catalog.store, self.catalog.storage, self.id, name)

    def export_imzml(
        self, path: str | Path, parameter_set: ParameterSet | str | None = None
    ) -> Any:
        """The peak table as a centroided imzML (processed mode, ``.ibd`` beside it) at
        ``path``, for METASPACE or Cardinal: a report with ``.imzml_path``, ``.spectra``,
        ``.peaks``."""
        from em2q.study_results import measurement_imzml

        require(self.catalog.user, Action.READ)
        name = str(parameter_set) if parameter_set is not None else None
        return measurement_imzml(self.catalog.store, self.catalog.storage, self.id, path, name)

    def diff(
        self,
        parameter_set_a: ParameterSet | str,
        parameter_set_b: ParameterSet | str,
        tolerance_ppm: float = 5.0,
    ):
        """This measurement's peak tables under two parameter sets compared: an
        ``em2q_msi.parameter_diff.ParameterSetDiff`` (``.gained_mz``, ``.lost_mz``,
        ``.overlap``, ``.correlation`` per paired feature, ``.tic_ratio``, ``.summary()``)."""
        from em2q.results import diff_parameter_sets

        return diff_parameter_sets(
            self.results(parameter_set_a), self.results(parameter_set_b), tolerance_ppm
        )

    # ------------------------------------------------------------------ spatial analysis

    def segmentation(self, parameter_set: ParameterSet | str | None = None) -> dict[str, Any]:
        """The ``segmentation`` result: ``k``, ``segments`` (colour, pixels, top m/z by effect
        size), ``labels`` per spectrum, ``segment_map`` image, ``feature_mz``, ``mean_spectra``."""
        return self.results(parameter_set).segmentation()

    def colocalisation(
        self,
        mz: float,
        *,
        top: int = 10,
        method: str = "pearson",
        hotspot_percentile: float = 99.0,
        normalisation: str = "tic",
        tolerance_ppm: float = 20.0,
        parameter_set: ParameterSet | str | None = None,
    ) -> pd.DataFrame:
        """The ``top`` features of the peak table whose ion images are most like that of
        ``mz`` (the nearest feature within ``tolerance_ppm``), after per-pixel ``normalisation``
        and clipping each image at its ``hotspot_percentile``; ranked by ``method`` (``pearson``
        or ``cosine``). Columns: ``mz``, ``similarity``."""
        feature_mz, matrix = self.results(parameter_set).peak_table()
        target, ranked = spatial.colocalised_features(
            feature_mz, matrix, mz, tolerance_ppm=tolerance_ppm, method=method,
            hotspot_percentile=hotspot_percentile, normalisation=normalisation,
        )  # fmt: skip
        table = pd.DataFrame(
            {"mz": feature_mz[ranked.order[:top]], "similarity": ranked.scores[:top]}
        )
        table.attrs["target_mz"] = float(feature_mz[target])
        return table

    # ------------------------------------------------------------------ regions of interest

    def rois(self) -> pd.DataFrame:
        """The measurement's regions of interest: name, colour, pixel count, author, created."""
        require(self.catalog.user, Action.READ)
        rows = [
            {"name": r.name, "colour": r.colour, "pixels": r.pixel_count, "author": r.author,
             "created_at": r.created_at, "description": r.description}
            for r in rois.list_rois(self.catalog.store, self.id)
        ]  # fmt: skip
        columns = ["name", "colour", "pixels", "author", "created_at", "description"]
        return pd.DataFrame(rows, columns=columns).set_index("name")

    def roi(self, name: str) -> Roi:
        """One region of interest (``DocumentNotFound`` naming it otherwise)."""
        require(self.catalog.user, Action.READ)
        return Roi(self, rois.get(self.catalog.store, self.id, name))

    def add_roi(
        self,
        name: str,
        polygon: Mapping[str, Any] | Sequence[Sequence[float]],
        *,
        colour: str | None = None,
        description: str | None = None,
        replace: bool = False,
        on: str = "msi",
    ) -> Roi:
        """Save a ROI: a GeoJSON Polygon/MultiPolygon or a list of ``(x, y)`` vertices, in
        image pixel coordinates of ``grid`` (x = column, y = row, pixel centres at +0.5;
        ``em2q_msi.spatial.rectangle`` makes a box). ``on="optical"``: the polygon is in the
        optical image's pixels and the registration carries it onto the MSI grid
        (``em2q_resources.optical.NotRegistered`` before one is stored). Scientists and admins."""
        geometry = polygon if isinstance(polygon, Mapping) else _polygon(polygon)
        options = {"colour": colour, "description": description, "grid": self.grid,
                   "replace": replace}  # fmt: skip
        if on == "optical":
            from em2q_resources import optical

            saved = optical.save_roi(
                self.catalog.store, self.catalog.user, self.id, name, geometry, **options
            )
        elif on == "msi":
            saved = rois.save(
                self.catalog.store, self.catalog.user, self.id, name, geometry, **options
            )
        else:
            raise ValueError(f"on={on!r}: a ROI is drawn on 'msi' (the default) or 'optical'")
        return Roi(self, saved)

    def delete_roi(self, name: str) -> None:
        """Delete a ROI (its author or an admin)."""
        rois.delete(self.catalog.store, self.catalog.user, self.id, name)

    # ------------------------------------------------------------------ optical image

    def add_optical_image(self, image: str | Path | bytes) -> dict[str, Any]:
        """Store an optical (microscopy, H&E) PNG/JPEG/TIFF image with the measurement (a
        file path or its bytes), replacing one there was and its registration; returns the
        stored document (format, size in pixels, checksum)."""
        from em2q_resources import optical

        if isinstance(image, bytes):
            data, name = image, "optical"
        else:
            data, name = Path(image).read_bytes(), Path(image).name
        doc = optical.save_image(
            self.catalog.store, self.catalog.storage, self.catalog.user, self.id, data, name
        )
        return to_document(doc)

    def register_optical(self, landmarks: Sequence[Sequence[float]]) -> dict[str, Any]:
        """Register the optical image to the MSI grid: ``landmarks`` ``[(x, y, msi_x, msi_y)]``
        (optical and MSI image pixel coordinates, 3 or more not in a row). Returns the stored
        transform: ``matrix`` (2×3, optical → MSI), ``residuals_px``, ``rms_px``."""
        from em2q_resources import optical

        doc = optical.register(self.catalog.store, self.catalog.user, self.id, landmarks)
        return optical.transform_of(doc)

    def optical_overlay(
        self, layer: str = "tic", mz: float | None = None, opacity: float = 0.5,
        parameter_set: ParameterSet | str | None = None,
    ) -> np.ndarray:  # fmt: skip
        """The optical image (as displayed) with ``layer`` (``tic``, ``ion`` of ``mz``,
        ``segments``) over it at ``opacity``: an RGB ``uint8`` array."""
        import io

        from PIL import Image

        from em2q_resources import optical

        require(self.catalog.user, Action.READ)
        doc = optical.get(self.catalog.store, self.id)
        rgba = optical.layer_for(self.results(parameter_set), layer, mz)
        png = optical.overlay_png(self.catalog.storage, doc, rgba, opacity)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def runs(self) -> pd.DataFrame:
        """The measurement's workflow runs, newest first."""
        runs = self.results().runs()
        rows = [
            {"id": r.id, "run_id": r.run_id, "asset": r.workflow, "partition": r.partition,
             "parameter_set": r.parameter_set_id,
             "status": load_schema().RunStatus._VALUES_TO_NAMES[r.status],
             "started_at": r.started_at, "duration_s": r.duration_s, "error": r.error}
            for r in runs
        ]  # fmt: skip
        return pd.DataFrame(rows)


class Roi:
    """A region of interest of a measurement: its stored document (``doc``), its geometry,
    the spectra inside it (ranged reads of only those) and their mean spectrum."""

    def __init__(self, measurement: Measurement, doc: Any) -> None:
        self.measurement = measurement
        self.doc = doc
        self.name: str = doc.name

    def __repr__(self) -> str:
        return f"Roi({self.measurement.id!r}, {self.name!r}, {self.doc.pixel_count} pixels)"

    @property
    def geometry(self) -> dict[str, Any]:
        """GeoJSON, image pixel coordinates."""
        return rois.geometry_of(self.doc)

    @property
    def mask(self) -> np.ndarray:
        """Boolean ``(rows, cols)`` image of the pixels inside."""
        grid = self.measurement.grid
        return spatial.roi_mask(self.geometry, (grid.ny, grid.nx))

    def spectrum_indices(self) -> np.ndarray:
        """File-order indices of the spectra inside (acquired pixels only)."""
        m = self.measurement
        return spatial.roi_spectrum_indices(self.geometry, m.grid, m.coordinates)

    def spectra(self) -> SpectraBlock:
        """Only the ROI's spectra, read from storage as one range per run of consecutive
        spectra (a ROI row is one run)."""
        indices = self.spectrum_indices()
        if indices.size == 0:
            raise ValueError(f"ROI {self.name!r} of {self.measurement.id} holds no acquired pixel")
        return _read_indices(self.measurement.reader, indices)

    def qc(self, parameters: ParameterSet | str | None = None) -> dict[str, float | int]:
        """The ROI's QC numbers (pixels, median and mean TIC, median SNR, median peak count,
        fraction of empty spectra) from only its spectra, under ``parameters`` (default set)."""
        from em2q_msi import qc

        params = ps.resolve(
            self.measurement.catalog.store, str(parameters or ps.DEFAULT_NAME)
        ).params
        return qc.region_summary(qc.spectrum_metrics(self.spectra(), params))

    def mean_spectrum(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mz, mean intensity)`` of the ROI's raw spectra, on the measurement's mean-spectrum
        axis (continuous: its own axis; processed: the platform's ppm bins)."""
        reader = self.measurement.reader
        accumulator = MeanSpectrumAccumulator.for_measurement(reader.mode, reader.mz_range())
        return accumulator.add(self.spectra()).result()


def _polygon(points: Sequence[Sequence[float]]) -> dict[str, Any]:
    ring = [[float(x), float(y)] for x, y in points]
    if ring and ring[0] != ring[-1]:
        ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def _in_selection(axis: np.ndarray, selection: slice | range | int | tuple[int, int]) -> np.ndarray:
    if isinstance(selection, int | np.integer):
        return axis == int(selection)
    if isinstance(selection, tuple):
        selection = slice(*selection)
    if isinstance(selection, range):
        return np.isin(axis, np.asarray(selection))
    if isinstance(selection, slice):
        start = 0 if selection.start is None else selection.start
        stop = np.iinfo(np.int64).max if selection.stop is None else selection.stop
        step = selection.step or 1
        return (axis >= start) & (axis < stop) & ((axis - start) % step == 0)
    raise TypeError(f"rows/cols: use an int, a slice, a range or (start, stop), not {selection!r}")


def _read_indices(reader: ImzML, indices: np.ndarray) -> SpectraBlock:
    """The spectra at sorted ``indices``, read as few contiguous ranges (ranged reads)."""
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    blocks = [reader.read_block(int(run[0]), int(run[-1]) + 1) for run in np.split(indices, breaks)]
    coordinates = np.concatenate([b.coordinates for b in blocks])
    if blocks[0].offsets is None:
        intensity = np.concatenate([b.intensity for b in blocks], axis=0)
        return SpectraBlock(blocks[0].mz, intensity, None, coordinates, int(indices[0]))
    lengths = np.concatenate([np.diff(b.offsets) for b in blocks])
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return SpectraBlock(
        np.concatenate([b.mz for b in blocks]),
        np.concatenate([b.intensity for b in blocks]),
        offsets,
        coordinates,
        int(indices[0]),
    )


class DeletionRefused(RuntimeError):
    """A delete would remove files another measurement's record points at; nothing removed."""


@dataclass
class DeletionPlan:
    """What deleting one measurement removes: storage keys (only under its own two prefixes)
    and ``(entity, id)`` records; shown by ``em2q delete ID --dry-run`` before anything goes."""

    measurement_id: str
    files: list[str]
    records: list[tuple[str, str]]
    #: its peak tables' documents in the m/z search index (removed in bulk, so only counted)
    peak_features: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "measurement": self.measurement_id,
            "files": self.files,
            "records": [f"{entity}/{doc_id}" for entity, doc_id in self.records],
            "peak_features": self.peak_features,
        }


#: file URIs asked of the catalog per request when looking for other owners
_OWNER_QUERY_TERMS = 1000


def deletion_plan(
    store: MetadataStore, storage: StorageResource | None, measurement_id: str, user: User
) -> DeletionPlan:
    """Everything deleting ``measurement_id`` would remove (admins only); refuses
    (:class:`DeletionRefused`) when any of those files belongs to another measurement's record,
    and (``InvalidIdentifier``) an id outside the grammar, before looking anything up."""
    require(user, Action.DELETE)
    schema = load_schema()
    prefixes = measurement_prefixes(measurement_id)
    store.get(schema.Measurement, measurement_id)  # DocumentNotFound before touching anything
    files = [
        key
        for prefix in prefixes
        if storage is not None and storage.exists(prefix)
        for key in storage.find(prefix)
    ]
    urls = [storage.url(key) for key in files] if storage is not None else []
    for start in range(0, len(urls), _OWNER_QUERY_TERMS):
        page = store.search(
            schema.Measurement,
            filters={"files.uri": urls[start : start + _OWNER_QUERY_TERMS]},
            page_size=10,
        )
        others = sorted({m.id for m in page.hits} - {measurement_id})
        if others:
            raise DeletionRefused(
                f"deleting {measurement_id} would remove files of measurement(s) "
                f"{', '.join(others)}; nothing was removed (check those records' files)"
            )
    store.refresh()
    records = [
        (entity.__name__, doc.id)
        for entity in (
            schema.WorkflowRun,
            schema.SpectraPartition,
            schema.QcRecord,
            schema.Roi,
            schema.OpticalImage,
        )
        for doc in store.scan(entity, filters={"measurement_id": measurement_id})
    ]
    peaks = peak_index.count_features(store, measurement_id)
    return DeletionPlan(measurement_id, files, records, peaks)


def delete_measurement(
    store: MetadataStore,
    storage: StorageResource | None,
    measurement_id: str,
    user: User,
    *,
    dry_run: bool = False,
) -> dict[str, int]:
    """Remove a measurement everywhere (admins only): its uploaded files and results in storage
    (only under ``measurements/<id>/`` and ``results/<id>/``; none when ``storage`` is None, as
    for a Thrift service without storage), its spectra partitions, run
    records, QC trend records, ROIs and m/z search documents (``PeakFeature``), then its
    document. Studies keep its id and show it as a missing member
    (``em2q_resources.studies.missing_members``). Returns the counts removed (``dry_run``:
    that would be)."""
    plan = deletion_plan(store, storage, measurement_id, user)
    removed = {"files": len(plan.files), "records": 0, "peak_features": 0}
    if dry_run:
        return {
            "files": len(plan.files),
            "records": len(plan.records),
            "peak_features": plan.peak_features,
        }
    schema = load_schema()
    for prefix in measurement_prefixes(measurement_id) if storage is not None else ():
        storage.remove(prefix, within=prefix)
    for entity_name, doc_id in plan.records:
        try:
            store.delete(getattr(schema, entity_name), doc_id)
            removed["records"] += 1
        except DocumentNotFound:
            pass
    removed["peak_features"] = peak_index.delete_features(store, measurement_id)
    store.delete(schema.Measurement, measurement_id)
    store.refresh()
    return removed
