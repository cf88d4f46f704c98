"""Starting a workflow on a measurement (a Dagster backfill) and following it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from em2q.web.deps import Backends, CurrentUser
from em2q.web.pages import wants_json
from em2q_resources.auth import Action, require
from em2q_resources.parameter_sets import DEFAULT_NAME

router = APIRouter()


@router.post("/measurements/{measurement_id}/runs")
async def start_workflow(
    request: Request, measurement_id: str, user: CurrentUser, connections: Backends
):
    require(user, Action.START_WORKFLOW)
    form = await request.form()
    workflow = str(form.get("workflow") or "standard")
    parameter_set = str(form.get("parameter_set") or DEFAULT_NAME)
    api = connections.dagster
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


@router.get("/api/workflows/{launch_id}")
def workflow_status(launch_id: str, user: CurrentUser, connections: Backends):
    require(user, Action.READ)
    return connections.dagster.run_status(launch_id).to_dict()
