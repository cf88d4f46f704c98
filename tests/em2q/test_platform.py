"""The local platform's Dagster instance settings and its Jupyter server (``em2q.platform``)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import psutil
import pytest
import yaml

from em2q.notebooks import write_notebook
from em2q.platform import dagster_yaml, jupyter_server
from em2q_resources.settings import Settings


def test_run_queue_limits_come_from_settings_and_reach_the_instance():
    settings = Settings.from_env(
        {"EM2Q_MAX_CONCURRENT_RUNS": "6", "EM2Q_RUNS_PER_MEASUREMENT": "2",
         "EM2Q_RUNS_PER_STAGE": "chunks=2, measurement=3"}
    )  # fmt: skip
    assert settings.runs_per_stage == (("chunks", 2), ("measurement", 3))
    coordinator = yaml.safe_load(dagster_yaml(settings))["run_coordinator"]["config"]
    assert coordinator["max_concurrent_runs"] == 6
    assert coordinator["tag_concurrency_limits"] == [
        {"key": "em2q/measurement", "value": {"applyLimitPerUniqueValue": True}, "limit": 2},
        {"key": "em2q/stage", "value": "chunks", "limit": 2},
        {"key": "em2q/stage", "value": "measurement", "limit": 3},
    ]


def test_runs_share_the_cores_among_the_runs_allowed_at_once():
    four_runs = Settings.from_env({"EM2Q_MAX_CONCURRENT_RUNS": "4"})
    assert four_runs.native_threads_per_run(cores=2) == 1
    assert four_runs.native_threads_per_run(cores=16) == 4
    chosen = Settings.from_env({"EM2Q_MAX_CONCURRENT_RUNS": "4", "EM2Q_THREADS_PER_RUN": "3"})
    assert chosen.native_threads_per_run(cores=2) == 3
    launcher = yaml.safe_load(dagster_yaml(chosen))["run_launcher"]["config"]
    assert launcher["threads_per_run"] == 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_local_jupyter_server_serves_the_notebook_folder_on_loopback_with_a_token(tmp_path):
    settings = Settings(notebook_dir=str(tmp_path / "notebooks"), cache_dir=tmp_path / "cache")
    write_notebook(tmp_path / "notebooks", "kidney-1.ipynb", b'{"cells": [], "metadata": {}, '
                   b'"nbformat": 4, "nbformat_minor": 5}')  # fmt: skip
    port = _free_port()
    with jupyter_server(
        settings, "http://127.0.0.1:9", port=port, log_path=tmp_path / "jupyter.log"
    ) as (url, token):
        assert url == f"http://127.0.0.1:{port}" and len(token) >= 32
        contents = f"{url}/api/contents/kidney-1.ipynb"
        with urllib.request.urlopen(f"{contents}?token={token}", timeout=10) as answer:
            assert answer.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(contents, timeout=10)
        assert refused.value.code == 403
        listening = {conn.laddr.ip for conn in _listening(port)}
        assert listening == {"127.0.0.1"}
    with pytest.raises(urllib.error.URLError):  # stopped with the block
        urllib.request.urlopen(f"{url}/api/status", timeout=5)


def _listening(port: int):
    return [
        c for c in psutil.net_connections("inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]  # fmt: skip
