"""Downloads of processed results in the formats other tools read: a measurement's peak table
or a study's aligned features as centroided imzML (``em2q.study_results``), zipped with their
``.ibd`` (an imzML is two files), for METASPACE or Cardinal."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from em2q.results import ResultNotReady
from em2q.web.deps import Backends, CurrentUser
from em2q.web.pages import NotFound
from em2q_resources.auth import Action, require
from em2q_resources.metadata.schema import check_identifier

router = APIRouter()


def _zip(folder: Path, name: str) -> Response:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    return Response(
        buffer.getvalue(),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/measurements/{measurement_id}/peaks.imzml.zip")
def measurement_imzml_zip(
    measurement_id: str, user: CurrentUser, connections: Backends, p: str = ""
) -> Response:
    """The measurement's peak table (parameter set ``p``, default ``default``) as a centroided
    imzML + ibd in a zip."""
    from em2q.study_results import measurement_imzml

    require(user, Action.READ)
    check_identifier(measurement_id, "measurement_id")
    with tempfile.TemporaryDirectory(prefix="em2q-export-") as folder:
        try:
            measurement_imzml(
                connections.store, connections.storage, measurement_id,
                Path(folder) / f"{measurement_id}.imzML", p or None,
            )  # fmt: skip
        except ResultNotReady as exc:
            raise NotFound(str(exc)) from None
        return _zip(Path(folder), f"{measurement_id}-peaks-imzml.zip")


@router.get("/studies/{study_id}/aligned.imzml.zip")
def study_imzml_zip(study_id: str, user: CurrentUser, connections: Backends) -> Response:
    """Every member's aligned features on the study's m/z axis, one centroided imzML each."""
    from em2q.study_results import StaleStudyResult, study_imzml

    require(user, Action.READ)
    check_identifier(study_id, "study_id")
    with tempfile.TemporaryDirectory(prefix="em2q-export-") as folder:
        try:
            study_imzml(connections.store, connections.storage, study_id, folder)
        except (ResultNotReady, StaleStudyResult) as exc:
            raise NotFound(str(exc)) from None
        return _zip(Path(folder), f"{study_id}-aligned-imzml.zip")
