"""The warm run launcher: runs execute in workers started before they were launched and reused
after a run that succeeded, a code change since the worker's import is never run stale, and a
killed or terminated worker ends its run the way Dagster's own launcher does."""

import os
import signal
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.launcher.base import LaunchRunContext, WorkerStatus

from em2q_assets import run_launcher
from em2q_assets.chain import DUPLICATE_OF_TAG
from em2q_assets.run_launcher import NATIVE_THREAD_VARIABLES, WORKER_PID_TAG, WarmRunLauncher
from em2q_resources.lifecycle import MEASUREMENT_TAG, STAGE_TAG

JOB_MODULE = """
import os, sys, time
import dagster as dg

ANSWER = {answer!r}
if any(a.startswith("--zygote") for a in sys.argv) and os.path.exists(
    os.environ["WARM_TEST_OUT"] + ".slow-zygote"
):
    time.sleep(120)  # a zygote that does not answer in time

@dg.op
def write_answer():
    from threadpoolctl import threadpool_info

    out = os.environ["WARM_TEST_OUT"]
    with open(out + ".threads", "w", encoding="utf-8") as handle:
        pools = {{pool["user_api"]: pool["num_threads"] for pool in threadpool_info()}}
        handle.write(repr((os.environ.get("OMP_NUM_THREADS"), pools)))
    while os.path.exists(out + ".wait"):
        time.sleep(0.05)
    if os.path.exists(out + ".fail"):
        raise RuntimeError("asked to fail")
    with open(out, "a", encoding="utf-8") as handle:
        handle.write(f"{{ANSWER}} {{os.getpid()}}\\n")

@dg.job(executor_def=dg.in_process_executor)
def answer_job():
    write_answer()

defs = dg.Definitions(jobs=[answer_job])
"""


@pytest.fixture
def setting(tmp_path, monkeypatch):
    """An instance whose launcher preloads a job module written in ``tmp_path``."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "warm_job_module.py").write_text(JOB_MODULE.format(answer="first"), encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nrun_launcher:\n  module: em2q_assets.run_launcher\n"
        "  class: WarmRunLauncher\n  config:\n    preload: [warm_job_module]\n"
        "    threads_per_run: 1\n",
        encoding="utf-8",
    )
    project = str(Path(__file__).parents[2])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(code), project]))
    monkeypatch.setenv("WARM_TEST_OUT", str(tmp_path / "out.txt"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for name in NATIVE_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    instance = dg.DagsterInstance.from_config(str(home))
    assert isinstance(instance.run_launcher, WarmRunLauncher)
    yield instance, code, tmp_path / "out.txt"
    instance.run_launcher.dispose()
    instance.dispose()


def launch(
    instance: dg.DagsterInstance,
    code: Path,
    executable: str = sys.executable,
    tags: dict[str, str] | None = None,
) -> dg.DagsterRun:
    sys.path.insert(0, str(code))
    try:
        import warm_job_module

        recon = ReconstructableRepository.for_module("warm_job_module", "defs", str(code))
        recon = recon._replace(executable_path=executable)
        origin = recon.get_reconstructable_job("answer_job").get_python_origin()
        run = instance.create_run_for_job(
            warm_job_module.defs.get_job_def("answer_job"), job_code_origin=origin, tags=tags
        )
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("warm_job_module", None)
    instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    return run


def wait_finished(instance: dg.DagsterInstance, run_id: str, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.is_finished:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish: {instance.get_run_by_id(run_id).status}")


def wait_for(predicate, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def worker_pid(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int:
    return int(instance.get_run_by_id(run.run_id).tags[WORKER_PID_TAG])


def test_a_run_launched_while_another_runs_executes_in_the_spare_started_before(setting):
    instance, code, out = setting
    Path(f"{out}.wait").touch()
    first = launch(instance, code)
    wait_for(lambda: instance.get_run_by_id(first.run_id).status == dg.DagsterRunStatus.STARTED)
    [spare] = instance.run_launcher._idle  # started when the first run was launched
    second = launch(instance, code)
    Path(f"{out}.wait").unlink()
    for run in (first, second):
        assert wait_finished(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert worker_pid(instance, second) == spare.pid != worker_pid(instance, first)
    lines = sorted(out.read_text(encoding="utf-8").splitlines())
    assert lines == sorted(f"first {worker_pid(instance, r)}" for r in (first, second))


def test_workers_cap_native_thread_pools_at_the_threads_per_run(setting):
    """The fork server loaded numpy's BLAS (and OpenMP) with a pool per core before any
    worker existed: a worker resizes them, and sets the variables for what loads later."""
    instance, code, out = setting
    run = launch(instance, code)
    assert wait_finished(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
    variable, pools = eval(Path(f"{out}.threads").read_text(encoding="utf-8"))  # noqa: S307
    assert variable == "1"
    assert pools and set(pools.values()) == {1}, pools


def test_a_worker_whose_run_succeeded_serves_the_next_run(setting):
    instance, code, out = setting
    first = launch(instance, code)
    assert wait_finished(instance, first.run_id).status == dg.DagsterRunStatus.SUCCESS
    pid = worker_pid(instance, first)
    wait_for(lambda: pid in {w.pid for w in instance.run_launcher._idle})  # its "done" is read
    second = launch(instance, code)
    assert wait_finished(instance, second.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert worker_pid(instance, second) == pid
    assert out.read_text(encoding="utf-8").splitlines() == [f"first {pid}", f"first {pid}"]
    health = instance.run_launcher.check_run_worker_health(instance.get_run_by_id(first.run_id))
    assert health.status == WorkerStatus.SUCCESS  # its pid lives on, serving other runs


def test_a_worker_whose_run_failed_exits_and_is_not_reused(setting):
    instance, code, out = setting
    Path(f"{out}.fail").touch()
    failed = launch(instance, code)
    assert wait_finished(instance, failed.run_id).status == dg.DagsterRunStatus.FAILURE
    pid = worker_pid(instance, failed)
    wait_for(lambda: _process_gone(pid))  # retired: a fresh process after anything unusual
    Path(f"{out}.fail").unlink()
    second = launch(instance, code)
    assert wait_finished(instance, second.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert worker_pid(instance, second) != pid


def _process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def test_a_worker_whose_code_changed_since_its_import_runs_the_new_code(setting):
    instance, code, out = setting
    first = launch(instance, code)
    wait_finished(instance, first.run_id)
    pid = worker_pid(instance, first)
    wait_for(lambda: pid in {w.pid for w in instance.run_launcher._idle})  # it ran version 1
    module = code / "warm_job_module.py"
    module.write_text(JOB_MODULE.format(answer="second"), encoding="utf-8")
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a distinct mtime
    second = launch(instance, code)
    assert wait_finished(instance, second.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert worker_pid(instance, second) == pid  # the same worker, a fresh interpreter in it
    assert out.read_text(encoding="utf-8").splitlines()[-1].startswith("second ")


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[1])


def test_workers_are_forked_from_one_zygote_that_imported_the_code_location_once(setting):
    instance, code, out = setting
    Path(f"{out}.wait").touch()
    first, second = launch(instance, code), launch(instance, code)
    wait_for(lambda: all(
        instance.get_run_by_id(r.run_id).status == dg.DagsterRunStatus.STARTED
        for r in (first, second)
    ))  # fmt: skip
    workers = {worker_pid(instance, first), worker_pid(instance, second)}
    zygotes = {parent_pid(pid) for pid in workers}
    assert len(workers) == 2 and len(zygotes) == 1 and os.getpid() not in zygotes
    (zygote,) = zygotes
    assert parent_pid(zygote) == os.getpid()
    command = Path(f"/proc/{zygote}/cmdline").read_bytes().split(b"\0")
    assert b"em2q_assets.run_worker" in command and b"warm_job_module" in command
    assert {command_line(pid) for pid in workers} == {b"--zygote="}  # forked, not started
    Path(f"{out}.wait").unlink()
    for run in (first, second):
        assert wait_finished(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS


def test_code_changed_while_a_run_runs_reaches_spares_and_workers_forked_after(setting):
    """The spare forked before the edit and the worker forked after it both run the new code;
    the run that had started goes on with the code it started with."""
    instance, code, out = setting
    Path(f"{out}.wait").touch()
    first = launch(instance, code)
    wait_for(lambda: instance.get_run_by_id(first.run_id).status == dg.DagsterRunStatus.STARTED)
    zygote = parent_pid(worker_pid(instance, first))
    module = code / "warm_job_module.py"
    module.write_text(JOB_MODULE.format(answer="second"), encoding="utf-8")
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a distinct mtime
    second = launch(instance, code)  # the spare forked before the edit
    third = launch(instance, code)  # a worker forked after it, by the zygote replaced
    Path(f"{out}.wait").unlink()
    for run in (first, second, third):
        assert wait_finished(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
    answers = dict(
        reversed(line.split()) for line in out.read_text(encoding="utf-8").splitlines()
    )  # fmt: skip
    assert answers[str(worker_pid(instance, first))] == "first"
    assert answers[str(worker_pid(instance, second))] == "second"
    assert answers[str(worker_pid(instance, third))] == "second"
    assert parent_pid(worker_pid(instance, third)) == zygote  # the same zygote, exec'd anew
    # the spare replaced itself with a cold worker; the zygote did, so its fork needed not
    assert b"--conn-fd" in command_line(worker_pid(instance, second))
    assert b"--zygote" in command_line(worker_pid(instance, third))


def command_line(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[3][:9]


def test_a_zygote_that_does_not_answer_is_replaced_and_the_run_goes_to_a_cold_worker(
    setting, monkeypatch
):
    instance, code, out = setting
    monkeypatch.setattr(run_launcher, "ZYGOTE_ANSWER_TIMEOUT_S", 3.0)
    Path(f"{out}.slow-zygote").touch()
    first = launch(instance, code)
    assert wait_finished(instance, first.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert b"--conn-fd" in command_line(worker_pid(instance, first))  # started cold
    stuck = instance.run_launcher._zygote
    assert stuck is None or not stuck.alive  # killed, not left importing
    Path(f"{out}.slow-zygote").unlink()
    monkeypatch.setattr(run_launcher, "ZYGOTE_ANSWER_TIMEOUT_S", 300.0)
    wait_for(lambda: instance.run_launcher._idle)  # back in the pool, or a spare
    second, third = launch(instance, code), launch(instance, code)  # one needs a new worker
    for run in (second, third):
        assert wait_finished(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
    zygote = instance.run_launcher._zygote  # a new one forked the spare the runs left wanting
    assert zygote is not None and zygote is not stuck and zygote.alive
    workers = [*(worker_pid(instance, r) for r in (second, third)),
               *(w.pid for w in instance.run_launcher._idle)]  # fmt: skip
    assert any(parent_pid(pid) == zygote.process.pid for pid in workers)


def test_a_killed_worker_fails_its_run_naming_the_signal(setting):
    instance, code, out = setting
    Path(f"{out}.wait").touch()
    run = launch(instance, code)
    wait_for(lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED)
    pid = int(instance.get_run_by_id(run.run_id).tags[WORKER_PID_TAG])
    launcher = instance.run_launcher
    assert launcher.check_run_worker_health(instance.get_run_by_id(run.run_id)).status == (
        WorkerStatus.RUNNING
    )
    os.kill(pid, signal.SIGKILL)
    assert wait_finished(instance, run.run_id, 10).status == dg.DagsterRunStatus.FAILURE
    message = f"Run execution process for {run.run_id} was terminated by signal 9 (SIGKILL)"
    failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert [event.message for event in failures] == [message]
    health = launcher.check_run_worker_health(instance.get_run_by_id(run.run_id))
    assert health.status == WorkerStatus.FAILED  # what run monitoring would see of a STARTED run


def test_a_worker_killed_before_its_run_started_fails_the_run_at_once(setting):
    instance, code, out = setting
    run = launch(instance, code)
    pid = int(instance.get_run_by_id(run.run_id).tags[WORKER_PID_TAG])
    os.kill(pid, signal.SIGKILL)  # still importing, or waiting for its run's arguments
    finished = wait_finished(instance, run.run_id, 10)  # not the run monitor's start timeout
    assert finished.status == dg.DagsterRunStatus.FAILURE
    assert not out.exists()


def test_terminating_a_run_cancels_it_in_its_worker(setting):
    instance, code, out = setting
    Path(f"{out}.wait").touch()
    run = launch(instance, code)
    wait_for(lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED)
    assert instance.run_launcher.terminate(run.run_id)
    assert wait_finished(instance, run.run_id).status == dg.DagsterRunStatus.CANCELED
    assert not out.exists()  # the op never got past its wait


def test_a_run_of_another_interpreter_goes_to_its_code_server(setting):
    """An origin whose executable is not ours cannot run in our worker: the default launcher
    (which needs the workspace's code server) takes it, so without one it refuses."""
    instance, code, _ = setting
    with pytest.raises(dg.DagsterInvariantViolationError, match="requires a workspace"):
        launch(instance, code, executable="/opt/other/python3")


def test_a_step_requested_twice_runs_once_and_the_second_request_ends_canceled(setting):
    instance, code, out = setting
    step = {MEASUREMENT_TAG: "m1", STAGE_TAG: "ingest"}
    Path(f"{out}.wait").touch()
    first = launch(instance, code, tags=step)
    second = launch(instance, code, tags=step)  # the safety net's request of the same step
    assert wait_finished(instance, second.run_id).status == dg.DagsterRunStatus.CANCELED
    assert instance.get_run_by_id(second.run_id).tags[DUPLICATE_OF_TAG] == first.run_id
    Path(f"{out}.wait").unlink()
    assert wait_finished(instance, first.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1  # the op ran once


def handles_sigint(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGINT (its SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return False


def test_a_spare_worker_interrupted_with_the_platform_exits_quietly():
    import multiprocessing
    import subprocess

    ours, theirs = multiprocessing.Pipe()
    worker = subprocess.Popen(
        [sys.executable, "-m", "em2q_assets.run_worker", f"--conn-fd={theirs.fileno()}"],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        pass_fds=(theirs.fileno(),),
    )  # fmt: skip
    theirs.close()
    # once Python handles SIGINT (its KeyboardInterrupt handler is installed; before that,
    # on a loaded machine, the signal would end the interpreter still starting up)
    wait_for(lambda: handles_sigint(worker.pid), timeout_s=60)
    worker.send_signal(signal.SIGINT)  # what Ctrl-C on `make run` sends the process group
    _, stderr = worker.communicate(timeout=60)
    ours.close()
    assert worker.returncode == 0, stderr
    assert "Traceback" not in stderr
