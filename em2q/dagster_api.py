"""Launching workflows and following them through the Dagster webserver's GraphQL API.

(Raw GraphQL over httpx: ``dagster_graphql.DagsterGraphQLClient`` launches jobs and reads a run's
status, but has no asset backfills, dynamic partitions or backfill status.)

The CLI, the notebook client and the web catalog start processing the same way: one **asset
backfill** over the workflow's assets for one measurement (``launchPartitionBackfill`` with
``partitionsByAssets``), because the chain mixes partitions definitions: measurement-level
assets get the partition ``M``, spectra-level assets every chunk ``M|i`` (read from the
asset's partitions over GraphQL, so K is whatever the code location uses). The backfill and
each of its runs carry the tags

* ``em2q/parameter_set``: the parameter set id (``name@vN``) the runs resolve
  (``ParameterSetResource`` reads it when no name is configured),
* ``em2q/workflow`` and ``em2q/user``: what was started and by whom.

Example::

    api = DagsterAPI(settings.dagster_url, store=store)
    backfill_id = api.launch_workflow("standard", "example-continuous", "default", user)
    api.run_status(backfill_id).status   # REQUESTED … COMPLETED_SUCCESS
    api.ui_url_for_run(backfill_id)      # the backfill's page in the Dagster UI
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from em2q_resources import lifecycle
from em2q_resources.auth import Action, User, require
from em2q_resources.catalog import CATALOG
from em2q_resources.dagster_graphql import LAUNCH_RUN, launch_run_params
from em2q_resources.lifecycle import MEASUREMENT_TAG, STAGE_TAG, Stage
from em2q_resources.metadata import load_schema
from em2q_resources.parameter_sets import DEFAULT_NAME, PARAMETER_SET_TAG, resolve
from em2q_resources.workflows import WorkflowDefinition, require_startable

if TYPE_CHECKING:
    from em2q_resources.metadata.store import MetadataStore

WORKFLOW_TAG = "em2q/workflow"
USER_TAG = "em2q/user"
#: the asset whose verdict ends a measurement's processing READY or FAILED
VERDICT_ASSET = "qc_report"
MEASUREMENT_DIMENSION = "measurement"

#: backfill statuses after which nothing more happens
FINAL_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
FINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
#: how long an upload waits for Dagster to accept its ingest run; shorter than the
#: new_measurements sensor's lag (em2q_assets.sensors.VISIBILITY_LAG), so the safety net never
#: requests a second one while an upload's request is still on its way
INGEST_REQUEST_TIMEOUT_S = 4.0


class DagsterUnavailable(ConnectionError):
    """The Dagster webserver did not answer."""


class DagsterError(RuntimeError):
    """The webserver answered with an error (GraphQL error, refused launch, unknown id)."""


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    status: str
    tags: dict[str, str]
    url: str


@dataclass(frozen=True)
class WorkflowStatus:
    """Where a launched workflow (a backfill) or a single run stands."""

    id: str
    kind: str  # "backfill" or "run"
    status: str
    url: str
    runs: list[RunInfo] = field(default_factory=list)
    #: asset → {"targeted", "materialized", "failed", "in_progress"} partition counts
    assets: dict[str, dict[str, int]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        final = FINAL_BACKFILL if self.kind == "backfill" else FINAL_RUN
        return self.status in final

    @property
    def ok(self) -> bool:
        return self.status in ("COMPLETED_SUCCESS", "SUCCESS") or (
            self.status == "COMPLETED" and all(r.status == "SUCCESS" for r in self.runs)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "status": self.status, "done": self.done,
            "ok": self.ok, "url": self.url, "tags": self.tags, "assets": self.assets,
            "runs": [r.__dict__ for r in self.runs],
        }  # fmt: skip


_REPOSITORIES = """
{ repositoriesOrError { __typename
    ... on RepositoryConnection { nodes { name location { name } } }
    ... on PythonError { message } } }"""

_ASSET_NODES = """
query ($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    isPartitioned
    partitionDefinition { type dimensionTypes { name type dynamicPartitionsDefinitionName } }
    partitionKeysByDimension { name partitionKeys }
  }
}"""

_ADD_PARTITION = """
mutation ($repo: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on DuplicateDynamicPartitionError { partitionName }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""

_LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
  }
}"""

_BACKFILL = """
query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status
      tags { key value }
      runs(limit: 1000) { runId status tags { key value } }
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path } numPartitionsTargeted numPartitionsInProgress
            numPartitionsMaterialized numPartitionsFailed
          }
          ... on UnpartitionedAssetStatus { assetKey { path } }
        }
      }
    }
    ... on BackfillNotFoundError { message }
    ... on PythonError { message }
  }
}"""

_CANCEL_BACKFILL = """
mutation ($id: String!) {
  cancelPartitionBackfill(backfillId: $id) {
    __typename
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""

_RUN = """
query ($id: ID!) {
  runOrError(runId: $id) {
    __typename
    ... on Run { runId status tags { key value } }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}"""


class DagsterAPI:
    """A small client of one Dagster webserver (``EM2Q_DAGSTER_URL``)."""

    def __init__(
        self, url: str, *, store: MetadataStore | None = None, timeout_s: float = 60.0
    ) -> None:
        self.url = url.rstrip("/")
        self.store = store
        self._http = httpx.Client(timeout=timeout_s)
        self._repository: dict[str, str] | None = None

    # ------------------------------------------------------------------ plumbing

    def graphql(
        self, query: str, variables: dict | None = None, *, timeout_s: float | None = None
    ) -> dict:
        extra = {} if timeout_s is None else {"timeout": timeout_s}
        try:
            answer = self._http.post(
                f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, **extra
            )
        except httpx.HTTPError as exc:
            raise DagsterUnavailable(
                f"the Dagster webserver at {self.url} did not answer ({exc}); is `em2q dev` "
                "running? Set EM2Q_DAGSTER_URL to the webserver's address"
            ) from exc
        if answer.status_code != 200:
            raise DagsterError(f"{self.url}/graphql answered HTTP {answer.status_code}")
        body = answer.json()
        if body.get("errors"):
            raise DagsterError("; ".join(e.get("message", str(e)) for e in body["errors"]))
        return body["data"]

    def repository(self, *, timeout_s: float | None = None) -> dict[str, str]:
        """The selector of the code location's repository (there is one: em2q's)."""
        if self._repository is None:
            found = self.graphql(_REPOSITORIES, timeout_s=timeout_s)["repositoriesOrError"]
            if found["__typename"] != "RepositoryConnection" or not found["nodes"]:
                raise DagsterError(
                    f"no code location loaded at {self.url}: {found.get('message', found)}"
                )
            node = found["nodes"][0]
            self._repository = {
                "repositoryLocationName": node["location"]["name"],
                "repositoryName": node["name"],
            }
        return self._repository

    # ------------------------------------------------------------------ launching

    def ensure_partition(self, measurement_id: str) -> None:
        """Register the measurement as a ``measurement`` partition (the sensor does so too)."""
        answer = self.graphql(
            _ADD_PARTITION,
            {"repo": self.repository(), "name": MEASUREMENT_DIMENSION, "key": measurement_id},
        )["addDynamicPartition"]
        if answer["__typename"] not in (
            "AddDynamicPartitionSuccess",
            "DuplicateDynamicPartitionError",
        ):
            raise DagsterError(f"adding partition {measurement_id!r}: {answer}")

    def request_ingest(
        self, measurement_id: str, *, timeout_s: float = INGEST_REQUEST_TIMEOUT_S
    ) -> str:
        """Start the ingest run of a just-uploaded measurement (the first stage of its
        processing, ``em2q_assets.sensors``); returns the run id.

        The run is tagged ``em2q/measurement`` and ``em2q/stage=ingest``: the
        ``new_measurements`` sensor, the safety net for an upload whose request did not arrive,
        sees the tags and does not request a second one. Raises :class:`DagsterUnavailable` or
        :class:`DagsterError` when Dagster did not take it (the sensor then does, seconds later).
        """
        repository = self.repository(timeout_s=timeout_s)
        answer = self.graphql(
            _ADD_PARTITION,
            {"repo": repository, "name": MEASUREMENT_DIMENSION, "key": measurement_id},
            timeout_s=timeout_s,
        )["addDynamicPartition"]
        if answer["__typename"] not in (
            "AddDynamicPartitionSuccess",
            "DuplicateDynamicPartitionError",
        ):
            raise DagsterError(f"adding partition {measurement_id!r}: {answer}")
        tags = {"dagster/partition": measurement_id, MEASUREMENT_TAG: measurement_id,
                STAGE_TAG: Stage.INGEST.value}  # fmt: skip
        params = launch_run_params(repository, Stage.INGEST.job, tags)
        launched = self.graphql(LAUNCH_RUN, {"params": params}, timeout_s=timeout_s)["launchRun"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise DagsterError(f"Dagster refused the ingest run of {measurement_id!r}: {launched}")
        return launched["run"]["runId"]

    def request_study(self, study_id: str, user: User) -> str:
        """Materialize a study's assets (reference, alignment, comparison) in one run, the
        ``study`` partition added first; returns the run id. Only the members new since the
        last run are aligned (``em2q_assets.studies``)."""
        repository = self.repository()
        answer = self.graphql(
            _ADD_PARTITION, {"repo": repository, "name": "study", "key": study_id}
        )["addDynamicPartition"]
        if answer["__typename"] not in (
            "AddDynamicPartitionSuccess",
            "DuplicateDynamicPartitionError",
        ):
            raise DagsterError(f"adding study partition {study_id!r}: {answer}")
        tags = {"dagster/partition": study_id, "em2q/study": study_id, USER_TAG: user.name}
        params = launch_run_params(repository, "__ASSET_JOB", tags)
        params["selector"]["assetSelection"] = [
            {"path": [spec.name]} for spec in CATALOG.study_assets
        ]
        launched = self.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise DagsterError(f"Dagster refused the run of study {study_id!r}: {launched}")
        return launched["run"]["runId"]

    def partitions_by_asset(
        self, assets: Iterable[str], measurement_id: str
    ) -> list[dict[str, Any]]:
        """``partitionsByAssets`` of a backfill: ``M`` or every ``M|chunk`` per asset."""
        names = list(assets)
        nodes = self.graphql(_ASSET_NODES, {"keys": [{"path": [n]} for n in names]})["assetNodes"]
        by_name = {n["assetKey"]["path"][-1]: n for n in nodes}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DagsterError(f"the code location at {self.url} has no asset {missing}")
        selectors = []
        for name in names:
            node = by_name[name]
            definition = node["partitionDefinition"] or {}
            if not node["isPartitioned"]:
                selectors.append({"assetKey": {"path": [name]}})
                continue
            if definition.get("type") == "MULTIPARTITIONED":
                keys_by_dimension = {
                    d["name"]: (
                        [measurement_id] if d["name"] == MEASUREMENT_DIMENSION else d["partitionKeys"]
                    )
                    for d in node["partitionKeysByDimension"]
                }  # fmt: skip
                keys = [""]
                for dimension in sorted(keys_by_dimension):  # Dagster joins them in name order
                    keys = [
                        f"{prefix}|{key}" if prefix else key
                        for prefix in keys
                        for key in keys_by_dimension[dimension]
                    ]
            else:
                keys = [measurement_id]
            ranges = [{"start": key, "end": key} for key in keys]
            selectors.append({"assetKey": {"path": [name]}, "partitions": {"ranges": ranges}})
        return selectors

    def launch_workflow(
        self,
        workflow: str,
        measurement_id: str,
        parameter_set: str | None,
        user: User,
    ) -> str:
        """Start ``workflow`` on one measurement with a parameter set (name, ``name@vN``, or
        ``None`` for ``default``) as ``user``; returns the backfill id.

        Raises ``Forbidden``/``WorkflowNotPublished`` when the user may not start it,
        ``DocumentNotFound`` for an unknown measurement or parameter set.
        """
        if self.store is None:
            raise ValueError("DagsterAPI(store=...) is needed to launch: it checks roles")
        definition: WorkflowDefinition = require_startable(self.store, workflow, user)
        self.store.get(load_schema().Measurement, measurement_id)
        resolved = resolve(self.store, parameter_set or DEFAULT_NAME)
        self.ensure_partition(measurement_id)
        tags = {
            PARAMETER_SET_TAG: resolved.id,
            WORKFLOW_TAG: definition.name,
            USER_TAG: user.name,
            MEASUREMENT_TAG: measurement_id,
        }
        params = {
            "partitionsByAssets": self.partitions_by_asset(definition.assets, measurement_id),
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
            "title": f"{definition.name} on {measurement_id} ({resolved.id})",
            "description": f"started by {user.name} from em2q",
        }
        answer = self.graphql(_LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        if answer["__typename"] != "LaunchBackfillSuccess":
            raise DagsterError(f"Dagster refused the {workflow} workflow: {answer}")
        backfill_id = answer["backfillId"]
        if VERDICT_ASSET in definition.assets:  # it ends READY or FAILED: a retry or reprocess
            lifecycle.start(
                self.store,
                measurement_id,
                f"{definition.name} workflow started by {user.name} ({resolved.id})",
                actor=lifecycle.Actor.LAUNCHER,
                run_id=backfill_id,
                run_url=self.ui_url_for_run(backfill_id),
            )
        return backfill_id

    def launch_partitions(
        self,
        measurement_id: str,
        partitions: Mapping[str, Sequence[str]],
        parameter_set: str | None,
        user: User,
        title: str,
    ) -> str:
        """One backfill of exactly ``partitions`` (``{asset: [partition keys]}``, chunk keys
        as ``M|chunk``) of one measurement with a parameter set, as ``user`` (who must be
        allowed to start workflows); Dagster runs them in dependency order. Returns the
        backfill id. What ``em2q reprocess --stale`` requests: nothing else is rerun."""
        require(user, Action.START_WORKFLOW)
        resolved = resolve(self.store, parameter_set or DEFAULT_NAME)
        self.ensure_partition(measurement_id)
        tags = {
            PARAMETER_SET_TAG: resolved.id,
            USER_TAG: user.name,
            MEASUREMENT_TAG: measurement_id,
        }
        params = {
            "partitionsByAssets": [
                {
                    "assetKey": {"path": [asset]},
                    "partitions": {"ranges": [{"start": k, "end": k} for k in keys]},
                }
                for asset, keys in partitions.items()
            ],
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
            "title": f"{title} on {measurement_id} ({resolved.id})",
            "description": f"started by {user.name} from em2q",
        }
        answer = self.graphql(_LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        if answer["__typename"] != "LaunchBackfillSuccess":
            raise DagsterError(f"Dagster refused the {title} backfill: {answer}")
        return answer["backfillId"]

    # ------------------------------------------------------------------ following

    def run_status(self, id: str) -> WorkflowStatus:
        """Status of a backfill (what :meth:`launch_workflow` returns) or of a single run."""
        backfill = self.graphql(_BACKFILL, {"id": id})["partitionBackfillOrError"]
        if backfill["__typename"] == "PartitionBackfill":
            assets = {}
            for item in (backfill.get("assetBackfillData") or {}).get("assetBackfillStatuses", []):
                if "numPartitionsTargeted" in item:
                    assets[item["assetKey"]["path"][-1]] = {
                        "targeted": item["numPartitionsTargeted"],
                        "in_progress": item["numPartitionsInProgress"],
                        "materialized": item["numPartitionsMaterialized"],
                        "failed": item["numPartitionsFailed"],
                    }
            runs = [
                RunInfo(r["runId"], r["status"], _tags(r["tags"]), self.ui_url_for_run(r["runId"]))
                for r in backfill["runs"]
            ]
            return WorkflowStatus(
                id, "backfill", backfill["status"], self.ui_url_for_run(id), runs, assets,
                _tags(backfill["tags"]),
            )  # fmt: skip
        run = self.graphql(_RUN, {"id": id})["runOrError"]
        if run["__typename"] != "Run":
            raise DagsterError(f"no backfill or run {id!r} at {self.url}")
        info = RunInfo(run["runId"], run["status"], _tags(run["tags"]), self.ui_url_for_run(id))
        return WorkflowStatus(id, "run", run["status"], info.url, [info], {}, info.tags)

    def wait(
        self,
        id: str,
        *,
        timeout_s: float = 1800.0,
        interval_s: float = 2.0,
        on_progress: Callable[[WorkflowStatus], None] | None = None,
    ) -> WorkflowStatus:
        """Poll until the backfill (or run) is done; ``on_progress`` sees every poll."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.run_status(id)
            if on_progress is not None:
                on_progress(status)
            if status.done:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"{id} still {status.status} after {timeout_s:.0f}s")
            time.sleep(interval_s)

    def cancel(self, id: str) -> None:
        """Cancel a launched workflow (a backfill): queued runs are dropped, running ones
        stopped by the daemon."""
        answer = self.graphql(_CANCEL_BACKFILL, {"id": id})["cancelPartitionBackfill"]
        if answer["__typename"] != "CancelBackfillSuccess":
            raise DagsterError(f"cancelling {id}: {answer.get('message', answer)}")

    # ------------------------------------------------------------------ links

    def ui_url_for_run(self, id: str) -> str:
        """The Dagster UI page of a backfill (8-letter id) or a run (UUID)."""
        if _is_backfill_id(id):
            return f"{self.url}/runs/b/{quote(id)}?tab=runs"
        return f"{self.url}/runs/{quote(id)}"

    def ui_url_for_asset(self, asset: str, partition: str | None = None) -> str:
        """The asset's page (lineage, materializations, checks), at one partition if given."""
        url = f"{self.url}/assets/{quote(asset)}"
        if partition:
            url += f"?view=partitions&partition={quote(partition, safe='')}"
        return url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DagsterAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tags(items: list[dict[str, str]]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in items}


def _is_backfill_id(id: str) -> bool:
    return len(id) == 8 and id.isalpha() and id.islower()
