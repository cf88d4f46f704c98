"""Where measurements and results live: a folder or an object store, through fsspec.

``root`` is a local folder (``/data/em2q``) or an fsspec URL (``s3://bucket/prefix``); every
other module addresses files by *key* (``measurements/<id>/data.imzML``) and gets full URLs
from :meth:`StorageResource.url`, to hand to ``em2q_msi`` readers together with
:attr:`StorageResource.storage_options`. Usable as a Dagster resource or as a plain object.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import dagster as dg
import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import Field

from em2q_resources.settings import Settings

#: bytes per read/write when streaming a file into storage (≥ S3's 5 MiB multipart minimum)
BLOCK_BYTES = 8 * 1024 * 1024


#: how often a local write retries when a concurrent removal pruned the folder it made
_VANISHED_RETRIES = 50


def _in_folder(folder: Path, action: Callable[[], Any]) -> Any:
    """``action()`` (which writes into ``folder``), with ``folder`` made first.

    Another upload's removal prunes empty parents (``staging/``, ``measurements/``) and may do
    so between our ``mkdir`` of the parent and of the child, or before we put a file in the
    new folder: the folder is made again and the action retried, so concurrent uploads never
    fail with ``FileNotFoundError`` on a folder the platform manages.
    """
    for attempt in range(_VANISHED_RETRIES + 1):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return action()
        except (FileNotFoundError, FileExistsError) as exc:
            # mkdir's "exists" check can see a parent pruned a moment later (EEXIST, not a dir)
            vanished = not folder.is_dir() if isinstance(exc, FileNotFoundError) else True
            if attempt == _VANISHED_RETRIES or not vanished:
                raise  # not a vanished folder: e.g. the source is missing


class StorageUnavailable(OSError):
    """The storage backend (object store endpoint, bucket, folder) cannot be reached."""


class UnsafeKey(ValueError):
    """A storage key or URI that could reach outside where it belongs: ``..`` or ``.``
    segments, an absolute path, a backslash, percent-encoding, NUL or control characters,
    look-alike dots or slashes, or a key outside the prefix the operation is confined to.
    Nothing is read, written or removed."""

    def __init__(self, key: str, reason: str) -> None:
        shown = key if len(key) <= 120 else key[:120] + "…"
        super().__init__(f"storage key {shown!r} refused: {reason}")
        self.key = key
        self.reason = reason


#: characters a key never holds: a backslash (a second separator on Windows), ``%`` (an
#: encoded ``..`` or ``/`` that a later layer may decode)
_KEY_FORBIDDEN = frozenset("\\%")


def check_key(key: str) -> str:
    """``key`` (relative to the storage root, ``/``-separated) when it stays inside the root
    whatever layer interprets it; :class:`UnsafeKey` otherwise. Checked before any
    normalisation, so ``measurements/../x`` is refused rather than quietly becoming ``x``."""
    if not isinstance(key, str):
        raise UnsafeKey(repr(key), "a key is a string")
    if key.startswith("/"):
        raise UnsafeKey(key, "absolute paths are not keys")
    for char in key:
        if char in _KEY_FORBIDDEN or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            raise UnsafeKey(key, f"it holds the character U+{ord(char):04X}")
        if not char.isascii() and set(unicodedata.normalize("NFKC", char)) & set("./\\%:"):
            raise UnsafeKey(key, f"it holds U+{ord(char):04X}, which reads as a dot or slash")
    segments = key.split("/")
    if any(segment in (".", "..") for segment in segments):
        raise UnsafeKey(key, "'.' and '..' segments are not allowed")
    return "/".join(segment for segment in segments if segment)


def measurement_prefixes(measurement_id: str) -> tuple[str, str]:
    """The two prefixes a measurement owns: its uploaded files and its results. The id must be
    a valid identifier (no separators, no ``..``), so two measurements never share a prefix."""
    from em2q_resources.metadata.schema import check_identifier

    check_identifier(measurement_id, "measurement_id")
    return f"measurements/{measurement_id}", f"results/{measurement_id}"


def _inside(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + "/")


class StorageFull(StorageUnavailable):
    """The storage has no room left (disk full, quota exceeded): nothing was kept."""


class StorageReadOnly(StorageUnavailable):
    """The storage refuses writes (read-only file system, no permission): nothing was kept."""


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


def _connection_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the backend did not answer", whichever clients are installed."""
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import NoCredentialsError

        kinds += [BotoConnectionError, NoCredentialsError]
    except ImportError:  # pragma: no cover - s3fs not installed
        pass
    try:
        from aiohttp import ClientConnectionError

        kinds.append(ClientConnectionError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(kinds)


class StorageResource(dg.ConfigurableResource):
    """A storage root (folder or fsspec URL) and the options to reach it."""

    root: str = Field(description="local folder or fsspec URL, e.g. s3://bucket/prefix")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (MinIO, moto, Ceph …); None: AWS"
    )
    s3_key: str | None = Field(default=None, description="S3 access key; None: AWS's chain")
    s3_secret: str | None = Field(default=None, description="S3 secret key; None: AWS's chain")
    s3_max_attempts: int | None = Field(
        default=None, description="attempts per S3 request before giving up; None: botocore's"
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> StorageResource:
        return cls(root=settings.storage, s3_endpoint_url=settings.s3_endpoint_url)

    # ------------------------------------------------------------------ addressing

    @property
    def protocol(self) -> str:
        """``file`` for a folder, else the URL's scheme (``s3`` …)."""
        if "://" not in self.root:
            return "file"
        return self.root.split("://", 1)[0]

    @property
    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``fsspec.core.url_to_fs(url, **options)`` and em2q_msi readers."""
        if self.protocol not in ("s3", "s3a"):
            return {}
        options: dict[str, Any] = {}
        if self.s3_endpoint_url:
            options["client_kwargs"] = {"endpoint_url": self.s3_endpoint_url}
        if self.s3_key:
            options["key"] = self.s3_key
            options["secret"] = self.s3_secret or ""
        if self.s3_max_attempts:
            options["config_kwargs"] = {
                "retries": {"max_attempts": self.s3_max_attempts, "mode": "standard"}
            }
        return options

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem of the root (fsspec caches instances, so this is cheap)."""
        return fsspec.core.url_to_fs(self._root_url, **self.storage_options)[0]

    @property
    def _root_url(self) -> str:
        if self.protocol == "file" and not self.root.startswith("file://"):
            return str(Path(self.root).expanduser().resolve())
        return self.root.rstrip("/")

    @property
    def _root_path(self) -> str:
        """The root as the filesystem's own path (no protocol)."""
        return self.fs._strip_protocol(self._root_url).rstrip("/")

    def path(self, *parts: str) -> str:
        """The filesystem path (no protocol) of a key under the root; :class:`UnsafeKey` for a
        key that could leave it."""
        key = check_key("/".join(parts))
        return f"{self._root_path}/{key}" if key else self._root_path

    def url(self, *parts: str) -> str:
        """The full URL of a key (``file:///…`` for a folder root, ``s3://bucket/…``)."""
        return self.fs.unstrip_protocol(self.path(*parts))

    def key_of(self, uri: str, within: str | None = None) -> str:
        """The key of a URI that points into this storage root (and, with ``within``, under
        that prefix); :class:`UnsafeKey` for any other URI: another host or scheme
        (``http://…``, ``file:///etc/passwd``), another bucket, a path that climbs out. File
        locations in records are trusted only through this."""
        if not isinstance(uri, str):
            raise UnsafeKey(repr(uri), "a URI is a string")
        base = self.url().rstrip("/") + "/"
        if not uri.startswith(base):
            raise UnsafeKey(uri, f"it is not inside the platform's storage {self.root}")
        key = check_key(uri[len(base) :])
        if within is not None and not _inside(key, within):
            raise UnsafeKey(uri, f"it is outside {within}/")
        return key

    def checked_url(self, uri: str, within: str | None = None) -> str:
        """``uri`` rebuilt from its key (:meth:`key_of`): the only form handed to readers."""
        return self.url(self.key_of(uri, within))

    # ------------------------------------------------------------------ operations

    @contextmanager
    def _reaching(self, what: str) -> Iterator[None]:
        """Turn "the backend did not answer" into :class:`StorageUnavailable`."""
        try:
            yield
        except StorageUnavailable:
            raise
        except OSError as exc:
            if exc.errno in _FULL_ERRNOS:
                raise StorageFull(
                    f"storage {self.root} is full (no room to {what}): free some space or ask "
                    f"an admin; nothing was kept ({exc.strerror})"
                ) from exc
            if exc.errno in _READ_ONLY_ERRNOS:
                raise StorageReadOnly(
                    f"storage {self.root} refuses writes (read-only or no permission) while "
                    f"trying to {what}: ask an admin; nothing was kept ({exc.strerror})"
                ) from exc
            if isinstance(exc, _connection_errors()):
                raise StorageUnavailable(
                    f"storage {self.root} ({self.s3_endpoint_url or 'default endpoint'}) could "
                    f"not be reached while trying to {what}: {exc}"
                ) from exc
            raise
        except _connection_errors() as exc:
            raise StorageUnavailable(
                f"storage {self.root} ({self.s3_endpoint_url or 'default endpoint'}) could not "
                f"be reached while trying to {what}: {exc}"
            ) from exc

    def check(self) -> None:
        """Make sure the root exists and answers (creates a local folder root)."""
        with self._reaching("check the storage root"):
            fs = self.fs
            root = self._root_path
            if isinstance(fs, LocalFileSystem):
                fs.makedirs(root, exist_ok=True)
                return
            bucket = root.split("/", 1)[0]
            try:  # one request: exists() would swallow connection errors and retry for long
                fs.ls(bucket, detail=False, refresh=True)
            except FileNotFoundError:
                raise StorageUnavailable(
                    f"storage {self.root}: bucket {bucket!r} does not exist"
                ) from None

    def exists(self, key: str) -> bool:
        with self._reaching(f"look up {key}"):
            return bool(self.fs.exists(self.path(key)))

    def size(self, key: str) -> int:
        with self._reaching(f"stat {key}"):
            return int(self.fs.size(self.path(key)))

    def find(self, key: str = "") -> list[str]:
        """Keys of every file at or under ``key`` (relative to the root), sorted."""
        with self._reaching(f"list {key or 'the root'}"):
            base = self._root_path
            found = self.fs.find(self.path(key)) if self.fs.exists(self.path(key)) else []
            return sorted(p[len(base) + 1 :] if p.startswith(base + "/") else p for p in found)

    def remove(self, key: str, recursive: bool = True, *, within: str | None = None) -> None:
        """Delete a file or (``recursive``) a folder; a missing key is not an error. With
        ``within`` (e.g. ``measurements/<id>``) a key outside that prefix is refused."""
        if within is not None and not _inside(check_key(key), check_key(within)):
            raise UnsafeKey(key, f"it is outside {within}/, the prefix this removal is confined to")
        with self._reaching(f"remove {key}"):
            fs, path = self.fs, self.path(key)
            if path == self._root_path:
                raise ValueError("refusing to remove the whole storage root")
            if fs.exists(path):
                fs.rm(path, recursive=recursive)
            if isinstance(fs, LocalFileSystem):
                self._prune_empty_parents(path)

    def _prune_empty_parents(self, path: str) -> None:
        """Drop local folders left empty by a removal, up to (not including) the root."""
        parent = Path(path).parent
        root = Path(self._root_path)
        while parent != root and root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                return
            parent = parent.parent

    def open(self, key: str, mode: str = "rb", **kwargs: Any) -> IO:
        """An fsspec file object at ``key`` (parent folders made for writing)."""
        with self._reaching(f"open {key}"):
            fs, path = self.fs, self.path(key)
            if ("w" in mode or "a" in mode) and isinstance(fs, LocalFileSystem):
                return _in_folder(Path(path).parent, lambda: fs.open(path, mode, **kwargs))
            if "w" in mode or "a" in mode:
                fs.makedirs(posixpath.dirname(path), exist_ok=True)
            return fs.open(path, mode, **kwargs)

    def put_file(
        self,
        local_path: str | Path,
        key: str,
        progress: Callable[[int], None] | None = None,
        block_bytes: int = BLOCK_BYTES,
        checksum: bool = True,
    ) -> str | None:
        """Stream a local file to ``key`` in blocks; returns the SHA-256 of the bytes sent.

        ``progress(n)`` is called with the byte count of each block written, for a progress
        bar. Memory stays at one block whatever the file size (multipart upload on S3). With
        ``checksum=False`` a folder root copies in the kernel (``copy_file_range``, several
        times faster) and ``None`` is returned.
        """
        if not checksum and isinstance(self.fs, LocalFileSystem):
            with self._reaching(f"write {key}"):
                self._copy_local(Path(local_path), Path(self.path(key)), progress)
            return None
        digest = hashlib.sha256()
        block_size = max(block_bytes, 5 * 1024 * 1024)
        with (
            self._reaching(f"write {key}"),
            Path(local_path).open("rb") as source,
            self.open(key, "wb", block_size=block_size) as target,
        ):
            while block := source.read(block_bytes):
                target.write(block)
                digest.update(block)
                if progress is not None:
                    progress(len(block))
        return digest.hexdigest()

    @staticmethod
    def _copy_local(
        source: Path, target: Path, progress: Callable[[int], None] | None, step: int = 1 << 26
    ) -> None:
        with (
            source.open("rb", buffering=0) as src,
            _in_folder(target.parent, lambda: target.open("wb", buffering=0)) as dst,
        ):
            kernel = hasattr(os, "copy_file_range")
            while True:
                if kernel:
                    try:
                        n = os.copy_file_range(src.fileno(), dst.fileno(), step)
                    except OSError:  # a filesystem without it: plain reads and writes
                        kernel = False
                if not kernel:
                    block = memoryview(src.read(BLOCK_BYTES))
                    n = len(block)
                    while block:
                        block = block[os.write(dst.fileno(), block) :]
                if n == 0:
                    break
                if progress is not None:
                    progress(n)

    def move(self, src_key: str, dst_key: str) -> None:
        """Move a file or folder: a rename on a folder root, copy + delete on object stores."""
        with self._reaching(f"move {src_key} to {dst_key}"):
            fs, src, dst = self.fs, self.path(src_key), self.path(dst_key)
            if isinstance(fs, LocalFileSystem):
                _in_folder(Path(dst).parent, lambda: Path(src).replace(dst))
                self._prune_empty_parents(src)
                return
            if fs.isdir(src):
                for source in fs.find(src):
                    fs.mv(source, dst + source[len(src) :])
            else:
                fs.mv(src, dst)
