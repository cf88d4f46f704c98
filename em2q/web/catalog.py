"""Catalog queries as URLs: the filters, facets and sort orders of the web catalog.

A filter is written like the CLI's ``-f``: ``field=value`` (repeat the field for any of
several values), ``field>=x``, ``field<=y``; fields are dotted schema paths. Every value shown
on a page links to ``/catalog?f=<field>=<value>``: more of the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from em2q_resources.metadata import SchemaViolation, load_schema
from em2q_resources.metadata.schema import field_info

#: facets shown beside the results: (schema path, label)
FACETS = [
    ("status", "Status"),
    ("settings.analyzer", "Analyzer"),
    ("settings.source", "Ion source"),
    ("settings.polarity", "Polarity"),
    ("sample.organism", "Organism"),
    ("facts.mode", "imzML mode"),
    ("tags", "Tags"),
]

#: sort orders offered: (value of ?sort=, label); "" is relevance (with text) or id
SORTS = [
    ("", "relevance / id"),
    ("-uploaded_at", "newest upload first"),
    ("uploaded_at", "oldest upload first"),
    ("-acquired_at", "newest acquisition first"),
    ("title", "title A–Z"),
]

#: the date facet: uploads within the last N days
DATE_PRESETS = [("today", "now/d"), ("last 7 days", "now-7d/d"), ("last 30 days", "now-30d/d")]


def parse_filters(items: Iterable[str]) -> dict[str, Any]:
    """``["status=READY", "status=FAILED", "uploaded_at>=now-7d/d"]`` → store filters.

    Raises :class:`SchemaViolation` naming the item when it is not ``field<op>value``.
    """
    parsed: dict[str, Any] = {}
    for item in items:
        if not item:
            continue
        for operator, bound in ((">=", "gte"), ("<=", "lte")):
            if operator in item:
                name, value = (part.strip() for part in item.split(operator, 1))
                parsed.setdefault(name, {})[bound] = value
                break
        else:
            if "=" not in item:
                raise SchemaViolation(
                    item, "a filter is field=value, field>=x or field<=y, e.g. status=READY"
                )
            name, value = (part.strip() for part in item.split("=", 1))
            current = parsed.get(name)
            if current is None:
                parsed[name] = value
            elif isinstance(current, list):
                current.append(value)
            else:
                parsed[name] = [current, value]
    return parsed


def catalog_url(**params: Any) -> str:
    """``/catalog?…`` with lists as repeated parameters and empty values left out."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        pairs += [(key, str(v)) for v in values if v not in (None, "")]
    return "/catalog" + (f"?{urlencode(pairs)}" if pairs else "")


def same_value_url(path: str, value: Any) -> str | None:
    """The catalog search for other measurements with this value (None: not searchable)."""
    try:
        info = field_info(load_schema().Measurement, path)
    except SchemaViolation:
        return None
    if info.nested_path or info.es_type in ("object", "nested", "text"):
        return None
    if info.es_type == "date":
        day = str(value)[:10]
        return catalog_url(f=[f"{path}>={day}", f"{path}<={day}||/d"])
    return catalog_url(f=f"{path}={value}")
