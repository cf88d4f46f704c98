"""Every run imports the code location afresh (``dagster api execute_run``), and so do the
webserver and the daemon's code server: it loads only Dagster and what builds the definitions.
The numba kernels, scipy, pandas and the Elasticsearch client load when a step or a resource
first uses them (issue 13)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEP_ONLY = ("numba", "scipy", "pandas", "elasticsearch", "matplotlib", "pyopenms", "pyimzml")

_PROBE = """
import json, sys, warnings
warnings.simplefilter("ignore")
import em2q_assets.definitions as location
assert location.defs.resolve_asset_graph() is not None
print(json.dumps([m for m in STEP_ONLY if m in sys.modules]))
""".replace("STEP_ONLY", repr(STEP_ONLY))


def test_loading_the_code_location_imports_no_step_library(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        encoding="utf-8",
        timeout=300,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
             "EM2Q_CACHE_DIR": str(tmp_path / "cache"), "EM2Q_STORAGE": str(tmp_path / "s")},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == []
