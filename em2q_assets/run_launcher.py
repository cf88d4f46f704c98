"""A run launcher that keeps run workers warm and reuses them, so a run does not wait for
Python to import Dagster and the code location.

Dagster's ``DefaultRunLauncher`` asks the code server to start ``dagster api execute_run`` for
each run: a fresh interpreter that imports Dagster, opens the instance and imports the code
location before the run's first event, 2.2–3 s (3.8 CPU seconds) on this machine for a run
whose steps take well under a second (``benchmarks/bench_run_start.py``). A measurement is a
chain of three runs, so that start-up was most of a small measurement's latency, and most of a
burst's CPU: 20 small uploads are 60 runs (``benchmarks/bench_burst.py``).

``WarmRunLauncher`` starts that interpreter *once* and forks workers from it, and keeps them:
a zygote imports Dagster's ``execute_run`` command, the modules named in ``preload`` (the code
location) and what steps import lazily; each worker is forked from it (both in
:mod:`em2q_assets.run_worker`), waits on its connection for a run's arguments, runs exactly what ``dagster api
execute_run`` runs, says ``done`` and waits for the next. The launcher keeps one idle spare
ready at all times; a worker whose run succeeded goes back to the idle pool (up to
``max_idle_workers``; idle ones beyond the first exit after ``IDLE_TIMEOUT_S``), so a burst of
runs is served by about as many processes as run at once. A worker whose run did not succeed,
that served ``MAX_RUNS_PER_WORKER`` runs or that holds more than ``MAX_IDLE_RSS_BYTES`` is
retired (end of file on its connection): a fresh process after anything unusual, and no memory
kept from a big run. Idle workers wait on their connection (no CPU) and exit when the
launcher's process does; so does the zygote.

A worker whose source files changed since they were imported (code edited under ``dagster
dev``) replaces itself with a cold worker that imports the new code before it runs, so a run
never executes stale code. A run whose origin another interpreter serves (a code location with
its own ``executable_path``) is launched by the default launcher.

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
from multiprocessing.connection import Connection
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
#: how long a fork request waits for the zygote (its first one waits for its imports)
ZYGOTE_ANSWER_TIMEOUT_S = 300.0


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


class _ForkedProcess:
    """A worker forked by the zygote, with ``subprocess.Popen``'s ``pid``, ``poll()`` and
    ``returncode`` (negative: the signal that ended it), as the zygote reports them."""

    def __init__(self, pid: int, zygote: _Zygote) -> None:
        self.pid = pid
        self._zygote = zygote

    def poll(self) -> int | None:
        return self._zygote.exit_code(self.pid)

    @property
    def returncode(self) -> int | None:
        return self.poll()


class _Zygote:
    """The process workers are forked from (``em2q_assets.run_worker.zygote``): started once
    with the workers' environment, it imports what every worker needs, then forks a worker for
    each connection sent to it and reports each worker's exit code."""

    def __init__(self, preload: Sequence[str], environ: Mapping[str, str]) -> None:
        import socket

        self._control, theirs = socket.socketpair()
        fd = theirs.fileno()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "em2q_assets.run_worker", f"--zygote={fd}", *preload],
                stdin=subprocess.DEVNULL, pass_fds=(fd,), env=dict(environ),
            )  # fmt: skip
        finally:
            theirs.close()
        self._request = threading.Lock()  # one fork request at a time
        self._pids: list[int] = []
        self._exits: dict[int, int] = {}
        self._closed = False  # the zygote closed its end: it exited
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="em2q-zygote", daemon=True)
        self._reader.start()

    def fork(self, connection: Connection) -> _ForkedProcess:
        """A worker forked to serve ``connection`` (the zygote imports first, once)."""
        import socket

        with self._request, self._changed:
            socket.send_fds(self._control, [b"f"], [connection.fileno()])
            deadline = time.monotonic() + ZYGOTE_ANSWER_TIMEOUT_S
            while not self._pids:
                if self._closed or not self._changed.wait(deadline - time.monotonic()):
                    break
            else:
                return _ForkedProcess(self._pids.pop(0), self)
        # no answer: its late answer would be taken for the next request's, so it goes (the
        # workers it forked go on) and the next worker comes from a new one
        self.process.kill()
        self.stop()
        raise OSError("the run workers' zygote did not fork a worker")

    def exit_code(self, pid: int) -> int | None:
        with self._changed:
            if pid in self._exits:
                return self._exits[pid]
        if not self.alive and _process_state(pid) in (None, "Z"):
            return 255  # its zygote is gone, and with it the exit code
        return None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _read(self) -> None:
        pending = b""
        while True:
            try:
                data = self._control.recv(4096)
            except OSError:
                data = b""
            if not data:
                with self._changed:
                    self._closed = True
                    self._changed.notify_all()
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            with self._changed:
                for line in lines:
                    kind, *numbers = line.decode().split()
                    if kind == "pid":
                        self._pids.append(int(numbers[0]))
                    elif kind == "exit":
                        self._exits[int(numbers[0])] = int(numbers[1])
                self._changed.notify_all()

    def stop(self) -> None:
        """End of file on its control socket: it exits (its workers go on with their runs)."""
        with contextlib.suppress(OSError):
            self._control.shutdown(2)
        self._control.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


@dataclass(eq=False)
class _Worker:
    """One worker process, the connection it takes runs on and says ``done`` on, and what it
    is doing."""

    process: subprocess.Popen | _ForkedProcess
    connection: Connection | None
    run_id: str | None = None
    runs: int = 0
    idle_since: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def retire(self) -> None:
        """End of file on its connection: it exits (after its run, if it has one)."""
        if self.connection is not None:
            with contextlib.suppress(OSError):
                self.connection.close()
            self.connection = None


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
        self._zygote: _Zygote | None = None

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
        """A worker forked from the zygote, or started cold if the zygote cannot be had (it
        could not import the code location: the cold worker then fails its run saying why)."""
        import multiprocessing

        ours, theirs = multiprocessing.Pipe()
        try:
            try:
                process = self._fork_worker(theirs)
            except OSError:
                process = self._start_cold_worker(theirs)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        with _workers_lock:
            _workers[process.pid] = process
        return _Worker(process, ours)

    def _fork_worker(self, connection: Connection) -> _ForkedProcess:
        if self._zygote is None or not self._zygote.alive:
            self._zygote = _Zygote(
                self._preload, worker_environment(os.environ, self._threads_per_run)
            )
        return self._zygote.fork(connection)

    def _start_cold_worker(self, connection) -> subprocess.Popen:
        fd = connection.fileno()
        return subprocess.Popen(
            [sys.executable, "-m", "em2q_assets.run_worker", f"--conn-fd={fd}", *self._preload],
            stdin=subprocess.DEVNULL, pass_fds=(fd,),
            env=worker_environment(os.environ, self._threads_per_run),
        )  # fmt: skip

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
        payload = serialize_value(args)
        worker = self._take_worker()
        for attempt in range(2):
            self._instance.add_run_tags(run.run_id, {WORKER_PID_TAG: str(worker.pid)})
            with self._lock:
                worker.run_id = run.run_id
                self._busy[worker.pid] = worker
            try:
                worker.connection.send_bytes(payload.encode("utf-8"))
                break
            except (OSError, ValueError, AttributeError):  # it died while idle: a cold one
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
        worker.retire()
        with _workers_lock:
            if worker.process.poll() is not None:
                _workers.pop(worker.pid, None)

    def _watch_workers(self) -> None:
        while True:
            with self._lock:
                listening = {w.connection.fileno(): w for w in self._busy.values() if w.connection}
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
            while worker.connection is not None and worker.connection.poll():
                if worker.connection.recv_bytes() == b"done":
                    self._run_done(worker)
        except (EOFError, OSError):  # it exited: the dead-worker check reports its run
            return

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
            zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.stop()
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
