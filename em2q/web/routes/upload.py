"""Uploading a measurement: the setup form generated from the schema and an imzML/.ibd pair.

A refused upload comes back as the same form with each problem next to the input it is about
(the setup field, the .imzML or the .ibd), or as ``{"errors", "general"}`` with 422 for JSON.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from em2q.upload import DuplicateUpload, InvalidUpload, UploadProblem, upload_measurement
from em2q.web.deps import Backends, CurrentUser
from em2q.web.forms import problem_field, setup_form, setup_from_form
from em2q.web.pages import render, wants_json
from em2q.web.uploads import receive_multipart
from em2q_msi.optical import OpticalImageError, decode
from em2q_msi.validation import validate
from em2q_resources import optical
from em2q_resources.auth import Action, require

router = APIRouter()

#: file problems about the .ibd (shown next to the .ibd input; the rest next to the imzML)
IBD_PROBLEMS = {"uuid_mismatch", "checksum_mismatch", "ibd_truncated", "offset_out_of_range"}


@router.get("/upload", response_class=HTMLResponse)
def upload_page(request: Request, user: CurrentUser):
    require(user, Action.UPLOAD)
    return render(
        request, "upload.html", groups=setup_form(), values={"operator": user.name}, errors={}
    )


@router.post("/upload")
async def upload_submit(request: Request, user: CurrentUser, connections: Backends):
    require(user, Action.UPLOAD)
    general: list[str] = []
    measurement = None
    with tempfile.TemporaryDirectory(prefix="em2q-web-upload-") as scratch:
        folder = Path(scratch)
        received = await receive_multipart(request, folder, {"imzml", "ibd", "optical"})
        values = received.fields
        document, errors = setup_from_form(values)
        files = received.files
        for name, label in (("imzml", ".imzML"), ("ibd", ".ibd")):
            if name not in files or not files[name].filename:
                errors[name] = f"choose the {label} file"
        optical_image = _optical_part(files, errors)
        if "imzml" not in errors and not files["imzml"].filename.lower().endswith(".imzml"):
            errors["imzml"] = f"{files['imzml'].filename}: expected an .imzML file"
        if "imzml" not in errors and "ibd" not in errors:
            # the pair side by side under one stem, as readers expect it
            stem = _safe_stem(files["imzml"].filename)
            imzml_path = files["imzml"].path.rename(folder / f"{stem}.imzML")
            ibd_path = files["ibd"].path.rename(folder / f"{stem}.ibd")
            cache_dir = folder / "index"
            problems: list[UploadProblem] = []
            if errors:  # the setup is refused already: still say what is wrong with the files
                report = await run_in_threadpool(
                    validate, str(imzml_path), cache_dir=str(cache_dir)
                )
                problems = [
                    UploadProblem(imzml_path.name, p.code, p.message) for p in report.problems
                ]
            else:
                try:
                    measurement = await run_in_threadpool(
                        upload_measurement,
                        imzml_path,
                        ibd_path=ibd_path,
                        setup=document,
                        store=connections.store,
                        storage=connections.storage,
                        progress=False,
                        cache_dir=cache_dir,
                        uploaded_by=user.name,
                        dagster=connections.dagster,
                    )
                except InvalidUpload as exc:
                    problems = exc.problems
                except DuplicateUpload as exc:
                    general.append(str(exc))
                    errors["imzml"] = f"already uploaded as {exc.existing_id}"
            _place(problems, errors, general)
            if measurement is not None and optical_image is not None:
                await run_in_threadpool(
                    optical.save_image, connections.store, connections.storage, user,
                    measurement.id, optical_image[1], optical_image[0],
                )  # fmt: skip
    if measurement is not None:
        target = f"/measurements/{measurement.id}"
        if wants_json(request):
            return JSONResponse({"id": measurement.id, "url": target}, status_code=201)
        return RedirectResponse(target, status_code=303)
    if wants_json(request):
        return JSONResponse({"errors": errors, "general": general}, status_code=422)
    return render(
        request,
        "upload.html",
        422,
        groups=setup_form(),
        values=values,
        errors=errors,
        general=general,
    )


def _place(problems: list[UploadProblem], errors: dict[str, str], general: list[str]) -> None:
    """Each problem next to its input: a setup field, the .imzML or the .ibd; else on top."""
    for problem in problems:
        if problem.where == "setup":
            path, message = problem_field(problem.message)
            if path:
                errors[path] = message
            else:
                general.append(message)
        else:
            slot = "ibd" if problem.code in IBD_PROBLEMS else "imzml"
            found = f"[{problem.code}] {problem.message}"
            errors[slot] = f"{errors[slot]}; {found}" if slot in errors else found


def _optical_part(files: dict, errors: dict[str, str]) -> tuple[str, bytes] | None:
    """The optional optical image's ``(filename, bytes)``, decoded whole first: a bad one is
    an error next to its input, so the measurement is not uploaded without it."""
    part = files.get("optical")
    if part is None or not part.filename:
        return None
    data = part.path.read_bytes()
    try:
        decode(data)
    except OpticalImageError as exc:
        errors["optical"] = f"{part.filename}: {exc}"
        return None
    return part.filename, data


def _safe_stem(filename: str) -> str:
    """A file name's stem usable on any file system: ASCII letters, digits, ``._-``, ≤ 100."""
    stem = Path(filename.replace("\x00", "") or "upload").stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:100] or "upload"
