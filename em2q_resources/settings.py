"""One settings object for the whole platform, read from ``EM2Q_*`` environment variables.

No other module reads the environment: surfaces (CLI, Dagster definitions, tests) build a
``Settings`` once and pass it down. The local defaults need no configuration at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


#: the Dagster webserver when nothing names one: where `em2q dev` serves it (a test session
#: points it at a closed port, so no test reaches a platform someone runs on this machine)
DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"


@dataclass(frozen=True)
class Settings:
    """Backends the platform talks to.

    ``elasticsearch_url`` ``None`` means "start the project's own local Elasticsearch".
    ``storage`` is an fsspec URL or a local folder where measurements and results live.
    """

    elasticsearch_url: str | None = None
    elasticsearch_username: str | None = None
    elasticsearch_password: str | None = field(default=None, repr=False)
    elasticsearch_api_key: str | None = field(default=None, repr=False)
    index_prefix: str = "em2q"
    storage: str = str(PROJECT_ROOT / ".em2q" / "storage")
    cache_dir: Path = PROJECT_ROOT / ".cache"
    #: where heavy steps run: in_process (the run's process), local (a subprocess) or
    #: kubernetes (a pod per step); see em2q_resources/launcher.py
    step_launcher: str = "in_process"
    #: how a run's steps execute: in_process (one process) or k8s_job (a Kubernetes Job per step)
    run_executor: str = "in_process"
    #: code location image and namespace of step pods; ConfigMaps/Secrets they get as environment
    image: str = "em2q:latest"
    #: the digest of the image this process runs in (set in the pod spec, e.g. by the chart
    #: from the image it deploys); recorded in each WorkflowRun next to the code version
    image_digest: str | None = None
    namespace: str | None = None
    env_config_maps: tuple[str, ...] = ("em2q-settings",)
    env_secrets: tuple[str, ...] = ("em2q-credentials",)
    #: step pods use the node's network (a single-node cluster whose Elasticsearch and S3
    #: listen on the node's loopback, as ``make cluster``'s and tests/cluster's)
    step_host_network: bool = False
    #: host folders step Jobs mount at the same path (a single-node cluster sharing the run's
    #: SQLite DAGSTER_HOME with the k8s_job executor's step pods); they run as the folders' owner
    step_host_paths: tuple[str, ...] = ()
    #: kubeconfig the k8s_job executor launches step Jobs with; None: the in-cluster service
    #: account (the run itself in a pod)
    kubeconfig: str | None = None
    s3_endpoint_url: str | None = None
    #: K of "chunk i of K": spectra-level partitions per measurement
    spectra_chunks: int = 8
    #: chunks of one measurement processed side by side in a run (None: the CPU count)
    chunk_workers: int | None = None
    #: the Dagster webserver the CLI, client and web catalog launch runs through (GraphQL)
    dagster_url: str = field(default_factory=lambda: DEFAULT_DAGSTER_URL)
    #: a measurement not READY/FAILED with no queued or running run for this long is FAILED
    #: as stalled by the watchdog sensor (em2q_assets.sensors); longer than a backfill's start
    stalled_after_s: float = 300.0
    #: the local platform's run queue (em2q.platform): runs at once in all, per measurement
    #: (its chain is sequential, so 1 costs nothing and keeps a re-run from racing the chain)
    #: and per stage of the chain (``ingest``, ``chunks``, ``measurement``; ``chunks=2``)
    max_concurrent_runs: int = 4
    #: native threads (OpenMP, BLAS) a run's steps may use; None: the cores shared by the runs
    #: that may run at once (see :meth:`native_threads_per_run`)
    threads_per_run: int | None = None
    runs_per_measurement: int = 1
    runs_per_stage: tuple[tuple[str, int], ...] = ()
    #: who is asking (em2q_resources.auth): local (one local user), token (API tokens from
    #: ``tokens_file``) or header (a trusted reverse proxy's user/role headers)
    auth_mode: str = "local"
    local_user: str = "local"
    local_role: str = "admin"
    tokens_file: Path | None = None
    #: the API token the CLI signs in with when ``--token`` is not given (``EM2Q_TOKEN``)
    api_token: str | None = field(default=None, repr=False)
    user_header: str = "X-Forwarded-User"
    role_header: str = "X-Forwarded-Role"
    #: header mode believes the identity headers only from these peers (addresses or CIDRs) …
    trusted_proxies: tuple[str, ...] = ()
    #: … or from requests carrying this shared secret in ``proxy_secret_header``
    proxy_secret: str | None = field(default=None, repr=False)
    proxy_secret_header: str = "X-EM2Q-Proxy-Secret"
    #: seconds one Elasticsearch request may take before the store reports it unavailable
    elasticsearch_timeout_s: float = 5.0
    #: the web catalog's signing secret for CSRF tokens (None: a random one per process)
    web_secret: str | None = field(default=None, repr=False)
    #: origins besides the catalog's own that may post its forms (e.g. the proxy's public URL)
    web_allowed_origins: tuple[str, ...] = ()
    #: "Open in notebook" goes to this notebook server: a JupyterHub's base URL (through its
    #: ``/hub/user-redirect/``) or, with ``notebook_token``, a plain Jupyter server (the one
    #: ``em2q dev`` starts on loopback); None: the page offers the notebook as a download
    notebook_url: str | None = None
    notebook_token: str | None = field(default=None, repr=False)
    #: where opened notebooks are written: the folder that server opens at (``{user}`` is the
    #: signed-in user's name, e.g. ``/home/{user}`` for a JupyterHub's shared home folders)
    notebook_dir: str = str(PROJECT_ROOT / ".em2q" / "notebooks")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()

        def get(name: str, default):
            value = env.get(f"EM2Q_{name}")
            return default if value in (None, "") else value

        return cls(
            elasticsearch_url=get("ELASTICSEARCH_URL", defaults.elasticsearch_url),
            elasticsearch_username=get("ELASTICSEARCH_USERNAME", None),
            elasticsearch_password=get("ELASTICSEARCH_PASSWORD", None),
            elasticsearch_api_key=get("ELASTICSEARCH_API_KEY", None),
            index_prefix=get("INDEX_PREFIX", defaults.index_prefix),
            storage=get("STORAGE", defaults.storage),
            cache_dir=Path(get("CACHE_DIR", str(defaults.cache_dir))),
            step_launcher=get("STEP_LAUNCHER", defaults.step_launcher),
            run_executor=get("RUN_EXECUTOR", defaults.run_executor),
            image=get("IMAGE", defaults.image),
            image_digest=get("IMAGE_DIGEST", None),
            namespace=get("NAMESPACE", None),
            env_config_maps=_names(get("ENV_CONFIG_MAPS", None), defaults.env_config_maps),
            env_secrets=_names(get("ENV_SECRETS", None), defaults.env_secrets),
            step_host_network=get("STEP_HOST_NETWORK", "").lower() in ("1", "true", "yes"),
            step_host_paths=_names(get("STEP_HOST_PATHS", None), ()),
            kubeconfig=get("KUBECONFIG", None),
            s3_endpoint_url=get("S3_ENDPOINT_URL", None),
            spectra_chunks=int(get("SPECTRA_CHUNKS", defaults.spectra_chunks)),
            chunk_workers=int(get("CHUNK_WORKERS", 0)) or None,
            dagster_url=get("DAGSTER_URL", defaults.dagster_url).rstrip("/"),
            stalled_after_s=float(get("STALLED_AFTER_S", defaults.stalled_after_s)),
            max_concurrent_runs=int(get("MAX_CONCURRENT_RUNS", defaults.max_concurrent_runs)),
            threads_per_run=int(get("THREADS_PER_RUN", 0)) or None,
            runs_per_measurement=int(get("RUNS_PER_MEASUREMENT", defaults.runs_per_measurement)),
            runs_per_stage=_limits(get("RUNS_PER_STAGE", None)),
            auth_mode=get("AUTH_MODE", defaults.auth_mode),
            local_user=get("LOCAL_USER", env.get("USER") or defaults.local_user),
            local_role=get("LOCAL_ROLE", defaults.local_role),
            tokens_file=Path(get("TOKENS_FILE", "")) if get("TOKENS_FILE", None) else None,
            api_token=get("TOKEN", None),
            user_header=get("USER_HEADER", defaults.user_header),
            role_header=get("ROLE_HEADER", defaults.role_header),
            trusted_proxies=_names(get("TRUSTED_PROXIES", None), ()),
            proxy_secret=get("PROXY_SECRET", None),
            proxy_secret_header=get("PROXY_SECRET_HEADER", defaults.proxy_secret_header),
            elasticsearch_timeout_s=float(
                get("ELASTICSEARCH_TIMEOUT_S", defaults.elasticsearch_timeout_s)
            ),
            web_secret=get("WEB_SECRET", None),
            web_allowed_origins=_names(get("WEB_ALLOWED_ORIGINS", None), ()),
            notebook_url=(get("NOTEBOOK_URL", "") or "").rstrip("/") or None,
            notebook_token=get("NOTEBOOK_TOKEN", None),
            notebook_dir=get("NOTEBOOK_DIR", defaults.notebook_dir),
        )

    def with_overrides(self, **changes) -> Settings:
        return replace(self, **changes)

    def native_threads_per_run(self, cores: int | None = None) -> int:
        """OpenMP/BLAS threads per run: the cores divided among the runs allowed at once.

        Native pools spin while they wait: with four runs on two cores, scikit-learn's k-means
        at its default (one thread per core) took 60x the CPU of one thread on a small image.
        """
        if self.threads_per_run:
            return self.threads_per_run
        return max(1, (cores or os.cpu_count() or 1) // max(1, self.max_concurrent_runs))


def _names(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list of Kubernetes object names."""
    if text is None:
        return default
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _limits(text: str | None) -> tuple[tuple[str, int], ...]:
    """``chunks=2,measurement=3`` → ``(("chunks", 2), ("measurement", 3))``."""
    if not text:
        return ()
    limits = []
    for item in text.split(","):
        name, _, count = item.partition("=")
        if not name.strip() or not count.strip().isdigit():
            raise ValueError(
                f"EM2Q_RUNS_PER_STAGE: {item.strip()!r} is not STAGE=COUNT (e.g. chunks=2)"
            )
        limits.append((name.strip(), int(count)))
    return tuple(limits)
