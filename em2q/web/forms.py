"""The catalog's forms read back into values, each field checked where it is typed.

* The experimental-setup form, generated from the Thrift schema (``Measurement`` minus the
  fields the platform fills in). Every field is a dotted schema path (``settings.polarity``),
  so a problem the schema names (``Measurement.settings.polarity: …``) lands next to its input.
* The parameter-set editor: one input per parameter the processing core knows
  (``value:<step>.<name>``).
* The m/z values of ion images (``760.58, 798.54``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from thriftpy2.thrift import TType

from em2q.setup_file import PLATFORM_FIELDS, measurement_from_setup
from em2q_msi import ion_images as ions
from em2q_msi.parameters import ProcessingParameters
from em2q_resources.metadata import SchemaViolation, load_schema
from em2q_resources.metadata.schema import field_unit, struct_fields

_INTEGER_TYPES = {TType.BYTE, TType.I16, TType.I32, TType.I64}
#: long free text gets a text area instead of a one-line input
_TEXT_AREAS = {"description", "condition_detail"}
#: the longest text one input takes (characters): a title, an id, a free-text description
MAX_TEXT_CHARS = 1000
MAX_TEXT_AREA_CHARS = 20_000


@dataclass(frozen=True)
class FormField:
    """One input of the setup form."""

    path: str  # dotted schema path, also the input's name
    label: str
    kind: str  # text, textarea, number, integer, date, choice, list
    required: bool  # required by the schema (inside an optional group: once it is used)
    unit: str | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class FormGroup:
    """A struct of the schema shown as a fieldset; optional groups may be left empty."""

    path: str  # "" for the top level
    title: str
    required: bool
    fields: tuple[FormField, ...] = field(default=())


def _label(name: str) -> str:
    text = re.sub(r"_(um|nm|hz|percent)$", "", name).replace("_", " ")
    return text.replace(" mz", " m/z").replace("mz ", "m/z ").strip().capitalize()


def _is_enum(info: Any) -> bool:
    return isinstance(info, type) and hasattr(info, "_VALUES_TO_NAMES")


def _title(cls: type) -> str:
    """``SpectrometerSettings`` → ``Spectrometer settings``."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__).capitalize()


def _kind(name: str, ttype: int, info: Any, annotations: dict[str, str]) -> str:
    if _is_enum(info):
        return "choice"
    if ttype in (TType.LIST, TType.SET):
        return "list"
    if ttype == TType.DOUBLE:
        return "number"
    if ttype in _INTEGER_TYPES:
        return "integer"
    if annotations.get("em2q.type") == "date":
        return "date"
    return "textarea" if name in _TEXT_AREAS else "text"


def _walk(cls: type, prefix: str, title: str, required: bool, groups: list[FormGroup]) -> None:
    fields: list[FormField] = []
    nested: list[tuple[type, str, str, bool]] = []
    annotations = getattr(cls, "__thrift_field_annotations__", None) or {}
    for name, ttype, info, is_required in struct_fields(cls):
        path = f"{prefix}{name}"
        if not prefix and name in PLATFORM_FIELDS:
            continue
        if ttype == TType.STRUCT:
            nested.append((info, f"{path}.", _title(info), bool(is_required)))
            continue
        choices = (
            tuple(info._VALUES_TO_NAMES[v] for v in sorted(info._VALUES_TO_NAMES))
            if _is_enum(info)
            else ()
        )
        fields.append(
            FormField(
                path=path,
                label=_label(name),
                kind=_kind(name, ttype, info, annotations.get(name, {})),
                required=bool(is_required),
                unit=field_unit(cls, name),
                choices=choices,
            )
        )
    groups.append(FormGroup(prefix.rstrip("."), title, required, tuple(fields)))
    for struct, path, label, is_required in nested:
        _walk(struct, path, label, required and is_required, groups)


def setup_form() -> list[FormGroup]:
    """The setup form's groups in schema order: the measurement, then each struct in it."""
    groups: list[FormGroup] = []
    _walk(load_schema().Measurement, "", "Measurement", True, groups)
    return groups


def _all_fields() -> list[tuple[FormGroup, FormField]]:
    return [(g, f) for g in setup_form() for f in g.fields]


def _parse(form_field: FormField, raw: str) -> Any:
    limit = MAX_TEXT_AREA_CHARS if form_field.kind == "textarea" else MAX_TEXT_CHARS
    if len(raw) > limit:
        raise ValueError(f"at most {limit} characters, got {len(raw)}")
    if form_field.kind == "number":
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw[:40]!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {raw[:40]!r}")
        return value
    if form_field.kind == "date":
        try:
            (date if len(raw) <= 10 else datetime).fromisoformat(raw)
        except ValueError:
            raise ValueError(f"expected a date like 2024-05-31, got {raw[:40]!r}") from None
        return raw
    if form_field.kind == "integer":
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw[:40]!r}") from None
        if abs(value) >= 2**63:
            raise ValueError(f"{raw[:40]}… is too large")
        return value
    if form_field.kind == "choice" and raw not in form_field.choices:
        raise ValueError(f"{raw[:40]!r} is not one of {', '.join(form_field.choices)}")
    if form_field.kind == "list":
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _put(document: dict, path: str, value: Any) -> None:
    *parents, name = path.split(".")
    for part in parents:
        document = document.setdefault(part, {})
    document[name] = value


def setup_from_form(form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The setup document a submitted form describes and ``{path: problem}`` for every field
    that is missing, malformed or refused by the schema.

    An optional group (e.g. the sample) left entirely empty is left out; once one of its
    fields is filled in, its required fields are required too.
    """
    document: dict[str, Any] = {}
    problems: dict[str, str] = {}
    used_groups = set()
    for group, form_field in _all_fields():
        if str(form.get(form_field.path) or "").strip() and group.path:
            parts = group.path.split(".")
            used_groups.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    for group, form_field in _all_fields():
        raw = str(form.get(form_field.path) or "").strip()
        group_needed = group.required or group.path in used_groups
        if not raw:
            if form_field.required and group_needed:
                problems[form_field.path] = "required: fill this in"
            continue
        try:
            _put(document, form_field.path, _parse(form_field, raw))
        except ValueError as exc:
            problems[form_field.path] = str(exc)
    if not problems:
        try:  # what only the schema knows (it names the first field it refuses)
            measurement_from_setup(document, id="check", uploaded_at="2000-01-01T00:00:00Z")
        except SchemaViolation as exc:
            problems[form_path(exc.field)] = exc.message
    return document, problems


def setup_form_values(setup: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The flat ``{dotted path: text}`` the upload form sends for a setup document (the inverse
    of :func:`setup_from_form`; scripts and load tests fill the form with it)."""
    values: dict[str, str] = {}
    for key, value in setup.items():
        if isinstance(value, Mapping):
            values.update(setup_form_values(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            values[f"{prefix}{key}"] = ", ".join(map(str, value))
        else:
            values[f"{prefix}{key}"] = str(value)
    return values


def form_path(schema_path: str) -> str:
    """``Measurement.settings.polarity`` → ``settings.polarity`` (the input's name)."""
    return re.sub(r"\[\d+\]", "", schema_path.removeprefix("Measurement."))


def problem_field(message: str) -> tuple[str | None, str]:
    """Split a setup problem ``Measurement.sample.organism: required …`` into the form path
    and the message; ``(None, message)`` when it names no field."""
    head, sep, rest = message.partition(": ")
    if sep and head.startswith("Measurement."):
        return form_path(head), rest
    return None, message


# ---------------------------------------------------------------- the parameter-set editor


def parameter_rows(values: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every parameter the processing core knows (its defaults), with ``values`` filled in:
    ``[{step, name, kind (number|numbers|text), text}]``."""
    rows = []
    for step, defaults in ProcessingParameters.defaults().to_dict().items():
        for name, default in defaults.items():
            value = values.get(step, {}).get(name, default)
            if isinstance(default, list):
                kind, text = "numbers", ", ".join(f"{v:g}" for v in value or [])
            elif isinstance(default, str):
                kind, text = "text", str(value)
            else:
                kind, text = "number", "" if value is None else f"{value:g}"
            rows.append({"step": step, "name": name, "kind": kind, "text": text})
    return rows


def by_step(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Editor rows grouped by step, in processing order (Jinja's groupby would sort them)."""
    steps: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        steps.setdefault(row["step"], []).append(row)
    return list(steps.items())


def parameter_values(rows: list[dict[str, Any]], form: Any) -> tuple[dict, dict[str, str]]:
    """``{step: {name: value}}`` from the editor's inputs, and ``{step.name: problem}``."""
    values: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for row in rows:
        key = f"{row['step']}.{row['name']}"
        text = str(form.get(f"value:{key}") or "").strip()
        try:
            if row["kind"] == "numbers":
                value: Any = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
            elif row["kind"] == "number":
                value = float(text) if text else None
            else:
                value = text or None
        except ValueError:
            errors[key] = (
                f"expected {'numbers separated by commas' if row['kind'] == 'numbers' else 'a number'}, got {text!r}"
            )
            continue
        if value is not None:
            values.setdefault(row["step"], {})[row["name"]] = value
    return values, errors


# ---------------------------------------------------------------- ion images' m/z values

#: the most m/z values one page draws ion images for
MAX_MZ_VALUES = 12


def mz_list(text: str, ppm: float) -> tuple[list[float], str | None]:
    """``"760.58, 798.54"`` → m/z values; a problem message when one is not a finite positive
    m/z within bounds, the ppm is not, or there are more than :data:`MAX_MZ_VALUES`."""
    try:
        ions.check_window(1.0, ppm)
    except ions.IonImageError as exc:
        return [], str(exc)
    items = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    if len(items) > MAX_MZ_VALUES:
        return [], f"at most {MAX_MZ_VALUES} m/z values at once, got {len(items)}"
    values = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            return [], f"{item[:40]!r} is not an m/z value; give numbers separated by commas"
        try:
            ions.check_window(value, ppm)
        except ions.IonImageError as exc:
            return [], str(exc)
        values.append(value)
    return values, None
