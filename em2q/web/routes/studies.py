"""A study's comparison page: volcano plot, sortable feature table, PCA of the members, links
into Dagster for lineage (``/studies``, ``/studies/<id>``). The plots are inline SVG drawn
here, so the page needs no script and a browser test can read them."""

from __future__ import annotations

import math
from html import escape
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from em2q.web.deps import Backends, CurrentUser
from em2q.web.pages import render
from em2q_resources.auth import Action, require
from em2q_resources.metadata import SchemaViolation

router = APIRouter()

#: columns of the feature table people may sort by
SORTABLE = ("mz", "log2_fold_change", "q_value", "p_value", "mean_numerator", "mean_denominator")
#: rows of the feature table shown
MAX_ROWS = 200
WIDTH, HEIGHT, MARGIN = 480, 320, 40
#: colours of groups in the PCA plot (cycled)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _scale(values: np.ndarray, size: float, flip: bool = False) -> np.ndarray:
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    scaled = (values - lo) / (hi - lo) * (size - 2 * MARGIN) + MARGIN
    return size - scaled if flip else scaled


def _axes(x_label: str, y_label: str) -> str:
    return (
        f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - MARGIN / 2}" '
        f'y2="{HEIGHT - MARGIN}" stroke="#555"/>'
        f'<line x1="{MARGIN}" y1="{MARGIN / 2}" x2="{MARGIN}" y2="{HEIGHT - MARGIN}" stroke="#555"/>'
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle">{escape(x_label)}</text>'
        f'<text x="12" y="{HEIGHT / 2}" transform="rotate(-90 12 {HEIGHT / 2})" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )


def volcano_svg(table: Any, max_q: float) -> str:
    """log2 fold change against −log10 q; significant features in red, with their m/z."""
    fold = table["log2_fold_change"].to_numpy(dtype=np.float64)
    q = table["q_value"].to_numpy(dtype=np.float64)
    fold = np.clip(np.nan_to_num(fold, nan=0.0, posinf=10.0, neginf=-10.0), -10, 10)
    height = -np.log10(np.clip(np.nan_to_num(q, nan=1.0), 1e-300, 1.0))
    x, y = _scale(fold, WIDTH), _scale(height, HEIGHT, flip=True)
    significant = np.nan_to_num(q, nan=1.0) <= max_q
    points = "".join(
        f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" class="{"sig" if s else "ns"}" '
        f'fill="{"#d62728" if s else "#999"}"><title>m/z {m:.5f}: log2 FC {f:.3g}, '
        f"q {qq:.3g}</title></circle>"
        for a, b, s, m, f, qq in zip(x, y, significant, table["mz"], fold, q, strict=True)
    )
    return (
        f'<svg class="volcano" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-label="volcano plot">'
        f"{_axes('log2 fold change', '−log10 q')}{points}</svg>"
    )


def pca_svg(pca: Any) -> str:
    """Members on PC1 × PC2, coloured by group."""
    pc1 = pca["PC1"].to_numpy(dtype=np.float64)
    pc2 = pca["PC2"].to_numpy(dtype=np.float64) if "PC2" in pca else np.zeros(pc1.size)
    x, y = _scale(pc1, WIDTH), _scale(pc2, HEIGHT, flip=True)
    groups = sorted(set(pca["group"]))
    colour = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}
    ratio = pca.attrs.get("explained_variance_ratio") or [math.nan, math.nan]
    points = "".join(
        f'<circle cx="{a:.1f}" cy="{b:.1f}" r="5" fill="{colour[g]}" data-group="{escape(g)}">'
        f"<title>{escape(m)} ({escape(g)})</title></circle>"
        for a, b, g, m in zip(x, y, pca["group"], pca.index, strict=True)
    )
    legend = "".join(
        f'<text x="{WIDTH - 120}" y="{20 + 16 * i}" fill="{colour[g]}">● {escape(g)}</text>'
        for i, g in enumerate(groups)
    )
    labels = [f"PC{i + 1} ({100 * r:.0f} %)" for i, r in enumerate([*ratio, math.nan][:2])]
    return (
        f'<svg class="pca" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-label="PCA of the members">'
        f"{_axes(*labels)}{points}{legend}</svg>"
    )


def ion_images(storage: Any, aligned: dict, feature: int) -> list[tuple[str, np.ndarray]]:
    """Each member's image of one feature, normalised per pixel (the study's normalisation),
    members ordered by group: ``(label, 2-D image)`` with NaN where no pixel was acquired or
    its normalisation factor is 0."""
    from em2q_resources.results_layout import read_csr_zarr

    members = sorted(aligned["members"], key=lambda m: (aligned["groups"][m], m))
    images = []
    for member in members:
        matrix, arrays = read_csr_zarr(storage, aligned["members"][member]["features"])
        if not 0 <= feature < matrix.shape[1]:
            raise SchemaViolation(
                "feature", f"no feature {feature}; the study has {matrix.shape[1]}"
            )
        column = matrix[:, [feature]].toarray().ravel().astype(np.float64)
        factors = arrays["normalisation"]
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(factors > 0, column / factors, np.nan)
        xy = arrays["coordinates"][:, :2].astype(np.int64)
        origin = xy.min(axis=0) if xy.size else np.zeros(2, np.int64)
        shape = (xy.max(axis=0) - origin + 1) if xy.size else np.ones(2, np.int64)
        image = np.full((int(shape[1]), int(shape[0])), np.nan)
        image[xy[:, 1] - origin[1], xy[:, 0] - origin[0]] = values
        images.append((f"{member} ({aligned['groups'][member]})", image))
    return images


@router.get("/studies", response_class=HTMLResponse)
def studies_page(request: Request, user: CurrentUser, connections: Backends):
    from em2q_resources import studies

    require(user, Action.READ)
    connections.store.refresh()
    return render(request, "studies.html", studies=studies.list_studies(connections.store))


#: measurement fields offered to group a study defined from a catalog search
DESIGN_FIELDS = (
    "sample.condition",
    "sample.organ",
    "sample.organism",
    "settings.instrument_id",
    "settings.polarity",
    "tags",
)
#: the design choice that groups by the labels typed per member
MANUAL = "manual"
#: the most members one form defines a study with
MAX_FORM_MEMBERS = 500


@router.post("/studies")
async def create_study(request: Request, user: CurrentUser, connections: Backends):
    """Define a study from the catalog's search results: ``study_id``, ``title``, the members
    (``m``, repeated), and ``design`` (a field of :data:`DESIGN_FIELDS`, or ``manual`` with a
    ``group_<member>`` label each); redirects to the new study's page."""
    from em2q_resources import studies
    from em2q_resources.metadata.schema import check_identifier

    require(user, Action.START_WORKFLOW)
    form = await request.form()
    study_id = check_identifier(str(form.get("study_id") or "").strip(), "study_id")
    members = [str(m) for m in form.getlist("m")]
    if not members:
        raise SchemaViolation("m", "choose at least one measurement for the study")
    if len(members) > MAX_FORM_MEMBERS:
        raise SchemaViolation("m", f"at most {MAX_FORM_MEMBERS} members from one form")
    design = str(form.get("design") or "")
    if design != MANUAL and design not in DESIGN_FIELDS:
        raise SchemaViolation(
            "design", f"group by one of {', '.join(DESIGN_FIELDS)} or {MANUAL}, not {design!r}"
        )
    groups = {m: str(form.get(f"group_{m}") or "") for m in members} if design == MANUAL else None
    try:
        studies.create(
            connections.store, study_id, title=str(form.get("title") or "").strip() or study_id,
            design=[] if design == MANUAL else [design], members=members, groups=groups,
            author=user.name,
        )  # fmt: skip
    except studies.InvalidStudy as exc:
        raise SchemaViolation("study", str(exc)) from None
    return RedirectResponse(f"/studies/{study_id}", status_code=303)


def study_segmentation_context(store: Any, storage: Any, study_id: str) -> dict | None:
    """The study's segmentation for the page (its segments, one map per member in the same
    colours), or ``None`` while it is not computed or stale."""
    from em2q.results import ResultNotReady
    from em2q.study_results import StaleStudyResult, study_segmentation
    from em2q_resources.results_layout import read_json

    try:
        found = study_segmentation(store, storage, study_id)
    except (ResultNotReady, StaleStudyResult):
        return None
    summary = read_json(storage, found["outputs"]["top_ions"])
    return {"k": found["k"], "note": found["note"], "members": list(found["members"]),
            "segments": summary["segments"]}  # fmt: skip


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(
    request: Request,
    study_id: str,
    user: CurrentUser,
    connections: Backends,
    contrast: str = "",
    sort: str = "q_value",
    desc: bool = False,
    feature: int | None = None,
):
    from em2q.results import ResultNotReady
    from em2q.study_results import (
        StaleStudyResult,
        comparison_table,
        current_manifests,
        pca_table,
    )
    from em2q_resources import studies

    require(user, Action.READ)
    if sort not in SORTABLE:
        raise SchemaViolation("sort", f"sort by one of {', '.join(SORTABLE)}, not {sort!r}")
    store, storage = connections.store, connections.storage
    study = studies.get(store, study_id)
    context: dict[str, Any] = {
        "study": study, "groups": studies.member_groups(store, study), "contrast": contrast,
        "missing": studies.missing_members(store, study),
        "sort": sort, "desc": desc, "sortable": SORTABLE, "waiting": None,
    }  # fmt: skip
    context["segmentation"] = study_segmentation_context(store, storage, study_id)
    try:
        found = current_manifests(store, storage, study_id)
    except (ResultNotReady, StaleStudyResult) as exc:
        context["waiting"] = str(exc)
        return render(request, "study.html", **context)
    comparison = found["study_comparison"]
    table = comparison_table(storage, comparison)
    contrasts = list(dict.fromkeys(table["contrast"]))
    chosen = contrast if contrast in contrasts else contrasts[0]
    shown = table[table["contrast"] == chosen]
    max_q = found["study_reference_peaks"]["study_parameters"]["max_q"]
    rows = shown.sort_values(sort, ascending=not desc, na_position="last").head(MAX_ROWS)
    context.update(
        contrasts=contrasts, contrast=chosen, max_q=max_q,
        volcano=volcano_svg(shown, max_q), pca=pca_svg(pca_table(storage, comparison)),
        rows=rows.to_dict("records"), n_features=len(shown),
        n_significant=int(shown["significant"].sum()),
        parameter_set=found["study_reference_peaks"]["parameter_set"],
        drift=found["study_reference_peaks"]["drift"], feature=feature, figure_images="",
    )  # fmt: skip
    if feature is not None:
        from em2q.web import plots

        images = ion_images(storage, found["aligned_features"], feature)
        mz = float(table[table["feature"] == feature]["mz"].iloc[0])
        context["feature_mz"] = mz
        context["figure_images"] = plots.figure_json(
            plots.images_figure(images, f"m/z {mz:.5f}, one scale", columns=min(len(images), 6))
        )
    return render(request, "study.html", **context)
