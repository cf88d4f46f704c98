"""Run workers: the processes ``em2q_assets.run_launcher.WarmRunLauncher`` hands runs to, and
the zygote they are forked from.

The launcher starts one zygote (``python -m em2q_assets.run_worker --zygote=FD MODULE …``). It
imports Dagster, the code location (``MODULE``) and what the steps import lazily, once
(:func:`warm`), then forks a worker each time the launcher asks, so a new worker costs a fork
instead of an interpreter start (about 1.3 CPU seconds on 2 cores: a third of the run CPU of a
burst of small measurements), and the imported pages are shared between workers.

A worker waits for a run's arguments on its connection to the launcher, runs exactly what
``dagster api execute_run`` runs, says ``done`` and waits for the next; it exits when the
launcher closes the connection. ``python -m em2q_assets.run_worker --conn-fd=N MODULE …`` is
the same worker started cold, importing for itself.

No run executes stale code (``dagster dev`` while someone edits): a worker whose source files
changed since their import replaces itself (``execv``: same pid, same connection) with a cold
worker that imports the new code and runs the run; a zygote whose files changed replaces itself
the same way before it forks again.

A Ctrl-C of the whole platform reaches every process of ``dagster dev``'s group: an idle worker
exits quietly (no traceback in the platform's log); a run in hand handles the interrupt itself
(Dagster's interrupt handlers end it CANCELED); the zygote ignores it and exits with the
launcher's process.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection

#: third-party modules steps import only when they run (plots, segmentation, the chain's
#: GraphQL client), imported by the zygote so that no worker pays for them; the project's own
#: modules come from the launcher's ``preload`` (em2q.platform's dagster.yaml)
STEP_IMPORTS = (
    "httpx", "matplotlib.pyplot", "numba", "sklearn.cluster", "sklearn.decomposition",
    "sklearn.metrics", "sklearn.mixture", "scipy.ndimage",
    "dagster._core.storage.runs.sqlite", "dagster._core.storage.event_log.sqlite",
    "dagster._core.storage.schedules.sqlite",
)  # fmt: skip


def warm(preload: Sequence[str]) -> dict[str, float]:
    """Import ``preload`` (the code location's modules) and build their repositories, import
    what steps import lazily and ready numba's compiler; the source files imported, with their
    mtimes (see :func:`changed_sources`)."""
    from dagster._cli.api import _execute_run_command_body  # noqa: F401 - what a run runs

    for name in preload:
        _build_repositories(importlib.import_module(name))
    for name in STEP_IMPORTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    with contextlib.suppress(ImportError):
        from numba.core.registry import cpu_target  # its first compile loads its registries

        cpu_target.target_context.refresh()
        cpu_target.typing_context.refresh()
    with contextlib.suppress(ImportError):
        _draw_once()
    return project_sources()


def _draw_once() -> None:
    """Load what a step's first plot loads (Agg, fonts, the PNG writer)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 1), dpi=40)
    axes.plot([0.0, 1.0], [1.0, 0.0])
    axes.set_title("m/z")
    figure.savefig(io.BytesIO(), format="png")
    plt.close(figure)


def _build_repositories(module) -> None:
    """Build what a run of ``module``'s definitions builds first (Dagster caches it on the
    definitions object): the repository and its jobs."""
    from dagster import Definitions

    for value in list(vars(module).values()):
        if isinstance(value, Definitions):
            value.get_repository_def().get_all_jobs()


def project_sources() -> dict[str, float]:
    """mtime of every imported module's source file outside the interpreter's own folders."""
    skip = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    found = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and not path.startswith(skip):
            with contextlib.suppress(OSError):
                found[path] = os.stat(path).st_mtime
    return found


def changed_sources(modules: Mapping[str, float]) -> list[str]:
    """Source files among ``modules`` (path → mtime at import) changed or gone since."""
    changed = []
    for path, mtime in modules.items():
        try:
            if os.stat(path).st_mtime != mtime:
                changed.append(path)
        except OSError:
            changed.append(path)
    return changed


def serve_runs(
    connection: Connection,
    sources: Mapping[str, float],
    preload: Sequence[str],
    first: str | None = None,
) -> None:
    """Run each run whose arguments arrive on ``connection`` (``first`` before them) as
    ``dagster api execute_run`` would, saying ``done`` after each; return at its end."""
    from dagster._utils.interrupts import setup_interrupt_handlers

    setup_interrupt_handlers()
    with _Instances() as instances:
        while True:
            if first is not None:
                payload, first = first, None
            else:
                try:
                    payload = connection.recv_bytes().decode("utf-8")
                except (EOFError, OSError):
                    return
            if changed_sources(sources):  # edited since the import: a fresh interpreter runs it
                os.set_inheritable(connection.fileno(), True)
                command = [sys.executable, "-m", "em2q_assets.run_worker",
                           f"--conn-fd={connection.fileno()}", f"--run={payload}", *preload]  # fmt: skip
                os.execv(sys.executable, command)
            instances.execute_run(payload)
            connection.send_bytes(b"done")


class _Instances(contextlib.ExitStack):
    """What ``dagster api execute_run`` runs, with the worker's Dagster instance opened for its
    first run and kept for the next (opening one reads the storage's schema version and sets up
    its storage: ~0.1 s and its CPU per run, on the critical path of every stage)."""

    def __init__(self) -> None:
        super().__init__()
        self._ref = None
        self._instance = None

    def execute_run(self, payload: str) -> None:
        from dagster._cli.api import _execute_run_command_body
        from dagster._cli.utils import get_instance_for_cli
        from dagster._grpc.types import ExecuteRunArgs
        from dagster._serdes import deserialize_value
        from dagster._utils.interrupts import capture_interrupts

        with capture_interrupts():
            args = deserialize_value(payload, ExecuteRunArgs)
            if self._instance is None or args.instance_ref != self._ref:
                self.close()  # another instance (not on the platform): the one before goes
                self._instance = self.enter_context(get_instance_for_cli(args.instance_ref))
                self._ref = args.instance_ref
            code = _execute_run_command_body(
                args.run_id, self._instance, lambda event: None,
                set_exit_code_on_failure=bool(args.set_exit_code_on_failure),
            )  # fmt: skip
        if code:
            sys.exit(code)


def zygote(control: socket.socket, preload: Sequence[str]) -> None:
    """Warm, then fork a worker for each connection the launcher sends on ``control``
    (``pid N`` back), and tell it each worker's exit (``exit N CODE``, CODE < 0: the signal),
    until the launcher closes ``control``."""
    import select

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher's process ends it, not Ctrl-C
    sources = warm(preload)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wake-up fd is written
    _report_exits(control)  # workers that ended while this zygote replaced itself
    while True:
        readable, _, _ = select.select([control, wake_r], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
            _report_exits(control)
        if control not in readable:
            continue
        if changed_sources(sources):  # edited since the import: a fresh zygote takes the request
            os.set_inheritable(control.fileno(), True)
            command = [sys.executable, "-m", "em2q_assets.run_worker",
                       f"--zygote={control.fileno()}", *preload]  # fmt: skip
            os.execv(sys.executable, command)
        message, fds, _, _ = socket.recv_fds(control, 64, 1)
        if not message:
            return
        if not fds:  # not a request the launcher makes
            continue
        pid = os.fork()
        if pid == 0:
            _forked_worker(fds[0], [control.fileno(), wake_r, wake_w], sources, preload)
        os.close(fds[0])
        control.sendall(f"pid {pid}\n".encode())


def _report_exits(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        control.sendall(f"exit {pid} {os.waitstatus_to_exitcode(status)}\n".encode())


def _forked_worker(
    fd: int, zygote_fds: Sequence[int], sources: Mapping[str, float], preload: Sequence[str]
) -> None:
    """The forked child: drop the zygote's descriptors and signal set-up, serve runs, exit."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGINT):
            signal.signal(number, signal.SIG_DFL if number == signal.SIGCHLD else
                          signal.default_int_handler)  # fmt: skip
        for zygote_fd in zygote_fds:
            os.close(zygote_fd)
        serve_runs(Connection(fd), sources, preload)
    except KeyboardInterrupt:
        pass
    except SystemExit as exc:  # a run that asked for its exit code
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported, and the exit code says so
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def main(argv: Sequence[str]) -> None:
    """``--zygote=FD MODULE …``: the zygote on the control socket of fd FD;
    ``--conn-fd=N [--run=JSON] MODULE …``: a cold worker on the connection of fd N."""
    options = dict((a[2:].split("=", 1) + [""])[:2] for a in argv if a.startswith("--"))
    preload = [a for a in argv if not a.startswith("--")]
    if "zygote" in options:
        zygote(socket.socket(fileno=int(options["zygote"])), preload)
        return
    connection = Connection(int(options["conn-fd"]))
    try:
        sources = warm(preload)
        serve_runs(connection, sources, preload, first=options.get("run"))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
