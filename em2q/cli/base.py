"""What every command group shares: the root group, the context, errors to exit codes.

Nothing heavy is imported here: ``em2q --help`` must answer at once, so Dagster, pandas, numba
and the Elasticsearch client are imported by the commands that use them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, NoReturn

import click

from em2q_resources.auth import Action, Authenticator, User, require
from em2q_resources.settings import Settings

if TYPE_CHECKING:
    from em2q.connect import Connections
    from em2q.dagster_api import DagsterAPI
    from em2q_resources.metadata.store import MetadataStore
    from em2q_resources.storage import StorageResource

EXIT_PROBLEM, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_REFUSED = 1, 2, 3, 4

#: (module, exception class, message prefix, exit code), first match wins. Classified by name
#: so a command pays only for the modules it imported: an exception of a module that was never
#: imported cannot have been raised.
_EXIT_CODES: tuple[tuple[str, str, str, int], ...] = (
    ("em2q_resources.auth", "AuthError", "refused: ", EXIT_REFUSED),
    ("em2q_resources.metadata.schema", "SchemaViolation", "invalid input: ", EXIT_PROBLEM),
    ("em2q_resources.storage", "UnsafeKey", "invalid input: ", EXIT_PROBLEM),
    ("em2q.client", "DeletionRefused", "refused: ", EXIT_PROBLEM),
    ("em2q_resources.metadata.errors", "DocumentNotFound", "", EXIT_PROBLEM),
    ("em2q.results", "ResultNotReady", "", EXIT_PROBLEM),
    ("em2q_resources.workflows", "UnknownWorkflow", "", EXIT_PROBLEM),
    ("em2q_resources.parameter_sets", "InvalidParameterSet", "invalid parameters: ", EXIT_PROBLEM),
    ("em2q_resources.studies", "InvalidStudy", "invalid study: ", EXIT_PROBLEM),
    ("em2q.study_results", "StaleStudyResult", "", EXIT_PROBLEM),
    ("em2q_msi.imzml_export", "InvalidExport", "invalid export: ", EXIT_PROBLEM),
    ("em2q_resources.metadata.errors", "StoreUnavailable", "", EXIT_UNAVAILABLE),
    ("em2q_resources.storage", "StorageUnavailable", "", EXIT_UNAVAILABLE),
    ("em2q_resources.elasticsearch_server", "ElasticsearchSetupError", "", EXIT_UNAVAILABLE),
    ("em2q.dagster_api", "DagsterUnavailable", "", EXIT_UNAVAILABLE),
    ("em2q_resources.metadata.errors", "MetadataError", "", EXIT_PROBLEM),
    ("em2q.dagster_api", "DagsterError", "", EXIT_PROBLEM),
)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def exit_code_of(exc: BaseException) -> tuple[str, int] | None:
    """The message prefix and exit code of ``exc``, or None for an unexpected error."""
    for module_name, class_name, prefix, code in _EXIT_CODES:
        module = sys.modules.get(module_name)
        kind = getattr(module, class_name, None) if module is not None else None
        if kind is not None and isinstance(exc, kind):
            return prefix, code
    return None


@contextmanager
def surface_errors() -> Iterator[None]:
    """Turn errors into messages and exit codes at the surface, nowhere else."""
    try:
        yield
    except Exception as exc:
        known = exit_code_of(exc)
        if known is None:
            raise
        prefix, code = known
        _fail(f"{prefix}{exc}", code)


class Context:
    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self.token: str | None = None
        self._user: User | None = None

    @cached_property
    def connections(self) -> Connections:
        from em2q.connect import connect

        return connect(self.settings)

    @property
    def store(self) -> MetadataStore:
        return self.connections.store

    @property
    def user(self) -> User:
        """Who runs the command: the API token's user (token mode), else the local user."""
        if self._user is None:
            try:
                authenticator = Authenticator.from_settings(self.settings)
            except ValueError as exc:
                _fail(str(exc), EXIT_USAGE)
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._user = authenticator.authenticate(headers)
        return self._user

    def require(self, action: Action) -> User:
        return require(self.user, action)

    def storage(self) -> StorageResource:
        return self.connections.storage

    def dagster(self) -> DagsterAPI:
        return self.connections.dagster


pass_context = click.make_pass_decorator(Context, ensure=True)
json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable output")

EXIT_CODES_HELP = """Exit codes scripts can rely on:

\b
  0  success
  1  the command ran but found a problem: not found, invalid input, a result not processed
     yet, a workflow that finished with failures
  2  usage error (unknown option, bad filter syntax, bad EM2Q_AUTH_MODE configuration)
  3  a backend did not answer: Elasticsearch, storage or the Dagster webserver
  4  refused: not signed in, or your role may not do this (the message says which role may)
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--token",
    default=None,
    help="API token (EM2Q_AUTH_MODE=token); also read from EM2Q_TOKEN",
)
@click.pass_context
def main(click_context: click.Context, token: str | None) -> None:
    context = click_context.ensure_object(Context)
    context.token = token or context.settings.api_token


main.help = (
    "EM²Q: share, process and compare imaging mass spectrometry data.\n\n"
    "Backends come from EM2Q_* environment variables (EM2Q_ELASTICSEARCH_URL, EM2Q_STORAGE, "
    "EM2Q_DAGSTER_URL …); without them the commands talk to the platform started by `em2q dev` "
    "/ `make run`.\n\n"
    "Roles (EM2Q_AUTH_MODE=local: you, as EM2Q_LOCAL_ROLE, default admin; =token: the user of "
    "--token): technicians read, upload and run published workflows; scientists also save "
    "parameter sets; admins also publish workflows and delete.\n\n" + EXIT_CODES_HELP
)


def _table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)
