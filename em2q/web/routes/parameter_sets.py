"""Parameter sets: the list, one saved version, and the editor that saves a new version.

The editor starts from a saved set (``?from=name@vN``) or the processing core's defaults; a
value the core refuses comes back next to its input with 422.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from em2q.web.deps import Backends, CurrentUser, saved_parameter_sets
from em2q.web.forms import parameter_rows, parameter_values
from em2q.web.pages import render
from em2q_resources import parameter_sets
from em2q_resources.auth import Action, require
from em2q_resources.metadata import DocumentNotFound, SchemaViolation
from em2q_resources.metadata.schema import to_document
from em2q_resources.parameter_sets import DEFAULT_NAME

router = APIRouter()


@router.get("/parameter-sets", response_class=HTMLResponse)
def parameter_sets_page(request: Request, user: CurrentUser, connections: Backends):
    require(user, Action.READ)
    sets = [to_document(x) for x in saved_parameter_sets(connections.store)]
    return render(request, "parameter_sets.html", sets=sets)


@router.get("/parameter-sets/new", response_class=HTMLResponse)
def new_parameter_set_page(
    request: Request,
    user: CurrentUser,
    connections: Backends,
    from_: Annotated[str, Query(alias="from")] = DEFAULT_NAME,
    measurement: str = "",
):
    require(user, Action.READ)
    try:
        source = connections.store.get_parameter_set(from_)
        source_id, name = source.id, source.name
        values = parameter_sets.values_from_documents(source.values)
    except DocumentNotFound:
        if from_ != DEFAULT_NAME:
            raise
        # nothing saved yet: start from the processing core's defaults
        source_id, name, values = DEFAULT_NAME, "", {}
    return render(
        request,
        "parameter_set_edit.html",
        source=source_id,
        rows=parameter_rows(values),
        name=name,
        comment="",
        measurement=measurement,
        errors={},
    )


@router.post("/parameter-sets")
async def save_parameter_set(request: Request, user: CurrentUser, connections: Backends):
    require(user, Action.SAVE_PARAMETER_SET)
    form = await request.form()
    name = str(form.get("name") or "").strip()
    comment = str(form.get("comment") or "").strip() or None
    measurement = str(form.get("measurement") or "")
    rows = parameter_rows({})
    values, errors = parameter_values(rows, form)
    saved = None
    if not errors:
        try:
            saved = parameter_sets.save(
                connections.store, name, values, author=user.name, comment=comment
            )
        except parameter_sets.InvalidParameterSet as exc:
            errors[exc.field if "." in exc.field else "_"] = exc.message
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


@router.get("/parameter-sets/{set_id}", response_class=HTMLResponse)
def parameter_set_page(request: Request, set_id: str, user: CurrentUser, connections: Backends):
    require(user, Action.READ)
    shown = parameter_sets.describe(connections.store.get_parameter_set(set_id))
    return render(request, "parameter_set.html", ps=shown, values=shown["values"])
