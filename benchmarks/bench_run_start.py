"""What every Dagster run pays before and after its step: the code location and the run worker.

Each run is a fresh process (the code server's spawned run worker on the local platform,
``dagster api execute_run`` in a K8sRunLauncher's pod) that imports Dagster, opens the instance,
imports ``em2q_assets.definitions`` and builds the definitions; so do the webserver, the daemon
and the code server when they (re)load the location. Prints:

1. ``import em2q_assets.definitions`` with the definitions built (target ≤ 1.5 s, issue 13),
   next to ``import dagster`` alone (the framework's floor) as a ratio, median over fresh
   interpreters, and the heavy step libraries the import left unloaded;
2. the overhead of one run of a step that does nothing (:mod:`benchmarks.run_start_location`:
   the EM²Q location plus a no-op asset), launched as the platform launches runs (a code server,
   as ``dagster dev`` starts it, and the instance's ``DefaultRunLauncher``) and as
   ``dagster api execute_run``, against the same job executed in-process: the difference is the
   overhead per run, split by the run's event log (``RUN_STARTING`` → process started →
   ``RUN_START`` → ``STEP_START`` → ``STEP_SUCCESS`` → ``RUN_SUCCESS``);
3. the same run as the local platform launches it (``em2q_assets.run_launcher.WarmRunLauncher``:
   a worker forked from a zygote that imported Dagster and the location once, then reused).

No services needed (the no-op step uses no Elasticsearch or storage). The runs' queue and
hand-offs on the real platform are in ``bench_platform --quick``'s timeline.
Run: ``.venv/bin/python -m benchmarks.bench_run_start [--runs 3 | --quick | --import-only]``
(about 80 s on 2 busy cores; ``--quick``: 2 runs of each kind, about 55 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from em2q_resources.settings import PROJECT_ROOT

TARGET_S = 1.5
STEP_ONLY = ("numba", "scipy", "pandas", "elasticsearch", "matplotlib", "pyimzml")
LOCATION_MODULE = "benchmarks.run_start_location"

_LOCATION = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
started = time.perf_counter()
import dagster
imported_dagster = time.perf_counter()
import em2q_assets.definitions as location
imported = time.perf_counter()
location.defs.resolve_asset_graph()
built = time.perf_counter()
print(json.dumps({
    "dagster_s": imported_dagster - started,
    "location_s": imported - imported_dagster,
    "build_s": built - imported,
    "loaded": [m for m in STEP_ONLY if m in sys.modules],
}))
""".replace("STEP_ONLY", repr(STEP_ONLY))


def child_environment(home: Path) -> dict[str, str]:
    """The environment of every measured process: this checkout first on the path, the
    location's storage in ``home``, and bytecode written (a session's PYTHONDONTWRITEBYTECODE
    would recompile every changed module in every run: not the platform's steady state)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    path = [str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env.update(
        PYTHONPATH=os.pathsep.join(path),
        PYTHONWARNINGS="ignore",
        EM2Q_STORAGE=str(home / "storage"),
        EM2Q_CACHE_DIR=str(home / "cache"),
    )
    return env


def timed(code: str, env: dict[str, str]) -> tuple[float, str]:
    """Wall time of a fresh interpreter running ``code`` and its last output line."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        encoding="utf-8",
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
    )
    return time.perf_counter() - started, (completed.stdout.strip().splitlines() or [""])[-1]


def location_import(runs: int, env: dict[str, str]) -> None:
    """Part 1: the code location's import against ``import dagster`` alone."""
    timed(_LOCATION, env)  # warm the file cache and write the bytecode
    location, floor, bare, inside = [], [], [], []
    for _ in range(runs):  # interleaved, so a busy machine slows all three alike
        seconds, line = timed(_LOCATION, env)
        location.append(seconds)
        inside.append(json.loads(line))
        floor.append(timed("import dagster", env)[0])
        bare.append(timed("pass", env)[0])
    location_s, dagster_s = statistics.median(location), statistics.median(floor)
    print(
        f"code location import + definitions: {location_s:.2f} s (target <= {TARGET_S} s) "
        f"{'OK' if location_s <= TARGET_S else 'ABOVE TARGET'}; import dagster alone "
        f"{dagster_s:.2f} s -> {location_s / dagster_s:.2f}x the framework's floor; EM²Q's own "
        f"part {location_s - dagster_s:.2f} s; python -c pass {statistics.median(bare):.2f} s "
        f"(fresh interpreters, start to exit, median of {runs})"
    )
    split = {key: statistics.median(i[key] for i in inside) for key in inside[0] if key != "loaded"}
    print(
        f"  inside the process: import dagster {split['dagster_s']:.2f} s, then the location "
        f"{split['location_s']:.2f} s, building the definitions {split['build_s']:.2f} s"
    )
    print(f"  step libraries loaded by the import: {inside[-1]['loaded'] or 'none'}")


# ----------------------------------------------------------------------------- one run's overhead

#: the run's milestones, in order: (label, the event that ends the span)
SPANS = (
    ("launch -> RUN_STARTING", "RUN_STARTING"),
    ("-> process started (import dagster, open the instance)", "PROCESS_STARTED"),
    ("-> RUN_START (load the code location, plan)", "RUN_START"),
    ("-> STEP_START (resources)", "STEP_START"),
    ("-> STEP_SUCCESS (the no-op step, its output)", "STEP_SUCCESS"),
    ("-> RUN_SUCCESS", "RUN_SUCCESS"),
)


def milestones(instance, run_id: str, launched: float) -> dict[str, float]:
    """Seconds from ``launched`` (POSIX time) to each milestone of the run's event log."""
    from dagster._core.events import DagsterEventType

    found: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        name = event.event_type.value
        if event.event_type == DagsterEventType.ENGINE_EVENT:
            if not (event.message or "").startswith("Started process for run"):
                continue
            name = "PROCESS_STARTED"
        else:
            name = {
                "PIPELINE_STARTING": "RUN_STARTING",
                "PIPELINE_START": "RUN_START",
                "PIPELINE_SUCCESS": "RUN_SUCCESS",
            }.get(name, name)
        found.setdefault(name, entry.timestamp - launched)
    return found


def wait_finished(instance, run_id: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        run = instance.get_run_by_id(run_id)
        if run.is_finished:
            if run.status.value != "SUCCESS":
                raise RuntimeError(f"run {run_id} ended {run.status.value}")
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} did not finish within {timeout_s:.0f} s")
        time.sleep(0.02)


def print_runs(
    label: str,
    runs: Sequence[tuple[float, dict[str, float]]],
    in_process_s: float,
    end: str = "-> the run's status read as finished",
) -> tuple[float, dict[str, float]]:
    """Median total and milestones of ``runs`` ((wall seconds, milestones) each); ``end``
    names the last span (from ``RUN_SUCCESS`` to the end of the wall time)."""
    total = statistics.median(wall for wall, _ in runs)
    print(
        f"{label}: {total:.2f} s per run (median of {len(runs)}); the same job in-process "
        f"(execute_in_process) {in_process_s:.2f} s -> this run worker adds "
        f"{total - in_process_s:.2f} s per run ({total / in_process_s:.1f}x)"
    )
    previous, spans = 0.0, {}
    for text, name in SPANS:
        ats = [m[name] for _, m in runs if name in m]
        if not ats:
            continue
        at = statistics.median(ats)
        spans[name] = at - previous
        print(f"  {text:<60} {at - previous:6.2f} s  (at {at:5.2f} s)")
        previous = at
    print(f"  {end:<60} {total - previous:6.2f} s  (at {total:5.2f} s)")
    return total, spans


@contextmanager
def code_server_workspace(instance, env: dict[str, str]) -> Iterator:
    """The location served as ``dagster dev`` serves it (a proxy code server and its gRPC
    server); yields the workspace request context."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._grpc.constants import GrpcServerCommand

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the code server and its run workers inherit it
    try:
        target = ModuleTarget(LOCATION_MODULE, "defs", str(PROJECT_ROOT), "em2q")
        with WorkspaceProcessContext(
            instance,
            target,
            code_server_log_level="WARNING",
            server_command=GrpcServerCommand.CODE_SERVER_START,
        ) as process_context:
            yield process_context.create_request_context()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_factory(instance, workspace) -> Callable[[], str]:
    """Creates a run of the no-op job the way ``dagster job launch`` does; returns its id."""
    from dagster._core.definitions.repository_definition.valid_definitions import (
        SINGLETON_REPOSITORY_NAME,
    )

    from benchmarks.run_start_location import NOOP_JOB

    location = workspace.get_code_location("em2q")
    repository = location.get_repository(SINGLETON_REPOSITORY_NAME)
    job = repository.get_full_job(NOOP_JOB)

    def create() -> str:
        plan = location.get_execution_plan(
            job, {}, step_keys_to_execute=None, known_state=None, instance=instance
        ).execution_plan_snapshot
        return instance.create_run(
            job_name=job.name, run_id=None, run_config={}, resolved_op_selection=None,
            step_keys_to_execute=plan.step_keys_to_execute, op_selection=None, status=None,
            root_run_id=None, parent_run_id=None, tags={}, job_snapshot=job.job_snapshot,
            execution_plan_snapshot=plan, parent_job_snapshot=job.parent_job_snapshot,
            remote_job_origin=job.get_remote_origin(), job_code_origin=job.get_python_origin(),
            asset_selection=None, asset_check_selection=None, asset_graph=repository.asset_graph,
        ).run_id  # fmt: skip

    return create


@contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Our stderr, and so that of the code server and run workers started meanwhile (Dagster's
    DEBUG console log of every run), goes to ``path``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def run_overhead(runs: int, home: Path, env: dict[str, str]) -> None:
    """Part 2 and 3: the no-op run through each run worker, against in-process."""
    log = home / "dagster.log"
    print(f"(the runs' Dagster log: {log}, kept while the benchmark runs)")
    with stderr_to(log):
        _run_overhead(runs, home, env)


def _run_overhead(runs: int, home: Path, env: dict[str, str]) -> None:
    import dagster as dg
    from dagster._core.launcher.base import LaunchRunContext
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import serialize_value

    from em2q_assets.run_launcher import WarmRunLauncher

    os.environ.update(EM2Q_STORAGE=env["EM2Q_STORAGE"], EM2Q_CACHE_DIR=env["EM2Q_CACHE_DIR"])
    from benchmarks.run_start_location import NOOP_JOB, defs

    instance_home = home / "dagster"
    instance_home.mkdir()
    with dg.DagsterInstance.local_temp(str(instance_home)) as instance:
        job = defs.get_job_def(NOOP_JOB)
        job.execute_in_process(instance=instance)  # first call builds what later ones reuse
        in_process = []
        for _ in range(runs):
            started = time.perf_counter()
            assert job.execute_in_process(instance=instance).success
            in_process.append(time.perf_counter() - started)
        in_process_s = statistics.median(in_process)

        started = time.perf_counter()
        with code_server_workspace(instance, env) as workspace:
            print(f"(code server up in {time.perf_counter() - started:.1f} s)")
            create = run_factory(instance, workspace)
            launched_runs = []
            for _ in range(runs):
                run_id = create()
                launched = time.time()
                instance.launch_run(run_id, workspace)  # what the daemon's run queue calls
                wait_finished(instance, run_id)
                wall = time.time() - launched
                launched_runs.append((wall, milestones(instance, run_id, launched)))
            total, spans = print_runs(
                "a run launched through the code server (DefaultRunLauncher, as `dagster dev`)",
                launched_runs,
                in_process_s,
            )
            location_s = spans.get("RUN_START", 0.0)
            print(
                f"  of which loading the code location (process started -> RUN_START): "
                f"{location_s:.2f} s ({location_s / total:.0%}); Dagster's worker start "
                f"(spawn, import dagster, the instance's SQL storage): "
                f"{spans.get('PROCESS_STARTED', 0.0):.2f} s"
            )

            executed = []
            for _ in range(runs):
                run = instance.get_run_by_id(create())
                arguments = ExecuteRunArgs(
                    job_origin=run.job_code_origin,
                    run_id=run.run_id,
                    instance_ref=instance.get_ref(),
                )
                launched = time.time()
                subprocess.run(
                    [sys.executable, "-m", "dagster", "api", "execute_run",
                     serialize_value(arguments)],
                    cwd=PROJECT_ROOT, env=env, check=True, capture_output=True,
                )  # fmt: skip
                wait_finished(instance, run.run_id)
                executed.append(
                    (time.time() - launched, milestones(instance, run.run_id, launched))
                )
            print_runs(
                "`dagster api execute_run` (a K8s run pod's command)",
                executed,
                in_process_s,
                end="-> the process exited",
            )

            os.environ.update(PYTHONPATH=env["PYTHONPATH"])  # the zygote imports the location
            launcher = WarmRunLauncher(preload=[LOCATION_MODULE], max_idle_workers=1)
            launcher.register_instance(instance)
            try:
                warm = []
                for index in range(runs + 1):  # the first starts the zygote: not counted
                    run = instance.get_run_by_id(create())
                    launched = time.time()
                    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=workspace))
                    wait_finished(instance, run.run_id)
                    if index:
                        warm.append(
                            (time.time() - launched, milestones(instance, run.run_id, launched))
                        )
            finally:
                launcher.dispose()
            print_runs(
                "the platform's launcher (WarmRunLauncher: a worker forked from a zygote that "
                "imported the location once)", warm, in_process_s,
            )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind (default 3)")
    parser.add_argument("--quick", action="store_true", help="2 runs of each kind")
    parser.add_argument(
        "--import-only", action="store_true", help="part 1 only (the location's import)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 2
    with tempfile.TemporaryDirectory(prefix="em2q-run-start-") as scratch:
        home = Path(scratch)
        env = child_environment(home)
        location_import(args.runs, env)
        if not args.import_only:
            run_overhead(args.runs, home, env)


if __name__ == "__main__":
    main()
