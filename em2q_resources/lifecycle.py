"""The measurement lifecycle: the one writer of ``Measurement.status`` and its reason.

::

    (upload) ─► UPLOADED ─(sensor)─► REGISTERED ─(step|launcher)─► PROCESSING ─(step)─► READY
                   │                     │                            │                   │
                   └──────(step|watcher|launcher)──────► FAILED ◄─────┴───────────────────┘
                                                           │
                       FAILED | READY ─(step|launcher)─► PROCESSING   (retry / reprocess)

Who may make which transition (:data:`TRANSITIONS`):

* ``upload`` (CLI, web, notebook, Thrift) creates the document as UPLOADED (:func:`initial_fields`);
* ``sensor`` (``new_measurements``) registers it: UPLOADED → REGISTERED;
* ``step`` (an asset step in a run) or ``launcher`` (a person starting a workflow from the CLI,
  the web page's Start/Retry or the notebook) starts processing: any status → PROCESSING, so a
  FAILED measurement is retried and a READY one reprocessed;
* ``step`` (only the QC verdict, ``qc_report``) ends it READY, from PROCESSING, READY or FAILED
  (a run re-executed from the Dagster UI recovers a failed measurement too);
* ``step`` (validation, QC), ``watcher`` (the run-failure sensor and the stalled watchdog) or
  ``launcher`` ends it FAILED from any status. A failure never overwrites the failure of the same
  run (the first one is the root; later ones are its symptoms), and a watcher's report of a run
  that ended before the measurement's current status began is stale and ignored.

Every transition records a :class:`Reason` (``Measurement.status_detail``, a ``StatusReason`` of
the Thrift IDL) and its one-line summary (``Measurement.status_reason``): what happened, the root
error, the asset and partition (chunk) it happened in, the Dagster run and the one action that
helps. Writes use the store's optimistic concurrency: concurrent writers never lose an update.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from em2q_resources.metadata import VersionConflict, load_schema
from em2q_resources.metadata.schema import to_document, utc_now

if TYPE_CHECKING:
    from em2q_resources.metadata.store import MetadataStore


class Status(StrEnum):
    UPLOADED = "UPLOADED"
    REGISTERED = "REGISTERED"
    PROCESSING = "PROCESSING"
    READY = "READY"
    FAILED = "FAILED"


FINAL = frozenset({Status.READY, Status.FAILED})

#: run tag naming the measurement a run works on (launchers, sensors and backfills set it; the
#: run-failure sensor reads it to know whose status a failed run ends)
MEASUREMENT_TAG = "em2q/measurement"
#: run tag naming the stage of a measurement's processing chain a run is (``ingest``, ``chunks``,
#: ``measurement``): the upload and the sensors request each next stage by it, and a run queue
#: limit per stage (``Settings.runs_per_stage``) reads it
STAGE_TAG = "em2q/stage"


class Stage(StrEnum):
    """The runs of a measurement's processing chain, in order (values of ``STAGE_TAG``)."""

    INGEST = "ingest"
    CHUNKS = "chunks"
    MEASUREMENT = "measurement"

    @property
    def job(self) -> str:
        """The code location's job that runs this stage (``em2q_assets.chain``)."""
        return f"em2q_{self.value}"

    @property
    def next(self) -> Stage | None:
        """The stage its successful run requests, if any."""
        order = list(Stage)
        position = order.index(self)
        return order[position + 1] if position + 1 < len(order) else None


class Actor(StrEnum):
    """Who makes a transition."""

    UPLOAD = "upload"  # the upload (CLI, web form, notebook, Thrift createMeasurement)
    SENSOR = "sensor"  # the new_measurements sensor
    STEP = "step"  # an asset step inside a run
    LAUNCHER = "launcher"  # a person starting a workflow (CLI run, web Start/Retry, notebook)
    WATCHER = "watcher"  # the run-failure sensor and the stalled watchdog


class Kind(StrEnum):
    """What happened."""

    UPLOADED = "uploaded"
    REGISTERED = "registered"
    STARTED = "started"
    QC_PASSED = "qc_passed"
    VALIDATION = "validation"  # the file is invalid
    QC = "qc"  # a blocking QC check failed
    RUN_FAILED = "run_failed"  # a step raised
    KILLED = "killed"  # the run's process died
    LAUNCH_FAILED = "launch_failed"  # the run did not start
    STALLED = "stalled"  # nothing ran for it for too long


class Action(StrEnum):
    """The one thing that helps next."""

    NONE = "none"
    WAIT = "wait"
    RETRY = "retry"
    FIX_FILE = "fix_file"
    CHANGE_PARAMETERS = "change_parameters"


#: the action a kind calls for unless the writer knows better
DEFAULT_ACTION: dict[Kind, Action] = {
    Kind.UPLOADED: Action.WAIT,
    Kind.REGISTERED: Action.WAIT,
    Kind.STARTED: Action.WAIT,
    Kind.QC_PASSED: Action.NONE,
    Kind.VALIDATION: Action.FIX_FILE,
    Kind.QC: Action.CHANGE_PARAMETERS,
    Kind.RUN_FAILED: Action.RETRY,
    Kind.KILLED: Action.RETRY,
    Kind.LAUNCH_FAILED: Action.RETRY,
    Kind.STALLED: Action.RETRY,
}

_ANY = (None, *Status)
_STARTERS = frozenset({Actor.STEP, Actor.LAUNCHER})
#: (from, to) → who may make it; ``None`` is "no document yet"
TRANSITIONS: Mapping[tuple[Status | None, Status], frozenset[Actor]] = {
    (None, Status.UPLOADED): frozenset({Actor.UPLOAD}),
    (Status.UPLOADED, Status.REGISTERED): frozenset({Actor.SENSOR}),
    **{(s, Status.PROCESSING): _STARTERS for s in Status},
    **{(s, Status.READY): frozenset({Actor.STEP}) for s in (Status.PROCESSING, *FINAL)},
    **{
        (s, Status.FAILED): frozenset({Actor.STEP, Actor.WATCHER, Actor.LAUNCHER})
        for s in _ANY
        if s is not None
    },
}


class IllegalTransition(ValueError):
    """A status change the lifecycle does not allow (wrong order, or the wrong component)."""

    def __init__(
        self, measurement_id: str, current: Status | None, target: Status, actor: Actor
    ) -> None:
        allowed = sorted(
            f"{to} ({', '.join(sorted(who))})"
            for (frm, to), who in TRANSITIONS.items()
            if frm == current
        )
        super().__init__(
            f"measurement {measurement_id!r}: {current or '(new)'} → {target} is not a "
            f"transition the {actor} may make; from {current or '(new)'} the lifecycle allows "
            f"{', '.join(allowed) or 'nothing'}"
        )
        self.measurement_id, self.current, self.target, self.actor = (
            measurement_id,
            current,
            target,
            actor,
        )


@dataclass(frozen=True)
class Reason:
    """Why a measurement is in its status: written with every transition."""

    kind: Kind
    message: str
    action: Action | None = None  # None: the kind's DEFAULT_ACTION
    error_type: str | None = None  # the root exception's class
    error_message: str | None = None  # the root exception's message
    asset: str | None = None
    partition: str | None = None  # ``<measurement>`` or ``<measurement>|<chunk>``
    run_id: str | None = None
    run_url: str | None = None
    # filled in by the transition:
    actor: Actor | None = None
    at: str | None = None
    previous_status: Status | None = None

    @property
    def next_action(self) -> Action:
        return self.action or DEFAULT_ACTION[self.kind]

    def summary(self) -> str:
        """One line: what happened, the root error, where (asset, chunk) and in which run."""
        text = self.message
        if self.error_type and self.error_type not in text:
            text += f" — {self.error_type}: {self.error_message or ''}".rstrip(": ")
        where = ", ".join(
            part
            for part in (
                f"in {self.asset}" if self.asset else "",
                f"partition {self.partition}" if self.partition else "",
                f"run {self.run_id}" if self.run_id else "",
            )
            if part
        )
        return f"{text} ({where})" if where else text

    def advice(self, measurement_id: str) -> str:
        """The one action that helps, as a sentence with the command to run."""
        return advice(self.next_action, measurement_id)

    def to_thrift(self) -> Any:
        schema = load_schema()
        return schema.StatusReason(
            kind=str(self.kind),
            message=self.message[:2000],
            actor=str(self.actor or Actor.WATCHER),
            at=self.at or utc_now(),
            action=str(self.next_action),
            error_type=self.error_type,
            error_message=(self.error_message or None) and self.error_message[:4000],
            asset=self.asset,
            partition=self.partition,
            run_id=self.run_id,
            run_url=self.run_url,
            previous_status=str(self.previous_status) if self.previous_status else None,
        )

    @classmethod
    def from_thrift(cls, detail: Any) -> Reason:
        return cls(
            kind=Kind(detail.kind),
            message=detail.message,
            action=Action(detail.action) if detail.action else None,
            error_type=detail.error_type,
            error_message=detail.error_message,
            asset=detail.asset,
            partition=detail.partition,
            run_id=detail.run_id,
            run_url=detail.run_url,
            actor=Actor(detail.actor),
            at=detail.at,
            previous_status=Status(detail.previous_status) if detail.previous_status else None,
        )


def advice(action: Action, measurement_id: str) -> str:
    return {
        Action.NONE: "nothing to do: the results are ready",
        Action.WAIT: "wait: the platform is processing it",
        Action.RETRY: (
            f"retry once the cause is gone: `em2q run {measurement_id} --workflow standard` "
            "(or Retry on its page)"
        ),
        Action.FIX_FILE: "fix the file (the problems above name what is wrong) and upload it again",
        Action.CHANGE_PARAMETERS: (
            "change a parameter set (QC thresholds or processing) and run "
            f"`em2q run {measurement_id} --workflow reprocess --parameter-set NAME`"
        ),
    }[action]


@dataclass(frozen=True)
class Transition:
    """What :func:`transition` did: ``changed`` is False when it kept the document as it was."""

    measurement_id: str
    previous: Status
    status: Status
    changed: bool
    reason: Reason


def status_of(doc: Any) -> Status:
    return Status(load_schema().MeasurementStatus._VALUES_TO_NAMES[doc.status])


def reason_of(doc: Any) -> Reason | None:
    """The structured reason of a Measurement document (``None`` on documents from before it)."""
    detail = getattr(doc, "status_detail", None)
    return Reason.from_thrift(detail) if detail is not None else None


def check_transition(
    measurement_id: str, current: Status | None, target: Status, actor: Actor
) -> None:
    """Raise :class:`IllegalTransition` unless ``actor`` may move ``current`` → ``target``."""
    if actor not in TRANSITIONS.get((current, target), frozenset()):
        raise IllegalTransition(measurement_id, current, target, actor)


def initial_fields(message: str = "files committed to storage") -> dict[str, Any]:
    """The status fields of a new Measurement document (as a JSON document part)."""
    check_transition("(new)", None, Status.UPLOADED, Actor.UPLOAD)
    reason = Reason(Kind.UPLOADED, message, actor=Actor.UPLOAD, at=utc_now())
    return {
        "status": str(Status.UPLOADED),
        "status_reason": reason.summary(),
        "status_detail": to_document(reason.to_thrift()),
    }


def transition(
    store: MetadataStore,
    measurement_id: str,
    target: Status,
    reason: Reason,
    *,
    actor: Actor,
    fields: Mapping[str, Any] | None = None,
    not_after: str | None = None,
    attempts: int = 8,
) -> Transition:
    """Move a measurement to ``target`` with ``reason``, if ``actor`` may.

    ``not_after`` (ISO time, failures only): the failed run ended then; when the measurement's
    current status began later, the report is stale and nothing changes. A failure of the same
    run as the recorded one keeps the recorded (first, root) failure.
    Raises :class:`IllegalTransition`, ``DocumentNotFound``, ``StoreUnavailable``.
    """
    schema = load_schema()
    for _ in range(attempts):
        stored = store.get(schema.Measurement, measurement_id)
        doc = stored.doc
        current = status_of(doc)
        check_transition(measurement_id, current, target, actor)
        recorded = reason_of(doc)
        if target == Status.FAILED and _keeps(current, recorded, reason, not_after):
            return Transition(measurement_id, current, current, False, recorded or reason)
        now = utc_now()
        full = replace(reason, actor=actor, at=now, previous_status=current)
        doc.status = schema.MeasurementStatus._NAMES_TO_VALUES[str(target)]
        doc.status_reason = full.summary()[:2000]
        doc.status_detail = full.to_thrift()
        doc.updated_at = now
        for name, value in (fields or {}).items():
            setattr(doc, name, value)
        try:
            store.update(doc, stored)
        except VersionConflict:
            continue
        return Transition(measurement_id, current, target, True, full)
    raise VersionConflict("Measurement", measurement_id, f"still conflicting after {attempts}")


def _keeps(current: Status, recorded: Reason | None, reason: Reason, not_after: str | None) -> bool:
    """Whether a failure report leaves the document as it is."""
    if recorded is None:
        return False
    if not_after and recorded.at and _time(recorded.at) > _time(not_after):
        return True  # the measurement moved on after that run ended: a stale report
    same_run = reason.run_id is not None and reason.run_id == recorded.run_id
    return current == Status.FAILED and (same_run or reason.run_id is None)


def _time(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def since_iso(iso_time: str) -> float:
    """An ISO time of the documents as POSIX seconds."""
    return _time(iso_time)


def iso(timestamp_s: float) -> str:
    """A POSIX timestamp as the ISO format of the documents (for ``not_after``)."""
    moment = datetime.fromtimestamp(timestamp_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- the transitions by name


def register(store: MetadataStore, measurement_id: str) -> Transition:
    """UPLOADED → REGISTERED: the sensor created its partition and requested the ingest."""
    reason = Reason(Kind.REGISTERED, "partition created; ingest requested")
    return transition(store, measurement_id, Status.REGISTERED, reason, actor=Actor.SENSOR)


def start(
    store: MetadataStore,
    measurement_id: str,
    message: str,
    *,
    actor: Actor,
    run_id: str | None = None,
    run_url: str | None = None,
    asset: str | None = None,
) -> Transition:
    """→ PROCESSING: an ingest step began, or a person started (or retried) a workflow."""
    reason = Reason(Kind.STARTED, message, run_id=run_id, run_url=run_url, asset=asset)
    return transition(store, measurement_id, Status.PROCESSING, reason, actor=actor)


def ready(
    store: MetadataStore, measurement_id: str, message: str, *, run_id: str, asset: str
) -> Transition:
    """→ READY: the QC verdict passed."""
    reason = Reason(Kind.QC_PASSED, message, run_id=run_id, asset=asset)
    return transition(store, measurement_id, Status.READY, reason, actor=Actor.STEP)


def fail(
    store: MetadataStore,
    measurement_id: str,
    reason: Reason,
    *,
    actor: Actor,
    not_after: str | None = None,
) -> Transition:
    """→ FAILED with the root reason (see :func:`transition` for stale and repeated reports)."""
    return transition(
        store, measurement_id, Status.FAILED, reason, actor=actor, not_after=not_after
    )


def since(doc: Any) -> float:
    """When the measurement entered its current status (POSIX seconds)."""
    detail = getattr(doc, "status_detail", None)
    stamp = (detail.at if detail is not None else None) or doc.updated_at or doc.uploaded_at
    return _time(stamp)


def unfinished(store: MetadataStore, *, older_than_s: float, limit: int = 500) -> list[Any]:
    """Measurements not READY/FAILED whose status began more than ``older_than_s`` ago."""
    schema = load_schema()
    store.refresh(schema.Measurement)
    page = store.search(
        schema.Measurement,
        filters={"status": [str(s) for s in Status if s not in FINAL]},
        page_size=limit,
    )
    cutoff = time.time() - older_than_s
    return [doc for doc in page.hits if since(doc) <= cutoff]
