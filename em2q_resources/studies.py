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

from collections.abc import Iterable, Mapping, Sequence
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
    groups: Mapping[str, str] | None = None,
    rois: Sequence[tuple[str, str, str]] | None = None,
) -> Any:
    """Validate and save a new study; ``AlreadyExists`` if the id is taken.

    Every member must exist and have a value for every design field; the parameter set must
    resolve (its ``study`` values are checked when it was saved). ``groups`` (``{member:
    label}``, then no ``design``) sets each member's group by hand instead. ``rois``
    (``(measurement id, ROI name, group)`` each, then no ``design`` and no ``members``: they
    are the ROIs' measurements) makes a ROI-level study: each ROI's mean is a replicate.
    """
    if sum(bool(x) for x in (design, groups is not None, rois)) > 1:
        raise InvalidStudy("group the members by design fields, by hand or by ROIs: one of them")
    if not design and groups is None and not rois:
        raise InvalidStudy("a study needs at least one design field (e.g. sample.condition)")
    roi_entries = None
    if rois:
        roi_entries = _study_rois(store, rois)
        roi_members = _unique(r.measurement_id for r in roi_entries)
        if members and _unique(members) != roi_members:
            raise InvalidStudy("a ROI-level study's members are its ROIs' measurements")
        members = roi_members
    members = _unique(members)
    found = _measurements(store, members)
    manual = None
    if groups is not None:
        manual = _manual_groups(store, members, groups)
    else:
        _check_design(found, design)
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
        manual_groups=manual,
        rois=roi_entries,
    )
    store.create(study, refresh=True)
    return study


#: the longest group label typed by hand (characters)
MAX_GROUP_CHARS = 100


def _manual_groups(
    store: MetadataStore, members: Sequence[str], groups: Mapping[str, str]
) -> list[Any]:
    """The ``StudyGroup`` entries of ``members`` from ``{member: label}``; every member needs
    a label (trimmed, non-empty, at most :data:`MAX_GROUP_CHARS` characters)."""
    extra = sorted(set(groups) - set(members))
    if extra:
        raise InvalidStudy(f"groups given for {', '.join(extra)}, which are not members")
    entries = []
    for member in members:
        label = str(groups.get(member) or "").strip()
        if not label:
            raise InvalidStudy(f"member {member!r} has no group: type one for every member")
        if len(label) > MAX_GROUP_CHARS:
            raise InvalidStudy(
                f"member {member!r}: a group label of at most {MAX_GROUP_CHARS} characters"
            )
        entries.append(store.schema.StudyGroup(member_id=member, group=label))
    return entries


def _study_rois(store: MetadataStore, rois: Sequence[tuple[str, str, str]]) -> list[Any]:
    """The ``StudyRoi`` entries of ``(measurement id, ROI name, group)``: every ROI saved, each
    once, with a group label."""
    from em2q_resources.rois import roi_id

    entries, seen = [], set()
    for measurement_id, name, group in rois:
        label = str(group or "").strip()
        if not label or len(label) > MAX_GROUP_CHARS:
            raise InvalidStudy(f"ROI {name!r} of {measurement_id!r} needs a group label")
        key = roi_id(measurement_id, name)
        if key in seen:
            raise InvalidStudy(f"ROI {name!r} of {measurement_id!r} is listed twice")
        if not store.exists(store.schema.Roi, key):
            raise InvalidStudy(
                f"measurement {measurement_id!r} has no ROI {name!r}: draw it on its page first"
            )
        seen.add(key)
        entries.append(store.schema.StudyRoi(measurement_id=measurement_id, roi=name, group=label))
    return entries


def roi_replicates(store: MetadataStore, study: Any) -> list[Any]:
    """A ROI-level study's ``StudyRoi`` entries of the members still in the catalog (empty for
    a study of whole measurements)."""
    present = set(member_groups(store, study)) if study.rois else set()
    return [r for r in study.rois or [] if r.measurement_id in present]


def _unique(ids: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for i in ids:
        seen.setdefault(i, None)
    return list(seen)


def add_members(
    store: MetadataStore,
    study_id: str,
    members: Sequence[str],
    groups: Mapping[str, str] | None = None,
) -> Any:
    """Add measurements to a study (already present ones are left as they are); a study grouped
    by hand needs ``groups`` (``{member: label}``) for the new ones."""
    study = get(store, study_id)
    if study.rois:
        raise InvalidStudy(
            f"study {study_id!r} compares ROIs: define a new study with the ROIs to compare"
        )
    found = _measurements(store, members)
    new = [m for m in _unique(members) if m not in (study.member_ids or [])]
    manual = None
    if study.manual_groups:
        manual = _manual_groups(store, new, {m: (groups or {}).get(m, "") for m in new})
    elif groups:
        raise InvalidStudy(f"study {study_id!r} is grouped by {', '.join(study.design or [])}")
    else:
        _check_design(found, study.design or [])

    def change(doc: Any) -> None:
        doc.member_ids = _unique([*(doc.member_ids or []), *members])
        if manual:
            doc.manual_groups = [*(doc.manual_groups or []), *manual]
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
    if study.manual_groups:
        manual = {g.member_id: g.group for g in study.manual_groups}
        return {m.id: manual[m.id] for m in found}
    if study.rois:  # a member's ROI groups, e.g. "healthy+tumour"
        by_member: dict[str, set[str]] = {}
        for r in study.rois:
            by_member.setdefault(r.measurement_id, set()).add(r.group)
        return {m.id: "+".join(sorted(by_member[m.id])) for m in found}
    return {m.id: group_of(m, design) for m in found}


def missing_members(store: MetadataStore, study: Any) -> list[str]:
    """Members of the study that are no longer in the catalog (deleted after they were added);
    every surface shows them as "member missing" rather than failing on them."""
    return _present(store, study.member_ids or [])[1]


def parameters(store: MetadataStore, study: Any) -> ResolvedParameters:
    """The study's parameter set (its ``study`` step: ``.study``; its processing hash names the
    members' peak results the study reads)."""
    return resolve(store, study.parameter_set or DEFAULT_NAME)
