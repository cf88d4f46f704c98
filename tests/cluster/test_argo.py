"""Workflows on a real Argo controller (v4.0.5 built from the module sources, tests only) on
the local node: the emissary executor (argoexec copied into each pod by its init container, the
wait sidecar recording outputs as WorkflowTaskResults) and the DAG's parameter passing."""

from __future__ import annotations

import time
from typing import Any

from em2q_resources.local_argo import LocalArgo
from tests.cluster.conftest import Kube

WORKFLOW_API = "argoproj.io/v1alpha1"
DONE = {"Succeeded", "Failed", "Error"}


def run_workflow(
    kube: Kube, workflow: dict[str, Any], namespace: str, timeout_s: float = 600.0
) -> dict[str, Any]:
    """Create ``workflow`` and wait until it ends; the finished Workflow object."""
    resource = kube.dynamic.resources.get(api_version=WORKFLOW_API, kind="Workflow")
    name = resource.create(body=workflow, namespace=namespace).metadata.name
    deadline = time.monotonic() + timeout_s
    while True:
        found = resource.get(name=name, namespace=namespace).to_dict()
        if found.get("status", {}).get("phase") in DONE or time.monotonic() > deadline:
            return found
        time.sleep(1.0)


def failure_summary(workflow: dict[str, Any]) -> str:
    status = workflow.get("status", {})
    nodes = status.get("nodes", {}).values()
    failed = [f"{n['displayName']}: {n.get('phase')} {n.get('message', '')}" for n in nodes]
    return f"{status.get('phase')} {status.get('message', '')}\n" + "\n".join(failed)


def outputs_of(workflow: dict[str, Any], task: str) -> dict[str, str]:
    (node,) = [n for n in workflow["status"]["nodes"].values() if n["displayName"] == task]
    return {p["name"]: p["value"] for p in node.get("outputs", {}).get("parameters", [])}


def test_a_dag_passes_a_step_output_to_the_next_step(
    kube: Kube, argo: LocalArgo, step_image: str
) -> None:
    namespace = kube.namespace("em2q-argo-dag")
    argo.grant_executor(namespace)
    python = {"image": step_image, "imagePullPolicy": "Never", "command": ["python", "-c"]}
    workflow = {
        "apiVersion": WORKFLOW_API,
        "kind": "Workflow",
        "metadata": {"generateName": "dag-"},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {"name": "main", "dag": {"tasks": [
                    {"name": "produce", "template": "produce"},
                    {"name": "consume", "template": "consume", "depends": "produce",
                     "arguments": {"parameters": [
                         {"name": "n", "value": "{{tasks.produce.outputs.parameters.n}}"}]}},
                ]}},
                {"name": "produce",
                 "container": {**python, "args": ["open('/tmp/n', 'w').write(str(6 * 7))"]},
                 "outputs": {"parameters": [{"name": "n", "valueFrom": {"path": "/tmp/n"}}]}},
                {"name": "consume", "inputs": {"parameters": [{"name": "n"}]},
                 "container": {**python, "args": [
                     "import sys; open('/tmp/m', 'w').write(str(int(sys.argv[1]) + 1))",
                     "{{inputs.parameters.n}}"]},
                 "outputs": {"parameters": [{"name": "m", "valueFrom": {"path": "/tmp/m"}}]}},
            ],
        },
    }  # fmt: skip

    done = run_workflow(kube, workflow, namespace)

    assert done["status"]["phase"] == "Succeeded", failure_summary(done)
    assert outputs_of(done, "produce") == {"n": "42"}
    assert outputs_of(done, "consume") == {"m": "43"}  # 42 reached it through the DAG
