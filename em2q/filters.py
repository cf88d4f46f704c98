"""Catalog filters written as text, the same in the CLI, the notebook client and the web page.

``field=value``, ``field=a,b`` (any of), ``field>=x``, ``field<=y`` on dotted schema paths, e.g.
``settings.polarity=POSITIVE`` or ``settings.resolving_power>=50000``; they become the
``filters`` mapping of :meth:`MetadataStore.search`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class FilterSyntaxError(ValueError):
    pass


def parse_filters(items: Iterable[str]) -> dict[str, Any]:
    """``["settings.polarity=POSITIVE", "facts.spectra_count>=100"]`` → store filters."""
    parsed: dict[str, Any] = {}
    for item in items:
        for operator, bound in ((">=", "gte"), ("<=", "lte")):
            if operator in item:
                field, value = item.split(operator, 1)
                parsed.setdefault(field.strip(), {})[bound] = value.strip()
                break
        else:
            if "=" not in item:
                raise FilterSyntaxError(f"{item!r}: use field=value, field>=x or field<=y")
            field, value = item.split("=", 1)
            values = [v.strip() for v in value.split(",")]
            parsed[field.strip()] = values if len(values) > 1 else values[0]
    return parsed


def keyword_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """Python keywords for dotted paths: ``settings__polarity="POSITIVE"`` →
    ``{"settings.polarity": "POSITIVE"}``; ``(low, high)`` tuples are ranges (None: open)."""
    out: dict[str, Any] = {}
    for name, value in filters.items():
        path = name.replace("__", ".")
        if isinstance(value, tuple) and len(value) == 2:
            low, high = value
            out[path] = {k: v for k, v in (("gte", low), ("lte", high)) if v is not None}
        else:
            out[path] = list(value) if isinstance(value, list | set) else value
    return out
