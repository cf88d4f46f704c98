"""Argo Workflows' controller on the local Kubernetes (``em2q_resources.local_kubernetes``).

FOR TESTS ONLY: ``workflow-controller`` and ``argoexec`` are built from the Go module
``github.com/argoproj/argo-workflows/v4`` at v4.0.5 (``deploy/local-cluster/build-argo.sh``),
the one version the module proxy here serves, which has reported security flaws.

:class:`LocalArgo` applies Argo's own CRDs (``manifests/base/crds/minimal`` of the module, as
Argo's install manifests do), imports the ``argoexec`` image (``argoexec-image.sh``, no
registry) into the node's containerd and runs the controller as a host process against the
cluster's admin kubeconfig, watching every namespace, with the emissary executor (Argo's
default and only one). The cluster has no service network: its ``kubernetes`` Service's
ClusterIP leads nowhere, so the controller's configuration gives every Workflow pod the host
network (``workflowDefaults``) and points argoexec's in-cluster client at the apiserver on
loopback (``KUBERNETES_SERVICE_HOST``/``PORT`` in ``executor.env``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from em2q_resources.local_kubernetes import (
    PLATFORM_IMAGE_NAME,
    PLATFORM_IMAGE_SCRIPT,
    KubernetesSetupError,
    LocalKubernetes,
    LocalNode,
    go_module_dir,
)
from em2q_resources.processes import stop_process_group
from em2q_resources.settings import PROJECT_ROOT

ARGO_VERSION = "v4.0.5"
ARGO_MODULE = "github.com/argoproj/argo-workflows/v4"
BUILD_SCRIPT = PROJECT_ROOT / "deploy" / "local-cluster" / "build-argo.sh"
ARGOEXEC_IMAGE_SCRIPT = PROJECT_ROOT / "deploy" / "local-cluster" / "argoexec-image.sh"
ARGOEXEC_IMAGE_NAME = "em2q.local/argoexec"
ARGOEXEC_IMAGE = f"{ARGOEXEC_IMAGE_NAME}:{ARGO_VERSION}"
COMPONENTS = ("workflow-controller", "argoexec")
#: where the controller's ConfigMap lives (it watches Workflows in every namespace)
CONTROLLER_NAMESPACE = "argo"
CONTROLLER_CONFIG_MAP = "workflow-controller-configmap"
CONTROLLER_ENV = {
    "LEADER_ELECTION_DISABLE": "true",  # one controller
    # look at a running Workflow again after 2 s, not 10 (Argo's default): a test Workflow's
    # steps take seconds, and each waits for the controller to notice its predecessor ended
    "DEFAULT_REQUEUE_TIME": "2s",
}


class ArgoSetupError(KubernetesSetupError):
    """The local Argo controller is missing a binary or did not come up."""


def argo_bin_dir(cache_dir: Path, version: str = ARGO_VERSION) -> Path:
    return cache_dir / f"argo-{version}" / "bin"


def find_argo_binaries(cache_dir: Path) -> dict[str, Path]:
    """The built binaries; raises with the command that builds the missing ones."""
    folder = argo_bin_dir(cache_dir)
    missing = [c for c in COMPONENTS if not (folder / c).is_file()]
    if missing:
        raise ArgoSetupError(
            f"{', '.join(missing)} (Argo {ARGO_VERSION}) not built in {folder}: run "
            f"`make argo` (or {BUILD_SCRIPT.relative_to(PROJECT_ROOT)}; ~15 min once, Go needed)"
        )
    return {c: folder / c for c in COMPONENTS}


def crd_folder(cache_dir: Path) -> Path:
    """Argo's CRDs in the module cache (downloaded by the build)."""
    return go_module_dir(cache_dir, ARGO_MODULE, ARGO_VERSION) / "manifests/base/crds/minimal"


def executor_role_file(cache_dir: Path) -> Path:
    """Argo's "recommended minimum permissions for the emissary executor" Role: a Workflow
    pod's wait container records each step's outputs as a WorkflowTaskResult."""
    module = go_module_dir(cache_dir, ARGO_MODULE, ARGO_VERSION)
    return module / "manifests/quick-start/base/executor/emissary/executor-role.yaml"


def controller_config(apiserver: str) -> dict[str, str]:
    """The controller's ConfigMap data for a cluster without a service network."""
    url = urllib.parse.urlsplit(apiserver)
    executor = {
        "env": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": url.hostname},
            {"name": "KUBERNETES_SERVICE_PORT", "value": str(url.port)},
        ]
    }
    return {
        "executor": json.dumps(executor),
        "workflowDefaults": json.dumps({"spec": {"hostNetwork": True}}),
        # no listener beyond what the test needs: metrics off
        "metricsConfig": json.dumps({"enabled": False}),
        "telemetryConfig": json.dumps({"enabled": False}),
    }


@dataclass
class LocalArgo:
    """The workflow controller for a running :class:`LocalKubernetes` with a :class:`LocalNode`."""

    cluster: LocalKubernetes
    node: LocalNode
    start_timeout_s: float = 120.0
    process: subprocess.Popen | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        binaries = find_argo_binaries(self.cluster.cache_dir)
        crds = crd_folder(self.cluster.cache_dir)
        if not crds.is_dir():
            raise ArgoSetupError(f"Argo's CRDs not found in {crds}: run {BUILD_SCRIPT.name}")
        started = time.monotonic()
        files = [arg for path in sorted(crds.glob("argoproj.io_*.yaml")) for arg in ("-f", path)]
        self._kubectl("apply", "--server-side", "--force-conflicts", *files)
        self._kubectl("wait", "--for=condition=Established", "--timeout=60s", *files)
        self._kubectl("create", "namespace", CONTROLLER_NAMESPACE)
        config = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONTROLLER_CONFIG_MAP, "namespace": CONTROLLER_NAMESPACE},
            "data": controller_config(self.cluster.server),
        }
        self._kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(config))
        self.timings_s["crds"] = time.monotonic() - started
        started = time.monotonic()
        image = self.node.load_image(ARGOEXEC_IMAGE_SCRIPT, ARGOEXEC_IMAGE_NAME)
        if image != ARGOEXEC_IMAGE:
            raise ArgoSetupError(f"{ARGOEXEC_IMAGE_SCRIPT.name} made {image}, not {ARGOEXEC_IMAGE}")
        self.timings_s["image"] = time.monotonic() - started
        started = time.monotonic()
        log = open(self.cluster.workdir / "logs" / "workflow-controller.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(binaries["workflow-controller"]),
                "--kubeconfig",
                str(self.cluster.kubeconfig),
                "--namespace",
                CONTROLLER_NAMESPACE,
                "--configmap",
                CONTROLLER_CONFIG_MAP,
                "--executor-image",
                ARGOEXEC_IMAGE,
                "--executor-image-pull-policy",
                "Never",  # imported, no registry
            ],  # fmt: skip
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **CONTROLLER_ENV},
        )
        try:
            self._wait_running()
        except BaseException:
            self.stop()
            raise
        self.timings_s["controller"] = time.monotonic() - started

    def grant_executor(self, namespace: str, service_account: str = "default") -> None:
        """Argo's executor Role in ``namespace``, bound to the Workflow pods' service account
        (what a cluster operator does once per namespace that runs Workflows)."""
        self._kubectl("apply", "--server-side", "-n", namespace, "-f",
                      str(executor_role_file(self.cluster.cache_dir)))  # fmt: skip
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"executor-{service_account}", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "executor"},
            "subjects": [{"kind": "ServiceAccount", "name": service_account,
                          "namespace": namespace}],
        }  # fmt: skip
        self._kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(binding))

    def _wait_running(self) -> None:
        """Until the controller runs (it starts its informers; Workflows created before they
        have synced are queued, not lost)."""
        log = self.cluster.workdir / "logs" / "workflow-controller.log"
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ArgoSetupError(
                    f"workflow-controller exited with code {self.process.returncode}"
                    + self.cluster._log_tail("workflow-controller")
                )
            if "Starting Workflow Controller" in log.read_text(errors="replace"):
                return
            time.sleep(0.5)
        raise ArgoSetupError(
            f"workflow-controller not running after {self.start_timeout_s:.0f}s"
            + self.cluster._log_tail("workflow-controller")
        )

    def _kubectl(self, *args: str, stdin: str | None = None) -> str:
        return _run(["kubectl", "--kubeconfig", str(self.cluster.kubeconfig), *args], stdin=stdin)

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``: the controller keeps running for long after
        SIGTERM, and holds nothing that must be flushed (its state is in the apiserver)."""
        if self.process is not None:
            stop_process_group(self.process, timeout_s)
        self.process = None


def _run(args: list[str], stdin: str | None = None) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ArgoSetupError(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    """``make cluster-argo``: the local cluster, a node and Argo's controller for a person."""
    import argparse
    import sys

    from em2q_resources.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="certificates, kubeconfig, etcd data, logs (default: <cache>/local-kubernetes)",
    )
    parser.add_argument(
        "--namespace",
        default="em2q",
        help="namespace created for Workflows, with Argo's executor Role for its default "
        "service account (default: em2q)",
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    workdir = args.workdir or settings.cache_dir / "local-kubernetes"
    cluster = LocalKubernetes.from_settings(settings, workdir=workdir)
    node = LocalNode(cluster)
    argo = LocalArgo(cluster, node)
    started = time.monotonic()
    try:
        find_argo_binaries(settings.cache_dir)
        kubeconfig = cluster.start()
        node.start()
        argo.start()
        argo._kubectl("create", "namespace", args.namespace)
        argo.grant_executor(args.namespace)
        image = node.load_image(PLATFORM_IMAGE_SCRIPT, PLATFORM_IMAGE_NAME)
    except KubernetesSetupError as exc:
        argo.stop()
        node.stop()
        cluster.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"Kubernetes + node + Argo {ARGO_VERSION} (tests only) up in "
        f"{time.monotonic() - started:.0f}s; logs in {workdir / 'logs'}\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        f"  namespace {args.namespace} (Argo's executor Role for its default service account)\n"
        f"  em2q export-argo --out argo --image {image}   # imported, no registry\n"
        f"  kubectl -n {args.namespace} apply -f argo/\n"
        f"  kubectl -n {args.namespace} get workflows,pods -w\n"
        "Ctrl-C stops it.",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        argo.stop()
        node.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
