"""The local Dagster deployment of ``em2q dev``: webserver + daemon on a SQLite instance, and
the local Jupyter server that "Open in notebook" opens notebooks in."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from em2q.notebooks import notebook_folder
from em2q_resources.connections import dev_url_file as dev_url_file  # re-exported
from em2q_resources.lifecycle import MEASUREMENT_TAG, STAGE_TAG
from em2q_resources.processes import stop_process_group
from em2q_resources.settings import PROJECT_ROOT, Settings

#: where the local platform listens: the Dagster webserver (UI and GraphQL: launch, re-execute,
#: delete runs, wipe assets, with no users of its own) and the web catalog answer only this
#: machine; docs/admin-guide.md says how to reach them from elsewhere (an SSH tunnel)
LOOPBACK = "127.0.0.1"

DAGSTER_YAML = """\
# Written by `em2q dev`: the local instance (SQLite storage in this folder).
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    # EM2Q_MAX_CONCURRENT_RUNS, EM2Q_RUNS_PER_MEASUREMENT, EM2Q_RUNS_PER_STAGE
    max_concurrent_runs: {max_concurrent_runs}
    tag_concurrency_limits: {tag_limits}
    # look for queued runs every second (the smallest Dagster takes; default 5 s): each stage
    # of a measurement's processing is a run, so this wait adds up
    dequeue_interval_seconds: 1
    dequeue_use_threads: true
    dequeue_num_workers: 4
# sensors side by side: the chain's hand-offs (new_measurements, ingested_measurements,
# chunked_measurements) do not wait behind the watchdog's queries. Dagster's sensor loop itself
# runs every 5 s (fixed), so a sensor hand-off costs 0-5 s; the upload requests its ingest run
# itself (em2q.dagster_api.DagsterAPI.request_ingest)
sensors:
  use_threads: true
  num_workers: 4
# a run whose process died or that never started is marked failed (the code server reports a
# dead run process; monitoring catches runs stuck starting), so the run-failure sensor sees it
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  # a dead run is minutes of nobody's time: every 10 s is quick enough (idle cost)
  poll_interval_seconds: 10
# each run in a worker forked from a zygote that loaded Python, Dagster, the code location and
# what its steps import once, and reused after a run that succeeded, one per run running at
# once: 2-3 s and ~4 CPU seconds less per run (em2q_assets/run_launcher.py)
run_launcher:
  module: em2q_assets.run_launcher
  class: WarmRunLauncher
  config:
    max_idle_workers: {max_concurrent_runs}
    # OpenMP/BLAS threads in each run (EM2Q_THREADS_PER_RUN; default: cores / concurrent runs)
    threads_per_run: {threads_per_run}
    preload: [em2q_assets.definitions, em2q_resources.metadata.store, em2q_msi._kernels,
              em2q_msi.features, em2q_msi.ion_images]
telemetry:
  enabled: false
"""


def dagster_yaml(settings: Settings, max_concurrent_runs: int | None = None) -> str:
    """The instance settings of the local platform, run queue limits from ``settings``."""
    limits = [
        {"key": MEASUREMENT_TAG, "value": {"applyLimitPerUniqueValue": True},
         "limit": settings.runs_per_measurement},
        *({"key": STAGE_TAG, "value": stage, "limit": count}
          for stage, count in settings.runs_per_stage),
    ]  # fmt: skip
    concurrent = max_concurrent_runs or settings.max_concurrent_runs
    return DAGSTER_YAML.format(
        max_concurrent_runs=concurrent,
        threads_per_run=settings.with_overrides(
            max_concurrent_runs=concurrent
        ).native_threads_per_run(),
        tag_limits=json.dumps(limits),  # JSON is YAML
    )


class PlatformError(RuntimeError):
    """The local Dagster deployment did not start."""


def dagster_home(settings: Settings) -> Path:
    return settings.cache_dir.parent / ".em2q" / "dagster"


def platform_environment(settings: Settings, elasticsearch_url: str) -> dict[str, str]:
    """What the code location needs to find the same backends as the CLI."""
    home = dagster_home(settings)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "EM2Q_ELASTICSEARCH_URL": elasticsearch_url,
        "EM2Q_INDEX_PREFIX": settings.index_prefix,
        "EM2Q_STORAGE": settings.storage,
        "EM2Q_SPECTRA_CHUNKS": str(settings.spectra_chunks),
        "EM2Q_CACHE_DIR": str(settings.cache_dir),
        "EM2Q_DAGSTER_URL": settings.dagster_url,
        "EM2Q_STALLED_AFTER_S": str(settings.stalled_after_s),
    }
    if settings.s3_endpoint_url:
        env["EM2Q_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    return env


def wait_for_webserver(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PlatformError(f"dagster dev exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise PlatformError(f"the Dagster webserver did not answer at {url} within {timeout_s:.0f}s")


@contextlib.contextmanager
def dagster_dev(
    settings: Settings,
    elasticsearch_url: str,
    *,
    port: int = 3000,
    max_concurrent_runs: int | None = None,
    log_path: Path | None = None,
    timeout_s: float = 180.0,
) -> Iterator[str]:
    """Run ``dagster dev`` (webserver + daemon) until the block ends; yields the UI's URL.

    ``max_concurrent_runs`` overrides ``settings.max_concurrent_runs``."""
    home = dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(
        dagster_yaml(settings, max_concurrent_runs), encoding="utf-8"
    )
    log_path = log_path or home / "dagster-dev.log"
    command = [
        sys.executable, "-m", "dagster", "dev",
        "-w", str(PROJECT_ROOT / "workspace.yaml"),
        "-h", LOOPBACK, "-p", str(port),
    ]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=platform_environment(
                settings.with_overrides(dagster_url=f"http://127.0.0.1:{port}"), elasticsearch_url
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_for_webserver(url, process, timeout_s)
        yield url
    finally:
        stop_process_group(process, 30, signal.SIGINT)


@contextlib.contextmanager
def jupyter_server(
    settings: Settings,
    elasticsearch_url: str,
    *,
    port: int = 8888,
    log_path: Path | None = None,
    timeout_s: float = 120.0,
) -> Iterator[tuple[str, str]]:
    """Run JupyterLab until the block ends; yields its URL and token.

    It listens on loopback only, wants a random token (passed in the environment, not on the
    command line), opens the local user's notebook folder (``settings.notebook_dir``), has no
    terminals, and its kernels run this interpreter with the platform's environment, so the
    notebooks "Open in notebook" writes find this platform (and this checkout's code)."""
    root = notebook_folder(settings, settings.local_user)
    root.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    env = platform_environment(settings, elasticsearch_url)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["JUPYTER_TOKEN"] = token
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser",
        f"--ServerApp.ip={LOOPBACK}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}", "--ServerApp.terminals_enabled=False",
        "--LabApp.extension_manager=readonly",  # no extension installs from PyPI
        "--LanguageServerManager.autodetect=False",  # no probing for language servers
        *(["--allow-root"] if os.geteuid() == 0 else []),  # e.g. in a container
    ]  # fmt: skip
    log_path = log_path or dagster_home(settings).parent / "jupyter.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise PlatformError(
                    f"the Jupyter server exited with code {process.returncode} (log: {log_path})"
                )
            request = urllib.request.Request(
                f"{url}/api/status", headers={"Authorization": f"token {token}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"the Jupyter server did not answer at {url} within {timeout_s:.0f}s "
                    f"(log: {log_path})"
                )
            time.sleep(0.5)
        yield url, token
    finally:
        stop_process_group(process, 20)
