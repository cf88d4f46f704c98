"""The CLI answers at once because each command imports only what it uses (issue 13).

Each case runs the ``em2q`` entry point in a fresh interpreter and reads back which heavy
packages it loaded: ``--help`` loads no backend client, a search loads the Elasticsearch client
but not Dagster, pandas or numba, and an upload refused for its files opens no backend at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("dagster", "pandas", "elasticsearch", "numba", "scipy", "matplotlib")

_PROBE = """
import json, sys
from em2q.cli import main
try:
    main(sys.argv[1:], standalone_mode=True)
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"exit": code, "loaded": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def loaded_by(args: list[str], env: dict[str, str], tmp_path: Path) -> dict:
    """Exit code and the heavy packages loaded by ``em2q ARGS`` in a new interpreter."""
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        encoding="utf-8",
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        cwd=Path(__file__).resolve().parents[2],
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture
def env(elasticsearch_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "EM2Q_ELASTICSEARCH_URL": elasticsearch_url,
        "EM2Q_INDEX_PREFIX": "cli-imports",
        "EM2Q_STORAGE": str(tmp_path / "storage"),
        "EM2Q_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }


@pytest.mark.parametrize("args", [["--help"], ["upload", "--help"], ["params", "--help"]])
def test_help_loads_no_backend_client(args, env, tmp_path):
    result = loaded_by(args, env, tmp_path)
    assert result == {"exit": 0, "loaded": []}


def test_search_loads_the_elasticsearch_client_only(env, tmp_path):
    result = loaded_by(["search", "kidney", "--json"], env, tmp_path)
    assert result == {"exit": 0, "loaded": ["elasticsearch"]}


def test_refused_upload_opens_no_backend(env, tmp_path):
    broken = tmp_path / "broken.imzML"
    broken.write_text("not xml")
    (tmp_path / "broken.ibd").write_bytes(b"\0" * 16)
    setup = Path(__file__).resolve().parents[2] / "examples" / "setup.yaml"
    result = loaded_by(["upload", str(broken), "--setup", str(setup)], env, tmp_path)
    assert result == {"exit": 1, "loaded": []}


def test_every_surfaced_error_is_defined_where_the_exit_code_table_says():
    """The table names classes by module, so a class moved elsewhere would silently lose its
    exit code: each entry must name an exception class its module defines."""
    import importlib

    from em2q.cli.base import _EXIT_CODES

    for module_name, class_name, _, _ in _EXIT_CODES:
        kind = getattr(importlib.import_module(module_name), class_name, None)
        assert isinstance(kind, type) and issubclass(kind, Exception), (module_name, class_name)
