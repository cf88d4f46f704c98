"""Per-step code versions derived from the code each step runs (issue 17): a swapped kernel
changes exactly the versions of the steps that call it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from em2q_resources import code_versions
from em2q_resources.catalog import CATALOG


def versions() -> dict[str, str]:
    return {spec.name: CATALOG.code_version(spec.name) for spec in CATALOG}


@pytest.fixture
def reader():
    """Swap in a source reader for the test; the platform's one comes back afterwards."""
    previous = code_versions.SOURCES
    yield lambda read: code_versions.use_sources(read)
    code_versions.restore(previous)


def changed(module: str, edit: Callable[[str], str]) -> Callable[[str], str | None]:
    def read(name: str) -> str | None:
        source = code_versions.read_module_source(name)
        return edit(source) if name == module and source is not None else source

    return read


def redefined(function: str):
    return lambda source: source + f"\n\ndef {function}(*args):\n    return None  # swapped\n"


@pytest.mark.parametrize(
    ("module", "function", "dependent"),
    [
        ("em2q_msi.features", "bin_peaks", {"peak_table"}),
        ("em2q_msi.peaks", "preprocess_and_pick", {"preprocessed_chunks"}),
        ("em2q_msi._kernels", "_smooth_one", {"preprocessed_chunks", "qc_report"}),
        ("em2q_msi.qc", "total_ion_current", {"spectra_chunks"}),
        ("em2q_msi.ion_images", "ion_intensities", {"ion_images"}),
    ],
)
def test_a_swapped_kernel_changes_exactly_the_versions_of_the_steps_calling_it(
    reader, module, function, dependent
):
    before = versions()
    reader(changed(module, redefined(function)))
    after = versions()
    assert {name for name in before if before[name] != after[name]} == dependent


def test_code_outside_the_called_definitions_leaves_every_version_as_it_was(reader):
    before = versions()
    reader(changed("em2q_msi.peaks", lambda source: "# a new comment\n\n" + source + "\n\n"))
    assert versions() == before


def test_a_version_keeps_the_declared_bump_in_front_of_the_code_digest():
    version = CATALOG.code_version("tic_image")
    declared, digest = version.split("-")
    assert declared == CATALOG.asset("tic_image").code_version
    assert len(digest) == code_versions.DIGEST_LENGTH and int(digest, 16) >= 0


def test_versions_are_the_same_in_another_process():
    probe = (
        "import json; from em2q_resources.catalog import CATALOG; "
        "print(json.dumps({s.name: CATALOG.code_version(s.name) for s in CATALOG}))"
    )
    import json

    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == versions()


def test_dagster_assets_carry_the_catalogs_code_versions():
    from em2q_assets.adapters import build_assets

    found = {
        key.path[-1]: version
        for asset in build_assets(2)
        for key, version in asset.code_versions_by_key.items()
    }
    assert found == versions()
