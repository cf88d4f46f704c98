"""``MetadataStore``: every EM²Q metadata entity in Elasticsearch, through the official client.

* One versioned index per entity behind an alias (``em2q-measurements`` →
  ``em2q-measurements-v<mapping-hash>``), created idempotently from an index template derived
  from the Thrift IDL. When the IDL changes, :meth:`MetadataStore.ensure_indices` creates the
  new index, copies the documents with the client's ``helpers.reindex`` and swaps the alias
  atomically, so readers never see a missing index.
* Optimistic concurrency: reads return the document's ``seq_no``/``primary_term`` and updates
  send them back (``if_seq_no``/``if_primary_term``), so two writers never overwrite each other.
* Bulk writes validate every document first (nothing is written if one is invalid) and then
  report exactly which documents Elasticsearch refused.
* Search: full text, filters on any schema path (nested-aware), facets, sorting, and paging
  beyond 10,000 hits with ``search_after`` (``scan`` uses a point in time).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TypeVar

from elasticsearch import ApiError, ConflictError, Elasticsearch, NotFoundError, helpers
from elasticsearch import ConnectionError as ESConnectionError
from elasticsearch import ConnectionTimeout as ESConnectionTimeout

from em2q_resources.metadata import schema as sch
from em2q_resources.metadata.errors import (
    AlreadyExists,
    CredentialsRefused,
    DocumentNotFound,
    ImmutableDocument,
    StoreUnavailable,
    VersionConflict,
)
from em2q_resources.metadata.schema import FieldInfo, Schema, SchemaViolation

T = TypeVar("T")

_RETRYABLE_STATUS = {429, 502, 503, 504}


@dataclass(frozen=True)
class Stored:
    """A document as read from Elasticsearch, with the version needed to update it safely."""

    doc: Any
    seq_no: int
    primary_term: int


@dataclass(frozen=True)
class FailedDocument:
    doc_id: str
    status: int
    reason: str


@dataclass
class BulkResult:
    """Outcome of a multi-document write: ``failed`` names every refused document."""

    succeeded: int = 0
    failed: list[FailedDocument] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class SearchPage:
    hits: list[Any]
    total: int
    facets: dict[str, list[tuple[str, int]]]
    next_page_token: str | None
    #: the position after the last hit (also on a short page): a durable cursor for polling
    cursor: str | None = None


class MetadataStore:
    """All metadata entities of the Thrift schema in one Elasticsearch cluster."""

    def __init__(
        self,
        client: Elasticsearch,
        index_prefix: str = "em2q",
        schema: Schema | None = None,
        *,
        attempts: int = 4,
        backoff_s: float = 0.25,
        number_of_replicas: int = 0,
        deadline_s: float | None = None,
    ) -> None:
        self.client = client
        #: no retry starts once a call has taken this long (a frozen cluster: one timeout)
        self.deadline_s = deadline_s
        self.prefix = index_prefix
        self.schema = schema or sch.load_schema()
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.number_of_replicas = number_of_replicas

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        api_key: str | None = None,
        index_prefix: str = "em2q",
        request_timeout_s: float = 30.0,
        **kwargs: Any,
    ) -> MetadataStore:
        auth: dict[str, Any] = {}
        if api_key:
            auth["api_key"] = api_key
        elif username:
            auth["basic_auth"] = (username, password or "")
        client = Elasticsearch(url, request_timeout=request_timeout_s, max_retries=0, **auth)
        return cls(client, index_prefix, **kwargs)

    @property
    def url(self) -> str:
        nodes = [str(node.base_url) for node in self.client.transport.node_pool.all()]
        return ", ".join(nodes)

    # ------------------------------------------------------------------ plumbing

    def _call(self, operation: Callable[[], T]) -> T:
        """Run one client call, retrying connection failures and overload with backoff."""
        started = time.monotonic()
        for attempt in range(1, self.attempts + 1):
            try:
                return operation()
            except (ESConnectionError, ESConnectionTimeout) as exc:
                error: Exception = exc
            except ApiError as exc:
                if exc.meta.status in (401, 403):
                    raise CredentialsRefused(_credentials_problem(self.url, exc)) from exc
                if exc.meta.status not in _RETRYABLE_STATUS:
                    raise
                error = exc
            pause = self.backoff_s * 2 ** (attempt - 1)
            spent = time.monotonic() - started + pause
            if self.deadline_s is not None and spent >= self.deadline_s:
                break
            if attempt < self.attempts:
                time.sleep(pause)
        elapsed = time.monotonic() - started
        raise StoreUnavailable(
            f"Elasticsearch at {self.url} did not answer after {attempt} attempt{'s' if attempt != 1 else ''} over "
            f"{elapsed:.1f}s: {error}. Is it running? Set EM2Q_ELASTICSEARCH_URL to the cluster."
        )

    def alias(self, entity: str | type) -> str:
        return f"{self.prefix}-{self.schema.entity(entity).index}"

    def _entity_of(self, obj: Any) -> sch.Entity:
        return self.schema.entity(type(obj))

    # ------------------------------------------------------------------ indices

    def ensure_indices(self) -> dict[str, str]:
        """Create or migrate every entity's index; returns ``{alias: concrete index}``.

        Idempotent: a second call with the same IDL changes nothing.
        """
        return {
            self.alias(name): self._ensure_index(entity)
            for name, entity in self.schema.entities.items()
        }

    def _index_settings(self) -> dict:
        return {"number_of_shards": 1, "number_of_replicas": self.number_of_replicas}

    def _ensure_index(self, entity: sch.Entity) -> str:
        alias = f"{self.prefix}-{entity.index}"
        target = f"{alias}-v{entity.mapping_hash}"
        self._call(
            lambda: self.client.indices.put_index_template(
                name=alias,
                index_patterns=[f"{alias}-v*"],
                template={
                    "settings": self._index_settings(),
                    "mappings": {"dynamic": "strict", **entity.mapping},
                },
                meta={"entity": entity.name, "mapping_hash": entity.mapping_hash},
                priority=100,
            )
        )
        current = self._alias_targets(alias)
        if current == [target]:
            return target
        if not current:
            try:
                self._call(
                    lambda: self.client.indices.create(
                        index=target, aliases={alias: {"is_write_index": True}}
                    )
                )
            except ApiError as exc:
                if exc.error != "resource_already_exists_exception":
                    raise
                self._call(lambda: self.client.indices.put_alias(index=target, name=alias))
            return target
        # The IDL changed: copy into the new index, then swap the alias in one atomic step.
        if not self._call(lambda: self.client.indices.exists(index=target)):
            self._call(lambda: self.client.indices.create(index=target))
        for old in current:
            self._call(lambda old=old: self._copy_index(old, target))
        self._call(lambda: self.client.indices.refresh(index=target))
        actions = [{"remove": {"index": old, "alias": alias}} for old in current]
        actions.append({"add": {"index": target, "alias": alias, "is_write_index": True}})
        self._call(lambda: self.client.indices.update_aliases(actions=actions))
        for old in current:
            self._call(lambda old=old: self.client.indices.delete(index=old))
        return target

    def _copy_index(self, source: str, target: str) -> None:
        """Copy every document with the scan and bulk helpers.

        (``helpers.reindex`` probes the data-stream API, which the minimal distribution lacks.)
        """
        documents = helpers.scan(self.client, index=source, size=1000, preserve_order=False)
        helpers.bulk(
            self.client,
            ({"_index": target, "_id": d["_id"], "_source": d["_source"]} for d in documents),
            chunk_size=1000,
        )

    def _alias_targets(self, alias: str) -> list[str]:
        try:
            found = self._call(lambda: self.client.indices.get_alias(name=alias))
        except NotFoundError:
            return []
        return sorted(found.body)

    def refresh(self, entity: str | type | None = None) -> None:
        """Make recent writes visible to search (tests, catalog after bulk loads): of one
        entity's index, or of every index of this prefix."""
        index = self.alias(entity) if entity is not None else f"{self.prefix}-*"
        self._call(lambda: self.client.indices.refresh(index=index, ignore_unavailable=True))

    def drop_all(self) -> None:
        """Delete every index and template of this prefix (tests, local reset)."""
        self._call(
            lambda: self.client.indices.delete(index=f"{self.prefix}-*", ignore_unavailable=True)
        )
        for entity in self.schema.entities.values():
            with contextlib.suppress(NotFoundError):
                self._call(
                    lambda e=entity: self.client.indices.delete_index_template(
                        name=f"{self.prefix}-{e.index}"
                    )
                )

    # ------------------------------------------------------------------ single documents

    def create(self, obj: Any, *, refresh: bool = False) -> Stored:
        """Write a new document; :class:`AlreadyExists` if its id is taken."""
        entity = self._entity_of(obj)
        document = sch.to_document(obj)
        try:
            answer = self._call(
                lambda: self.client.create(
                    index=self.alias(entity.name),
                    id=obj.id,
                    document=document,
                    refresh="wait_for" if refresh else None,
                )
            )
        except ConflictError:
            raise AlreadyExists(entity.name, obj.id) from None
        except ApiError as exc:
            if exc.meta.status != 400:
                raise
            # a value the index cannot hold (a date it cannot parse, a term over 32 kB …)
            raise SchemaViolation(entity.name, _query_problem(exc, "store")) from None
        return Stored(obj, answer["_seq_no"], answer["_primary_term"])

    def get(self, cls: type, doc_id: str) -> Stored:
        entity = self.schema.entity(cls)
        if not doc_id:  # the client refuses an empty id before asking
            raise DocumentNotFound(entity.name, doc_id)
        try:
            answer = self._call(lambda: self.client.get(index=self.alias(entity.name), id=doc_id))
        except NotFoundError:
            raise DocumentNotFound(entity.name, doc_id) from None
        doc = sch.from_document(entity.cls, answer["_source"])
        return Stored(doc, answer["_seq_no"], answer["_primary_term"])

    def exists(self, cls: type, doc_id: str) -> bool:
        entity = self.schema.entity(cls)
        if not doc_id:
            return False
        return bool(
            self._call(lambda: self.client.exists(index=self.alias(entity.name), id=doc_id))
        )

    def update(
        self,
        obj: Any,
        expected: Stored | tuple[int, int] | None,
        *,
        refresh: bool = False,
    ) -> Stored:
        """Replace a document that must still be at version ``expected`` (from :meth:`get`).

        ``expected=None`` creates or overwrites unconditionally (used for idempotent upserts of
        derived records such as spectra partitions).
        """
        entity = self._entity_of(obj)
        if entity.name == "ParameterSet":
            raise ImmutableDocument(f"parameter set {obj.id!r} is immutable; save a new version")
        document = sch.to_document(obj)
        condition: dict[str, int] = {}
        if expected is not None:
            seq_no, term = (
                (expected.seq_no, expected.primary_term)
                if isinstance(expected, Stored)
                else expected
            )
            condition = {"if_seq_no": seq_no, "if_primary_term": term}
        try:
            answer = self._call(
                lambda: self.client.index(
                    index=self.alias(entity.name),
                    id=obj.id,
                    document=document,
                    refresh="wait_for" if refresh else None,
                    **condition,
                )
            )
        except ConflictError:
            raise VersionConflict(
                entity.name, obj.id, "changed by someone else since it was read; read it again"
            ) from None
        return Stored(obj, answer["_seq_no"], answer["_primary_term"])

    def modify(
        self, cls: type, doc_id: str, change: Callable[[Any], None], *, attempts: int = 8
    ) -> Stored:
        """Read-modify-write with optimistic concurrency, retried on conflicts."""
        for _ in range(attempts):
            stored = self.get(cls, doc_id)
            change(stored.doc)
            try:
                return self.update(stored.doc, stored)
            except VersionConflict:
                continue
        raise VersionConflict(cls.__name__, doc_id, f"still conflicting after {attempts} attempts")

    def delete(self, cls: type, doc_id: str, expected: Stored | None = None) -> None:
        entity = self.schema.entity(cls)
        if entity.name == "ParameterSet":
            raise ImmutableDocument(f"parameter set {doc_id!r} is immutable and is never deleted")
        condition = (
            {"if_seq_no": expected.seq_no, "if_primary_term": expected.primary_term}
            if expected
            else {}
        )
        if not doc_id:
            raise DocumentNotFound(entity.name, doc_id)
        try:
            self._call(
                lambda: self.client.delete(index=self.alias(entity.name), id=doc_id, **condition)
            )
        except NotFoundError:
            raise DocumentNotFound(entity.name, doc_id) from None
        except ConflictError:
            raise VersionConflict(entity.name, doc_id, "changed since it was read") from None

    # ------------------------------------------------------------------ bulk

    def bulk_put(
        self,
        objs: Iterable[Any],
        *,
        chunk_size: int = 1000,
        refresh: bool = False,
        create_only: bool = False,
    ) -> BulkResult:
        """Write many documents with the client's bulk helper.

        Every document is validated before anything is sent: one invalid document means
        nothing is written and :class:`SchemaViolation` names it. Documents Elasticsearch then
        refuses are listed in ``BulkResult.failed``; the others are written.
        """
        actions = []
        for position, obj in enumerate(objs):
            entity = self._entity_of(obj)
            if entity.name == "ParameterSet" and not create_only:
                raise ImmutableDocument("parameter sets are written with save_parameter_set")
            try:
                document = sch.to_document(obj)
            except SchemaViolation as exc:
                raise SchemaViolation(
                    f"[{position}] {exc.field}", f"{exc.message} (nothing was written)"
                ) from None
            actions.append(
                {
                    "_op_type": "create" if create_only else "index",
                    "_index": self.alias(entity.name),
                    "_id": obj.id,
                    "_source": document,
                }
            )
        result = BulkResult()
        stream = helpers.streaming_bulk(
            self.client,
            actions,
            chunk_size=chunk_size,
            raise_on_error=False,
            raise_on_exception=False,
            max_retries=self.attempts,
            initial_backoff=self.backoff_s,
            refresh="wait_for" if refresh else False,
        )
        try:
            for ok, item in stream:
                if ok:
                    result.succeeded += 1
                else:
                    (answer,) = item.values()
                    error = answer.get("error", answer.get("exception", "unknown error"))
                    reason = (
                        error.get("reason", str(error)) if isinstance(error, dict) else str(error)
                    )
                    result.failed.append(
                        FailedDocument(str(answer.get("_id")), answer.get("status", 0), reason)
                    )
        except (ESConnectionError, ESConnectionTimeout) as exc:
            written = result.succeeded
            raise StoreUnavailable(
                f"Elasticsearch at {self.url} became unreachable after {written} of "
                f"{len(actions)} documents were written: {exc}"
            ) from exc
        return result

    # ------------------------------------------------------------------ search

    def _field(self, cls: type, path: str) -> FieldInfo:
        return sch.field_info(cls, path)

    def _filter_clause(self, cls: type, path: str, value: Any) -> tuple[FieldInfo, dict]:
        info = self._field(cls, path)
        if info.es_type in ("object", "nested"):
            raise SchemaViolation(path, "filter on one of its fields, e.g. f'{path}.<field>'")

        def check(item: Any) -> Any:
            if info.enum is not None:
                if item not in info.enum._NAMES_TO_VALUES:
                    choices = ", ".join(info.enum._VALUES_TO_NAMES.values())
                    raise SchemaViolation(
                        path, f"unknown {info.enum.__name__} value {item!r} (one of {choices})"
                    )
                return item
            if info.es_type in ("double", "long", "integer", "short", "byte"):
                try:
                    number = float(item)
                except (TypeError, ValueError):
                    raise SchemaViolation(path, f"expected a number, got {item!r}") from None
                if not math.isfinite(number):
                    raise SchemaViolation(path, f"expected a finite number, got {item!r}")
                return number
            if info.es_type == "date" and isinstance(item, str) and not _is_date(item):
                raise SchemaViolation(
                    path, f"expected a date like 2024-05-31 or now-7d/d, got {str(item)[:40]!r}"
                )
            if info.es_type == "boolean" and not isinstance(item, bool):
                raise SchemaViolation(path, f"expected true/false, got {item!r}")
            return item

        if isinstance(value, Mapping):
            unknown = set(value) - {"gte", "gt", "lte", "lt"}
            if unknown:
                raise SchemaViolation(
                    path, f"unknown range bound(s) {sorted(unknown)}; use gte/gt/lte/lt"
                )
            bounds = {k: check(v) for k, v in value.items() if v is not None}
            return info, {"range": {path: bounds}}
        if isinstance(value, list | tuple | set):
            return info, {"terms": {path: [check(v) for v in value]}}
        return info, {"term": {path: check(value)}}

    def build_query(self, cls: type, text: str | None, filters: Mapping[str, Any] | None) -> dict:
        """The Elasticsearch query for full text + filters on schema paths.

        Filters on fields inside the same nested list (e.g. a parameter set's ``values``) are
        combined in one nested query, so they must match the same list element.
        """
        must: list[dict] = []
        clauses: list[dict] = []
        nested: dict[str, list[dict]] = {}
        if text:
            fields = sch.text_fields(cls)
            must.append({"multi_match": {"query": text, "fields": fields, "operator": "and"}})
        for path, value in (filters or {}).items():
            info, clause = self._filter_clause(cls, path, value)
            if info.nested_path:
                nested.setdefault(info.nested_path, []).append(clause)
            else:
                clauses.append(clause)
        for nested_path, inner in nested.items():
            clauses.append({"nested": {"path": nested_path, "query": {"bool": {"filter": inner}}}})
        if not must and not clauses:
            return {"match_all": {}}
        return {"bool": {"must": must, "filter": clauses}}

    def _facet_aggs(self, cls: type, facets: Sequence[str]) -> dict:
        aggs = {}
        for path in facets:
            info = self._field(cls, path)
            if info.es_type in ("object", "nested", "text"):
                raise SchemaViolation(path, "facets need a keyword, enum, number or date field")
            terms = {"terms": {"field": path, "size": 50}}
            aggs[path] = (
                {"nested": {"path": info.nested_path}, "aggs": {"values": terms}}
                if info.nested_path
                else terms
            )
        return aggs

    def search(
        self,
        cls: type,
        *,
        text: str | None = None,
        filters: Mapping[str, Any] | None = None,
        facets: Sequence[str] = (),
        sort: Sequence[str | tuple[str, bool]] = (),
        page_size: int = 20,
        page_token: str | None = None,
    ) -> SearchPage:
        """One page of matching documents, facet counts and a token for the next page.

        ``sort`` items are schema paths or ``(path, descending)``; ``id`` is always the final
        tie-breaker so ``search_after`` paging is stable beyond 10,000 hits.
        """
        entity = self.schema.entity(cls)
        if not 1 <= page_size <= 10_000:
            raise SchemaViolation("page_size", f"must be between 1 and 10000, got {page_size}")
        sort_clause = []
        for item in sort:
            path, descending = (item, False) if isinstance(item, str) else item
            info = self._field(cls, path)
            if info.nested_path or info.es_type in ("object", "nested"):
                raise SchemaViolation(path, "cannot sort on a nested or object field")
            sort_clause.append({path: {"order": "desc" if descending else "asc"}})
        if text and not sort_clause:
            sort_clause.append({"_score": {"order": "desc"}})
        sort_clause.append({"id": {"order": "asc"}})
        body: dict[str, Any] = {
            "query": self.build_query(cls, text, filters),
            "sort": sort_clause,
            "size": page_size,
            "track_total_hits": True,
        }
        if facets:
            body["aggs"] = self._facet_aggs(cls, facets)
        if page_token:
            body["search_after"] = _decode_token(page_token)
        try:
            answer = self._call(lambda: self.client.search(index=self.alias(entity.name), **body))
        except NotFoundError:  # a fresh cluster: nothing was ever written, nothing matches
            return SearchPage([], 0, {}, None, page_token)
        except ApiError as exc:
            if exc.meta.status != 400:
                raise
            raise SchemaViolation("query", _query_problem(exc)) from None
        hits = answer["hits"]["hits"]
        docs = [sch.from_document(entity.cls, hit["_source"]) for hit in hits]
        total = answer["hits"]["total"]["value"]
        facet_counts = {}
        for path, agg in (answer.get("aggregations") or {}).items():
            buckets = agg["values"]["buckets"] if "values" in agg else agg["buckets"]
            facet_counts[path] = [
                (str(b.get("key_as_string", b["key"])), int(b["doc_count"])) for b in buckets
            ]
        cursor = _encode_token(hits[-1]["sort"]) if hits else page_token
        next_token = cursor if len(hits) == page_size else None
        return SearchPage(docs, total, facet_counts, next_token, cursor)

    def scan(
        self,
        cls: type,
        *,
        text: str | None = None,
        filters: Mapping[str, Any] | None = None,
        batch_size: int = 1000,
        keep_alive: str = "2m",
    ) -> Iterator[Any]:
        """Every matching document, in a consistent snapshot (point in time + search_after)."""
        entity = self.schema.entity(cls)
        pit = self._call(
            lambda: self.client.open_point_in_time(
                index=self.alias(entity.name), keep_alive=keep_alive
            )
        )["id"]
        try:
            search_after = None
            while True:
                body: dict[str, Any] = {
                    "query": self.build_query(cls, text, filters),
                    "sort": [{"_shard_doc": "asc"}],
                    "size": batch_size,
                    "pit": {"id": pit, "keep_alive": keep_alive},
                }
                if search_after is not None:
                    body["search_after"] = search_after
                answer = self._call(lambda body=body: self.client.search(**body))
                pit = answer.get("pit_id", pit)
                hits = answer["hits"]["hits"]
                for hit in hits:
                    yield sch.from_document(entity.cls, hit["_source"])
                if len(hits) < batch_size:
                    return
                search_after = hits[-1]["sort"]
        finally:
            with contextlib.suppress(ApiError, ESConnectionError):
                self.client.close_point_in_time(id=pit)

    # ------------------------------------------------------------------ parameter sets

    def save_parameter_set(
        self,
        name: str,
        values: Mapping[str, Mapping[str, Any]],
        *,
        author: str,
        comment: str | None = None,
    ) -> Any:
        """Validate, hash and save a parameter set: :func:`em2q_resources.parameter_sets.save`
        (the one home of those rules; this method is a shortcut for callers holding a store)."""
        from em2q_resources import parameter_sets

        return parameter_sets.save(self, name, values, author=author, comment=comment)

    def parameter_sets(self, name: str) -> list[Any]:
        """Every saved version of ``name``, oldest first (real-time reads, no refresh needed)."""
        found = []
        alias = self.alias("ParameterSet")
        version = 1
        while True:
            ids = [f"{name}@v{v}" for v in range(version, version + 16)]
            answer = self._call(lambda ids=ids: self.client.mget(index=alias, ids=ids))
            docs = [d for d in answer["docs"] if d.get("found")]
            found += [sch.from_document(self.schema.ParameterSet, d["_source"]) for d in docs]
            if len(docs) < len(ids):
                return found
            version += 16

    def get_parameter_set(self, name_or_id: str) -> Any:
        """A parameter set by id (``name@vN``) or the newest version of a name."""
        if "@v" in name_or_id:
            return self.get(self.schema.ParameterSet, name_or_id).doc
        versions = self.parameter_sets(name_or_id)
        if not versions:
            raise DocumentNotFound("ParameterSet", name_or_id)
        return versions[-1]


# ---------------------------------------------------------------------- helpers


def _encode_token(sort_values: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(sort_values).encode()).decode()


def _decode_token(token: str) -> list:
    try:
        values = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, UnicodeError):
        raise SchemaViolation("page_token", "not a token this store handed out") from None
    if not isinstance(values, list) or not all(
        isinstance(v, str | int | float | bool) or v is None for v in values
    ):
        raise SchemaViolation("page_token", "not a token this store handed out")
    return values


_DATE_MATH = re.compile(r"^now([+-]\d{1,5}[yMwdhHms])*(/[yMwdhHms])?$")


def _is_date(text: str) -> bool:
    """An ISO date or date-time, optionally with Elasticsearch date math after ``||``
    (``2024-05-31||/d``), or date math from ``now`` (``now-7d/d``)."""
    anchor, _, math_part = text.partition("||")
    if math_part and not _DATE_MATH.match("now" + math_part):
        return False
    if _DATE_MATH.match(anchor):
        return not math_part
    try:
        (date if len(anchor) <= 10 else datetime).fromisoformat(anchor)
    except ValueError:
        return False
    return True


def _credentials_problem(url: str, exc: ApiError) -> str:
    reason = exc.message
    if isinstance(exc.body, dict) and isinstance(exc.body.get("error"), dict):
        reason = exc.body["error"].get("reason") or reason
    what = "refused the credentials" if exc.meta.status == 401 else "refused this user"
    return (
        f"Elasticsearch at {url} {what} ({exc.meta.status}: {reason}). Set "
        "EM2Q_ELASTICSEARCH_USERNAME and EM2Q_ELASTICSEARCH_PASSWORD, or EM2Q_ELASTICSEARCH_API_KEY, "
        "to an account of that cluster with rights on the EM2Q indices."
    )


def _query_problem(exc: ApiError, doing: str = "search") -> str:
    """What Elasticsearch refused in a search (too many clauses, a date it cannot parse …),
    as one line a user can act on."""
    reasons: list[str] = []

    def collect(error: Any) -> None:
        if isinstance(error, dict):
            for key in ("reason",):
                if isinstance(error.get(key), str) and error[key] not in reasons:
                    reasons.append(error[key])
            for key in ("caused_by", "root_cause", "failed_shards"):
                inner = error.get(key)
                for item in inner if isinstance(inner, list) else [inner]:
                    collect(
                        item.get("reason") if isinstance(item, dict) and "shard" in item else item
                    )

    body = exc.body if isinstance(exc.body, dict) else {}
    collect(body.get("error"))
    text = "; ".join(r for r in reasons if r != "all shards failed")[:300] or str(exc.message)
    if "maxClauseCount" in text or "too_many" in text.lower() or "too many" in text.lower():
        return f"the {doing} is too large for the catalog (use fewer words or values): {text}"
    return f"the catalog cannot {doing} this: {text}"
