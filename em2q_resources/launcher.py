"""Where a heavy step runs: ``python -m em2q_msi.steps <step> ...`` as a local subprocess or as a
Kubernetes pod, both through Dagster Pipes, so the step's JSON summary comes back the same way.

An asset hands a step to the ``step_launcher`` resource in one line and gets the step's summary
back as a dict, e.g. ``spectra_chunks`` with the ``chunk`` step::

    summary = step_launcher.run_step(
        context, "chunk", [imzml_uri, "--k", str(k), "--index", str(i), "--out", out_url],
        kind="chunk", storage_options=storage.storage_options,
    )
    summary["first_index"], summary["n_spectra"], summary["bytes"]  # the step's own report

(The ``chunk`` step writes the chunk only; sums the asset gathers on the way, such as the
chunk's TIC, it then reads back from the chunk.) A step that reports ``"ok": false`` raises
:class:`StepFailed` with the step's own error message.

* ``in_process`` (the local platform's default, ``EM2Q_STEP_LAUNCHER``): nothing is launched,
  the asset calls ``em2q_msi`` in the run's own process; a subprocess per chunk would add its
  imports (seconds) to every chunk of every measurement on a laptop.
* ``local`` (the resource's default): a subprocess of this interpreter; storage options (which may hold S3
  keys) reach it through a private temporary file, never on the command line.
* ``kubernetes``: a pod from ``image`` via ``dagster_k8s.PipesK8sClient``; settings come from
  ConfigMaps and credentials from Secrets (``envFrom``), so no secret value is in the pod
  body, the run's metadata or its logs; storage options go on the command line without their
  credentials (the Secret's ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` replace them).

Requests and limits come from :data:`STEP_RESOURCES`, one row per step *kind*; the same table
sizes the ``k8s_job_executor``'s step pods (``em2q_assets.k8s``) and the Argo containers
(``argo_bridge``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field

from em2q_msi.errors import StepFailed
from em2q_resources.settings import Settings

if TYPE_CHECKING:  # the Kubernetes client takes seconds to import; local steps never need it
    import kubernetes.client

STEP_MODULE = "em2q_msi.steps"
DEFAULT_IMAGE = "em2q:latest"
#: ConfigMap with the EM2Q_* settings and Secret with the credentials every pod gets (deploy/)
DEFAULT_CONFIG_MAP = "em2q-settings"
DEFAULT_SECRET = "em2q-credentials"
#: the first container's name in a step pod (Pipes talks to the first container)
STEP_CONTAINER = "em2q-step"

#: CPU and memory per step kind: requests are what the scheduler reserves, limits what the step
#: may use. Steps stream blocks of at most 64 MiB (em2q_msi), so memory stays bounded by the
#: block, not the file (``qc`` over a 4 GB dataset peaks at ~410 MiB RSS, docs/reading.md).
STEP_RESOURCES: dict[str, dict[str, dict[str, str]]] = {
    # validation reads every byte once (checksum) but holds one block
    "ingest": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
    # copy one chunk into the chunk format, TIC and mean sums on the way
    "chunk": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    # numba kernels: smoothing, baseline, peaks over blocks of 2048 spectra
    "preprocess": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    # measurement-level merges: all chunks' peaks, TICs or ion intensities in memory at once
    "summary": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    # per-spectrum metrics of all chunks and the mean spectrum
    "qc": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
}

#: storage options that are credentials: never on a command line, in metadata or in a pod body
CREDENTIAL_OPTIONS = frozenset({"key", "secret", "token", "password", "session_token"})


class UnknownStepKind(ValueError):
    """A step kind that has no row in :data:`STEP_RESOURCES`."""


class NoKubernetesCluster(RuntimeError):
    """Kubernetes mode, but neither in-cluster nor kubeconfig credentials are available."""


def step_resources(kind: str) -> dict[str, dict[str, str]]:
    """The requests/limits of a step kind (a copy, safe to change)."""
    try:
        row = STEP_RESOURCES[kind]
    except KeyError:
        raise UnknownStepKind(
            f"no resources for step kind {kind!r}: use one of {sorted(STEP_RESOURCES)} "
            "or add a row to em2q_resources.launcher.STEP_RESOURCES"
        ) from None
    return {part: dict(values) for part, values in row.items()}


def without_credentials(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Storage options minus keys and secrets (a pod gets those from its Secret)."""
    return {k: v for k, v in (storage_options or {}).items() if k not in CREDENTIAL_OPTIONS}


def summary_from_results(invocation: dg.PipesClientCompletedInvocation) -> dict[str, Any]:
    """The step's JSON summary from what it reported through Pipes: materialization metadata
    on an asset step, a custom message on an op."""
    messages = invocation.get_custom_messages()
    if messages:
        return dict(messages[-1])
    results = [r for r in invocation.get_results() if isinstance(r, dg.MaterializeResult)]
    if not results:
        raise dg.Failure("the step reported nothing through Pipes (did it start at all?)")
    return {key: value.value for key, value in (results[-1].metadata or {}).items()}


class StepLauncherResource(dg.ConfigurableResource):
    """Runs ``python -m em2q_msi.steps`` locally or as a Kubernetes pod (Dagster Pipes)."""

    mode: Literal["in_process", "local", "kubernetes"] = Field(
        default="local",
        description="in_process: the asset calls em2q_msi itself (no launch); local: a "
        "subprocess; kubernetes: a pod per step",
    )
    image: str = Field(default=DEFAULT_IMAGE, description="code location image for step pods")
    image_pull_policy: str | None = Field(default=None, description="e.g. IfNotPresent")
    namespace: str | None = Field(
        default=None, description="namespace of step pods; None: the current one"
    )
    service_account_name: str | None = None
    host_network: bool = Field(
        default=False,
        description="step pods use the node's network (a single-node cluster whose "
        "Elasticsearch and S3 listen on the node's loopback, as tests/cluster's)",
    )
    host_paths: list[str] = Field(
        default_factory=list,
        description="host folders k8s_job step pods mount at the same path, running as their "
        "owner (a single-node cluster sharing the run's SQLite DAGSTER_HOME)",
    )
    kubeconfig_file: str | None = Field(
        default=None,
        description="kubeconfig of the k8s_job executor; None: the in-cluster service account",
    )
    env_config_maps: list[str] = Field(
        default_factory=lambda: [DEFAULT_CONFIG_MAP],
        description="ConfigMaps whose keys become the step pod's environment (EM2Q_* settings)",
    )
    env_secrets: list[str] = Field(
        default_factory=lambda: [DEFAULT_SECRET],
        description="Secrets whose keys become the step pod's environment (credentials)",
    )
    python_executable: str = Field(
        default=sys.executable, description="interpreter of local steps (this one by default)"
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> StepLauncherResource:
        return cls(
            mode=settings.step_launcher,
            image=settings.image,
            namespace=settings.namespace,
            host_network=settings.step_host_network,
            host_paths=list(settings.step_host_paths),
            kubeconfig_file=settings.kubeconfig,
            env_config_maps=list(settings.env_config_maps),
            env_secrets=list(settings.env_secrets),
        )

    @property
    def launches_steps(self) -> bool:
        """False in ``in_process`` mode: the asset calls the processing core directly."""
        return self.mode != "in_process"

    # ------------------------------------------------------------------ what runs

    def command(self, step: str, args: Sequence[str]) -> list[str]:
        """The step's command line (``python`` inside the image, this interpreter locally)."""
        python = self.python_executable if self.mode == "local" else "python"
        return [python, "-m", STEP_MODULE, step, *map(str, args)]

    def env_from(self) -> list[dict[str, Any]]:
        """``envFrom`` references: settings from ConfigMaps, credentials from Secrets."""
        return [{"config_map_ref": {"name": name}} for name in self.env_config_maps] + [
            {"secret_ref": {"name": name}} for name in self.env_secrets
        ]

    def pod_args(self, args: Sequence[str], storage_options: Mapping[str, Any] | None) -> list[str]:
        """The step's arguments in a pod: storage options without credentials (the pod's
        Secret supplies those as environment variables)."""
        public_options = without_credentials(storage_options)
        if not public_options:
            return list(args)
        return [*args, "--storage-options", json.dumps(public_options, sort_keys=True)]

    def base_pod_meta(self, kind: str, labels: Mapping[str, str] | None = None) -> dict:
        return {
            "labels": {
                "app.kubernetes.io/name": "em2q",
                "app.kubernetes.io/part-of": "em2q",  # the NetworkPolicy's platform pods
                "app.kubernetes.io/component": "step",
                "em2q/step-kind": kind,
                **(labels or {}),
            }
        }

    def base_pod_spec(self, kind: str) -> dict:
        container: dict[str, Any] = {
            "name": STEP_CONTAINER,
            "env_from": self.env_from(),
            "resources": step_resources(kind),
        }
        if self.image_pull_policy:
            container["image_pull_policy"] = self.image_pull_policy
        spec: dict[str, Any] = {"containers": [container]}
        if self.service_account_name:
            spec["service_account_name"] = self.service_account_name
        if self.host_network:
            spec["host_network"] = True
        return spec

    def pod_body(
        self,
        step: str,
        args: Sequence[str],
        *,
        kind: str,
        pod_name: str,
        labels: Mapping[str, str] | None = None,
        env_vars: Mapping[str, str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> kubernetes.client.V1Pod:
        """The pod ``PipesK8sClient`` submits for this step (``env_vars``: what Pipes adds)."""
        from dagster_k8s.pipes import build_pod_body

        return build_pod_body(
            pod_name=pod_name,
            image=self.image,
            command=self.command(step, self.pod_args(args, storage_options)),
            env_vars=dict(env_vars or {}),
            base_pod_meta=self.base_pod_meta(kind, labels),
            base_pod_spec=self.base_pod_spec(kind),
        )

    # ------------------------------------------------------------------ running

    def run_step(
        self,
        context: dg.OpExecutionContext | dg.AssetExecutionContext,
        step: str,
        args: Sequence[str],
        *,
        kind: str,
        storage_options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run one ``em2q_msi.steps`` step and return its JSON summary.

        Raises :class:`StepFailed` with the step's own error when it reports ``"ok": false``.
        """
        step_resources(kind)  # an unknown kind fails here, in every mode
        if self.mode == "in_process":
            raise ValueError(
                "the in_process launcher launches nothing: the asset runs the step itself "
                "(check `launches_steps` before calling run_step)"
            )
        if self.mode == "kubernetes":
            summary = self._run_in_pod(context, step, args, kind, storage_options)
        else:
            summary = self._run_subprocess(context, step, args, storage_options)
        if summary.get("ok") is False:
            raise StepFailed.from_summary(step, summary)
        return summary

    def _run_subprocess(self, context, step, args, storage_options) -> dict[str, Any]:
        # not dg.PipesSubprocessClient: it raises "failed with code 1" and drops what the step
        # reported, and the step's own error is what a technician needs to read
        with tempfile.TemporaryDirectory(prefix="em2q-step-") as private:
            extra: list[str] = []
            if storage_options:
                options = Path(private) / "storage-options.json"
                options.touch(mode=0o600)
                options.write_text(json.dumps(dict(storage_options)), encoding="utf-8")
                extra = ["--storage-options", str(options)]
            with dg.open_pipes_session(
                context=context,
                context_injector=dg.PipesTempFileContextInjector(),
                message_reader=dg.PipesTempFileMessageReader(),
            ) as session:
                done = subprocess.run(
                    self.command(step, [*args, *extra]),
                    env={**os.environ, **session.get_bootstrap_env_vars()},
                    check=False,
                )
        invocation = dg.PipesClientCompletedInvocation(session)
        try:
            return summary_from_results(invocation)
        except dg.Failure:
            raise dg.Failure(
                f"em2q_msi.steps {step} exited with status {done.returncode} without a report"
            ) from None

    def _run_in_pod(self, context, step, args, kind, storage_options) -> dict[str, Any]:
        from dagster_k8s import PipesK8sClient
        from kubernetes.config import ConfigException

        with _pod_slot(context):
            try:
                invocation = PipesK8sClient().run(
                    context=context,
                    image=self.image,
                    command=self.command(step, self.pod_args(args, storage_options)),
                    namespace=self.namespace,
                    base_pod_meta=self.base_pod_meta(kind, pod_labels(context)),
                    base_pod_spec=self.base_pod_spec(kind),
                )
            except ConfigException as exc:  # raised before any pod exists
                raise NoKubernetesCluster(
                    f"em2q_msi.steps {step} should run as a Kubernetes pod "
                    f"(EM2Q_STEP_LAUNCHER=kubernetes) but no cluster is configured ({exc}): "
                    "run inside the cluster, set KUBECONFIG, or set EM2Q_STEP_LAUNCHER=local"
                ) from exc
        return summary_from_results(invocation)


#: PipesK8sClient names a pod after the run and the op, so two pods of one op at once (the
#: chunks of a partition-range step on a thread pool) would clash: they take turns instead.
#: Parallel chunk pods need one step per chunk (per-chunk runs or the k8s_job_executor).
_pod_slots: dict[tuple[str, str], threading.Lock] = {}
_pod_slots_guard = threading.Lock()


def _pod_slot(context: dg.OpExecutionContext | dg.AssetExecutionContext) -> threading.Lock:
    with _pod_slots_guard:
        return _pod_slots.setdefault((context.run_id, context.op.name), threading.Lock())


def pod_labels(context: dg.OpExecutionContext | dg.AssetExecutionContext) -> dict[str, str]:
    """Labels naming the asset (or op) a step pod works for, e.g. ``em2q/asset``."""
    op_context = (
        context.op_execution_context if hasattr(context, "op_execution_context") else context
    )
    if op_context.has_assets_def and len(op_context.assets_def.keys) == 1:
        return {"em2q/asset": _label_value(op_context.assets_def.key.path[-1])}
    return {"em2q/op": _label_value(op_context.op.name)}


def _label_value(text: str) -> str:
    """A valid label value: at most 63 characters, alphanumeric at both ends."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63].strip("_.-")
