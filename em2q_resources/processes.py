"""Stopping the services the platform starts as process groups (Elasticsearch, Dagster,
Jupyter, the local Kubernetes and Argo): one way, so each is asked first and killed only when
it does not end in time."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(
    process: subprocess.Popen, timeout_s: float, sig: int = signal.SIGTERM
) -> None:
    """Send ``sig`` to ``process``'s group, wait ``timeout_s``, then SIGKILL the group."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, sig)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
