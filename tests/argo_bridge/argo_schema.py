"""Argo's published JSON schema (``shared/schemas``, Argo Workflows v4.1.2), made strict.

Two known quirks of that schema are handled here (see its README): ``IntOrString`` is typed
as a string only, though Argo accepts integers (``retryStrategy.limit: 2``), and no
definition forbids unknown keys, so a misspelled key would pass. Every definition that lists
its ``properties`` therefore gets ``additionalProperties: false``.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

from em2q_resources.settings import PROJECT_ROOT

SCHEMA_PATH = PROJECT_ROOT.parent / "shared" / "schemas" / "argo-workflows.schema.json"
ARGO_VERSION = "v4.1.2"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"


@functools.cache
def strict_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    schema = json.loads(path.read_text(encoding="utf-8"))
    definitions = copy.deepcopy(schema["definitions"])
    definitions[INT_OR_STRING] = {"type": ["string", "integer"]}
    for definition in definitions.values():
        if "properties" in definition and "additionalProperties" not in definition:
            definition["additionalProperties"] = False
    return {"$schema": schema["$schema"], "definitions": definitions}


def argo_errors(document: dict[str, Any]) -> list[str]:
    """Every schema violation of an Argo document (validated as its ``kind``), as text."""
    kind = document.get("kind")
    schema = strict_schema()
    name = f"io.argoproj.workflow.v1alpha1.{kind}"
    if name not in schema["definitions"]:
        return [f"kind {kind!r} is not an Argo Workflows kind"]
    validator = jsonschema.Draft202012Validator({**schema, "$ref": f"#/definitions/{name}"})
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    ]
