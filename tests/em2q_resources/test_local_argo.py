"""em2q_resources.local_argo without a cluster: what it says when the Argo binaries are
missing, that the build and image scripts build the version it starts, and that its controller
configuration sends Workflow pods' argoexec to the apiserver on loopback."""

from __future__ import annotations

import json
import re

import pytest

from em2q_resources.local_argo import (
    ARGO_VERSION,
    ARGOEXEC_IMAGE_SCRIPT,
    BUILD_SCRIPT,
    ArgoSetupError,
    controller_config,
    find_argo_binaries,
)


def test_missing_argo_binaries_are_named_with_the_command_that_builds_them(tmp_path):
    with pytest.raises(ArgoSetupError) as caught:
        find_argo_binaries(tmp_path)
    message = str(caught.value)
    assert "workflow-controller, argoexec" in message and "make argo" in message
    assert ARGO_VERSION in message


@pytest.mark.parametrize("script", [BUILD_SCRIPT, ARGOEXEC_IMAGE_SCRIPT], ids=lambda p: p.name)
def test_the_scripts_build_the_argo_version_the_module_starts(script):
    text = script.read_text(encoding="utf-8")
    (default,) = re.findall(r'ARGO_VERSION="\$\{ARGO_VERSION:-(v[0-9.]+)\}"', text)
    assert default == ARGO_VERSION


def test_workflow_pods_reach_the_apiserver_on_loopback_over_the_host_network():
    config = controller_config("https://127.0.0.1:43117")
    env = {e["name"]: e["value"] for e in json.loads(config["executor"])["env"]}
    assert env == {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "43117"}
    assert json.loads(config["workflowDefaults"]) == {"spec": {"hostNetwork": True}}
