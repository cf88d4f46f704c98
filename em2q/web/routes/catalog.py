"""The catalog: search the measurements by text, facets, upload dates and sort order."""

from __future__ import annotations

import re
from datetime import date

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from em2q.web import catalog
from em2q.web.deps import Backends, CurrentUser
from em2q.web.pages import render
from em2q.web.routes.studies import DESIGN_FIELDS
from em2q_resources.auth import Action, require
from em2q_resources.metadata import SchemaViolation, load_schema
from em2q_resources.metadata.schema import to_document

router = APIRouter()

#: the longest catalog search text (characters, words): more words than Elasticsearch's
#: clause limit allows are refused here, with the field named
MAX_QUERY_CHARS = 1000
MAX_QUERY_WORDS = 64
_DATE_MATH = re.compile(r"^now(-\d{1,4}[dwMy])?(/[dwMy])?$")


@router.get("/", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse("/catalog", status_code=303)


@router.get("/catalog", response_class=HTMLResponse)
def catalog_page(
    request: Request,
    user: CurrentUser,
    connections: Backends,
    q: str = "",
    sort: str = "",
    page_token: str = "",
    page_size: int = 20,
    uploaded_from: str = "",
    uploaded_to: str = "",
    mz: str = "",
    ppm: str = "3",
    min_tic_percent: str = "",
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
    search = dict(
        text=q or None,
        filters=filters,
        facets=[path for path, _ in catalog.FACETS],
        sort=order,
        page_size=max(1, min(page_size, 200)),
        page_token=page_token or None,
    )
    matches: dict = {}
    compared: dict = {}  # measurement → studies comparing the searched m/z
    if mz.strip():  # by m/z: the measurements whose peak table holds it
        from em2q.study_results import studies_comparing
        from em2q_resources.metadata.peak_index import search_mz

        fraction = _number("min_tic_percent", min_tic_percent or "0") / 100
        found = search_mz(
            connections.store, _number("mz", mz), _number("ppm", ppm or "3"), fraction, **search
        )
        page, matches = found.page, found.matches
        compared = studies_comparing(
            connections.store, connections.storage, _number("mz", mz),
            _number("ppm", ppm or "3"), [m.id for m in page.hits],
        )  # fmt: skip
    else:
        page = connections.store.search(load_schema().Measurement, **search)
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
        mz=mz,
        ppm=ppm,
        min_tic_percent=min_tic_percent,
        matches=matches,
        study_fields=DESIGN_FIELDS,
        compared=compared,
    )


def _number(field: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SchemaViolation(field, f"expected a number, got {text[:40]!r}") from None


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
