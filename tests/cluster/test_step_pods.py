"""Steps as real pods on the local node (kubelet + containerd + runc, host network): the
``chunk`` step through ``PipesK8sClient`` (EM2Q_STEP_LAUNCHER=kubernetes) reads a measurement
from the S3 API server on loopback, its report comes back through the pod's logs, and its
arrays are byte-identical to the same step run in this process."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import fsspec
import numpy as np

from em2q_msi.steps import main as run_step_here
from em2q_resources.launcher import DEFAULT_CONFIG_MAP, DEFAULT_SECRET, StepLauncherResource
from tests.cluster.conftest import Kube
from tests.em2q_resources.test_launcher import EXAMPLE, chunk_asset
from tests.fixtures.s3 import S3Endpoint


def test_the_chunk_step_runs_as_a_pod_and_writes_the_in_process_arrays(
    kube: Kube,
    kubeconfig: Path,
    step_image: str,
    s3_endpoint: S3Endpoint,
    s3_root: str,
    tmp_path: Path,
    monkeypatch,
) -> None:
    namespace = kube.namespace("em2q-pods")
    # settings and credentials reach step pods from the ConfigMap and the Secret (envFrom)
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": DEFAULT_CONFIG_MAP, "namespace": namespace},
                "data": {"EM2Q_STORAGE": s3_root}}, dry_run=False)  # fmt: skip
    kube.apply({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": DEFAULT_SECRET, "namespace": namespace},
                "stringData": {"AWS_ACCESS_KEY_ID": s3_endpoint.key,
                               "AWS_SECRET_ACCESS_KEY": s3_endpoint.secret}},
               dry_run=False)  # fmt: skip
    fs = fsspec.filesystem("s3", **s3_endpoint.storage_options, skip_instance_cache=True)
    imzml = f"{s3_root}/measurements/example/Example_Processed.imzML"
    fs.put(str(EXAMPLE), imzml)
    fs.put(str(EXAMPLE.with_suffix(".ibd")), imzml.removesuffix(".imzML") + ".ibd")
    out = f"{s3_root}/results/example/chunk-0-of-2"
    # what `export KUBECONFIG=...` does for a person (the client reads it at import time)
    monkeypatch.setattr(
        "kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig)
    )
    launcher = StepLauncherResource(
        mode="kubernetes",
        image=step_image,
        image_pull_policy="Never",  # imported into containerd, no registry
        namespace=namespace,
        host_network=True,  # the S3 API server listens on the node's loopback
    )
    args = [imzml, "--k", "2", "--index", "0", "--out", out]
    asset = chunk_asset(args, s3_endpoint.storage_options)
    result = dg.materialize([asset], resources={"step_launcher": launcher})
    assert result.success
    assert result.output_for_node("spectra_chunks")["n_spectra"] == 5  # 9 spectra: [0, 5)

    here = tmp_path / "chunk-0-of-2"
    assert run_step_here(["chunk", str(EXAMPLE), "--k", "2", "--index", "0",
                          "--out", str(here)]) == 0  # fmt: skip
    names = sorted(p.name for p in here.iterdir() if p.suffix == ".npy")
    assert names and sorted(Path(p).name for p in fs.ls(out) if p.endswith(".npy")) == names
    for name in names:
        assert fs.cat(f"{out}/{name}") == (here / name).read_bytes(), name
        np.load(here / name)  # a real array, not an empty file
