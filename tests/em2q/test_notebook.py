"""examples/explore.ipynb executed in a real Jupyter kernel against the running platform."""

from __future__ import annotations

import json
import sys

import nbformat
import pytest
from click.testing import CliRunner
from nbclient import NotebookClient

from em2q.cli import main
from em2q_resources.settings import PROJECT_ROOT
from tests.em2q_assets.conftest import register_copy
from tests.fixtures.dagster import materialize_measurement

NOTEBOOK = PROJECT_ROOT / "examples" / "explore.ipynb"
KERNEL = "em2q-test"


@pytest.fixture
def jupyter_kernel(tmp_path, dagster_platform, monkeypatch):
    """A kernelspec running this venv's Python with the platform's EM2Q_* settings; yields
    (working folder, kernel.json content)."""
    settings = dagster_platform.settings
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    env = {
        "EM2Q_ELASTICSEARCH_URL": settings.elasticsearch_url,
        "EM2Q_INDEX_PREFIX": settings.index_prefix,
        "EM2Q_STORAGE": settings.storage,
        "EM2Q_CACHE_DIR": str(settings.cache_dir),
        "EM2Q_DAGSTER_URL": settings.dagster_url,
        "EM2Q_SPECTRA_CHUNKS": str(settings.spectra_chunks),
        "EM2Q_LOCAL_ROLE": "scientist",
        "EM2Q_LOCAL_USER": "notebook-scientist",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    kernel = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "EM²Q test kernel",
        "language": "python",
        "env": env,
    }
    (spec / "kernel.json").write_text(json.dumps(kernel), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return tmp_path, kernel


def test_explore_notebook_runs_the_data_scientists_story_without_errors(
    jupyter_kernel, dagster_platform
):
    kernel_dir, kernel = jupyter_kernel
    store = dagster_platform.store
    register_copy(store, kernel_dir / "upload", "Example_Continuous", "example-continuous")
    # What `make run` does before a scientist arrives: the default set processed.
    assert all(
        r.success for r in materialize_measurement(dagster_platform.settings, "example-continuous")
    )
    store.refresh()

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, kernel_name=KERNEL, timeout=900, resources={"metadata": {"path": str(kernel_dir)}}
    ).execute()

    nbformat.write(notebook, kernel_dir / "explore.executed.ipynb")  # to look at when it fails
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # the spectrum, the parameter comparison, mean spectrum + ion images
    saved = store.get_parameter_set("strict")
    assert saved.author == "notebook-scientist"
    runs = store.search(
        store.schema.WorkflowRun,
        filters={"measurement_id": "example-continuous", "parameter_set_id": saved.id},
    )
    assert {r.workflow for r in runs.hits} >= {"preprocessed_chunks", "qc_report"}

    # The run the notebook launched can be followed from the CLI (`em2q run --wait` does this).
    launch_id = next(
        o.text.split()[0] for o in outputs if o.output_type == "stream" and "/runs/b/" in o.text
    )
    env = kernel["env"]
    followed = CliRunner().invoke(main, ["wait", launch_id], env=env)
    assert followed.exit_code == 0, followed.output
    assert followed.stdout.startswith(f"{launch_id}: COMPLETED_SUCCESS")
    assert "asset partitions" in followed.stderr  # the progress bar
    as_json = json.loads(CliRunner().invoke(main, ["wait", launch_id, "--json"], env=env).stdout)
    assert as_json["ok"] and as_json["tags"]["em2q/parameter_set"] == saved.id
