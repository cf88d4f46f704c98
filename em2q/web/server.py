"""Serving the web catalog: in the foreground (``em2q web``) or in a thread beside the Dagster
UI (``em2q dev``, the browser tests)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(
    app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 20.0
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a daemon thread until the block ends; yields its URL.

    ``port`` 0 picks a free port. Raises ``RuntimeError`` when the server does not start (e.g.
    the port is taken).
    """
    port = port or free_port(host)
    # proxy_headers=False: the peer address stays the real one, which header mode's
    # EM2Q_TRUSTED_PROXIES check relies on (X-Forwarded-For is the client's word)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", proxy_headers=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="em2q-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(
                f"the web catalog did not start on {host}:{port} (is the port taken? pick "
                "another with --web-port)"
            )
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
