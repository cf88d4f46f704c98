"""Only ``Settings`` reads the ``EM2Q_*`` environment; everything else is handed a Settings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from em2q_resources.settings import PROJECT_ROOT, Settings

PACKAGES = ("em2q", "em2q_msi", "em2q_resources", "em2q_assets", "argo_bridge")
SETTINGS_MODULE = PROJECT_ROOT / "em2q_resources" / "settings.py"


def _environment_reads(path: Path) -> list[str]:
    """``EM2Q_*`` names a module reads from the environment: ``os.environ[...]``,
    ``.get(...)``/``getenv(...)``/``.pop(...)`` on an environment, click's ``envvar=``; a name
    may come through a module constant (``CHUNK_WORKERS_ENV = "EM2Q_CHUNK_WORKERS"``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    constants = {
        target.id: node.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name) and isinstance(node.value.value, str)
    }

    def em2q_name(node: ast.AST) -> str | None:
        value = node.value if isinstance(node, ast.Constant) else None
        if isinstance(node, ast.Name):
            value = constants.get(node.id)
        return value if isinstance(value, str) and value.startswith("EM2Q_") else None

    def environment(node: ast.AST) -> bool:
        text = ast.unparse(node)
        return "environ" in text or text in ("env", "os")

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if environment(node.value) and (name := em2q_name(node.slice)):
                found.append(name)
        elif isinstance(node, ast.Call):
            func = node.func
            method = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            target = func.value if isinstance(func, ast.Attribute) else None
            reads = method == "getenv" or (
                method in ("get", "pop") and target is not None and environment(target)
            )
            if reads and node.args and (name := em2q_name(node.args[0])):
                found.append(name)
            for keyword in node.keywords:
                if keyword.arg == "envvar" and (name := em2q_name(keyword.value)):
                    found.append(name)
    return found


def test_only_settings_reads_em2q_environment_variables():
    readers = {
        str(path.relative_to(PROJECT_ROOT)): names
        for package in PACKAGES
        for path in sorted((PROJECT_ROOT / package).rglob("*.py"))
        if path != SETTINGS_MODULE and (names := _environment_reads(path))
    }
    assert readers == {}


def test_the_scan_finds_a_read_outside_settings(tmp_path):
    module = tmp_path / "reader.py"
    module.write_text(
        "import os\nimport click\nWORKERS = 'EM2Q_CHUNK_WORKERS'\n"
        "a = os.environ.get(WORKERS)\nb = os.getenv('EM2Q_X')\nc = os.environ['EM2Q_Y']\n"
        "d = click.option('--t', envvar='EM2Q_TOKEN')\n"
        "os.environ['EM2Q_WRITTEN'] = '1'\n",
        encoding="utf-8",
    )
    assert _environment_reads(module) == ["EM2Q_CHUNK_WORKERS", "EM2Q_X", "EM2Q_Y", "EM2Q_TOKEN"]


def test_chunk_workers_and_the_cli_token_come_from_settings():
    settings = Settings.from_env({"EM2Q_CHUNK_WORKERS": "3", "EM2Q_TOKEN": "em2q_secret"})
    assert (settings.chunk_workers, settings.api_token) == (3, "em2q_secret")
    assert "em2q_secret" not in repr(settings)
    assert (Settings.from_env({}).chunk_workers, Settings.from_env({}).api_token) == (None, None)


def test_a_stage_limit_that_is_not_stage_equals_count_is_refused_by_name():
    with pytest.raises(ValueError, match="EM2Q_RUNS_PER_STAGE: 'chunks:2'"):
        Settings.from_env({"EM2Q_RUNS_PER_STAGE": "chunks:2"})


def test_a_test_session_aims_no_request_at_a_dagster_it_did_not_start():
    import socket

    url = Settings().dagster_url
    assert url != "http://127.0.0.1:3000"  # where a person's `make run` serves Dagster
    assert Settings.from_env().dagster_url == url  # subprocesses too (EM2Q_DAGSTER_URL)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5)
