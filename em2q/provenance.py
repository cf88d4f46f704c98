"""What a result came from, whether it is still what was written, and what a change made stale.

Everything here is read from the recorded provenance: the ``WorkflowRun`` document each step
writes (inputs, outputs with SHA-256 and size, parameter set and hash, code version, engine,
run id, timings) and the uploads' checksums on the ``Measurement``. Used by the CLI
(``em2q verify | stale | reprocess --stale | certificate``), the notebook client and the web
catalog, which only format what these functions return.

- :func:`verify`: re-hash what is in storage against what the runs wrote.
- :func:`stale`: the measurement × chunk partitions whose code, parameter set or inputs differ
  from what their results were made with, with the work a rerun costs (recorded timings).
- :func:`reprocess_plan`: the partitions to request again, per measurement and asset.
- :func:`certificate`: the chain from the uploaded files through every step to a result;
  :func:`rerun` recomputes it in a scratch storage and index and compares bytes.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em2q_resources.catalog import CATALOG, Catalog
from em2q_resources.metadata import load_schema
from em2q_resources.parameter_sets import DEFAULT_NAME, resolve
from em2q_resources.results_layout import checksum_of

if TYPE_CHECKING:
    from em2q_resources.metadata.store import MetadataStore
    from em2q_resources.settings import Settings
    from em2q_resources.storage import StorageResource

#: a result's identity: (asset, partition key, parameter-set hash or None)
ResultKey = tuple[str, str, str | None]


# ----------------------------------------------------------------------------- the records


def succeeded_runs(store: MetadataStore, measurement_id: str | None = None) -> list[Any]:
    """Succeeded ``WorkflowRun`` records (of one measurement, or all), oldest first."""
    schema = load_schema()
    store.refresh(schema.WorkflowRun)
    filters: dict[str, Any] = {"status": "SUCCEEDED"}
    if measurement_id is not None:
        filters["measurement_id"] = measurement_id
    runs = list(store.scan(schema.WorkflowRun, filters=filters))
    return sorted(runs, key=lambda r: (r.finished_at or "", r.id))


def _key(run: Any) -> ResultKey:
    return run.workflow, run.partition or run.measurement_id, run.parameter_set_hash


def newest_results(runs: Iterable[Any]) -> dict[ResultKey, Any]:
    """The newest succeeded run of each result (``runs`` oldest first)."""
    return {_key(run): run for run in runs}


def _current_code_version(catalog: Catalog, asset: str) -> str | None:
    return catalog.code_version(asset) if asset in catalog else None


# ----------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class FileProblem:
    """A file that is not what its run wrote: ``changed`` or ``missing``."""

    measurement_id: str
    asset: str
    partition: str
    name: str
    uri: str
    problem: str
    recorded_sha256: str
    found_sha256: str | None = None


@dataclass
class Verification:
    """The outcome of :func:`verify`: files checked, bytes read, and the problems found."""

    checked: int = 0
    bytes_read: int = 0
    unrecorded: int = 0  # outputs of runs written before checksums were recorded
    problems: list[FileProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def outputs_to_verify(
    store: MetadataStore, measurement_id: str | None = None, asset: str | None = None
) -> list[tuple[Any, Any]]:
    """``(run, output)`` of every file as its newest writer recorded it."""
    newest: dict[str, tuple[Any, Any]] = {}
    for run in succeeded_runs(store, measurement_id):
        if asset is not None and run.workflow != asset:
            continue
        for output in run.outputs or []:
            newest[output.uri] = (run, output)
    return [newest[uri] for uri in sorted(newest)]


def verify(
    store: MetadataStore,
    storage: StorageResource,
    measurement_id: str | None = None,
    asset: str | None = None,
    *,
    progress: Callable[[int], None] | None = None,
    outputs: list[tuple[Any, Any]] | None = None,
) -> Verification:
    """Re-hash each recorded output in storage (one measurement, or all; one asset, or all):
    a file whose SHA-256 differs is ``changed``, one that is gone ``missing``. ``progress``
    gets the bytes read as they are read."""
    found = Verification()
    for run, output in (
        outputs if outputs is not None else outputs_to_verify(store, measurement_id, asset)
    ):
        if not output.sha256:
            found.unrecorded += 1
            continue
        found.checked += 1
        problem = FileProblem(
            run.measurement_id or "", run.workflow, run.partition or "", output.name, output.uri,
            "missing", output.sha256,
        )  # fmt: skip
        try:
            now = checksum_of(storage, output.uri, progress)
        except FileNotFoundError:
            found.problems.append(problem)
            continue
        found.bytes_read += now.size
        if now.sha256 != output.sha256:
            problem = FileProblem(**{**asdict(problem), "problem": "changed"})
            found.problems.append(FileProblem(**{**asdict(problem), "found_sha256": now.sha256}))
    return found


# ----------------------------------------------------------------------------- stale


@dataclass(frozen=True)
class StalePartition:
    """A result that no longer is what the platform would make now, and why."""

    measurement_id: str
    asset: str
    partition: str
    parameter_set_id: str
    reasons: tuple[str, ...]
    made_with_code: str | None
    made_by_run: str
    estimated_s: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": list(self.reasons)}


@dataclass
class StaleReport:
    """:func:`stale`'s answer: the partitions, their count and the recorded seconds they took."""

    parameter_set_id: str
    partitions: list[StalePartition]

    @property
    def count(self) -> int:
        return len(self.partitions)

    @property
    def estimated_s(self) -> float:
        return round(sum(p.estimated_s for p in self.partitions), 3)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parameter_set": self.parameter_set_id,
            "count": self.count,
            "estimated_s": self.estimated_s,
            "partitions": [p.to_dict() for p in self.partitions],
        }


def _chunk_partitions(runs: Iterable[Any], catalog: Catalog) -> list[str]:
    chunked = {spec.name for spec in catalog if spec.chunked}
    keys = {r.partition for r in runs if r.workflow in chunked and r.partition}
    return sorted(keys)


def _read_partitions(catalog: Catalog, asset: str, upstream: str, partition: str, chunks):
    """The partitions of ``upstream`` that ``asset``'s partition ``partition`` reads."""
    if catalog.asset(upstream).chunked:
        return [partition] if catalog.asset(asset).chunked else list(chunks)
    return [partition.split("|", 1)[0]]


def _upload_changes(store: MetadataStore, run: Any) -> list[str]:
    """The uploaded files whose checksum on the Measurement differs from what the run read."""
    schema = load_schema()
    measurement = store.get(schema.Measurement, run.measurement_id).doc
    now = {f.uri: f.checksum for f in measurement.files or []}
    return [
        f"uploaded file {i.name} changed ({i.uri})"
        for i in run.inputs or []
        if i.sha256 and now.get(i.uri) not in (None, i.sha256)
    ]


def _output_digest(run: Any | None) -> str | None:
    if run is None:
        return None
    parts = sorted(f"{o.name}:{o.sha256}" for o in run.outputs or [])
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def stale(
    store: MetadataStore,
    parameter_set: str | None = None,
    since_code_version: str | None = None,
    measurement_ids: Iterable[str] | None = None,
    catalog: Catalog = CATALOG,
) -> StaleReport:
    """The partitions whose results differ from what the platform would make now.

    A partition with a result is stale when its step's code version changed, when it was made
    with another parameter set than ``parameter_set`` (default: ``default``, newest version;
    parameter-dependent assets only), when the uploaded files changed, or when an input it read
    is stale or was since re-made with other bytes (output checksums, so a byte-identical rerun
    upstream leaves it current). Partitions never materialized are not listed (nothing to
    redo). ``since_code_version`` keeps only results made with that code version (a prefix).
    """
    resolved = resolve(store, parameter_set or DEFAULT_NAME)
    by_measurement: dict[str, list[Any]] = defaultdict(list)
    for run in succeeded_runs(store):
        if run.measurement_id:
            by_measurement[run.measurement_id].append(run)
    wanted = set(measurement_ids) if measurement_ids is not None else None
    found: list[StalePartition] = []
    for measurement_id in sorted(by_measurement):
        if wanted is not None and measurement_id not in wanted:
            continue
        found += _stale_of(store, catalog, measurement_id, by_measurement[measurement_id], resolved)
    if since_code_version:
        found = [p for p in found if (p.made_with_code or "").startswith(since_code_version)]
    return StaleReport(resolved.id, found)


def _stale_of(store, catalog: Catalog, measurement_id: str, runs: list[Any], resolved):
    newest = newest_results(runs)
    any_hash: dict[tuple[str, str], Any] = {}
    for run in runs:
        any_hash[(run.workflow, run.partition or measurement_id)] = run
    history: dict[ResultKey, list[Any]] = defaultdict(list)
    for run in runs:
        history[_key(run)].append(run)
    chunks = _chunk_partitions(runs, catalog)
    state: dict[tuple[str, str], bool] = {}  # (asset, partition) -> stale
    found: list[StalePartition] = []
    for spec in catalog:
        digest = resolved.content_hash if spec.parameter_dependent else None
        for partition in chunks if spec.chunked else [measurement_id]:
            run = newest.get((spec.name, partition, digest))
            reasons: list[str] = []
            if run is None:
                other = any_hash.get((spec.name, partition))
                if other is None:
                    continue  # never made: not stale, missing
                run = other
                reasons.append(
                    f"made with parameter set {other.parameter_set_id}, not {resolved.id}"
                )
            current = _current_code_version(catalog, spec.name)
            if run.code_version != current:
                reasons.append(f"code {run.code_version} → {current}")
            if not spec.upstream:
                reasons += _upload_changes(store, run)
            for upstream in spec.inputs:
                up_digest = (
                    resolved.content_hash if catalog.asset(upstream).parameter_dependent else None
                )
                for read in _read_partitions(catalog, spec.name, upstream, partition, chunks):
                    if state.get((upstream, read)):
                        reasons.append(f"input {upstream} {read} is stale")
                        continue
                    now = newest.get((upstream, read, up_digest))
                    then = [
                        r for r in history.get((upstream, read, up_digest), [])
                        if (r.finished_at or "") <= (run.started_at or "")
                    ]  # fmt: skip
                    if now is not None and _output_digest(then[-1] if then else None) != (
                        _output_digest(now)
                    ):
                        reasons.append(f"input {upstream} {read} was re-made with other bytes")
            state[(spec.name, partition)] = bool(reasons)
            if reasons:
                found.append(
                    StalePartition(
                        measurement_id, spec.name, partition, resolved.id, tuple(reasons),
                        run.code_version, run.run_id, float(run.duration_s or 0.0),
                    )
                )  # fmt: skip
    return found


def reprocess_plan(report: StaleReport) -> dict[str, dict[str, list[str]]]:
    """``{measurement: {asset: [partition keys]}}``: exactly the stale partitions, to request
    again (one Dagster backfill per measurement keeps the assets in dependency order)."""
    plan: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in report.partitions:
        plan[row.measurement_id][row.asset].append(row.partition)
    return {m: {a: sorted(keys) for a, keys in assets.items()} for m, assets in plan.items()}


# ----------------------------------------------------------------------------- certificate


@dataclass
class CertifiedStep:
    """One step of a result's chain, as its ``WorkflowRun`` recorded it, with its outputs
    checked against storage (``ok``, ``changed``, ``missing``, ``unrecorded``)."""

    asset: str
    partition: str
    code_version: str | None
    current_code_version: str | None
    parameter_set_id: str | None
    parameter_hash: str | None
    engine: str
    image_digest: str | None
    run_id: str
    finished_at: str | None
    outputs: list[dict[str, Any]]


@dataclass
class Certificate:
    """The chain from the uploaded files through every step to ``asset`` of a measurement."""

    measurement_id: str
    asset: str
    parameter_set_id: str
    uploads: list[dict[str, Any]]
    steps: list[CertifiedStep]
    rerun: dict[str, Any] | None = None

    @property
    def problems(self) -> list[str]:
        """Every file not as recorded, by name (uploads, outputs, and a rerun's differences)."""
        found = [f"upload {u['name']} {u['state']}: {u['uri']}" for u in self.uploads
                 if u["state"] != "ok"]  # fmt: skip
        for step in self.steps:
            found += [
                f"{step.asset} {step.partition} {o['name']} {o['state']}: {o['uri']}"
                for o in step.outputs
                if o["state"] not in ("ok", "unrecorded")
            ]
        if self.rerun is not None:
            found += [f"rerun differs: {d['asset']} {d['name']}: {d['uri']}"
                      for d in self.rerun["differing"]]  # fmt: skip
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "measurement_id": self.measurement_id,
            "asset": self.asset,
            "parameter_set": self.parameter_set_id,
            "verified": self.ok,
            "problems": self.problems,
            "uploads": self.uploads,
            "steps": [asdict(s) for s in self.steps],
            "rerun": self.rerun,
        }


class NoSuchResult(LookupError):
    """No succeeded run made the result a certificate was asked for."""


def _state(storage: StorageResource, uri: str, sha256: str | None) -> str:
    if not sha256:
        return "unrecorded"
    try:
        return "ok" if checksum_of(storage, uri).sha256 == sha256 else "changed"
    except FileNotFoundError:
        return "missing"


def certificate(
    store: MetadataStore,
    storage: StorageResource,
    measurement_id: str,
    asset: str,
    parameter_set: str | None = None,
    catalog: Catalog = CATALOG,
) -> Certificate:
    """The chain that made ``asset`` of ``measurement_id`` (with ``parameter_set``, default
    ``default``): the uploads' checksums, then for each step it depends on, each partition's
    run that was newest when the result was made (code version, parameter hash, engine, run id,
    outputs with checksums), each file re-hashed against its record. ``NoSuchResult`` when no
    run made it."""
    schema = load_schema()
    catalog.asset(asset)
    resolved = resolve(store, parameter_set or DEFAULT_NAME)
    runs = succeeded_runs(store, measurement_id)
    wanted = lambda name: resolved.content_hash if catalog.asset(name).parameter_dependent else None  # noqa: E731
    target = [r for r in runs if r.workflow == asset and r.parameter_set_hash == wanted(asset)]
    if not target:
        raise NoSuchResult(
            f"no run made {asset} of {measurement_id} with parameter set {resolved.id}: "
            "materialize it first"
        )
    made_at = target[-1].finished_at or ""
    chosen: dict[tuple[str, str], Any] = {}
    for run in runs:  # oldest first: the newest run of each partition made by then wins
        made_by_then = bool(run.finished_at) and run.finished_at <= made_at
        known = made_by_then and run.workflow in catalog
        if known and run.parameter_set_hash == wanted(run.workflow):
            chosen[(run.workflow, run.partition or measurement_id)] = run
    order = {name: i for i, name in enumerate(catalog.with_upstream(asset))}
    steps = []
    for (name, partition), run in sorted(
        ((k, v) for k, v in chosen.items() if k[0] in order),
        key=lambda kv: (order[kv[0][0]], kv[0][1]),
    ):
        steps.append(
            CertifiedStep(
                asset=name,
                partition=partition,
                code_version=run.code_version,
                current_code_version=_current_code_version(catalog, name),
                parameter_set_id=run.parameter_set_id,
                parameter_hash=run.parameter_set_hash,
                engine=schema.RunEngine._VALUES_TO_NAMES.get(run.engine, str(run.engine)),
                image_digest=getattr(run, "image_digest", None),
                run_id=run.run_id,
                finished_at=run.finished_at,
                outputs=[
                    {
                        "name": o.name, "uri": o.uri, "sha256": o.sha256, "size": o.size,
                        "state": _state(storage, o.uri, o.sha256),
                    }
                    for o in run.outputs or []
                ],
            )
        )  # fmt: skip
    measurement = store.get(schema.Measurement, measurement_id).doc
    uploads = [
        {
            "name": schema.FileRole._VALUES_TO_NAMES.get(f.role, str(f.role)),
            "uri": f.uri,
            "sha256": f.checksum,
            "size": f.size_bytes,
            "state": _state(storage, f.uri, f.checksum),
        }
        for f in measurement.files or []
    ]
    return Certificate(measurement_id, asset, resolved.id, uploads, steps)


def _key_of(storage: StorageResource, uri: str) -> str:
    root = storage.url("")
    return uri[len(root) :].lstrip("/") if uri.startswith(root) else uri


def rerun(
    certified: Certificate,
    store: MetadataStore,
    storage: StorageResource,
    settings: Settings,
    scratch: Path | None = None,
    catalog: Catalog = CATALOG,
) -> Certificate:
    """Recompute ``certified``'s chain from the raw files in a scratch storage folder and a
    scratch index prefix (nothing of the platform's is written), then compare every recorded
    output byte for byte; ``certified.rerun`` gets ``{identical, differing}``. The scratch
    copies are removed afterwards."""
    from em2q_assets import step as step_cli  # Dagster-backed steps: only when rerunning
    from em2q_resources.metadata.store import MetadataStore as Store
    from em2q_resources.storage import StorageResource as Storage

    schema = load_schema()
    folder = Path(tempfile.mkdtemp(prefix="em2q-rerun-", dir=scratch))
    prefix = f"{store.prefix}-rerun-{uuid.uuid4().hex[:8]}"
    scratch_storage = Storage(root=str(folder / "storage"))
    scratch_store = Store(store.client, prefix)
    try:
        scratch_store.ensure_indices()
        measurement = store.get(schema.Measurement, certified.measurement_id).doc
        for stored in measurement.files or []:  # the raw files, checked as they are copied
            key = f"measurements/{certified.measurement_id}/{Path(stored.uri).name}"
            target = Path(scratch_storage.path(key))
            target.parent.mkdir(parents=True, exist_ok=True)
            fs_url = stored.uri
            import fsspec

            with (
                fsspec.open(fs_url, "rb", **storage.storage_options) as source,
                open(target, "wb") as sink,
            ):
                shutil.copyfileobj(source, sink, 4 * 1024 * 1024)
            stored.uri = scratch_storage.url(key)
        scratch_store.create(measurement, refresh=True)
        scratch_store.create(store.get_parameter_set(certified.parameter_set_id), refresh=True)
        chunk_keys = sorted({s.partition for s in certified.steps if "|" in s.partition})
        local = settings.with_overrides(
            elasticsearch_url=store.url, index_prefix=prefix,
            storage=scratch_storage.root, spectra_chunks=max(1, len(chunk_keys)),
        )  # fmt: skip
        run_id = f"rerun-{uuid.uuid4().hex[:12]}"
        done: set[tuple[str, str]] = set()
        for step in certified.steps:
            if (step.asset, step.partition) in done:
                continue
            done.add((step.asset, step.partition))
            chunk = int(step.partition.split("|")[1]) if "|" in step.partition else None
            step_cli.run(
                step.asset, certified.measurement_id, chunk=chunk,
                parameter_set=certified.parameter_set_id, run_id=run_id, engine="LOCAL",
                settings=local, catalog=catalog,
            )  # fmt: skip
        identical, differing = [], []
        for step in certified.steps:
            for output in step.outputs:
                again = scratch_storage.url(_key_of(storage, output["uri"]))
                try:
                    same = checksum_of(scratch_storage, again).sha256 == output["sha256"]
                except FileNotFoundError:
                    same = False
                row = {"asset": step.asset, "partition": step.partition,
                       "name": output["name"], "uri": output["uri"]}  # fmt: skip
                (identical if same else differing).append(row)
        certified.rerun = {"run_id": run_id, "identical": identical, "differing": differing}
    finally:
        scratch_store.drop_all()
        shutil.rmtree(folder, ignore_errors=True)
    return certified


def format_certificate(certified: Certificate) -> str:
    """The certificate as people read it (CLI, logs)."""
    lines = [
        f"certificate of {certified.asset} of {certified.measurement_id} "
        f"(parameter set {certified.parameter_set_id})",
        "uploads:",
    ]
    for u in certified.uploads:
        lines.append(
            f"  {u['name']:<5} sha256 {u['sha256']}  {u['size']} B  {u['state']}  {u['uri']}"
        )
    for s in certified.steps:
        where = f"pod {s.image_digest}" if s.image_digest else s.engine
        current = (
            "" if s.code_version == s.current_code_version else f" (now {s.current_code_version})"
        )
        lines.append(
            f"{s.asset} [{s.partition}] code {s.code_version}{current}  params "
            f"{(s.parameter_hash or '-')[:16]}  engine {where}  run {s.run_id}"
        )
        for o in s.outputs:
            lines.append(f"  {o['name']:<16} sha256 {o['sha256']}  {o['size']} B  {o['state']}")
    if certified.rerun is not None:
        lines.append(
            f"rerun {certified.rerun['run_id']}: {len(certified.rerun['identical'])} identical, "
            f"{len(certified.rerun['differing'])} differing"
        )
    lines.append("VERIFIED" if certified.ok else "NOT VERIFIED: " + "; ".join(certified.problems))
    return "\n".join(lines)


def as_rows(report: StaleReport) -> list[Mapping[str, Any]]:
    """The stale partitions as table rows (CLI, web)."""
    return [
        {
            "measurement": p.measurement_id, "asset": p.asset, "partition": p.partition,
            "estimated_s": p.estimated_s, "why": "; ".join(p.reasons),
        }
        for p in report.partitions
    ]  # fmt: skip
