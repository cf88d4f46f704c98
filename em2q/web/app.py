"""The lab technician's web catalog: upload, search, look at a measurement, start and compare
processing. FastAPI with server-rendered Jinja2 templates; plots are Plotly figures built in
Python and drawn by the plotly.js bundled with the ``plotly`` package (no CDN).

Every request is authenticated by :class:`em2q_resources.auth.Authenticator` (local mode: the
local user, admin by default) and every action checked with :func:`require`; a refusal is a
403 page (or JSON under ``/api``) that says what the role may not do.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import tempfile
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import plotly
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from em2q.client import DeletionRefused, delete_measurement
from em2q.dagster_api import DagsterAPI, DagsterError, DagsterUnavailable
from em2q.platform import dev_url_file
from em2q.results import MeasurementResults, ResultNotReady
from em2q.upload import DuplicateUpload, InvalidUpload, UploadProblem, upload_measurement
from em2q.web import catalog, plots
from em2q.web.forms import problem_field, setup_form, setup_from_form
from em2q.web.security import CSRFMiddleware, csrf_input, csrf_token
from em2q.web.uploads import UploadFormError, receive_multipart
from em2q_assets.workflows import UnknownWorkflow, startable
from em2q_msi import ion_images as ions
from em2q_msi.ion_images import IonImageError
from em2q_msi.parameters import ParameterError, ProcessingParameters
from em2q_msi.validation import validate
from em2q_resources import lifecycle
from em2q_resources.auth import (
    Action,
    Authenticator,
    AuthError,
    Unauthenticated,
    User,
    allowed,
    require,
)
from em2q_resources.metadata import (
    DocumentNotFound,
    MetadataError,
    MetadataStore,
    SchemaViolation,
    StoreUnavailable,
    load_schema,
)
from em2q_resources.metadata.schema import field_unit, to_document
from em2q_resources.metadata.store import parameter_values_to_dict
from em2q_resources.parameters import DEFAULT_NAME
from em2q_resources.results_layout import read_bytes
from em2q_resources.settings import Settings
from em2q_resources.storage import StorageFull, StorageResource, StorageUnavailable, UnsafeKey

HERE = Path(__file__).resolve().parent
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
FINAL_STATUSES = ("READY", "FAILED")
#: file problems about the .ibd (shown next to the .ibd input; the rest next to the imzML)
IBD_PROBLEMS = {"uuid_mismatch", "checksum_mismatch", "ibd_truncated", "offset_out_of_range"}


class NotFound(Exception):
    """A page asked for something that is not there (404 page)."""


def connect_store(settings: Settings) -> MetadataStore:
    """The metadata store of ``settings``, else the cluster of a running ``em2q dev``."""
    url = settings.elasticsearch_url
    if not url and dev_url_file(settings).exists():
        url = dev_url_file(settings).read_text(encoding="utf-8").strip()
    if not url:
        raise StoreUnavailable(
            "no Elasticsearch to talk to: run `make run` (it starts one) or set "
            "EM2Q_ELASTICSEARCH_URL"
        )
    return MetadataStore.connect(
        url,
        username=settings.elasticsearch_username,
        password=settings.elasticsearch_password,
        api_key=settings.elasticsearch_api_key,
        index_prefix=settings.index_prefix,
        request_timeout_s=settings.elasticsearch_timeout_s,
        deadline_s=settings.elasticsearch_timeout_s,
    )


def _safe_stem(filename: str) -> str:
    """A file name's stem usable on any file system: ASCII letters, digits, ``._-``, ≤ 100."""
    stem = Path(filename.replace("\x00", "") or "upload").stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:100] or "upload"


def current_user(request: Request) -> User:
    """Who sends the request (the app's Authenticator); remembered for the page header."""
    peer = request.client.host if request.client else None
    user = request.app.state.authenticator.authenticate(request.headers, client=peer)
    request.state.user = user
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def create_app(
    settings: Settings,
    store: MetadataStore | None = None,
    storage: StorageResource | None = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The web catalog on ``settings``' backends (``store``/``storage`` override them)."""
    app = FastAPI(title="EM²Q catalog", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.settings = settings
    app.state.store = store
    app.state.storage = storage or StorageResource.from_settings(settings)
    app.state.authenticator = authenticator or Authenticator.from_settings(settings)
    schema = load_schema()
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(
        catalog_url=catalog.catalog_url,
        same_value_url=catalog.same_value_url,
        by_step=_by_step,
        dagster_url=settings.dagster_url,
        Action=Action,
        csrf_input=csrf_input,
        csrf_token=csrf_token,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def get_store() -> MetadataStore:
        if app.state.store is None:
            app.state.store = connect_store(settings)
        return app.state.store

    def render(request: Request, template: str, status_code: int = 200, **context: Any):
        user = getattr(request.state, "user", None)
        return templates.TemplateResponse(
            request,
            template,
            {"user": user, "can": lambda action: allowed(user, action), **context},
            status_code=status_code,
        )

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/") or "application/json" in request.headers.get(
            "accept", ""
        )

    def refusal(request: Request, status_code: int, title: str, message: str):
        if wants_json(request):
            return JSONResponse({"error": title, "message": message}, status_code=status_code)
        return render(request, "error.html", status_code, title=title, message=message)

    @app.exception_handler(AuthError)
    async def _auth_error(request: Request, exc: AuthError):
        if isinstance(exc, Unauthenticated):
            return refusal(request, 401, "Who are you?", str(exc))
        return refusal(request, 403, "Not allowed", str(exc))

    # every other refusal: (exception classes, HTTP status, page title); Starlette picks the
    # most specific registered class of an exception, so subclasses keep their own answer
    refusals = [
        ((UnknownWorkflow,), 404, "No such workflow"),
        ((DagsterUnavailable,), 503, "Dagster does not answer"),
        ((DagsterError,), 502, "Dagster refused"),
        ((NotFound, DocumentNotFound), 404, "Not found"),
        ((UploadFormError,), 400, "Not an upload this page can take"),
        ((SchemaViolation, IonImageError), 400, "Invalid input"),
        ((UnsafeKey,), 400, "Refused: outside the platform's storage"),
        ((DeletionRefused,), 409, "Delete refused"),
        ((StoreUnavailable, StorageUnavailable), 503, "A backend does not answer"),
        ((StorageFull,), 507, "Storage is full"),
        ((MetadataError,), 409, "Refused by the metadata store"),
    ]

    async def _cross_site(scope, receive, send, message: str) -> None:
        response = refusal(
            Request(scope, receive), 403, "Refused: not sent by this catalog", message
        )
        await response(scope, receive, send)

    app.add_middleware(
        CSRFMiddleware,
        secret=settings.web_secret or secrets.token_urlsafe(32),
        refuse=_cross_site,
        allowed_origins=settings.web_allowed_origins,
    )

    for kinds, status_code, title in refusals:

        async def _refuse(request: Request, exc: Exception, status_code=status_code, title=title):
            return refusal(request, status_code, title, str(exc))

        for kind in kinds:
            app.add_exception_handler(kind, _refuse)

    # ------------------------------------------------------------------ static

    @app.get("/static-vendor/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="text/javascript")

    # ------------------------------------------------------------------ catalog

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/catalog", status_code=303)

    @app.get("/catalog", response_class=HTMLResponse)
    def catalog_page(
        request: Request,
        user: CurrentUser,
        q: str = "",
        sort: str = "",
        page_token: str = "",
        page_size: int = 20,
        uploaded_from: str = "",
        uploaded_to: str = "",
    ):
        require(user, Action.READ)
        _check_query(q)
        active = request.query_params.getlist("f")
        if len(active) > 100:
            raise SchemaViolation("f", "at most 100 filters")
        if uploaded_from:
            _check_date("uploaded_from", uploaded_from)
            active.append(f"uploaded_at>={uploaded_from}")
        if uploaded_to:
            _check_date("uploaded_to", uploaded_to)
            active.append(f"uploaded_at<={uploaded_to}||/d")
        filters = catalog.parse_filters(active)
        order = [(sort[1:], True) if sort.startswith("-") else sort] if sort else []
        page = get_store().search(
            schema.Measurement,
            text=q or None,
            filters=filters,
            facets=[path for path, _ in catalog.FACETS],
            sort=order,
            page_size=max(1, min(page_size, 200)),
            page_token=page_token or None,
        )
        rows = [to_document(m) for m in page.hits]
        return render(
            request,
            "catalog.html",
            q=q,
            sort=sort,
            sorts=catalog.SORTS,
            active=active,
            facets=[(path, label, page.facets.get(path, [])) for path, label in catalog.FACETS],
            date_presets=catalog.DATE_PRESETS,
            rows=rows,
            total=page.total,
            next_page_token=page.next_page_token,
            page_token=page_token,
            page_size=page_size,
        )

    # ------------------------------------------------------------------ upload

    @app.get("/upload", response_class=HTMLResponse)
    def upload_page(request: Request, user: CurrentUser):
        require(user, Action.UPLOAD)
        return render(
            request, "upload.html", groups=setup_form(), values={"operator": user.name}, errors={}
        )

    @app.post("/upload")
    async def upload_submit(request: Request, user: CurrentUser):
        require(user, Action.UPLOAD)
        general: list[str] = []
        measurement = None
        with tempfile.TemporaryDirectory(prefix="em2q-web-upload-") as scratch:
            folder = Path(scratch)
            received = await receive_multipart(request, folder, {"imzml", "ibd"})
            values = received.fields
            document, errors = setup_from_form(values)
            files = received.files
            for name, label in (("imzml", ".imzML"), ("ibd", ".ibd")):
                if name not in files or not files[name].filename:
                    errors[name] = f"choose the {label} file"
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
                            store=get_store(),
                            storage=app.state.storage,
                            progress=False,
                            cache_dir=cache_dir,
                            uploaded_by=user.name,
                        )
                    except InvalidUpload as exc:
                        problems = exc.problems
                    except DuplicateUpload as exc:
                        general.append(str(exc))
                        errors["imzml"] = f"already uploaded as {exc.existing_id}"
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

    # ------------------------------------------------------------------ one measurement

    def measurement_document(measurement_id: str) -> dict[str, Any]:
        return to_document(get_store().get(schema.Measurement, measurement_id).doc)

    def results_of(measurement_id: str, parameter_set: str | None) -> MeasurementResults:
        return MeasurementResults(
            measurement_id,
            parameter_set or DEFAULT_NAME,
            store=get_store(),
            storage=app.state.storage,
            cache_dir=settings.cache_dir / "imzml-index",
        )

    def parameter_set_ids() -> list[str]:
        store = get_store()
        store.refresh()
        page = store.search(schema.ParameterSet, sort=["name", ("version", True)], page_size=500)
        return [p.id for p in page.hits]

    @app.get("/measurements/{measurement_id}", response_class=HTMLResponse)
    def measurement_page(
        request: Request,
        measurement_id: str,
        user: CurrentUser,
        p: str = "",
        mz: str = "",
        ppm: float = 10.0,
        launched: str = "",
    ):
        require(user, Action.READ)
        doc = measurement_document(measurement_id)
        results = results_of(measurement_id, p)
        parameters = results.parameters
        sections: dict[str, Any] = {}
        waiting: dict[str, str] = {}
        try:
            sections["qc"] = results.qc_report()
        except ResultNotReady as exc:
            waiting["qc"] = str(exc)
        try:
            mz_axis, intensity = results.mean_spectrum()
            sections["spectrum"] = plots.figure_json(
                plots.spectra_figure([(measurement_id, mz_axis, intensity)])
            )
        except ResultNotReady as exc:
            waiting["spectrum"] = str(exc)
        try:
            results.manifest("tic_image")
            sections["tic"] = True
            grid = results.grid()
            if grid.is_3d:
                sections["planes"] = f"z = {grid.z_values[0]}…{grid.z_values[-1]}"
            if grid.pixel_size_um:
                sections["pixel_size"] = "{:g} × {:g}".format(*grid.pixel_size_um)
        except ResultNotReady as exc:
            waiting["tic"] = str(exc)
        chosen_mz, mz_problem = _mz_list(mz, ppm)
        if not chosen_mz and not mz_problem:
            try:
                stored_mz, _ = results.ion_images()
                chosen_mz = [float(v) for v in stored_mz[:4]]
            except ResultNotReady:
                chosen_mz = []
        if chosen_mz:
            try:
                images = [
                    (f"m/z {v:.4f} ± {ppm:g} ppm", results.ion_image(v, ppm)) for v in chosen_mz
                ]
                sections["ion_images"] = plots.figure_json(
                    plots.images_figure(images, grid=results.grid())
                )
            except (DocumentNotFound, OSError, ValueError) as exc:  # no raw data to read
                mz_problem = f"no ion images: {exc}"
        runs = [to_document(r) for r in results.runs()]
        detail = doc.get("status_detail")
        next_action = lifecycle.advice(lifecycle.Action(detail["action"]), measurement_id) if (
            detail and detail.get("action")
        ) else ""  # fmt: skip
        if doc["status"] == "FAILED":  # the cause, not "not processed yet … run reprocess"
            failed = f"not available: processing FAILED — {doc.get('status_reason') or ''}"
            waiting = {name: failed for name in waiting}
        workflows = startable(get_store(), user) if allowed(user, Action.START_WORKFLOW) else []
        return render(
            request,
            "measurement.html",
            m=doc,
            detail=detail or {},
            next_action=next_action,
            can_retry=doc["status"] == "FAILED" and any(w.name == "standard" for w in workflows),
            final=doc["status"] in FINAL_STATUSES,
            metadata_rows=_metadata_rows(doc),
            parameters=parameters,
            parameter_sets=parameter_set_ids(),
            sections=sections,
            waiting=waiting,
            mz=", ".join(f"{v:g}" for v in chosen_mz) if not mz_problem else mz,
            mz_problem=mz_problem,
            ppm=ppm,
            runs=runs,
            workflows=workflows,
            launched=launched,
            launched_url=dagster_api().ui_url_for_run(launched) if launched else "",
        )

    def dagster_api() -> DagsterAPI:
        return DagsterAPI(settings.dagster_url, store=get_store())

    @app.post("/measurements/{measurement_id}/runs")
    async def start_workflow(request: Request, measurement_id: str, user: CurrentUser):
        require(user, Action.START_WORKFLOW)
        form = await request.form()
        workflow = str(form.get("workflow") or "standard")
        parameter_set = str(form.get("parameter_set") or DEFAULT_NAME)
        with dagster_api() as api:
            backfill_id = await run_in_threadpool(
                api.launch_workflow, workflow, measurement_id, parameter_set, user
            )
            url = api.ui_url_for_run(backfill_id)
        if wants_json(request):
            return JSONResponse({"id": backfill_id, "url": url}, status_code=201)
        return RedirectResponse(
            f"/measurements/{measurement_id}?p={parameter_set}&launched={backfill_id}",
            status_code=303,
        )

    @app.get("/api/workflows/{launch_id}")
    def workflow_status(launch_id: str, user: CurrentUser):
        require(user, Action.READ)
        with dagster_api() as api:
            return api.run_status(launch_id).to_dict()

    @app.get("/measurements/{measurement_id}/tic.png")
    def tic_png(measurement_id: str, user: CurrentUser) -> Response:
        require(user, Action.READ)
        results = results_of(measurement_id, None)
        try:
            png = read_bytes(app.state.storage, results.manifest("tic_image")["outputs"]["png"])
        except ResultNotReady as exc:
            raise NotFound(str(exc)) from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.get("/api/measurements/{measurement_id}/status")
    def measurement_status(measurement_id: str, user: CurrentUser):
        require(user, Action.READ)
        doc = measurement_document(measurement_id)
        detail = doc.get("status_detail")
        return {
            "id": measurement_id,
            "status": doc["status"],
            "reason": doc.get("status_reason"),
            "final": doc["status"] in FINAL_STATUSES,
            "detail": detail,
            "next": lifecycle.advice(lifecycle.Action(detail["action"]), measurement_id)
            if detail and detail.get("action")
            else None,
        }

    @app.post("/measurements/{measurement_id}/delete")
    def delete(request: Request, measurement_id: str, user: CurrentUser):
        require(user, Action.DELETE)
        delete_measurement(get_store(), app.state.storage, measurement_id, user)
        return RedirectResponse("/catalog", status_code=303)

    # ------------------------------------------------------------------ parameter sets

    @app.get("/parameter-sets", response_class=HTMLResponse)
    def parameter_sets_page(request: Request, user: CurrentUser):
        require(user, Action.READ)
        store = get_store()
        store.refresh()
        page = store.search(schema.ParameterSet, sort=["name", ("version", True)], page_size=500)
        return render(request, "parameter_sets.html", sets=[to_document(x) for x in page.hits])

    @app.get("/parameter-sets/new", response_class=HTMLResponse)
    def new_parameter_set_page(
        request: Request,
        user: CurrentUser,
        from_: Annotated[str, Query(alias="from")] = DEFAULT_NAME,
        measurement: str = "",
    ):
        require(user, Action.READ)
        try:
            source = get_store().get_parameter_set(from_)
            source_id, name = source.id, source.name
            values = parameter_values_to_dict(source.values)
        except DocumentNotFound:
            if from_ != DEFAULT_NAME:
                raise
            # nothing saved yet: start from the processing core's defaults
            source_id, name, values = DEFAULT_NAME, "", {}
        return render(
            request,
            "parameter_set_edit.html",
            source=source_id,
            rows=_parameter_rows(values),
            name=name,
            comment="",
            measurement=measurement,
            errors={},
        )

    @app.post("/parameter-sets")
    async def save_parameter_set(request: Request, user: CurrentUser):
        require(user, Action.SAVE_PARAMETER_SET)
        form = await request.form()
        name = str(form.get("name") or "").strip()
        comment = str(form.get("comment") or "").strip() or None
        measurement = str(form.get("measurement") or "")
        rows = _parameter_rows({})
        values, errors = _parameter_values(rows, form)
        if not errors:
            try:
                ProcessingParameters.from_dict(values)
            except ParameterError as exc:
                where, _, message = str(exc).partition(": ")
                errors[where if "." in where else "_"] = message or str(exc)
        saved = None
        if not errors:
            try:
                saved = get_store().save_parameter_set(
                    name, values, author=user.name, comment=comment
                )
            except SchemaViolation as exc:
                errors["name" if exc.field.endswith("name") else "_"] = exc.message
        if saved is None:
            shown = {**{f"{r['step']}.{r['name']}": r for r in rows}}
            for key, row in shown.items():
                row["text"] = str(form.get(f"value:{key}") or "")
            return render(
                request, "parameter_set_edit.html", 422, source=str(form.get("source") or ""),
                rows=list(shown.values()), name=name, comment=comment or "",
                measurement=measurement, errors=errors,
            )  # fmt: skip
        if measurement:
            return RedirectResponse(f"/measurements/{measurement}?p={saved.id}", status_code=303)
        return RedirectResponse(f"/parameter-sets/{saved.id}", status_code=303)

    @app.get("/parameter-sets/{set_id}", response_class=HTMLResponse)
    def parameter_set_page(request: Request, set_id: str, user: CurrentUser):
        require(user, Action.READ)
        saved = get_store().get_parameter_set(set_id)
        return render(
            request,
            "parameter_set.html",
            ps=to_document(saved),
            values=parameter_values_to_dict(saved.values),
        )

    # ------------------------------------------------------------------ compare

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(
        request: Request,
        user: CurrentUser,
        mz: str = "",
        ppm: float = 10.0,
    ):
        require(user, Action.READ)
        measurements = [m for m in request.query_params.getlist("m") if m]
        sets = [p for p in request.query_params.getlist("p") if p]
        if len(measurements) > MAX_COMPARED or len(sets) > MAX_COMPARED:
            raise SchemaViolation("m", f"compare at most {MAX_COMPARED} measurements or sets")
        if len(measurements) == 1 and len(sets) >= 2:
            columns = [(measurements[0], p) for p in sets]
        else:
            columns = [(m, sets[0] if sets else DEFAULT_NAME) for m in measurements]
        compared = []
        for measurement_id, parameter_set in columns:
            results = results_of(measurement_id, parameter_set)
            entry: dict[str, Any] = {
                "id": measurement_id,
                "title": results.measurement.title,
                "parameter_set": results.parameters.id,
                "label": f"{measurement_id} · {results.parameters.id}",
                "results": results,
            }
            try:
                entry["qc"] = results.qc_report()
            except ResultNotReady as exc:
                entry["waiting"] = str(exc)
            with contextlib.suppress(ResultNotReady):
                entry["spectrum"] = results.mean_spectrum()
            compared.append(entry)
        chosen_mz, mz_problem = _mz_list(mz, ppm)
        spectra = [(c["label"], *c["spectrum"]) for c in compared if "spectrum" in c]
        figure_spectra = (
            plots.figure_json(plots.spectra_figure(spectra, "Mean spectra")) if spectra else ""
        )
        figure_images = ""
        if chosen_mz and compared:
            images = [
                (f"{c['label']}<br>m/z {v:g} ± {ppm:g} ppm", c["results"].ion_image(v, ppm))
                for v in chosen_mz
                for c in compared
            ]
            figure_images = plots.figure_json(plots.images_figure(images, columns=len(compared)))
        check_names = []
        for c in compared:
            for check in (c.get("qc") or {}).get("checks", []):
                if check["name"] not in check_names:
                    check_names.append(check["name"])
        return render(
            request,
            "compare.html",
            compared=compared,
            check_names=check_names,
            measurements=measurements,
            sets=sets,
            parameter_sets=parameter_set_ids(),
            mz=mz,
            ppm=ppm,
            mz_problem=mz_problem,
            figure_spectra=figure_spectra,
            figure_images=figure_images,
        )

    return app


def _parameter_rows(values: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every parameter the processing core knows (its defaults), with ``values`` filled in:
    ``[{step, name, kind (number|numbers|text), text}]``."""
    rows = []
    for step, defaults in ProcessingParameters.defaults().to_dict().items():
        for name, default in defaults.items():
            value = values.get(step, {}).get(name, default)
            if isinstance(default, list):
                kind, text = "numbers", ", ".join(f"{v:g}" for v in value or [])
            elif isinstance(default, str):
                kind, text = "text", str(value)
            else:
                kind, text = "number", "" if value is None else f"{value:g}"
            rows.append({"step": step, "name": name, "kind": kind, "text": text})
    return rows


def _by_step(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Editor rows grouped by step, in processing order (Jinja's groupby would sort them)."""
    steps: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        steps.setdefault(row["step"], []).append(row)
    return list(steps.items())


def _parameter_values(rows: list[dict[str, Any]], form: Any) -> tuple[dict, dict[str, str]]:
    """``{step: {name: value}}`` from the editor's inputs, and ``{step.name: problem}``."""
    values: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for row in rows:
        key = f"{row['step']}.{row['name']}"
        text = str(form.get(f"value:{key}") or "").strip()
        try:
            if row["kind"] == "numbers":
                value: Any = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
            elif row["kind"] == "number":
                value = float(text) if text else None
            else:
                value = text or None
        except ValueError:
            errors[key] = (
                f"expected {'numbers separated by commas' if row['kind'] == 'numbers' else 'a number'}, got {text!r}"
            )
            continue
        if value is not None:
            values.setdefault(row["step"], {})[row["name"]] = value
    return values, errors


#: the metadata page's sections: (title, the document's field paths shown there)
_SECTIONS = [
    ("Measurement", ["title", "description", "operator", "project_id", "study_id", "acquired_at",
                     "uploaded_at", "updated_at", "tags"]),
    ("Sample", ["sample"]),
    ("Spectrometer settings", ["settings"]),
    ("imzML facts", ["facts"]),
]  # fmt: skip


#: the most m/z values one page draws ion images for, and measurements one comparison shows
MAX_MZ_VALUES = 12
MAX_COMPARED = 8
#: the longest catalog search text (characters, words): more words than Elasticsearch's
#: clause limit allows are refused here, with the field named
MAX_QUERY_CHARS = 1000
MAX_QUERY_WORDS = 64
_DATE_MATH = re.compile(r"^now(-\d{1,4}[dwMy])?(/[dwMy])?$")


def _mz_list(text: str, ppm: float) -> tuple[list[float], str | None]:
    """``"760.58, 798.54"`` → m/z values; a problem message when one is not a finite positive
    m/z within bounds, the ppm is not, or there are more than :data:`MAX_MZ_VALUES`."""
    try:
        ions.check_window(1.0, ppm)
    except ions.IonImageError as exc:
        return [], str(exc)
    items = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    if len(items) > MAX_MZ_VALUES:
        return [], f"at most {MAX_MZ_VALUES} m/z values at once, got {len(items)}"
    values = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            return [], f"{item[:40]!r} is not an m/z value; give numbers separated by commas"
        try:
            ions.check_window(value, ppm)
        except ions.IonImageError as exc:
            return [], str(exc)
        values.append(value)
    return values, None


def _check_date(field: str, value: str) -> None:
    """A catalog date bound: ``2024-05-31`` or Elasticsearch date math like ``now-7d/d``."""
    if _DATE_MATH.match(value):
        return
    try:
        date.fromisoformat(value)
    except ValueError:
        raise SchemaViolation(
            field, f"expected a date like 2024-05-31 or now-7d/d, got {value[:40]!r}"
        ) from None


def _check_query(q: str) -> None:
    if len(q) > MAX_QUERY_CHARS or len(q.split()) > MAX_QUERY_WORDS:
        raise SchemaViolation(
            "q", f"search with at most {MAX_QUERY_WORDS} words / {MAX_QUERY_CHARS} characters"
        )


def _flatten(value: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        rows: list[tuple[str, Any]] = []
        for key, inner in value.items():
            rows += _flatten(inner, f"{path}.{key}")
        return rows
    return [(path, value)]


def _metadata_rows(doc: dict[str, Any]) -> list[tuple[str, list[tuple[str, str, Any, str | None]]]]:
    """``[(section, [(path, label, value, unit)])]`` for the measurement page."""
    measurement = load_schema().Measurement
    sections = []
    for title, paths in _SECTIONS:
        rows = []
        for top in paths:
            if top not in doc:
                continue
            for path, value in _flatten(doc[top], top):
                try:
                    unit = field_unit(measurement, path)
                except SchemaViolation:
                    unit = None
                label = path.split(".", 1)[1] if "." in path and top != path else path
                rows.append((path, label.replace("_", " "), value, unit))
        sections.append((title, rows))
    return sections
