"""Per-step code versions derived from the code each step runs (issue 17): a swapped kernel
changes exactly the versions of the steps that call it."""

from __future__ import annotations

import os
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


STEP_MODULE = """
def step():
    return helper()


def helper():
    return {value}
"""


@pytest.fixture
def tracked_package(tmp_path, monkeypatch):
    """A tracked package ``cachedpkg`` with a step calling a helper, importable from tmp_path."""
    package = tmp_path / "cachedpkg"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "steps.py").write_text(STEP_MODULE.format(value=1), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(code_versions, "TRACKED", (*code_versions.TRACKED, "cachedpkg"))
    return package / "steps.py"


def counting_reader():
    reads: list[str] = []

    def read(name: str) -> str | None:
        reads.append(name)
        return code_versions.read_module_source(name)

    return read, reads


def test_digests_come_from_the_cache_until_a_source_read_for_them_changes(
    tracked_package, tmp_path
):
    cache = tmp_path / "cache" / "code-versions.json"
    first = code_versions.CodeVersions(cache_file=cache).digest("cachedpkg.steps", "step")
    read, reads = counting_reader()
    again = code_versions.CodeVersions(read, cache_file=cache).digest("cachedpkg.steps", "step")
    assert again == first and reads == []  # another process: from the cache, nothing parsed

    tracked_package.write_text(STEP_MODULE.format(value=2), encoding="utf-8")  # the helper
    stat = tracked_package.stat()
    os.utime(tracked_package, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    read, reads = counting_reader()
    edited = code_versions.CodeVersions(read, cache_file=cache).digest("cachedpkg.steps", "step")
    assert edited != first and "cachedpkg.steps" in reads
    assert edited == code_versions.CodeVersions().digest("cachedpkg.steps", "step")  # uncached
    read, reads = counting_reader()
    kept = code_versions.CodeVersions(read, cache_file=cache).digest("cachedpkg.steps", "step")
    assert kept == edited and reads == []


def test_an_unwritable_cache_only_costs_the_reading(tracked_package, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("", encoding="utf-8")
    versions = code_versions.CodeVersions(cache_file=blocked / "code-versions.json")
    assert versions.digest("cachedpkg.steps", "step") == code_versions.CodeVersions().digest(
        "cachedpkg.steps", "step"
    )
