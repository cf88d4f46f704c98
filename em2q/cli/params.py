"""``em2q params``: the team's named parameter sets."""

from __future__ import annotations

import json

import click

from em2q.cli.base import (
    EXIT_PROBLEM,
    Context,
    _fail,
    _table,
    json_option,
    main,
    pass_context,
    surface_errors,
)
from em2q_resources.auth import Action


@main.group()
def params() -> None:
    """Named, versioned, immutable processing parameter sets (saving: scientists and admins)."""


@params.command("list")
@json_option
@pass_context
def params_list(ctx: Context, as_json: bool) -> None:
    """List saved parameter sets (newest version of each name first)."""
    from em2q_resources.metadata.schema import load_schema

    schema = load_schema()
    with surface_errors():
        ctx.require(Action.READ)
        ctx.store.refresh()
        page = ctx.store.search(
            schema.ParameterSet, sort=["name", ("version", True)], page_size=1000
        )
    rows = [
        {"id": p.id, "name": p.name, "version": p.version, "author": p.author,
         "created": p.created_at[:19], "comment": (p.comment or "")[:40]}
        for p in page.hits
    ]  # fmt: skip
    if as_json:
        click.echo(json.dumps(rows))
    else:
        click.echo(_table(rows, ["id", "name", "version", "author", "created", "comment"]))


@params.command("show")
@click.argument("name_or_id")
@json_option
@pass_context
def params_show(ctx: Context, name_or_id: str, as_json: bool) -> None:
    """Show a parameter set (NAME gives its newest version, NAME@vN a given one)."""
    from em2q_resources import parameter_sets as ps

    with surface_errors():
        ctx.require(Action.READ)
        saved = ctx.store.get_parameter_set(name_or_id)
    click.echo(json.dumps(ps.describe(saved), indent=None if as_json else 2))


@params.command("save")
@click.argument("name")
@click.argument("values_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--author", default=None, help="must be you, if given: the author is who is signed in"
)
@click.option("--comment", default=None, help="why: what these values change")
@json_option
@pass_context
def params_save(
    ctx: Context, name: str, values_file: str, author: str | None, comment: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Save VALUES_FILE ({step: {name: value}}, JSON or YAML) as parameter set NAME.

    Prints the id (NAME@vN). The same values as a saved version return that version; new
    values a new version; saved versions never change. Scientists and admins only.
    """
    from em2q.setup_file import SetupFileError, load_yaml_file
    from em2q_resources import parameter_sets as ps
    from em2q_resources.policy import parameter_set_author

    try:
        values = load_yaml_file(values_file)
    except SetupFileError as exc:
        _fail(str(exc), EXIT_PROBLEM)
    with surface_errors():
        user = ctx.require(Action.SAVE_PARAMETER_SET)
        author = parameter_set_author(user, author)
        try:
            ps.validate(values)
        except ps.InvalidParameterSet as exc:
            _fail(f"invalid parameters in {values_file}: {exc}", EXIT_PROBLEM)
        saved = ps.save(ctx.store, name, values, author=author, comment=comment)
    if as_json:
        click.echo(json.dumps(ps.describe(saved)))
    else:
        click.echo(saved.id)


@params.command("diff")
@click.argument("first")
@click.argument("second")
@json_option
@pass_context
def params_diff(ctx: Context, first: str, second: str, as_json: bool) -> None:
    """Show the values that differ between two parameter sets (as the steps run them: a name
    one set leaves out counts with its default)."""
    from em2q_resources import parameter_sets as ps

    with surface_errors():
        ctx.require(Action.READ)
        a = ps.normalise(ps.values_from_documents(ctx.store.get_parameter_set(first).values))
        b = ps.normalise(ps.values_from_documents(ctx.store.get_parameter_set(second).values))
    changes = []
    for step in sorted(set(a) | set(b)):
        for name in sorted(set(a.get(step, {})) | set(b.get(step, {}))):
            left, right = a.get(step, {}).get(name), b.get(step, {}).get(name)
            if left != right:
                changes.append({"parameter": f"{step}.{name}", first: left, second: right})
                if not as_json:
                    click.echo(f"{step}.{name}: {left!r} -> {right!r}")
    if as_json:
        click.echo(json.dumps(changes))


# ---------------------------------------------------------------------- workflows and runs
