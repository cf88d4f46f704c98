"""Parameter sets, in one place: validate, normalise, hash, save, resolve, seed ``default``.

Every surface (CLI, notebook client, web catalog, Thrift ``saveParameterSet``) and every run
goes through this module, so a set no step can use is never stored and two sets with the same
effective values share one content hash, hence one result folder.

* :func:`validate` is the one check: :meth:`ProcessingParameters.from_dict`, its refusals
  raised as :class:`InvalidParameterSet` naming the field (``peak_picking.snr_threshold``).
* :func:`normalise` gives the values the steps run with (every step, every name, defaults
  filled in); :func:`content_hash` is the SHA-256 of their canonical JSON
  (:meth:`ProcessingParameters.digest`): ``{"peak_picking": {"snr_threshold": 3}}``,
  ``{"peak_picking": {"snr_threshold": 3.0}}`` and ``{}`` plus defaults all hash the same.
* :func:`save` stores the values as their author wrote them (what ``params show`` shows), as a
  new immutable version ``name@vN`` unless a version with the same content hash exists.
* :func:`resolve` reads a set by name (newest version) or ``name@vN``; its ``content_hash`` is
  recomputed from the values, so results are always filed under the hash of what ran.
* :func:`seed_default` saves the processing core's defaults as ``default`` once, at set-up
  (:func:`em2q_resources.connections.set_up_metadata_store`); reading never writes.

Dagster-free: a run reads its set through ``ParameterSetResource``
(:mod:`em2q_resources.metadata.resource`), which calls :func:`resolve`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from em2q_msi.parameters import ParameterError, ProcessingParameters, StudyParameters
from em2q_resources.metadata.errors import AlreadyExists, DocumentNotFound, VersionConflict
from em2q_resources.metadata.schema import Schema, SchemaViolation, to_document, utc_now

if TYPE_CHECKING:
    from em2q_resources.metadata.store import MetadataStore

#: the step of a set holding a study's comparison values (``StudyParameters``); not a
#: processing step, so it does not enter the processing hash result folders are named after
STUDY_STEP = StudyParameters.step

#: the team's default set, saved from the processing core's defaults at set-up
PARAMETER_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
DEFAULT_NAME = "default"

#: run tag naming the parameter set (set by workflows launched from the CLI, web or notebook;
#: Dagster copies a backfill's tags onto each of its runs)
PARAMETER_SET_TAG = "em2q/parameter_set"

Values = Mapping[str, Mapping[str, Any]]


class InvalidParameterSet(ParameterError):
    """Values no processing step can use; ``field`` names the culprit (``step.name``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class DefaultNotSeeded(DocumentNotFound):
    """No ``default`` set is saved: the store was not set up."""

    def __init__(self) -> None:
        super().__init__("ParameterSet", DEFAULT_NAME)
        self.args = (
            f"parameter set {DEFAULT_NAME!r} not found: set the store up first (`em2q setup`; "
            f"`em2q dev` and `em2q metadata-serve` do it), or save one with `em2q params save {DEFAULT_NAME} VALUES`",
        )


# ---------------------------------------------------------------------- validate, normalise, hash


def validate(values: Values | ProcessingParameters) -> ProcessingParameters:
    """The one check of a parameter set: unknown steps or names, wrong types, out of range."""
    if isinstance(values, ProcessingParameters):
        return values
    if not isinstance(values, Mapping) or not values:
        raise InvalidParameterSet(
            "values", f"expected {{step: {{name: value}}}} with at least one step, got {values!r}"
        )
    plain = {
        step: dict(params) if isinstance(params, Mapping) else params
        for step, params in values.items()
    }
    study = plain.pop(STUDY_STEP, None)
    try:
        if study is not None:
            StudyParameters.from_dict(study)
        return ProcessingParameters.from_dict(plain)
    except InvalidParameterSet:
        raise
    except ParameterError as exc:
        field, _, message = str(exc).partition(": ")
        raise InvalidParameterSet(field, message) from None


def study_parameters(values: Values | ProcessingParameters) -> StudyParameters:
    """The set's ``study`` step (defaults where it has none), checked like every step."""
    study = values.get(STUDY_STEP) if isinstance(values, Mapping) else None
    try:
        return StudyParameters.from_dict(dict(study) if isinstance(study, Mapping) else {})
    except ParameterError as exc:
        field_, _, message = str(exc).partition(": ")
        raise InvalidParameterSet(field_, message) from None


def _identity(values: Values | ProcessingParameters) -> str:
    """What makes two saved versions the same: the processing hash, plus the study values'
    digest when the set has a ``study`` step (a set differing only there is a new version)."""
    digest = content_hash(values)
    if isinstance(values, Mapping) and STUDY_STEP in values:
        both = f"{digest}:{study_parameters(values).digest()}"
        digest = hashlib.sha256(both.encode()).hexdigest()
    return digest


def normalise(values: Values | ProcessingParameters) -> dict[str, dict[str, Any]]:
    """The values the steps run with: every step and name, defaults filled in, canonical types."""
    return validate(values).to_dict()


def content_hash(values: Values | ProcessingParameters) -> str:
    """THE hash of a parameter set (SHA-256 over the normalised values); result folders are
    named after its first 16 hex digits."""
    return validate(values).digest()


# ---------------------------------------------------------------------- stored form


def values_to_documents(values: Values, schema: Schema) -> list[Any]:
    """``{step: {name: value}}`` as the schema's list of ``ParameterValue`` (searchable, nested);
    ``None`` means "not set" (the step's default applies) and is left out."""
    if not isinstance(values, Mapping) or not values:
        raise SchemaViolation(
            "ParameterSet.values", "expected {step: {name: value}} with at least one step"
        )
    out = []
    for step, params in sorted(values.items()):
        if not isinstance(params, Mapping):
            raise SchemaViolation(f"ParameterSet.values.{step}", "expected {name: value}")
        for name, value in sorted(params.items()):
            if value is None:
                continue
            path = f"ParameterSet.values.{step}.{name}"
            item = schema.ParameterValue(step=step, name=name)
            if isinstance(value, bool):
                item.text = "true" if value else "false"
            elif isinstance(value, int | float):
                item.number = float(value)
            elif isinstance(value, str):
                item.text = value
            elif isinstance(value, list | tuple) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value
            ):
                item.numbers = [float(v) for v in value]
            elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
                item.texts = list(value)
            else:
                raise SchemaViolation(
                    path, f"expected a number, text or list of numbers, got {value!r}"
                )
            out.append(item)
    return out


def values_from_documents(value_list: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """The inverse of :func:`values_to_documents` (booleans come back as bools)."""
    out: dict[str, dict[str, Any]] = {}
    for item in value_list:
        if item.texts is not None:
            value: Any = list(item.texts)
        elif item.numbers is not None:
            value = list(item.numbers)
        elif item.number is not None:
            value = item.number
        elif item.text in ("true", "false"):
            value = item.text == "true"
        else:
            value = item.text
        out.setdefault(item.step, {})[item.name] = value
    return out


def saved_hash(saved: Any) -> str | None:
    """The content hash of a saved set, recomputed from its values (sets saved before the one
    hash carry another one in their ``content_hash`` field; see docs/processing.md); ``None``
    for a set saved before every surface checked values, that no step can use."""
    try:
        return content_hash(values_from_documents(saved.values))
    except InvalidParameterSet:
        return None


def _saved_identity(saved: Any) -> str | None:
    try:
        return _identity(values_from_documents(saved.values))
    except InvalidParameterSet:
        return None


def describe(saved: Any) -> dict[str, Any]:
    """A saved set as JSON for people (``params show``, the web page): its fields, ``values``
    as ``{step: {name: value}}`` and ``content_hash`` the one hash its results are filed under."""
    doc = to_document(saved)
    doc["values"] = values_from_documents(saved.values)
    doc["content_hash"] = saved_hash(saved) or doc["content_hash"]
    return doc


# ---------------------------------------------------------------------- save, resolve, seed


def save(
    store: MetadataStore,
    name: str,
    values: Values | ProcessingParameters,
    *,
    author: str,
    comment: str | None = None,
) -> Any:
    """Validate and save ``values`` under ``name``; returns the saved ``ParameterSet``.

    The same effective values as a saved version of ``name`` return that version; new values
    get the next version. Saved sets are never changed; concurrent saves get distinct versions.
    """
    if not PARAMETER_SET_NAME.match(name or ""):
        raise SchemaViolation(
            "ParameterSet.name",
            f"{name!r} is not a valid name (letters, digits, '_', '.', '-'; at most 128)",
        )
    params = validate(values)
    digest = params.digest()
    given = params.to_dict() if isinstance(values, ProcessingParameters) else values
    identity = _identity(given)
    value_list = values_to_documents(given, store.schema)
    if _identity(values_from_documents(value_list)) != identity:
        # what was written would not read back as what was checked (a None that meant
        # something): store the normalised values instead
        normalised = params.to_dict()
        if isinstance(given, Mapping) and STUDY_STEP in given:
            normalised[STUDY_STEP] = study_parameters(given).to_dict()
        value_list = values_to_documents(normalised, store.schema)
    for _ in range(16):
        existing = store.parameter_sets(name)
        for saved in existing:
            if _saved_identity(saved) == identity:
                return saved
        version = max((s.version for s in existing), default=0) + 1
        parameter_set = store.schema.ParameterSet(
            id=f"{name}@v{version}",
            name=name,
            version=version,
            author=author,
            created_at=utc_now(),
            comment=comment,
            values=value_list,
            content_hash=digest,
        )
        try:
            store.create(parameter_set)
            return parameter_set
        except AlreadyExists:
            continue  # someone saved this version at the same moment; look again
    raise VersionConflict("ParameterSet", name, "too many concurrent saves")


@dataclass(frozen=True)
class ResolvedParameters:
    """A saved parameter set, ready for the processing core."""

    id: str
    content_hash: str
    values: dict[str, dict[str, Any]]
    params: ProcessingParameters
    #: the set's ``study`` step (defaults where it has none): how studies compare
    study: StudyParameters = field(default_factory=StudyParameters)

    @property
    def short_hash(self) -> str:
        """The path segment results of this set are stored under."""
        return self.content_hash[:16]


def resolve(store: MetadataStore, name_or_id: str = DEFAULT_NAME) -> ResolvedParameters:
    """A saved set by name (newest version) or ``name@vN``; ``DocumentNotFound`` if none.

    Reading never writes: ``default`` exists once the store is set up (:func:`seed_default`).
    """
    try:
        saved = store.get_parameter_set(name_or_id)
    except DocumentNotFound:
        if name_or_id == DEFAULT_NAME:
            raise DefaultNotSeeded() from None
        raise
    values = values_from_documents(saved.values)
    params = validate(values)
    return ResolvedParameters(
        id=saved.id,
        content_hash=params.digest(),
        values=values,
        params=params,
        study=study_parameters(values),
    )


def seed_default(store: MetadataStore) -> Any:
    """Save the processing core's defaults as ``default`` unless a ``default`` exists (any
    version: the team may have saved its own); returns the newest ``default``."""
    existing = store.parameter_sets(DEFAULT_NAME)
    if existing:
        return existing[-1]
    return save(
        store,
        DEFAULT_NAME,
        ProcessingParameters.defaults(),
        author="em2q",
        comment="the processing core's defaults",
    )


# ---------------------------------------------------------------------- Dagster resource
