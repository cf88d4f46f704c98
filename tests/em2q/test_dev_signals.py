"""`em2q dev` started in the background (SIGINT inherited ignored) still stops its processes
on SIGINT: what `stop_on_signals` gives the processes it starts."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

CHILD_SIGINT = (
    "import subprocess, sys; "
    "print(subprocess.run([sys.executable, '-c', 'import signal; "
    "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)'], "
    "capture_output=True, text=True).stdout.strip())"
)


def started_in_the_background(code: str) -> str:
    """Run ``code`` in a Python whose SIGINT is ignored, as a shell's `&` or nohup leaves it."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN), check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("setup", "child_interruptible"),
    [("", "False"), ("from em2q.dev import stop_on_signals; stop_on_signals(); ", "True")],
    ids=["without", "with-stop_on_signals"],
)
def test_processes_the_platform_starts_stop_on_sigint_even_when_it_runs_in_the_background(
    setup: str, child_interruptible: str
) -> None:
    assert started_in_the_background(setup + CHILD_SIGINT) == child_interruptible
