"""Fixtures for the MSI core: example files, generated datasets, broken variants, S3 server.

Generated datasets are written by pyimzml's ``ImzMLWriter`` (an independent implementation);
broken variants are byte/XML edits of those, with the declared SHA-1 recomputed unless the test
wants a checksum problem, so each variant carries exactly the problem its test names.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from em2q_msi.synthetic import write_imzml

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "imzml"
if not EXAMPLES.exists():  # a checkout outside /work: the examples beside the repository
    EXAMPLES = Path("/work/shared/data/imzml")


@pytest.fixture(scope="session")
def example_continuous() -> str:
    return str(EXAMPLES / "Example_Continuous.imzML")


@pytest.fixture(scope="session")
def example_processed() -> str:
    return str(EXAMPLES / "Example_Processed.imzML")


@pytest.fixture
def cache_dir(tmp_path: Path) -> str:
    """Where index caches of read-only example files go (never beside the shared data)."""
    path = tmp_path / "index-cache"
    path.mkdir()
    return str(path)


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="session")
def make_dataset(dataset_dir: Path) -> Callable[..., str]:
    """``make_dataset(name, **write_imzml kwargs)``: a generated pair, written once a session."""
    made: dict[str, str] = {}

    def make(name: str, **kwargs: object) -> str:
        if name not in made:
            made[name] = write_imzml(dataset_dir / name, **kwargs)  # type: ignore[arg-type]
        return made[name]

    return make


@pytest.fixture(scope="session")
def small_continuous(make_dataset: Callable[..., str]) -> str:
    return make_dataset("small_continuous", mode="continuous", n_x=4, n_y=3, n_values=300)


@pytest.fixture(scope="session")
def small_processed(make_dataset: Callable[..., str]) -> str:
    return make_dataset("small_processed", mode="processed", n_x=4, n_y=3, n_values=80)


def set_sha1(xml: bytes, ibd: bytes) -> bytes:
    """The XML with its declared ``ibd SHA-1`` replaced by the digest of ``ibd``."""
    digest = hashlib.sha1(ibd).hexdigest().upper().encode()
    return re.sub(
        rb'(accession="IMS:1000091"[^>]*?value=")[^"]*(")', rb"\g<1>" + digest + rb"\2", xml
    )


BrokenFactory = Callable[..., str]


@pytest.fixture
def broken_copy(tmp_path: Path) -> BrokenFactory:
    """``broken_copy(src, edit_xml=None, edit_ibd=None, fix_checksum=True) -> imzML path``.

    ``edit_xml``/``edit_ibd`` take and return bytes. With ``fix_checksum`` the declared SHA-1
    is recomputed after the edits so the variant has only the problem the test introduces.
    """
    counter = iter(range(1000))

    def make(
        src: str,
        edit_xml: Callable[[bytes], bytes] | None = None,
        edit_ibd: Callable[[bytes], bytes] | None = None,
        fix_checksum: bool = True,
    ) -> str:
        src_path = Path(src)
        dst = tmp_path / f"broken{next(counter)}"
        dst.mkdir()
        xml = src_path.read_bytes()
        ibd = src_path.with_suffix(".ibd").read_bytes()
        if edit_ibd is not None:
            ibd = edit_ibd(ibd)
        if edit_xml is not None:
            xml = edit_xml(xml)
        if fix_checksum:
            xml = set_sha1(xml, ibd)
        (dst / src_path.name).write_bytes(xml)
        (dst / src_path.with_suffix(".ibd").name).write_bytes(ibd)
        return str(dst / src_path.name)

    return make


def copy_pair(src: str, folder: Path) -> str:
    """Copy an imzML/ibd pair into ``folder``; returns the new imzML path."""
    folder.mkdir(parents=True, exist_ok=True)
    src_path = Path(src)
    shutil.copy(src_path, folder / src_path.name)
    shutil.copy(src_path.with_suffix(".ibd"), folder / src_path.with_suffix(".ibd").name)
    return str(folder / src_path.name)


def replace_nth(data: bytes, pattern: bytes, repl: bytes, n: int) -> bytes:
    """Replace the ``n``-th (0-based) regex match of ``pattern`` by ``repl``."""
    matches = list(re.finditer(pattern, data))
    m = matches[n]
    return data[: m.start()] + m.expand(repl) + data[m.end() :]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict]:
    """A real S3 API (moto's server) on loopback; yields fsspec storage_options for it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": f"http://{host}:{port}"},
        "skip_instance_cache": True,
    }
    yield options
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: dict) -> Iterator[tuple[str, dict]]:
    """A fresh bucket: ``("s3://<bucket>", storage_options)``."""
    import uuid

    import s3fs

    fs = s3fs.S3FileSystem(**s3_server)
    name = f"test-{uuid.uuid4().hex[:10]}"
    fs.mkdir(name)
    yield f"s3://{name}", s3_server
    fs.rm(name, recursive=True)


def upload_pair(imzml: str, bucket: str, options: dict, prefix: str = "data") -> str:
    """Copy a local imzML/ibd pair into S3 and return the s3:// URL of the imzML."""
    import fsspec

    fs = fsspec.filesystem("s3", **options)
    src = Path(imzml)
    target = f"{bucket}/{prefix}/{src.name}"
    fs.put_file(str(src), target)
    fs.put_file(str(src.with_suffix(".ibd")), f"{bucket}/{prefix}/{src.with_suffix('.ibd').name}")
    return target


def assert_same_spectra(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].dtype == b[0].dtype and a[1].dtype == b[1].dtype
