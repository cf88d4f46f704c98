"""A run launcher that keeps one run worker warm, so a run does not wait for Python to import
Dagster and the code location.

Dagster's ``DefaultRunLauncher`` asks the code server to start ``dagster api execute_run`` for
each run: a fresh interpreter that imports Dagster, opens the instance and imports the code
location before the run's first event, 2.2–3 s on this machine for a run whose steps take well
under a second (``benchmarks/bench_run_start.py``). A measurement is a chain of three runs, so
that start-up is most of a small measurement's latency.

``WarmRunLauncher`` starts that interpreter *before* it is needed: a spare worker
(``python -m em2q_assets.run_launcher``) imports Dagster's ``execute_run`` command and the
modules named in ``preload`` (the code location), then waits on its standard input. A launch
hands the run to the spare, which runs exactly what ``dagster api execute_run`` runs, and a new
spare starts warming at once. One spare per launcher: a burst of runs pays the cold start for
all but the first, as before. An idle spare waits on a pipe (no CPU) and exits when the
launcher's process does (end of file).

A spare whose preloaded source files changed since it imported them (code edited under
``dagster dev``) replaces itself with a fresh ``dagster api execute_run`` process, so a run
never executes stale code. A run whose origin another interpreter serves (a code location with
its own ``executable_path``) is launched by the default launcher.

Terminating a run sends its worker ``SIGTERM`` (Dagster turns it into an interrupt and the run
ends ``CANCELED``); run monitoring asks ``check_run_worker_health`` and a worker that died
fails its run naming the signal or exit code, in the wording of Dagster's code server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dagster import DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._serdes import ConfigurableClassData

#: the run tag that names the process running the run (terminate, health checks)
WORKER_PID_TAG = "em2q/run_worker_pid"

#: worker processes this process started, by pid: their exit codes for the health checks
#: (run monitoring may hold another launcher object of the same instance)
_workers: dict[int, subprocess.Popen] = {}
_workers_lock = threading.Lock()
#: how often the launcher looks for workers that died (the code server does the same for its
#: run processes): a run killed before it started would otherwise wait for the start timeout
WATCH_INTERVAL_S = 0.5


def _reap() -> None:
    """Collect the exit codes of finished workers (no zombies)."""
    with _workers_lock:
        for process in _workers.values():
            process.poll()


def _process_state(pid: int) -> str | None:
    """The kernel's one-letter state of ``pid`` (``Z``: exited, not yet collected); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _exit_description(returncode: int) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return f"was terminated by signal {-returncode} ({name})"
    return f"unexpectedly exited with code {returncode}"


class WarmRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` with one pre-started run worker (see the module's docstring)."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        preload: Sequence[str] = (),
    ):
        super().__init__(inst_data=inst_data)
        self._preload = tuple(preload)
        self._spare: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._running: dict[int, str] = {}  # worker pid -> its run's id, until it ends
        self._watcher: threading.Thread | None = None

    @classmethod
    def config_type(cls) -> dict:
        from dagster import Array, Field

        return {
            "preload": Field(
                Array(str), is_required=False, default_value=[],
                description="Modules a spare worker imports before it is given a run (the code "
                "location's module).",
            ),
        }  # fmt: skip

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> WarmRunLauncher:
        return cls(inst_data=inst_data, preload=config_value.get("preload", []))

    # -- launching -------------------------------------------------------------------------

    def _start_worker(self) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "em2q_assets.run_launcher", *self._preload],
            stdin=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        with _workers_lock:
            _workers[process.pid] = process
        return process

    def _take_worker(self) -> subprocess.Popen:
        """The warm spare (or a cold worker if it died), and the next spare started."""
        with self._lock:
            worker = self._spare
            if worker is None or worker.poll() is not None:
                worker = self._start_worker()
            self._spare = self._start_worker()
            return worker

    def launch_run(self, context: LaunchRunContext) -> None:
        from dagster._grpc.types import ExecuteRunArgs
        from dagster._serdes import serialize_value

        run = context.dagster_run
        origin = run.job_code_origin
        if origin is None or os.path.abspath(origin.executable_path) != os.path.abspath(
            sys.executable
        ):
            super().launch_run(context)  # another interpreter: its code server starts it
            return
        _reap()
        self._watch()
        worker = self._take_worker()
        self._instance.add_run_tags(run.run_id, {WORKER_PID_TAG: str(worker.pid)})
        args = ExecuteRunArgs(
            job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref()
        )
        try:
            worker.stdin.write(serialize_value(args) + "\n")
            worker.stdin.close()
        except (BrokenPipeError, OSError, ValueError):  # it died while warm: start it cold
            worker = self._start_worker()
            self._instance.add_run_tags(run.run_id, {WORKER_PID_TAG: str(worker.pid)})
            worker.stdin.write(serialize_value(args) + "\n")
            worker.stdin.close()
        with self._lock:
            self._running[worker.pid] = run.run_id
        self._run_ids.add(run.run_id)

    def _watch(self) -> None:
        with self._lock:
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch_workers, name="em2q-run-workers", daemon=True
                )
                self._watcher.start()

    def _watch_workers(self) -> None:
        """Fail the run of a worker that ended without finishing it (killed, crashed), at
        once and in the code server's words, whether or not the run had started."""
        while True:
            time.sleep(WATCH_INTERVAL_S)
            with self._lock:
                running = dict(self._running)
            for pid, run_id in running.items():
                with _workers_lock:
                    process = _workers.get(pid)
                if process is None or process.poll() is None:
                    continue
                with self._lock:
                    self._running.pop(pid, None)
                with _workers_lock:
                    _workers.pop(pid, None)
                try:
                    run = self._instance.get_run_by_id(run_id)
                    if run is not None and not run.is_finished and process.returncode != 0:
                        how = _exit_description(process.returncode)
                        self._instance.report_run_failed(
                            run, f"Run execution process for {run_id} {how}"
                        )
                except Exception:  # noqa: BLE001 - the watcher outlives one bad read
                    continue

    def dispose(self) -> None:
        with self._lock:
            if self._spare is not None and self._spare.poll() is None:
                self._spare.stdin.close()  # end of file: the spare exits
            self._spare = None
        super().dispose()

    # -- terminating and monitoring --------------------------------------------------------

    def _worker_pid(self, run_id: str) -> int | None:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        pid = run.tags.get(WORKER_PID_TAG) if run is not None else None
        return int(pid) if pid else None

    def terminate(self, run_id: str) -> bool:
        pid = self._worker_pid(run_id)
        if pid is None:
            return super().terminate(run_id)
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        try:
            os.kill(pid, signal.SIGTERM)  # Dagster's interrupt handler: the run ends CANCELED
        except ProcessLookupError:
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        pid = run.tags.get(WORKER_PID_TAG)
        if not pid:  # launched by the code server, which reports its own dead runs
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        _reap()
        with _workers_lock:
            process = _workers.get(int(pid))
        if process is not None:
            if process.returncode is None:
                return CheckRunHealthResult(WorkerStatus.RUNNING)
            if process.returncode == 0:
                return CheckRunHealthResult(WorkerStatus.SUCCESS)
            how = _exit_description(process.returncode)
        elif _process_state(int(pid)) not in (None, "Z"):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        else:
            how = "exited (its exit code is unknown to this process)"
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"Run execution process for {run.run_id} {how}"
        )


def _changed_sources(modules: Mapping[str, float]) -> list[str]:
    """Source files among ``modules`` (path → mtime at import) changed or gone since."""
    changed = []
    for path, mtime in modules.items():
        try:
            if os.stat(path).st_mtime != mtime:
                changed.append(path)
        except OSError:
            changed.append(path)
    return changed


def _project_sources() -> dict[str, float]:
    """mtime of every imported module's source file outside the interpreter's own folders."""
    skip = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    found = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and not path.startswith(skip):
            with contextlib.suppress(OSError):
                found[path] = os.stat(path).st_mtime
    return found


def _warm(module) -> None:
    """Build what a run of ``module``'s definitions would build first (Dagster caches it on
    the definitions object): the repository and its jobs."""
    from dagster import Definitions

    for value in list(vars(module).values()):
        if isinstance(value, Definitions):
            value.get_repository_def().get_all_jobs()


def serve_one_run(preload: Sequence[str]) -> None:
    """The spare worker: import, wait for one run's arguments, run it as
    ``dagster api execute_run`` would, exit with its exit code."""
    import importlib

    from dagster._cli.api import execute_run_command
    from dagster._utils.interrupts import setup_interrupt_handlers

    for name in preload:
        _warm(importlib.import_module(name))
    if os.environ.get(
        "DAGSTER_HOME"
    ):  # the instance's storage modules (0.4 s; a run opens its own)
        from dagster import DagsterInstance

        with contextlib.suppress(Exception), DagsterInstance.get() as instance:
            instance.get_runs(limit=1)
    sources = _project_sources()
    payload = sys.stdin.readline().strip()
    if not payload:
        return  # the launcher went away before giving a run
    if _changed_sources(sources):  # code edited since the import: run it in a fresh process
        command = [sys.executable, "-m", "dagster", "api", "execute_run", payload]
        os.execv(sys.executable, command)
    setup_interrupt_handlers()
    execute_run_command.main(args=[payload], prog_name="dagster api execute_run")


if __name__ == "__main__":
    serve_one_run(sys.argv[1:])
