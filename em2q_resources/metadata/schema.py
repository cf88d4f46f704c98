"""The metadata schema, derived entirely from ``thrift/em2q.thrift``.

The Thrift IDL is the one source of truth. From it this module derives

* the Python classes (``thriftpy2`` loads the IDL at import time, no generated code to drift),
* the Elasticsearch mapping of every entity (see the annotations documented in the IDL),
* the JSON documents stored in Elasticsearch: Thrift field names as keys, enums by name,
  absent optional fields left out, so ``from_document(to_document(x)) == x`` exactly.

Every conversion validates: a missing required field, a wrong type or an unknown enum value
raises :class:`SchemaViolation` naming the dotted path of the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import thriftpy2
from thriftpy2.thrift import TType

IDL_PATH = Path(__file__).resolve().parents[2] / "thrift" / "em2q.thrift"


def utc_now() -> str:
    """ISO-8601 UTC timestamp with milliseconds, the format every date field uses."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_INTEGER_RANGES = {
    TType.BYTE: (-(2**7), 2**7 - 1),
    TType.I16: (-(2**15), 2**15 - 1),
    TType.I32: (-(2**31), 2**31 - 1),
    TType.I64: (-(2**63), 2**63 - 1),
}
_ES_NUMERIC = {TType.BYTE: "byte", TType.I16: "short", TType.I32: "integer", TType.I64: "long"}


class SchemaViolation(ValueError):
    """A document does not match the Thrift schema; ``field`` is the dotted path at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidIdentifier(SchemaViolation):
    """An id or name that becomes a storage key, an index id or a URL breaks the one grammar
    (:data:`IDENTIFIER_RULE`); refused on every surface before anything is stored."""


class InvalidText(SchemaViolation):
    """A string holds what no record may hold: NUL or other control characters, lone UTF-16
    surrogates (text that was not valid UTF-8), or a non-character."""


#: the one grammar of ids and names (measurement ids, parameter-set and workflow names,
#: project/study/sample ids, file names that reach storage): 1-128 ASCII letters, digits,
#: ``_``, ``-`` and ``.``, starting with a letter or digit, no ``..``, not ending in ``.``
IDENTIFIER_RULE = (
    "1-128 ASCII letters, digits, '_', '-' and '.', starting with a letter or digit, "
    "without '..' and not ending in '.'"
)
IDENTIFIER_MAX_CHARS = 128
_IDENTIFIER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.))*(?<!\.)", re.ASCII)
_VERSIONED = re.compile(r"(?P<name>.+)@v(?P<version>[1-9][0-9]{0,9})", re.ASCII)
#: C0 controls but TAB/LF/CR, DEL, C1 controls, UTF-16 surrogates, U+FFFE/U+FFFF
_FORBIDDEN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def check_identifier(value: Any, field: str = "id") -> str:
    """``value`` when it is a valid id or name (:data:`IDENTIFIER_RULE`), else
    :class:`InvalidIdentifier` naming ``field``."""
    if not isinstance(value, str):
        raise InvalidIdentifier(field, f"expected an identifier string, got {type(value).__name__}")
    if len(value) > IDENTIFIER_MAX_CHARS or not _IDENTIFIER.fullmatch(value):
        shown = value if len(value) <= 80 else value[:80] + "…"
        raise InvalidIdentifier(
            field, f"{shown!r} is not a valid identifier: use {IDENTIFIER_RULE}"
        )
    return value


def check_versioned_identifier(value: Any, field: str = "id") -> str:
    """``<name>@v<version>`` (a saved parameter set's id) with ``name`` a valid identifier."""
    matched = _VERSIONED.fullmatch(value) if isinstance(value, str) else None
    if matched is None:
        check_identifier(value, field)  # a bare name is allowed where a version is optional
        return value
    check_identifier(matched["name"], field)
    return value


def check_text(value: str, field: str = "text") -> str:
    """``value`` in NFC, or :class:`InvalidText` when it holds control characters (TAB, LF and
    CR are allowed), lone surrogates or non-characters: such a string would be stored and then
    break every page and export that shows it."""
    bad = _FORBIDDEN_TEXT.search(value)
    if bad is not None:
        char = bad.group()
        kind = (
            "a lone UTF-16 surrogate (not valid UTF-8)"
            if "\ud800" <= char <= "\udfff"
            else ("a NUL character" if char == "\x00" else "a control character")
        )
        raise InvalidText(
            field, f"holds {kind} U+{ord(char):04X} at position {bad.start()}; remove it"
        )
    return value if unicodedata.is_normalized("NFC", value) else unicodedata.normalize("NFC", value)


_IDENTIFIER_CHECKS: dict[str, Callable[[Any, str], str]] = {
    "name": check_identifier,
    "versioned": check_versioned_identifier,
}


def _check_mass_range(document: dict, path: str) -> None:
    low, high = document.get("min_mz"), document.get("max_mz")
    if low is None or high is None:
        return
    if low < 0:
        raise SchemaViolation(f"{path}.min_mz", f"m/z cannot be negative, got {low}")
    if not low <= high:  # equal: a measurement of a single m/z value
        raise SchemaViolation(path, f"min_mz {low} must not exceed max_mz {high}")


#: checks across the fields of one struct, by struct name: ``(document, path)``, raising
#: :class:`SchemaViolation`
_STRUCT_RULES: dict[str, Callable[[dict, str], None]] = {"MassRange": _check_mass_range}


@dataclass(frozen=True)
class FieldInfo:
    """What a dotted schema path points at, for building queries."""

    path: str
    es_type: str  # keyword, text-searchable keyword, date, long, double, boolean, object, nested
    enum: type | None = None
    nested_path: str | None = None  # the enclosing nested field, if any
    searchable_text: bool = False


@dataclass(frozen=True)
class Entity:
    """A struct with its own index (``em2q.index`` annotation)."""

    name: str
    cls: type
    index: str  # alias suffix, e.g. "measurements"
    mapping: dict = field(hash=False, compare=False)

    @property
    def mapping_hash(self) -> str:
        canonical = json.dumps(self.mapping, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Schema:
    module: ModuleType
    entities: dict[str, Entity]

    def entity(self, cls_or_name: type | str) -> Entity:
        name = cls_or_name if isinstance(cls_or_name, str) else cls_or_name.__name__
        try:
            return self.entities[name]
        except KeyError:
            raise SchemaViolation(
                name, f"not an indexed entity; one of {sorted(self.entities)}"
            ) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)


# ----------------------------------------------------------------------------- loading


def load_schema(idl_path: Path | str = IDL_PATH, module_name: str = "em2q_thrift") -> Schema:
    """Load the IDL and derive each entity's mapping. Cached per path."""
    return _load(str(idl_path), module_name)


@cache
def _load(idl_path: str, module_name: str) -> Schema:
    module = thriftpy2.load(idl_path, module_name=module_name)
    entities = {}
    for name, cls in vars(module).items():
        annotations = getattr(cls, "__thrift_annotations__", None) or {}
        if isinstance(cls, type) and "em2q.index" in annotations:
            entities[name] = Entity(name, cls, annotations["em2q.index"], struct_mapping(cls))
    return Schema(module=module, entities=entities)


def _annotations(cls: type, name: str) -> dict[str, str]:
    return (getattr(cls, "__thrift_field_annotations__", None) or {}).get(name, {})


def _fields(cls: type):
    """``(name, ttype, type_info, required)`` for each field of a Thrift struct."""
    for spec in cls.thrift_spec.values():
        if len(spec) == 3:
            ttype, name, required = spec
            yield name, ttype, None, required
        else:
            ttype, name, type_info, required = spec
            yield name, ttype, type_info, required


def _is_enum(type_info: Any) -> bool:
    return isinstance(type_info, type) and hasattr(type_info, "_VALUES_TO_NAMES")


# ----------------------------------------------------------------------------- mappings


def struct_mapping(cls: type) -> dict:
    """The Elasticsearch mapping (``{"properties": ...}``) of a struct, derived from the IDL."""
    properties = {}
    for name, ttype, type_info, _ in _fields(cls):
        properties[name] = _field_mapping(ttype, type_info, _annotations(cls, name))
    return {"properties": properties}


def _field_mapping(ttype: int, type_info: Any, annotations: dict[str, str]) -> dict:
    if annotations.get("em2q.index") == "false":
        return (
            {"type": "object", "enabled": False}
            if ttype == TType.STRUCT
            else {
                "type": "keyword",
                "index": False,
                "doc_values": False,
            }
        )
    if ttype in (TType.LIST, TType.SET):
        element_type, element_info = (
            type_info if isinstance(type_info, tuple) else (type_info, None)
        )
        inner = _field_mapping(element_type, element_info, annotations)
        if element_type == TType.STRUCT and annotations.get("em2q.nested") == "true":
            inner = {"type": "nested", **inner}
        return inner
    if ttype == TType.STRUCT:
        return struct_mapping(type_info)
    if ttype == TType.MAP:
        return {"type": "object", "enabled": False}
    if ttype == TType.STRING:
        if annotations.get("em2q.type") == "date":
            return {"type": "date", "format": "strict_date_optional_time||epoch_millis"}
        if annotations.get("em2q.search") == "text":
            return {
                "type": "keyword",
                "normalizer": "lowercase",
                "ignore_above": 1024,
                "fields": {"text": {"type": "text"}},
            }
        return {"type": "keyword"}
    if ttype == TType.BOOL:
        return {"type": "boolean"}
    if ttype == TType.DOUBLE:
        return {"type": "double"}
    if _is_enum(type_info):
        return {"type": "keyword"}
    if ttype in _ES_NUMERIC:
        return {"type": _ES_NUMERIC[ttype]}
    raise SchemaViolation("?", f"unsupported Thrift type {ttype}")


def field_info(cls: type, dotted_path: str) -> FieldInfo:
    """Resolve ``settings.polarity`` or ``values.number`` against a struct, for queries."""
    current: type = cls
    nested_path = None
    walked: list[str] = []
    parts = dotted_path.split(".")
    for position, part in enumerate(parts):
        specs = {name: (ttype, info) for name, ttype, info, _ in _fields(current)}
        if part not in specs:
            known = ", ".join(sorted(specs))
            raise SchemaViolation(
                dotted_path, f"unknown field {part!r} of {current.__name__} ({known})"
            )
        ttype, info = specs[part]
        annotations = _annotations(current, part)
        walked.append(part)
        is_last = position == len(parts) - 1
        if ttype in (TType.LIST, TType.SET):
            ttype, info = info if isinstance(info, tuple) else (info, None)
            if ttype == TType.STRUCT and annotations.get("em2q.nested") == "true":
                nested_path = ".".join(walked)
        if ttype == TType.STRUCT:
            if is_last:
                kind = "nested" if nested_path == ".".join(walked) else "object"
                return FieldInfo(dotted_path, kind, nested_path=nested_path)
            current = info
            continue
        if not is_last:
            raise SchemaViolation(dotted_path, f"{part!r} is not a struct")
        mapping = _field_mapping(ttype, info, annotations)
        return FieldInfo(
            path=dotted_path,
            es_type=mapping["type"],
            enum=info if _is_enum(info) else None,
            nested_path=nested_path,
            searchable_text="fields" in mapping,
        )
    raise SchemaViolation(dotted_path, "empty field path")


def struct_fields(cls: type) -> list[tuple[str, int, Any, bool]]:
    """``(name, ttype, type_info, required)`` of each field in IDL order (for form builders)."""
    return list(_fields(cls))


def field_unit(cls: type, dotted_path: str) -> str | None:
    """The unit of a number field (``em2q.unit`` annotation, e.g. ``µm``); None if it has none."""
    *parents, name = dotted_path.split(".")
    for part in parents:
        specs = {n: info for n, _, info, _ in _fields(cls)}
        if part not in specs or not isinstance(specs[part], type):
            raise SchemaViolation(dotted_path, f"{part!r} is not a struct field of {cls.__name__}")
        cls = specs[part]
    return _annotations(cls, name).get("em2q.unit")


def text_fields(cls: type, prefix: str = "") -> list[str]:
    """Every full-text sub-field of a struct (``title.text``, ``sample.organism.text`` …)."""
    found = []
    for name, ttype, info, _ in _fields(cls):
        annotations = _annotations(cls, name)
        if ttype in (TType.LIST, TType.SET):
            ttype, info = info if isinstance(info, tuple) else (info, None)
            if annotations.get("em2q.nested") == "true":
                continue  # nested text is searched through its own nested query
        if ttype == TType.STRUCT:
            found += text_fields(info, f"{prefix}{name}.")
        elif ttype == TType.STRING and annotations.get("em2q.search") == "text":
            found.append(f"{prefix}{name}.text")
    return found


# ----------------------------------------------------------------------------- documents


class _Invalid(Exception):
    """Raised by the fast converters; the slow path then finds and names the field."""


def to_document(obj: Any) -> dict:
    """A Thrift struct as the JSON document stored in Elasticsearch (validated).

    A compiled per-class plan converts valid documents fast (bulk ingestion runs through it);
    when it meets a problem, the field-by-field path below names the field at fault.
    """
    try:
        return _plan(type(obj))(obj)
    except _Invalid:
        pass
    return _to_document_checked(obj)


def _fast_scalar(ttype: int, info: Any) -> Callable[[Any], Any]:
    if _is_enum(info):
        names = info._VALUES_TO_NAMES

        def enum_name(value: Any) -> str:
            if type(value) is not int or value not in names:
                raise _Invalid
            return names[value]

        return enum_name
    if ttype == TType.STRING:

        def string(value: Any) -> str:
            if (
                type(value) is not str
                or _FORBIDDEN_TEXT.search(value)
                or not unicodedata.is_normalized("NFC", value)
            ):
                raise _Invalid  # the checked path names the field (and normalises)
            return value

        return string
    if ttype == TType.BOOL:

        def boolean(value: Any) -> bool:
            if type(value) is not bool:
                raise _Invalid
            return value

        return boolean
    if ttype == TType.DOUBLE:

        def double(value: Any) -> float:
            if (type(value) is not float and type(value) is not int) or not math.isfinite(value):
                raise _Invalid
            return float(value)

        return double
    if ttype in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[ttype]

        def integer(value: Any) -> int:
            if type(value) is not int or not low <= value <= high:
                raise _Invalid
            return value

        return integer
    raise SchemaViolation("?", f"unsupported Thrift type {ttype}")


def _fast_converter(ttype: int, info: Any) -> Callable[[Any], Any]:
    if ttype == TType.STRUCT:
        return _plan(info)
    if ttype in (TType.LIST, TType.SET):
        element = _fast_converter(*_split(info))

        def sequence(value: Any) -> list:
            if not isinstance(value, list | tuple | set):
                raise _Invalid
            return [element(v) for v in value]

        return sequence
    if ttype == TType.MAP:
        key, item = _fast_converter(*_split(info[0])), _fast_converter(*_split(info[1]))

        def mapping(value: Any) -> dict:
            if not isinstance(value, dict):
                raise _Invalid
            return {key(k): item(v) for k, v in value.items()}

        return mapping
    return _fast_scalar(ttype, info)


@cache
def _plan(cls: type) -> Callable[[Any], dict]:
    """A converter for one struct class, built once (structs refer to each other lazily)."""
    steps: list[tuple[str, bool, Callable[[Any], Any]]] = []
    rule = _STRUCT_RULES.get(cls.__name__)

    def convert(obj: Any) -> dict:
        if type(obj) is not cls:
            raise _Invalid
        if not steps:
            steps.extend(
                (name, required, _fast_identifier(cls, name, _fast_converter(ttype, info)))
                for name, ttype, info, required in _fields(cls)
            )
        document = {}
        for name, required, converter in steps:
            value = getattr(obj, name)
            if value is None:
                if required:
                    raise _Invalid
                continue
            document[name] = converter(value)
        if rule is not None:
            try:
                rule(document, cls.__name__)
            except SchemaViolation:
                raise _Invalid from None
        return document

    return convert


def _fast_identifier(cls: type, name: str, converter: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``converter`` plus the identifier grammar when the IDL marks the field an identifier."""
    kind = _annotations(cls, name).get("em2q.identifier")
    if kind is None:
        return converter
    check = _IDENTIFIER_CHECKS[kind]

    def identifier(value: Any) -> Any:
        value = converter(value)
        try:
            check(value, name)
        except SchemaViolation:
            raise _Invalid from None
        return value

    return identifier


def _check_fields(cls: type, document: dict, path: str) -> None:
    """The identifier grammar of annotated fields and the struct's own rule (both directions)."""
    for name, value in document.items():
        kind = _annotations(cls, name).get("em2q.identifier")
        if kind is not None and value is not None:
            _IDENTIFIER_CHECKS[kind](value, f"{path}.{name}")
    rule = _STRUCT_RULES.get(cls.__name__)
    if rule is not None:
        rule(document, path)


def _to_document_checked(obj: Any, path: str = "") -> dict:
    cls = type(obj)
    path = path or cls.__name__
    document = {}
    for name, ttype, info, required in _fields(cls):
        value = getattr(obj, name)
        if value is None:
            if required:
                raise SchemaViolation(f"{path}.{name}", "required field is missing")
            continue
        document[name] = _to_json(value, ttype, info, f"{path}.{name}")
    _check_fields(cls, document, path)
    return document


def _to_json(value: Any, ttype: int, info: Any, path: str) -> Any:
    if ttype == TType.STRUCT:
        if not isinstance(value, info):
            raise SchemaViolation(path, f"expected {info.__name__}, got {type(value).__name__}")
        return _to_document_checked(value, path)
    if ttype in (TType.LIST, TType.SET):
        element_type, element_info = info if isinstance(info, tuple) else (info, None)
        if not isinstance(value, list | tuple | set):
            raise SchemaViolation(path, f"expected a list, got {type(value).__name__}")
        return [
            _to_json(v, element_type, element_info, f"{path}[{i}]") for i, v in enumerate(value)
        ]
    if ttype == TType.MAP:
        (key_type, key_info), (value_type, value_info) = (
            _split(info[0]),
            _split(info[1]),
        )
        if not isinstance(value, dict):
            raise SchemaViolation(path, f"expected a map, got {type(value).__name__}")
        return {
            _to_json(k, key_type, key_info, path): _to_json(
                v, value_type, value_info, f"{path}[{k!r}]"
            )
            for k, v in value.items()
        }
    return _scalar(value, ttype, info, path, to_json=True)


def _split(info: Any) -> tuple[int, Any]:
    return info if isinstance(info, tuple) else (info, None)


def _scalar(value: Any, ttype: int, info: Any, path: str, *, to_json: bool) -> Any:
    if _is_enum(info):
        names = info._VALUES_TO_NAMES
        if to_json:
            if isinstance(value, bool) or value not in names:
                raise SchemaViolation(path, f"unknown {info.__name__} value {value!r}")
            return names[value]
        if isinstance(value, str) and value in info._NAMES_TO_VALUES:
            return info._NAMES_TO_VALUES[value]
        choices = ", ".join(names.values())
        raise SchemaViolation(path, f"unknown {info.__name__} value {value!r} (one of {choices})")
    if ttype == TType.STRING:
        if not isinstance(value, str):
            raise SchemaViolation(path, f"expected a string, got {type(value).__name__} {value!r}")
        return check_text(value, path)
    if ttype == TType.BOOL:
        if not isinstance(value, bool):
            raise SchemaViolation(path, f"expected true/false, got {value!r}")
        return value
    if ttype == TType.DOUBLE:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SchemaViolation(path, f"expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise SchemaViolation(path, f"expected a finite number, got {value!r}")
        return float(value)
    if ttype in _INTEGER_RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and not to_json:
                value = int(value)
            else:
                raise SchemaViolation(
                    path, f"expected an integer, got {type(value).__name__} {value!r}"
                )
        low, high = _INTEGER_RANGES[ttype]
        if not low <= value <= high:
            raise SchemaViolation(path, f"integer {value} out of range [{low}, {high}]")
        return value
    raise SchemaViolation(path, f"unsupported Thrift type {ttype}")


def from_document(cls: type, document: Any, path: str = "") -> Any:
    """Build a Thrift struct from its JSON document, refusing anything the schema does not allow."""
    path = path or cls.__name__
    if not isinstance(document, dict):
        raise SchemaViolation(path, f"expected an object, got {type(document).__name__}")
    specs = {name: (ttype, info, required) for name, ttype, info, required in _fields(cls)}
    unknown = set(document) - set(specs)
    if unknown:
        raise SchemaViolation(f"{path}.{sorted(unknown)[0]}", f"unknown field of {cls.__name__}")
    values = {}
    for name, (ttype, info, required) in specs.items():
        value = document.get(name)
        if value is None:
            if required:
                raise SchemaViolation(f"{path}.{name}", "required field is missing")
            continue
        values[name] = _from_json(value, ttype, info, f"{path}.{name}")
    _check_fields(cls, values, path)
    return cls(**values)


def _from_json(value: Any, ttype: int, info: Any, path: str) -> Any:
    if ttype == TType.STRUCT:
        return from_document(info, value, path)
    if ttype in (TType.LIST, TType.SET):
        element_type, element_info = _split(info)
        if not isinstance(value, list):
            raise SchemaViolation(path, f"expected a list, got {type(value).__name__}")
        return [
            _from_json(v, element_type, element_info, f"{path}[{i}]") for i, v in enumerate(value)
        ]
    if ttype == TType.MAP:
        (key_type, key_info), (value_type, value_info) = _split(info[0]), _split(info[1])
        if not isinstance(value, dict):
            raise SchemaViolation(path, f"expected an object, got {type(value).__name__}")
        return {
            _from_json(k, key_type, key_info, path): _from_json(
                v, value_type, value_info, f"{path}[{k!r}]"
            )
            for k, v in value.items()
        }
    return _scalar(value, ttype, info, path, to_json=False)


def validate(obj: Any) -> None:
    """Raise :class:`SchemaViolation` if a struct would not make a valid document."""
    to_document(obj)


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) for content hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
