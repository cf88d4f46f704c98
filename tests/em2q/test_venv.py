"""The virtual environment `make venv` builds: its packages carry their bytecode.

uv does not compile bytecode by default, and where ``PYTHONDONTWRITEBYTECODE`` is set (this
machine, CI) nothing ever writes it: every platform process, run worker and CLI call would
compile Dagster, pandas, sklearn and numba from source at each start (3× slower imports)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HEAVY_IMPORTS = ["dagster", "pandas", "sklearn", "numba", "elasticsearch", "em2q_assets"]


@pytest.mark.parametrize("name", HEAVY_IMPORTS)
def test_a_heavy_package_has_its_bytecode_next_to_its_sources(name):
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin
    source = Path(spec.origin)
    cached = Path(importlib.util.cache_from_source(str(source)))
    assert cached.is_file(), (
        f"{name}: no {cached.name} beside {source} — the venv was installed without bytecode "
        "(make venv runs `uv pip sync --compile-bytecode` and compileall; rebuild it with "
        "`rm .venv/.installed && make venv`)"
    )
