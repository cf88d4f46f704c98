"""Notebooks written from a page: "Open in notebook" on a measurement (and one of its ROIs).

:func:`measurement_notebook` returns a Jupyter notebook (nbformat v4.5 JSON, written here
without nbformat so the platform needs no notebook package to serve it) whose cells connect
to this platform, open exactly that measurement (and ROI), read only the ROI's spectra with
ranged reads, plot its mean spectrum over the measurement's and name the parameter set.

The connection cell sets only the *non-secret* settings (Elasticsearch URL, index prefix,
storage, Dagster URL) with ``os.environ.setdefault``, so a notebook server's own ``EM2Q_*``
environment wins, and passwords, API keys and tokens come from that environment, never from
the notebook file.

:func:`write_notebook` puts it into the user's notebook folder (``Settings.notebook_dir``) under
a name no other file has, and :func:`notebook_server_url` is where that folder's notebook server
(the local Jupyter server of ``em2q dev`` or a cluster's JupyterHub) shows it.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from em2q_resources.settings import Settings

#: the settings a generated notebook carries: where the platform is, never how to log in
CONNECTION_SETTINGS = (
    ("EM2Q_ELASTICSEARCH_URL", "elasticsearch_url"),
    ("EM2Q_INDEX_PREFIX", "index_prefix"),
    ("EM2Q_STORAGE", "storage"),
    ("EM2Q_DAGSTER_URL", "dagster_url"),
)


def _lines(text: str) -> list[str]:
    """nbformat's multi-line string: a list of lines, each but the last ending in a newline."""
    lines = text.strip("\n").split("\n")
    return [line + "\n" for line in lines[:-1]] + lines[-1:]


def _code(text: str) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": "",
        "metadata": {},
        "outputs": [],
        "source": _lines(text),
    }


def _markdown(text: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "id": "", "metadata": {}, "source": _lines(text)}


def measurement_notebook(
    settings: Settings,
    measurement_id: str,
    *,
    roi: str | None = None,
    parameter_set: str | None = None,
) -> dict[str, Any]:
    """The notebook (a JSON-ready dict) that opens ``measurement_id`` (and its ROI ``roi``)
    on the platform of ``settings``, under ``parameter_set`` (default: ``default``)."""
    p = parameter_set or "default"
    connection = "\n".join(
        f"os.environ.setdefault({name!r}, {str(getattr(settings, field))!r})"
        for name, field in CONNECTION_SETTINGS
        if getattr(settings, field)
    )
    title = f"# {measurement_id}" + (f" · ROI {roi}" if roi else "")
    cells = [
        _markdown(
            f"{title}\n\nOpened from the EM²Q catalog. The first cell connects to the platform "
            "(its `EM2Q_*` environment variables win; credentials come only from there), the "
            "next ones open the measurement"
            + (", read only the ROI's spectra (ranged reads)" if roi else "")
            + f" and plot under the parameter set `{p}`."
        ),
        _code(
            "import os\n\n"
            + connection
            + "\n\nimport matplotlib.pyplot as plt\n"
            + "from em2q.client import Catalog\n\n"
            + "catalog = Catalog()\n"
            + f"m = catalog.measurement({measurement_id!r})\n"
            + f"parameter_set = catalog.parameter_set({p!r})\n"
            + "m"
        ),
        _code("m.metadata"),
    ]
    if roi:
        cells += [
            _code(
                f"roi = m.roi({roi!r})\n"
                "spectra = roi.spectra()  # only the ROI's spectra, one ranged read per row\n"
                'print(f"{roi.name}: {spectra.intensity.shape[0]} spectra")'
            ),
            _code(
                "mz, mean = roi.mean_spectrum()\n"
                "fig, ax = plt.subplots(figsize=(10, 3))\n"
                "try:\n"
                "    ax.plot(*m.mean_spectrum(parameter_set), lw=0.6, color='0.6', "
                "label=m.id)\n"
                "except Exception as exc:  # the measurement's mean spectrum is not ready yet\n"
                "    print(exc)\n"
                "ax.plot(mz, mean, lw=0.8, color=roi.doc.colour or 'C1', label=roi.name)\n"
                "ax.set_xlabel('m/z'); ax.set_ylabel('mean intensity'); ax.legend()\n"
                "plt.show()"
            ),
        ]
    else:
        cells += [
            _code(
                "mz, mean = m.mean_spectrum(parameter_set)\n"
                "fig, ax = plt.subplots(figsize=(10, 3))\n"
                "ax.plot(mz, mean, lw=0.6)\n"
                "ax.set_xlabel('m/z'); ax.set_ylabel('mean intensity')\n"
                "plt.show()"
            ),
            _code("m.rois()"),
        ]
    for i, cell in enumerate(cells):
        cell["id"] = f"em2q-{i}"
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
            "em2q": {"measurement_id": measurement_id, "roi": roi, "parameter_set": p},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def notebook_bytes(notebook: dict[str, Any]) -> bytes:
    """The notebook as the ``.ipynb`` file Jupyter writes (indented JSON, UTF-8)."""
    return (json.dumps(notebook, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def notebook_filename(measurement_id: str, roi: str | None = None) -> str:
    """A safe download name: ``<measurement>[-<roi>].ipynb``."""
    stem = measurement_id + (f"-{roi}" if roi else "")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem) + ".ipynb"


def notebook_folder(settings: Settings, user_name: str) -> Path:
    """The folder "Open in notebook" writes into: ``settings.notebook_dir`` with ``{user}``
    replaced by the user's name made safe as one path component."""
    safe = re.sub(r"[^A-Za-z0-9._@-]+", "_", user_name).lstrip(".") or "_"
    return Path(settings.notebook_dir.replace("{user}", safe))


class NotebookFolderError(OSError):
    """The notebook folder cannot be written (missing mount, permissions, disk full)."""


def write_notebook(folder: Path, filename: str, body: bytes) -> Path:
    """``body`` written as ``folder/filename``, or ``stem-2.ipynb``, ``stem-3.ipynb`` … when
    that name is taken: a file the user may have edited is never replaced. A file already
    holding exactly ``body`` (opened before and not changed since) is reused. The file appears
    whole or not at all (written aside, then hard-linked under a name that must be free).
    Raises :class:`NotebookFolderError` when the folder cannot be written."""
    try:
        return _write_new(folder, filename, body)
    except OSError as exc:
        raise NotebookFolderError(
            f"cannot write the notebook into {folder} ({exc.strerror or exc}): check that "
            "EM2Q_NOTEBOOK_DIR exists and this process may write there"
        ) from exc


def _write_new(folder: Path, filename: str, body: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = os.path.splitext(filename)
    handle, aside = tempfile.mkstemp(prefix=".em2q-", suffix=".part", dir=folder)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(body)
        for n in itertools.count(1):
            path = folder / (filename if n == 1 else f"{stem}-{n}{suffix}")
            try:
                os.link(aside, path)
                return path
            except FileExistsError:
                if path.is_file() and path.read_bytes() == body:
                    return path
    finally:
        os.unlink(aside)
    raise AssertionError("unreachable")  # pragma: no cover


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def notebook_server_url(
    settings: Settings, relative_path: str, *, client_host: str | None = None
) -> str | None:
    """Where the notebook server of ``settings`` opens ``relative_path`` (relative to its
    notebook folder), or None when none is configured.

    A JupyterHub (``notebook_url`` without ``notebook_token``) opens it in the user's own
    server through ``<hub>/hub/user-redirect/lab/tree/<path>``. A plain Jupyter server gets
    ``<url>/lab/tree/<path>``, with its token only when both that server and the browser
    (``client_host``) are on loopback: the token never leaves this machine."""
    base = settings.notebook_url
    if not base:
        return None
    base = base.rstrip("/")
    path = "lab/tree/" + quote(relative_path)
    if settings.notebook_token is None:
        base = base.removesuffix("/hub")
        return f"{base}/hub/user-redirect/{path}"
    url = f"{base}/{path}"
    if _is_loopback(urlsplit(base).hostname) and _is_loopback(client_host):
        url += "?token=" + quote(settings.notebook_token, safe="")
    return url
