"""Studies, in one place: create, add members, read, and each member's group.

A study (the schema's ``Study``, index ``studies``) is a set of measurements (``member_ids``)
with a design: measurement fields whose values are the groups compared (``design``, e.g.
``["sample.condition"]``; several fields give groups like ``"CONTROL/brain"``), and the
parameter set whose ``study`` step (``em2q_msi.parameters.StudyParameters``) says how they are
compared. Two analyses with different settings are two studies of the same members.

Every surface (CLI, notebook client, web) goes through this module; the study assets read the
study with :func:`get` and :func:`member_groups`. Dagster-free.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from em2q_resources.metadata.errors import DocumentNotFound
from em2q_resources.metadata.schema import to_document, utc_now
from em2q_resources.parameter_sets import DEFAULT_NAME, ResolvedParameters, resolve

if TYPE_CHECKING:
    from em2q_resources.metadata.store import MetadataStore

#: groups of several design fields are their values joined by this
GROUP_SEPARATOR = "/"


class InvalidStudy(ValueError):
    """A study that cannot be defined or compared; the message names the study, member or field."""


def field_value(measurement: Any, path: str) -> str | None:
    """The value of a dotted field path of a measurement, as people read it (enums by name,
    lists joined by ``,``); ``None`` when the measurement lacks it."""
    value: Any = to_document(measurement)
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if value is None or value == []:
        return None
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        raise InvalidStudy(f"design field {path!r} is a group of fields; name one of its fields")
    return str(value)


def _measurements(store: MetadataStore, ids: Iterable[str]) -> list[Any]:
    schema = store.schema
    found = []
    for measurement_id in ids:
        try:
            found.append(store.get(schema.Measurement, measurement_id).doc)
        except DocumentNotFound:
            raise InvalidStudy(f"no measurement {measurement_id!r} in the catalog") from None
    return found


def _check_design(measurements: Sequence[Any], design: Sequence[str]) -> None:
    for measurement in measurements:
        for path in design:
            if field_value(measurement, path) is None:
                raise InvalidStudy(
                    f"measurement {measurement.id!r} has no value for the design field "
                    f"{path!r}: fill it in, or choose another grouping field"
                )


def group_of(measurement: Any, design: Sequence[str]) -> str:
    """The group label of a measurement under ``design``."""
    values = [field_value(measurement, path) for path in design]
    missing = [p for p, v in zip(design, values, strict=True) if v is None]
    if missing:
        raise InvalidStudy(
            f"measurement {measurement.id!r} has no value for the design field {missing[0]!r}"
        )
    return GROUP_SEPARATOR.join(str(v) for v in values)


def create(
    store: MetadataStore,
    study_id: str,
    *,
    title: str,
    design: Sequence[str],
    members: Sequence[str] = (),
    project_id: str = "default",
    parameter_set: str = DEFAULT_NAME,
    description: str | None = None,
    author: str | None = None,
) -> Any:
    """Validate and save a new study; ``AlreadyExists`` if the id is taken.

    Every member must exist and have a value for every design field; the parameter set must
    resolve (its ``study`` values are checked when it was saved).
    """
    if not design:
        raise InvalidStudy("a study needs at least one design field (e.g. sample.condition)")
    members = _unique(members)
    _check_design(_measurements(store, members), design)
    resolve(store, parameter_set)
    study = store.schema.Study(
        id=study_id,
        project_id=project_id,
        title=title,
        description=description,
        created_at=utc_now(),
        member_ids=list(members),
        design=list(design),
        parameter_set=parameter_set,
        created_by=author,
    )
    store.create(study, refresh=True)
    return study


def _unique(ids: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for i in ids:
        seen.setdefault(i, None)
    return list(seen)


def add_members(store: MetadataStore, study_id: str, members: Sequence[str]) -> Any:
    """Add measurements to a study (already present ones are left as they are)."""
    study = get(store, study_id)
    _check_design(_measurements(store, members), study.design or [])

    def change(doc: Any) -> None:
        doc.member_ids = _unique([*(doc.member_ids or []), *members])
        doc.updated_at = utc_now()

    return store.modify(store.schema.Study, study_id, change).doc


def get(store: MetadataStore, study_id: str) -> Any:
    """The study; ``DocumentNotFound`` names it when there is none."""
    return store.get(store.schema.Study, study_id).doc


def list_studies(store: MetadataStore, page_size: int = 100) -> list[Any]:
    return store.search(store.schema.Study, sort=["id"], page_size=page_size).hits


def _present(store: MetadataStore, ids: Iterable[str]) -> tuple[list[Any], list[str]]:
    """``(measurements found, ids no longer in the catalog)``, in the order of ``ids``."""
    schema = store.schema
    found, missing = [], []
    for measurement_id in ids:
        try:
            found.append(store.get(schema.Measurement, measurement_id).doc)
        except DocumentNotFound:
            missing.append(measurement_id)
    return found, missing


def member_groups(store: MetadataStore, study: Any) -> dict[str, str]:
    """``{member id: group label}`` of the members still in the catalog, in the study's member
    order; a deleted member is left out (:func:`missing_members` names it), so the study is
    compared on the members that remain."""
    design = study.design or []
    found, _ = _present(store, study.member_ids or [])
    return {m.id: group_of(m, design) for m in found}


def missing_members(store: MetadataStore, study: Any) -> list[str]:
    """Members of the study that are no longer in the catalog (deleted after they were added);
    every surface shows them as "member missing" rather than failing on them."""
    return _present(store, study.member_ids or [])[1]


def parameters(store: MetadataStore, study: Any) -> ResolvedParameters:
    """The study's parameter set (its ``study`` step: ``.study``; its processing hash names the
    members' peak results the study reads)."""
    return resolve(store, study.parameter_set or DEFAULT_NAME)
