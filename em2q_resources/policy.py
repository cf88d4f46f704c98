"""Object-level rules: who may change *which* record, on top of the role table in :mod:`auth`.

:func:`em2q_resources.auth.require` answers "may this role do this kind of thing at all"; the
functions here answer "may this user do it to this record", and every surface (Thrift service,
CLI, notebook client, web catalog) calls them rather than deciding for itself:

* a measurement belongs to who registered it (``Measurement.uploaded_by``, set by the platform
  from the signed-in user, never from the caller's claim); technicians change only their own,
  scientists and admins any;
* the platform-owned fields of a measurement (status and its reason, files, facts, owner,
  upload time) change only through the platform: its lifecycle and its processing, which act
  with the admin role; through the Thrift service nobody else may create or change them;
* file locations are only ever in the platform's own storage, under the measurement's prefix;
* workflow runs are recorded by the platform (admins), not by the people whose work they
  describe.
"""

from __future__ import annotations

from typing import Any

from em2q_resources.auth import Action, AuthError, Role, User, require
from em2q_resources.metadata.schema import SchemaViolation, load_schema
from em2q_resources.storage import StorageResource, UnsafeKey, measurement_prefixes

__all__ = [
    "PLATFORM_OWNED_FIELDS",
    "NotYours",
    "check_file_locations",
    "check_measurement_change",
    "check_new_measurement",
    "is_platform",
    "may_record_workflow_run",
    "parameter_set_author",
]

#: Measurement fields only the platform writes (upload, lifecycle, processing)
PLATFORM_OWNED_FIELDS = ("status", "status_reason", "files", "facts", "uploaded_by", "uploaded_at")


class NotYours(AuthError):
    """The user's role may do this kind of thing, but not to this record (or not this field)."""


def is_platform(user: User | None) -> bool:
    """Whether ``user`` acts for the platform itself (its lifecycle, sensors, processing): the
    admin role. Everybody else goes through the platform's own operations."""
    return user is not None and Role(user.role) == Role.ADMIN


def check_file_locations(measurement: Any, storage: StorageResource | None) -> None:
    """Every file URI of ``measurement`` must lie in ``storage`` under ``measurements/<id>/``;
    :class:`SchemaViolation` naming the file otherwise (``http://…``, ``file:///etc/passwd``,
    another measurement's folder, or any URI when no storage is configured)."""
    files = measurement.files or []
    if not files:
        return
    uploads, _ = measurement_prefixes(measurement.id)
    for position, stored in enumerate(files):
        where = f"Measurement.files[{position}].uri"
        if storage is None:
            raise SchemaViolation(where, "this service has no storage configured; no file URIs")
        try:
            storage.key_of(stored.uri, within=uploads)
        except UnsafeKey as exc:
            raise SchemaViolation(
                where, f"files may only lie in the platform's storage under {uploads}/: {exc}"
            ) from None


def check_new_measurement(
    user: User | None, measurement: Any, storage: StorageResource | None
) -> Any:
    """Refuse what a caller may not claim in a new measurement and make ``user`` its owner.

    Non-platform callers register it as ``UPLOADED`` with no status reason, facts or files
    of their own making (those come from upload and processing), and own it; the platform
    (admin) registers on behalf of the ``uploaded_by`` it names (or of nobody)."""
    user = require(user, Action.UPLOAD)
    if not is_platform(user):
        if measurement.status != load_schema().MeasurementStatus.UPLOADED:
            raise NotYours(
                f"{user.name} may register a measurement only as UPLOADED; its status then "
                "moves through the platform's lifecycle"
            )
        for field in ("status_reason", "facts", "files"):
            if getattr(measurement, field) not in (None, []):
                raise NotYours(
                    f"{user.name} may not set Measurement.{field}: the platform writes it "
                    "(upload the files with `em2q upload` or the web form)"
                )
        measurement.uploaded_by = user.name  # never the caller's claim
    check_file_locations(measurement, storage)
    return measurement


def check_measurement_change(user: User | None, before: Any, after: Any) -> None:
    """May ``user`` turn the stored measurement ``before`` into ``after``? Technicians change
    only what they registered; only the platform changes :data:`PLATFORM_OWNED_FIELDS`."""
    user = require(user, Action.UPLOAD)
    if after.id != before.id:
        raise NotYours(f"a measurement's id cannot change ({before.id!r} → {after.id!r})")
    if Role(user.role) == Role.TECHNICIAN and before.uploaded_by != user.name:
        owner = before.uploaded_by or "nobody on record"
        raise NotYours(
            f"{user.name} has the technician role and may change only measurements they "
            f"uploaded; {before.id} was uploaded by {owner} (ask a scientist or an admin)"
        )
    if not is_platform(user):
        changed = [f for f in PLATFORM_OWNED_FIELDS if getattr(before, f) != getattr(after, f)]
        if changed:
            raise NotYours(
                f"{user.name} may not change Measurement.{changed[0]}: status, files and facts "
                "change only through the platform's lifecycle and processing"
            )


def may_record_workflow_run(user: User | None) -> User:
    """Workflow runs are recorded by the platform (admin role) only: a record of a run is
    provenance, which the people whose work it describes must not write."""
    user = require(user, Action.READ)
    if not is_platform(user):
        raise NotYours(
            f"{user.name} has the {user.role} role; workflow runs are recorded by the platform "
            "only (the admin role)"
        )
    return user


def parameter_set_author(user: User | None, claimed: str | None = None) -> str:
    """The author of a saved parameter set: always the signed-in user. A different ``claimed``
    author is refused (nobody saves in another person's name)."""
    user = require(user, Action.SAVE_PARAMETER_SET)
    if claimed and claimed != user.name:
        raise NotYours(
            f"{user.name} may not save a parameter set as {claimed!r}: the author is who is "
            "signed in"
        )
    return user.name
