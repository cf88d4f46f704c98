"""em2q_resources.local_kubernetes without a cluster: what it says when binaries are missing,
and that the build script and the module agree on the version they build and look for."""

from __future__ import annotations

import re

import pytest

from em2q_resources.local_kubernetes import (
    BUILD_SCRIPT,
    CONTROL_PLANE,
    CONTROLLERS,
    ECK_CRDS_SCRIPT,
    ECK_VERSION,
    K8S_VERSION,
    KubernetesSetupError,
    LocalKubernetes,
    LocalNode,
    bin_dir,
    built_components,
    container_support_problem,
    find_binaries,
    mounts_below,
    write_certificates,
)


def test_missing_binaries_are_named_with_the_command_that_builds_them(tmp_path):
    with pytest.raises(KubernetesSetupError) as caught:
        find_binaries(tmp_path)
    message = str(caught.value)
    assert "etcd, kube-apiserver" in message and "make kubernetes" in message
    assert K8S_VERSION in message


def built(cache_dir, *names: str) -> None:
    folder = bin_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_make_tests_control_plane_starts_without_the_controllers(tmp_path):
    with pytest.raises(KubernetesSetupError, match="etcd, kube-apiserver"):
        built_components(tmp_path)
    built(tmp_path, *CONTROL_PLANE)
    assert built_components(tmp_path) == CONTROL_PLANE
    built(tmp_path, *CONTROLLERS)
    assert built_components(tmp_path) == CONTROL_PLANE + CONTROLLERS


def test_a_node_refuses_a_cluster_without_its_controllers_naming_make_kubernetes(tmp_path):
    """Its pods would stay Pending for ever: nothing would schedule them."""
    built(tmp_path, *CONTROL_PLANE, "kubelet")
    cluster = LocalKubernetes(cache_dir=tmp_path, components=CONTROL_PLANE)
    with pytest.raises(KubernetesSetupError) as caught:
        LocalNode(cluster).start()
    assert "kube-controller-manager, kube-scheduler" in str(caught.value)
    assert "make kubernetes" in str(caught.value)


def test_the_build_script_builds_the_version_the_module_starts():
    text = BUILD_SCRIPT.read_text(encoding="utf-8")
    (default,) = re.findall(r'K8S_VERSION="\$\{K8S_VERSION:-(v[0-9.]+)\}"', text)
    assert default == K8S_VERSION


def test_the_eck_script_fetches_the_version_the_tests_look_for():
    text = ECK_CRDS_SCRIPT.read_text(encoding="utf-8")
    (default,) = re.findall(r'ECK_VERSION="\$\{ECK_VERSION:-(v[0-9.]+)\}"', text)
    assert default == ECK_VERSION


def test_the_serving_certificate_names_loopback_and_the_in_cluster_name(tmp_path):
    import subprocess

    write_certificates(tmp_path)
    text = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "apiserver.crt"), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "IP Address:127.0.0.1" in text and "DNS:kubernetes.default.svc" in text
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", "ca.crt", "apiserver.crt", "admin.crt"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_second_node_on_the_host_waits_for_the_first_and_names_the_lock(tmp_path):
    first = LocalNode(LocalKubernetes(cache_dir=tmp_path))
    second = LocalNode(LocalKubernetes(cache_dir=tmp_path))
    first._take_host_lock()
    with pytest.raises(KubernetesSetupError, match="node.lock"):
        second._take_host_lock(timeout_s=0.5)
    first.stop()  # no process ever started: stop only releases the lock
    second._take_host_lock(timeout_s=0.5)
    second.stop()


def test_an_unprivileged_user_is_told_containers_need_root(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert container_support_problem() == (
        "not root (uid 1000): containerd and the kubelet need root"
    )


def test_the_nodes_own_mounts_are_found_deepest_first_and_no_others(tmp_path):
    node = tmp_path / "node"
    mountinfo = "\n".join(
        f"{i} 1 0:{i} / {point} rw - tmpfs tmpfs rw"
        for i, point in enumerate([
            "/", f"{node}/kubelet", f"{node}/kubelet/pods/a/volumes/x", f"{node}-other/kubelet",
            f"{tmp_path}/elsewhere",
        ])
    )  # fmt: skip
    assert mounts_below(node, mountinfo) == [
        node / "kubelet" / "pods" / "a" / "volumes" / "x",
        node / "kubelet",
    ]
