"""Upload: an imzML/ibd pair and its setup description become a registered ``Measurement``.

The order is what makes a failure harmless: validate everything first (setup against the
schema, the files with ``em2q_msi``), refuse duplicates by SHA-256, copy into
``staging/<upload-id>/``, commit by moving to ``measurements/<measurement-id>/``, and only then
write the ``Measurement`` document (status ``UPLOADED``). Whatever fails, the staged and
committed copies are removed and no document is left; the source files are only ever read.

The web UI, notebooks and ``em2q upload`` all call :func:`upload_measurement`.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em2q.setup_file import PLATFORM_FIELDS, SetupFileError, measurement_from_setup, read_setup
from em2q_msi.facts import grid_facts, measurement_facts, pixel_grid
from em2q_msi.imzml import ImzML
from em2q_msi.validation import validate
from em2q_resources.metadata import (
    AlreadyExists,
    DocumentNotFound,
    SchemaViolation,
    StoreUnavailable,
    load_schema,
)
from em2q_resources.metadata.schema import InvalidIdentifier, check_identifier, utc_now

if TYPE_CHECKING:
    from em2q_resources.metadata.store import MetadataStore, Stored
    from em2q_resources.storage import StorageResource

if TYPE_CHECKING:
    from em2q.dagster_api import DagsterAPI

__all__ = [
    "DuplicateUpload",
    "InvalidUpload",
    "UploadError",
    "UploadProblem",
    "file_sha256",
    "measurement_id_for",
    "upload_measurement",
]

HASH_BLOCK_BYTES = 8 * 1024 * 1024


class UploadError(Exception):
    """Base class of refused uploads; nothing was registered and storage holds no copy."""


@dataclass(frozen=True)
class UploadProblem:
    """One reason to refuse: ``where`` is ``setup`` or a file name, ``code`` a stable tag
    (``setup`` for schema violations, else the ``em2q_msi`` validation code)."""

    where: str
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.where}: [{self.code}] {self.message}"


class InvalidUpload(UploadError):
    """The setup description or the files do not pass validation; ``problems`` lists each."""

    def __init__(self, problems: list[UploadProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"upload refused, {len(problems)} problem(s):\n{lines}")


class DuplicateUpload(UploadError):
    """The same imzML and ibd (by SHA-256) are already registered as ``existing_id``."""

    def __init__(self, existing_id: str, imzml_sha256: str) -> None:
        self.existing_id = existing_id
        self.imzml_sha256 = imzml_sha256
        super().__init__(
            f"these files are already uploaded as measurement {existing_id!r} "
            f"(imzML SHA-256 {imzml_sha256[:12]}…); nothing was copied"
        )


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a local file, read in blocks (constant memory)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _slug(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "measurement"


def measurement_id_for(title: str) -> str:
    """A short, readable, unique id: ``<slug of the title>-<8 hex>``."""
    return f"{_slug(title)}-{uuid.uuid4().hex[:8]}"


def _setup_problems(
    setup: dict[str, Any] | str | Path, operator: str | None
) -> tuple[dict[str, Any], list[UploadProblem]]:
    """The setup document and what is wrong with it (checked with placeholder platform fields)."""
    try:
        document = read_setup(setup) if isinstance(setup, str | Path) else dict(setup)
    except SetupFileError as exc:
        return {}, [UploadProblem("setup", "setup", str(exc))]
    if operator:
        document["operator"] = operator
    reserved = sorted(PLATFORM_FIELDS & set(document))
    if reserved:
        return document, [UploadProblem("setup", "setup", f"{reserved[0]}: is set by the platform")]
    try:
        measurement_from_setup(document, id="check", uploaded_at=utc_now())
    except SchemaViolation as exc:
        return document, [UploadProblem("setup", "setup", str(exc))]
    return document, []


def _ibd_beside(imzml: Path) -> Path:
    for suffix in (".ibd", ".IBD", ".Ibd"):
        candidate = imzml.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return imzml.with_suffix(".ibd")


def _file_problems(imzml: Path, ibd: Path, cache_dir: str) -> list[UploadProblem]:
    """Every problem ``em2q_msi`` finds in the pair (validated as a pair in a scratch folder
    when the .ibd does not lie beside the imzML under the same stem)."""
    problems = [
        UploadProblem(str(p), "missing_file", f"no such file: {p}")
        for p in (imzml, ibd)
        if not p.is_file()
    ]
    if problems:
        return problems
    with ExitStack() as stack:
        target = imzml
        if _ibd_beside(imzml).resolve() != ibd.resolve():
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="em2q-pair-")))
            target = folder / imzml.name
            target.symlink_to(imzml.resolve())
            target.with_suffix(".ibd").symlink_to(ibd.resolve())
        report = validate(str(target), cache_dir=cache_dir)
    return [UploadProblem(imzml.name, p.code, p.message) for p in report.problems]


def _signature(path: Path) -> tuple[int, int]:
    """Size and modification time: what changes when someone writes to the file."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _twins(store: MetadataStore, imzml_sha: str, ibd_sha: str) -> list[str]:
    """Ids of the measurements holding exactly these imzML and ibd contents."""
    schema = load_schema()
    page = store.search(schema.Measurement, filters={"files.checksum": imzml_sha}, page_size=100)
    return [m.id for m in page.hits if {imzml_sha, ibd_sha} <= {f.checksum for f in m.files or []}]


def _first_registered(store: MetadataStore, ids: list[str]) -> Stored | None:
    """Of the measurements ``ids``, the one written first (the twin that stays registered).

    The index has one shard, so (primary term, sequence number) orders the writes. A
    concurrent upload of the same files withdraws when it finds an earlier twin, so only the
    first one written is sure to stay: a refusal names it, not a twin about to withdraw.
    """
    schema = load_schema()
    found = []
    for twin in ids:
        try:
            found.append(store.get(schema.Measurement, twin))
        except DocumentNotFound:  # the twin has withdrawn since the search
            continue
    return min(found, key=lambda s: (s.primary_term, s.seq_no), default=None)


def _earlier_twin(store: MetadataStore, mine: Stored, imzml_sha: str, ibd_sha: str) -> str | None:
    """The first-registered twin, when a concurrent upload registered it before ``mine``.

    Both uploads passed the duplicate check before either wrote its document: the later one
    sees the earlier one (its write is refreshed) and withdraws; the earlier one never does.
    """
    twins = [t for t in _twins(store, imzml_sha, ibd_sha) if t != mine.doc.id]
    first = _first_registered(store, twins)
    if first is not None and (first.primary_term, first.seq_no) < (mine.primary_term, mine.seq_no):
        return first.doc.id
    return None


@contextmanager
def _progress_bar(
    progress: bool | Callable[[int], None], total: int, label: str
) -> Iterator[Callable[[int], None] | None]:
    if callable(progress):
        yield progress
        return
    if not progress:
        yield None
        return
    from tqdm import tqdm

    with tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr
    ) as bar:
        yield bar.update


def _facts(
    url: str, storage: StorageResource, cache_dir: str, setup: dict[str, Any]
) -> dict[str, Any]:
    """The ``ImzMLFacts`` document of the pair at ``url`` (pixel size: the file's, else the
    setup's)."""
    settings = setup.get("settings") or {}
    setup_size = (settings.get("pixel_size_x_um"), settings.get("pixel_size_y_um"))
    reader = ImzML.open(url, storage_options=storage.storage_options, cache_dir=cache_dir)
    try:
        facts = measurement_facts(reader)
        grid = pixel_grid(reader, setup_size)
    finally:
        reader.close()
    return {
        "mode": facts["mode"].upper(),
        **grid_facts(grid),
        "spectra_count": int(facts["n_spectra"]),
        "mz_range": {"min_mz": float(facts["mz_min"]), "max_mz": float(facts["mz_max"])},
        "uuid": facts["uuid"],
        "mz_dtype": facts["mz_dtype"],
        "intensity_dtype": facts["intensity_dtype"],
    }


def upload_measurement(
    imzml_path: str | Path,
    *,
    ibd_path: str | Path | None = None,
    setup: dict[str, Any] | str | Path,
    store: MetadataStore | Callable[[], MetadataStore],
    storage: StorageResource | Callable[[], StorageResource],
    operator: str | None = None,
    progress: bool | Callable[[int], None] = True,
    measurement_id: str | None = None,
    cache_dir: str | Path | None = None,
    uploaded_by: str | None = None,
    dagster: DagsterAPI | Callable[[], DagsterAPI] | None = None,
) -> Any:
    """Validate, copy and register one imzML/ibd pair; returns the stored ``Measurement``.

    ``setup`` is a setup document or the path of a ``setup.yaml``; ``operator`` overrides the
    one it names. ``progress``: a tqdm bar on stderr (``True``), none (``False``) or a callable
    receiving byte counts. ``measurement_id`` picks the id (default ``<title slug>-<8 hex>``).
    ``uploaded_by`` is the signed-in user who registers it (the owner the policy checks).
    ``store``, ``storage`` and ``dagster`` may be given as functions that open them: they are called only
    once the files are valid, so a refused upload never waits for a backend (nor imports one).
    ``cache_dir`` holds the imzML index caches (default: a scratch folder), so nothing is
    written beside the source files or into storage except the pair itself. ``dagster``: the
    webserver the upload asks for the measurement's ingest run right away
    (:meth:`~em2q.dagster_api.DagsterAPI.request_ingest`); without it, or when Dagster does not
    answer, the ``new_measurements`` sensor requests it seconds later.

    Raises :class:`InvalidUpload` (every setup and file problem), :class:`DuplicateUpload`,
    ``AlreadyExists`` (an explicit id is taken), ``StoreUnavailable`` /
    ``StorageUnavailable`` (a backend did not answer). On any error nothing is registered and
    storage holds no copy.
    """
    imzml = Path(imzml_path)
    ibd = Path(ibd_path) if ibd_path is not None else _ibd_beside(imzml)
    schema = load_schema()
    with ExitStack() as stack:
        if cache_dir is None:
            cache_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="em2q-index-"))
        cache = str(cache_dir)

        # (a) + (b): every problem of the setup and of the files, before anything is copied
        document, problems = _setup_problems(setup, operator)
        # the .ibd keeps its name unless its stem differs: readers find it beside the imzML
        ibd_name = ibd.name if ibd.stem == imzml.stem else f"{imzml.stem}.ibd"
        for where, value in (
            ("id", measurement_id),
            (imzml.name, imzml.name),
            (ibd.name, ibd_name),
        ):
            try:  # ids and file names that reach storage: the one grammar of the schema
                if value is not None:
                    check_identifier(value, "id" if where == "id" else "file name")
            except InvalidIdentifier as exc:
                problems.append(UploadProblem(where, "name", str(exc)))
        if any(p.code == "name" for p in problems):  # a refused name is not opened
            raise InvalidUpload(problems)
        problems += _file_problems(imzml, ibd, cache)
        if problems:
            raise InvalidUpload(problems)

        # (c): duplicates by content
        store = store() if callable(store) else store
        storage = storage() if callable(storage) else storage
        hashed = {path: _signature(path) for path in (imzml, ibd)}
        imzml_sha, ibd_sha = file_sha256(imzml), file_sha256(ibd)
        existing = _first_registered(store, _twins(store, imzml_sha, ibd_sha))
        if existing is not None:
            raise DuplicateUpload(existing.doc.id, imzml_sha)
        new_id = measurement_id or measurement_id_for(document["title"])
        if measurement_id is not None and store.exists(schema.Measurement, new_id):
            raise AlreadyExists("Measurement", new_id)

        # (d): stage, then commit; (f): any failure from here on removes both
        storage.check()
        local = storage.protocol == "file"
        staging = f"staging/{uuid.uuid4().hex}"
        committed = f"measurements/{new_id}"
        pair = [("IMZML", imzml, imzml.name, imzml_sha), ("IBD", ibd, ibd_name, ibd_sha)]
        try:
            total = sum(path.stat().st_size for _, path, _, _ in pair)
            with _progress_bar(progress, total, f"upload {new_id}") as report:
                for _, path, name, expected in pair:
                    # a folder root copies in the kernel; an object store re-hashes the stream
                    sent = storage.put_file(
                        path, f"{staging}/{name}", progress=report, checksum=not local
                    )
                    if (sent or expected) != expected or _signature(path) != hashed[path]:
                        raise UploadError(f"{path} changed while it was uploaded; try again")
            if measurement_id is not None:  # leftovers of a crashed upload under this id
                storage.remove(committed)
            for _, _, name, _ in pair:
                storage.move(f"{staging}/{name}", f"{committed}/{name}")
            storage.remove(staging)

            # (e): the document, facts read from the committed copy
            files = [
                {
                    "role": role,
                    "uri": storage.url(committed, name),
                    "size_bytes": storage.size(f"{committed}/{name}"),
                    "checksum_type": "SHA256",
                    "checksum": checksum,
                }
                for role, _, name, checksum in pair
            ]
            owner = {"uploaded_by": uploaded_by} if uploaded_by else {}
            measurement = measurement_from_setup(
                document,
                id=new_id,
                uploaded_at=utc_now(),
                **owner,
                files=files,
                facts=_facts(storage.url(committed, imzml.name), storage, cache, document),
            )
            stored = store.create(measurement, refresh=True)
        except BaseException:
            _discard(storage, staging, committed)
            raise

        # a concurrent upload of the same files: the later of the two withdraws
        try:
            earlier = _earlier_twin(store, stored, imzml_sha, ibd_sha)
        except StoreUnavailable:  # registered and committed: a possible twin beats a lost upload
            return measurement
        if earlier is not None:
            store.delete(schema.Measurement, new_id, expected=stored)
            _discard(storage, committed)
            raise DuplicateUpload(earlier, imzml_sha)
        if dagster is not None:
            request_ingest(dagster() if callable(dagster) else dagster, new_id)
        return measurement


def request_ingest(dagster: DagsterAPI, measurement_id: str) -> str | None:
    """Ask Dagster for the ingest run of a registered upload; its run id, or ``None`` (with a
    warning on stderr) when Dagster did not take it: the upload stands, the sensor follows up."""
    from em2q.dagster_api import DagsterError, DagsterUnavailable

    try:
        return dagster.request_ingest(measurement_id)
    except (DagsterUnavailable, DagsterError, ValueError) as exc:  # ValueError: not JSON
        print(
            f"warning: {measurement_id} is uploaded; Dagster did not take its ingest run ({exc}), "
            "the new_measurements sensor starts it once Dagster runs",
            file=sys.stderr,
        )
        return None


def _discard(storage: StorageResource, *keys: str) -> None:
    """Best-effort removal of an upload's copies (the original error is the one to report)."""
    for key in keys:
        try:
            storage.remove(key)
        except Exception:  # noqa: BLE001, S112 - storage may be the thing that failed
            continue
