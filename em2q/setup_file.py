"""Experimental-setup descriptions (``setup.yaml``) as validated schema documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from em2q_resources import lifecycle
from em2q_resources.metadata.schema import from_document, load_schema

# Fields the platform fills in itself; a setup file may not set them.
PLATFORM_FIELDS = {
    "id", "status", "status_reason", "status_detail", "uploaded_at", "updated_at", "files", "facts",
    "uploaded_by",
}  # fmt: skip


#: limits on a setup file: a setup is a few hundred lines, never a data structure
MAX_SETUP_BYTES = 1024 * 1024
MAX_SETUP_DEPTH = 32


class SetupFileError(ValueError):
    """The setup file cannot be read or does not match the schema (``field`` names where)."""

    def __init__(self, path: str, field: str, message: str) -> None:
        super().__init__(f"{path}: {field}: {message}")
        self.field = field


class _SetupLoader(yaml.SafeLoader):
    """PyYAML's safe loader without what a setup file never needs and an attacker uses:
    aliases (``*a``: a few lines expand to billions of nodes), nesting deeper than
    :data:`MAX_SETUP_DEPTH` (the composer recurses per level) and repeated keys (the last one
    would silently win)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(
                f"line {mark.line + 1}: aliases (*{self.peek_event().anchor}) are not allowed "
                "in a setup file; write the value out"
            )
        self._depth += 1
        try:
            if self._depth > MAX_SETUP_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(
                    f"line {mark.line + 1}: nested deeper than {MAX_SETUP_DEPTH} levels"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: the base class names it
                break
            if repeated:
                raise yaml.YAMLError(
                    f"line {key_node.start_mark.line + 1}: the key {key!r} is given twice"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_file(path: str | Path) -> Any:
    """A user's YAML (or JSON) file as plain data, with :class:`_SetupLoader`'s limits.

    Refuses (:class:`SetupFileError`) files over :data:`MAX_SETUP_BYTES`, bytes that are not
    UTF-8, aliases, repeated keys and nesting deeper than :data:`MAX_SETUP_DEPTH`.
    """
    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(MAX_SETUP_BYTES + 1)
    except OSError as exc:
        raise SetupFileError(str(path), "(file)", f"cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_SETUP_BYTES:
        raise SetupFileError(
            str(path), "(file)", f"larger than {MAX_SETUP_BYTES // 1024} KiB; not a setup file"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SetupFileError(
            str(path), "(file)", f"not UTF-8 text (byte {exc.start}: {raw[exc.start]:#04x})"
        ) from None
    try:
        loader = _SetupLoader(text)
        try:
            document = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise SetupFileError(str(path), "(file)", f"not a valid setup YAML: {exc}") from None
    except RecursionError:
        raise SetupFileError(str(path), "(file)", "nested too deeply") from None
    return document


def read_setup(path: str | Path) -> dict[str, Any]:
    """Load a setup YAML file (:func:`load_yaml_file`) as the partial Measurement document it
    describes."""
    document = load_yaml_file(path)
    if not isinstance(document, dict):
        raise SetupFileError(str(path), "(file)", "expected a mapping of Measurement fields")
    reserved = sorted(PLATFORM_FIELDS & set(document))
    if reserved:
        raise SetupFileError(str(path), reserved[0], "is set by the platform, remove it")
    return document


def measurement_from_setup(setup: dict[str, Any], **platform_fields: Any):
    """A validated ``Measurement`` from a setup document plus the platform-owned fields.

    Raises :class:`SchemaViolation` naming the field (e.g. ``Measurement.settings.polarity``).
    """
    document = {**lifecycle.initial_fields(), **setup, **platform_fields}
    return from_document(load_schema().Measurement, document)
