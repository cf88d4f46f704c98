"""A run launcher that keeps run workers warm and reuses them, so a run does not wait for
Python to import Dagster and the code location.

Dagster's ``DefaultRunLauncher`` asks the code server to start ``dagster api execute_run`` for
each run: a fresh interpreter that imports Dagster, opens the instance and imports the code
location before the run's first event, 2.2–3 s (3.8 CPU seconds) on this machine for a run
whose steps take well under a second (``benchmarks/bench_run_start.py``). A measurement is a
chain of three runs, so that start-up was most of a small measurement's latency, and most of a
burst's CPU: 20 small uploads are 60 runs (``benchmarks/bench_burst.py``).

``WarmRunLauncher`` starts that interpreter *before* it is needed and keeps it: a worker
(``python -m em2q_assets.run_launcher``) imports Dagster's ``execute_run`` command and the
modules named in ``preload`` (the code location), then waits on its standard input for a run's
arguments, runs exactly what ``dagster api execute_run`` runs, says ``done`` on its status pipe
and waits for the next. The launcher keeps one idle spare ready at all times; a worker whose run
succeeded goes back to the idle pool (up to ``max_idle_workers``; idle ones beyond the first
exit after ``IDLE_TIMEOUT_S``), so a burst of runs is served by about as many processes as run
at once. A worker whose run did not succeed, that served ``MAX_RUNS_PER_WORKER`` runs or that
holds more than ``MAX_IDLE_RSS_BYTES`` is retired (end of file on its input): a fresh process
after anything unusual, and no memory kept from a big run. Idle workers wait on a pipe (no CPU)
and exit when the launcher's process does.

A worker whose preloaded source files changed since it imported them (code edited under
``dagster dev``) replaces itself with a fresh ``dagster api execute_run`` process for its next
run and ends with it, so a run never executes stale code. A run whose origin another interpreter
serves (a code location with its own ``executable_path``) is launched by the default launcher.

Terminating a run sends its worker ``SIGTERM`` (Dagster turns it into an interrupt and the run
ends ``CANCELED``); run monitoring asks ``check_run_worker_health`` and a worker that died
fails its run naming the signal or exit code, in the wording of Dagster's code server.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
#: a worker is retired after this many runs (a fresh interpreter now and then, like
#: gunicorn's ``max_requests``), or when it holds more memory than this after a run
MAX_RUNS_PER_WORKER = 25
MAX_IDLE_RSS_BYTES = 1 << 30
#: idle workers beyond the one spare exit after this long without a run
IDLE_TIMEOUT_S = 60.0


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


def _rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (0 if it is gone)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text(encoding="ascii").split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _exit_description(returncode: int) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return f"was terminated by signal {-returncode} ({name})"
    return f"unexpectedly exited with code {returncode}"


@dataclass(eq=False)
class _Worker:
    """One worker process, its status pipe and what it is doing."""

    process: subprocess.Popen
    status_fd: int
    run_id: str | None = None
    runs: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    pending: bytes = b""  # a status line not yet complete

    @property
    def pid(self) -> int:
        return self.process.pid

    def retire(self) -> None:
        """End of file on its input: it exits (after its run, if it has one)."""
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.close()


#: the variables native thread pools read when they load (OpenMP: scikit-learn; BLAS: numpy)
NATIVE_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def worker_environment(environ: Mapping[str, str], threads_per_run: int) -> dict[str, str]:
    """A worker's environment: native pools capped at ``threads_per_run`` unless the
    deployment already set them (0: unchanged)."""
    env = dict(environ)
    if threads_per_run > 0:
        for name in NATIVE_THREAD_VARIABLES:
            env.setdefault(name, str(threads_per_run))
    return env


class WarmRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` with pre-started, reused run workers (see the module's docstring)."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        preload: Sequence[str] = (),
        max_idle_workers: int = 4,
        threads_per_run: int = 0,
    ):
        super().__init__(inst_data=inst_data)
        self._preload = tuple(preload)
        self._max_idle = max(1, max_idle_workers)
        self._threads_per_run = threads_per_run
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: dict[int, _Worker] = {}  # pid -> worker running a run
        self._watcher: threading.Thread | None = None

    @classmethod
    def config_type(cls) -> dict:
        from dagster import Array, Field, IntSource

        return {
            "preload": Field(
                Array(str), is_required=False, default_value=[],
                description="Modules a spare worker imports before it is given a run (the code "
                "location's module).",
            ),
            "max_idle_workers": Field(
                IntSource, is_required=False, default_value=4,
                description="Workers kept waiting for the next run (the run queue's "
                "max_concurrent_runs serves a burst without new processes).",
            ),
            "threads_per_run": Field(
                IntSource, is_required=False, default_value=0,
                description="OpenMP/BLAS threads a worker's steps may use (0: the libraries' "
                "default, one per core); set where several runs share the cores.",
            ),
        }  # fmt: skip

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> WarmRunLauncher:
        return cls(
            inst_data=inst_data,
            preload=config_value.get("preload", []),
            max_idle_workers=config_value.get("max_idle_workers", 4),
            threads_per_run=config_value.get("threads_per_run", 0),
        )

    # -- launching -------------------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        read_fd, write_fd = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "em2q_assets.run_worker", f"--status-fd={write_fd}",
                 *self._preload],
                stdin=subprocess.PIPE, text=True, encoding="utf-8", pass_fds=(write_fd,),
                env=worker_environment(os.environ, self._threads_per_run),
            )  # fmt: skip
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        with _workers_lock:
            _workers[process.pid] = process
        return _Worker(process, read_fd)

    def _take_worker(self) -> _Worker:
        """An idle worker (or a cold one if none is alive), and a spare started when none is
        left idle."""
        with self._lock:
            worker = None
            while self._idle:  # the one idle the shortest: it has run before (warmest)
                candidate = max(self._idle, key=lambda w: w.idle_since)
                self._idle.remove(candidate)
                if candidate.process.poll() is None:
                    worker = candidate
                    break
                self._forget(candidate)
            if worker is None:
                worker = self._start_worker()
            if not self._idle:
                self._idle.append(self._start_worker())
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
        if self._skip_duplicate(run):
            return
        _reap()
        self._watch()
        args = ExecuteRunArgs(
            job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref()
        )
        payload = serialize_value(args) + "\n"
        worker = self._take_worker()
        for attempt in range(2):
            self._instance.add_run_tags(run.run_id, {WORKER_PID_TAG: str(worker.pid)})
            with self._lock:
                worker.run_id = run.run_id
                self._busy[worker.pid] = worker
            try:
                worker.process.stdin.write(payload)
                worker.process.stdin.flush()
                break
            except (BrokenPipeError, OSError, ValueError):  # it died while idle: a cold one
                with self._lock:
                    self._busy.pop(worker.pid, None)
                    self._forget(worker)
                if attempt:
                    raise
                with self._lock:
                    worker = self._start_worker()
        self._run_ids.add(run.run_id)

    def _skip_duplicate(self, run) -> bool:
        """A second request of a step of a measurement's chain (``chain.duplicate_of``) ends
        CANCELED, tagged with the run that does the step, instead of running it twice."""
        from em2q_assets.chain import DUPLICATE_OF_TAG, duplicate_of

        first = duplicate_of(self._instance, run)
        if first is None:
            return False
        self._instance.add_run_tags(run.run_id, {DUPLICATE_OF_TAG: first})
        self._instance.report_run_canceled(
            run, f"Not run: run {first} was requested for the same step first (a request "
            "made twice, by its requester and by the safety-net sensor)",
        )  # fmt: skip
        return True

    # -- the watcher: finished runs, dead workers, idle ones -------------------------------

    def _watch(self) -> None:
        with self._lock:
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch_workers, name="em2q-run-workers", daemon=True
                )
                self._watcher.start()

    def _forget(self, worker: _Worker) -> None:
        """Drop a worker from the books (the lock is held)."""
        with contextlib.suppress(OSError):
            os.close(worker.status_fd)
        worker.status_fd = -1
        with _workers_lock:
            if worker.process.poll() is not None:
                _workers.pop(worker.pid, None)

    def _watch_workers(self) -> None:
        while True:
            with self._lock:
                listening = {w.status_fd: w for w in [*self._busy.values()] if w.status_fd >= 0}
            readable = []
            if listening:
                with contextlib.suppress(OSError, ValueError):
                    readable, _, _ = select.select(list(listening), [], [], WATCH_INTERVAL_S)
            else:
                time.sleep(WATCH_INTERVAL_S)
            for fd in readable:
                self._read_status(listening[fd])
            self._fail_dead_workers()
            self._retire_idle()

    def _read_status(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.status_fd, 4096)
        except (BlockingIOError, OSError):
            return
        worker.pending += data
        while b"\n" in worker.pending:
            line, worker.pending = worker.pending.split(b"\n", 1)
            if line.strip() == b"done":
                self._run_done(worker)

    def _run_done(self, worker: _Worker) -> None:
        """The worker finished its run: back to the idle pool if it succeeded and the worker
        is worth keeping, else retired."""
        from dagster import DagsterRunStatus

        try:
            run = self._instance.get_run_by_id(worker.run_id) if worker.run_id else None
        except Exception:  # noqa: BLE001 - unknown: do not reuse
            run = None
        worker.runs += 1
        keep = (
            run is not None
            and run.status == DagsterRunStatus.SUCCESS
            and worker.runs < MAX_RUNS_PER_WORKER
            and _rss_bytes(worker.pid) < MAX_IDLE_RSS_BYTES
        )
        with self._lock:
            self._busy.pop(worker.pid, None)
            worker.run_id = None
            if keep and len(self._idle) < self._max_idle:
                worker.idle_since = time.monotonic()
                self._idle.append(worker)
            else:
                worker.retire()
                self._forget(worker)

    def _fail_dead_workers(self) -> None:
        """Fail the run of a worker that ended without finishing it (killed, crashed), at
        once and in the code server's words, whether or not the run had started."""
        with self._lock:
            dead = [w for w in self._busy.values() if w.process.poll() is not None]
            for worker in dead:
                self._busy.pop(worker.pid, None)
                self._forget(worker)
            for worker in [w for w in self._idle if w.process.poll() is not None]:
                self._idle.remove(worker)
                self._forget(worker)
        for worker in dead:
            try:
                run = self._instance.get_run_by_id(worker.run_id) if worker.run_id else None
                if run is not None and not run.is_finished and worker.process.returncode != 0:
                    how = _exit_description(worker.process.returncode)
                    self._instance.report_run_failed(
                        run, f"Run execution process for {run.run_id} {how}"
                    )
            except Exception:  # noqa: BLE001 - the watcher outlives one bad read
                continue

    def _retire_idle(self) -> None:
        """Idle workers beyond the one spare exit after ``IDLE_TIMEOUT_S`` (memory)."""
        now = time.monotonic()
        with self._lock:
            keep, spare_kept = [], False
            for worker in sorted(self._idle, key=lambda w: -w.idle_since):
                if not spare_kept or now - worker.idle_since < IDLE_TIMEOUT_S:
                    keep.append(worker)
                    spare_kept = True
                else:
                    worker.retire()
                    self._forget(worker)
            self._idle = keep

    def dispose(self) -> None:
        with self._lock:
            for worker in self._idle:
                worker.retire()  # end of file: an idle worker exits
                self._forget(worker)
            self._idle = []
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
        if run is None or run.is_finished or self._serves_other_run(pid, run_id):
            return False
        self._instance.report_run_canceling(run)
        try:
            os.kill(pid, signal.SIGTERM)  # Dagster's interrupt handler: the run ends CANCELED
        except ProcessLookupError:
            return False
        return True

    def _serves_other_run(self, pid: int, run_id: str) -> bool:
        """Whether this launcher's worker ``pid`` is idle or busy with another run (a reused
        worker's pid tag outlives its run)."""
        with self._lock:
            busy = self._busy.get(pid)
            idle = any(w.pid == pid for w in self._idle)
        return idle or (busy is not None and busy.run_id != run_id)

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
            if process.returncode is None and self._serves_other_run(int(pid), run.run_id):
                now = self._instance.get_run_by_id(run.run_id)  # it ended since it was read?
                if now is not None and now.is_finished:
                    return CheckRunHealthResult(WorkerStatus.SUCCESS)
                return CheckRunHealthResult(
                    WorkerStatus.FAILED,
                    f"Run execution process for {run.run_id} went on without finishing it",
                )
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


def serve_runs(preload: Sequence[str], status_fd: int | None = None) -> None:
    """The worker: import, then run each run whose arguments arrive on standard input as
    ``dagster api execute_run`` would, saying ``done`` on ``status_fd`` after each; exit at
    end of file. Code edited since the import: the next run goes to a fresh process."""
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
    status = os.fdopen(status_fd, "w", buffering=1, encoding="utf-8") if status_fd else None
    setup_interrupt_handlers()
    while True:
        try:
            payload = sys.stdin.readline().strip()
        except KeyboardInterrupt:  # the platform stops (Ctrl-C) while no run is in hand
            return
        if not payload:
            break
        if _changed_sources(sources):  # code edited since the import: run it in a fresh process
            command = [sys.executable, "-m", "dagster", "api", "execute_run", payload]
            os.execv(sys.executable, command)
        try:
            execute_run_command.callback(input_json=payload, compressed_input_json=None)
        except SystemExit as exc:
            if exc.code:
                raise
        if status is not None:
            status.write("done\n")


def main(argv: Sequence[str]) -> None:
    status = [a for a in argv if a.startswith("--status-fd=")]
    preload = [a for a in argv if not a.startswith("--status-fd=")]
    serve_runs(preload, int(status[0].split("=", 1)[1]) if status else None)
