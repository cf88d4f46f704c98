"""The one request every layer makes of Dagster's webserver to start a run: ``launchRun`` over
GraphQL (the upload starts its ingest run with it, a chain run its next stage).

Raw GraphQL over httpx, as ``em2q.dagster_api``: ``dagster_graphql``'s client cannot tag a run
with a partition range.
"""

from __future__ import annotations

import httpx

LAUNCH_RUN = """
mutation ($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""


class LaunchRefused(RuntimeError):
    """The webserver did not answer, or answered that it did not start the run."""


def launch_run_params(repository: dict[str, str], job: str, tags: dict[str, str]) -> dict:
    """``ExecutionParams`` of a run of ``job`` (a job of the repository ``repository`` selects:
    ``repositoryLocationName``, ``repositoryName``) with ``tags``."""
    return {
        "selector": {**repository, "jobName": job},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }


def launch_run(
    url: str, repository: dict[str, str], job: str, tags: dict[str, str], timeout_s: float
) -> str:
    """Start a run of ``job`` through the webserver at ``url``; its run id."""
    params = launch_run_params(repository, job, tags)
    try:
        answer = httpx.post(
            f"{url.rstrip('/')}/graphql",
            json={"query": LAUNCH_RUN, "variables": {"params": params}},
            timeout=timeout_s,
        )
        answer.raise_for_status()
        body = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise LaunchRefused(f"the Dagster webserver at {url} did not answer: {exc}") from exc
    if body.get("errors"):
        raise LaunchRefused("; ".join(e.get("message", str(e)) for e in body["errors"]))
    launched = body["data"]["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        raise LaunchRefused(f"Dagster did not start the {job} run: {launched}")
    return launched["run"]["runId"]
