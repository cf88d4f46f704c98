"""The Thrift ``MetadataService`` on top of :class:`MetadataStore`, for tools in other languages.

Java, R or JavaScript programs generate their client from ``thrift/em2q.thrift`` and talk to
this server with the binary protocol over a buffered transport (the Thrift defaults). The
structs on the wire are the very classes the store reads and writes (``thriftpy2`` loads the
same IDL), so the handler mostly passes them through; its work is at the surface:

* store errors become the exceptions the IDL declares (``SchemaViolation`` →
  ``InvalidDocument`` naming the field, ``DocumentNotFound`` → ``NotFound``,
  ``VersionConflict``/``AlreadyExists`` → ``VersionConflict``, ``StoreUnavailable`` →
  ``StoreUnavailable``); an error an operation does not declare reaches the client as a
  ``TApplicationException`` with the message, never as a dropped connection;
* ``SearchRequest`` becomes a :meth:`MetadataStore.search` call and its page a
  ``MeasurementPage``;
* object-level rules come from :mod:`em2q_resources.policy` (owners, platform-owned fields,
  run records, file URIs only in ``storage``, the signed-in user as author);
* roles (:mod:`em2q_resources.auth`) are enforced per connection: with token (or header) auth a
  connection calls ``login(token)`` first and then acts as that user until it closes; in local
  mode it acts as the local user. A refused or unauthenticated call raises ``Forbidden`` with a
  message naming the user, their role, the action and the role it needs.

``make_server`` binds a threaded server (one thread per connection, so several clients can be
connected at once) and returns it; ``serve`` runs one until interrupted (``em2q metadata-serve``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import signal
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from thriftpy2.protocol import TBinaryProtocolFactory
from thriftpy2.server import TThreadedServer
from thriftpy2.thrift import TApplicationException, TProcessor
from thriftpy2.transport import TBufferedTransportFactory, TServerSocket, TTransportException

from em2q_resources import parameter_sets, policy
from em2q_resources.auth import Action, Authenticator, AuthError, User, require
from em2q_resources.metadata.errors import (
    DocumentNotFound,
    MetadataError,
    StoreUnavailable,
    VersionConflict,
)
from em2q_resources.metadata.schema import SchemaViolation, check_identifier, utc_now, validate
from em2q_resources.storage import StorageResource, UnsafeKey

if TYPE_CHECKING:
    from em2q_resources.metadata.store import MetadataStore

logger = logging.getLogger(__name__)

WORKFLOW_RUN_PAGE = 1000


def _thrift_errors(method: Callable) -> Callable:
    """Turn store errors into the exceptions the IDL declares for ``method``."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: MetadataServiceHandler, *args: Any) -> Any:
        try:
            return method(self, *args)
        except Exception as exc:
            raise self._to_thrift(name, exc) from exc

    return wrapper


class MetadataServiceHandler:
    """Implements every operation of ``service MetadataService`` with a :class:`MetadataStore`.

    One handler per connection (:meth:`for_connection`): ``user`` is who that connection acts as.
    """

    def __init__(
        self,
        store: MetadataStore,
        authenticator: Authenticator | None = None,
        storage: StorageResource | None = None,
    ) -> None:
        self.store = store
        self.storage = storage  # file URIs must lie in it; None: no file URIs are accepted
        self.schema = store.schema
        self.service = store.schema.module.MetadataService
        self.authenticator = authenticator or Authenticator()
        self.user: User | None = self.authenticator.default_user

    def for_connection(self) -> MetadataServiceHandler:
        """A handler for a new connection: shares the store, starts signed out (or local)."""
        handler = copy.copy(self)
        handler.user = self.authenticator.default_user
        return handler

    def _allow(self, action: Action) -> None:
        require(self.user, action)

    # ------------------------------------------------------------------ errors

    def _to_thrift(self, operation: str, exc: Exception) -> Exception:
        s = self.schema
        if isinstance(exc, TApplicationException):
            return exc
        if isinstance(exc, AuthError):
            mapped: Exception = s.Forbidden(message=str(exc))
        elif isinstance(exc, SchemaViolation):
            mapped = s.InvalidDocument(field=exc.field, message=exc.message)
        elif isinstance(exc, UnsafeKey):
            mapped = s.InvalidDocument(field="uri", message=str(exc))
        elif isinstance(exc, parameter_sets.InvalidParameterSet):
            field = exc.field if exc.field == "values" else f"values.{exc.field}"
            mapped = s.InvalidDocument(field=field, message=str(exc))
        elif isinstance(exc, DocumentNotFound):
            mapped = s.NotFound(entity=exc.entity, id=exc.doc_id)
        elif isinstance(exc, VersionConflict):
            mapped = s.VersionConflict(id=exc.doc_id, message=str(exc))
        elif isinstance(exc, StoreUnavailable):
            mapped = s.StoreUnavailable(message=str(exc))
        elif isinstance(exc, s.InvalidDocument | s.NotFound | s.VersionConflict | s.Forbidden):
            mapped = exc
        else:
            if not isinstance(exc, MetadataError):
                logger.exception("MetadataService.%s failed", operation)
            return TApplicationException(
                TApplicationException.INTERNAL_ERROR,
                f"{operation}: {type(exc).__name__}: {exc}",
            )
        if isinstance(mapped, self._declared(operation)):
            return mapped
        return TApplicationException(
            TApplicationException.INTERNAL_ERROR, f"{operation}: {type(mapped).__name__}: {exc}"
        )

    def _declared(self, operation: str) -> tuple[type, ...]:
        """The exception classes the IDL lets ``operation`` throw."""
        result = getattr(self.service, f"{operation}_result")
        return tuple(spec[2] for spec in result.thrift_spec.values() if spec[1] != "success")

    def _invalid(self, field: str, message: str) -> Exception:
        return self.schema.InvalidDocument(field=field, message=message)

    # ------------------------------------------------------------------ operations

    def ping(self) -> str:
        return "em2q-metadata"

    @_thrift_errors
    def login(self, token: str) -> Any:
        """Act as the token's user for the rest of this connection."""
        self.user = self.authenticator.user_for_token(token or "")
        return self.schema.Principal(user=self.user.name, role=str(self.user.role))

    @_thrift_errors
    def createMeasurement(self, measurement: Any) -> Any:
        """Register a measurement as the signed-in user (its owner); files only in storage."""
        self._allow(Action.UPLOAD)
        self._require(measurement, "measurement")
        validate(measurement)  # the id grammar and string rules before the policy reads it
        policy.check_new_measurement(self.user, measurement, self.storage)
        return self.store.create(measurement).doc

    @_thrift_errors
    def getMeasurement(self, id: str) -> Any:
        self._allow(Action.READ)
        return self._stored(self.store.get(self.schema.Measurement, id))

    @_thrift_errors
    def updateMeasurement(self, measurement: Any, expected: Any) -> Any:
        self._allow(Action.UPLOAD)
        self._require(measurement, "measurement")
        if expected is None or expected.seq_no is None or expected.primary_term is None:
            raise self._invalid(
                "expected", "the DocumentVersion from getMeasurement is required for an update"
            )
        validate(measurement)
        before = self.store.get(self.schema.Measurement, measurement.id).doc
        policy.check_measurement_change(self.user, before, measurement)
        policy.check_file_locations(measurement, self.storage)
        stored = self.store.update(measurement, (expected.seq_no, expected.primary_term))
        return self._stored(stored)

    @_thrift_errors
    def deleteMeasurement(self, id: str) -> None:
        self._allow(Action.DELETE)
        from em2q.client import delete_measurement  # the one delete path

        # the metadata service removes the catalog's records (document, run records, QC trend
        # records, ROIs, m/z search documents); its storage only vets file URIs, so the files
        # are left to `em2q delete`, the web page or the client, which remove them too
        delete_measurement(self.store, None, id, self.user)

    @_thrift_errors
    def searchMeasurements(self, request: Any) -> Any:
        self._allow(Action.READ)
        s = self.schema
        request = request or s.SearchRequest()
        filters: dict[str, Any] = {}
        for position, item in enumerate(request.filters or []):
            field = f"filters[{position}]"
            if not item.field:
                raise self._invalid(f"{field}.field", "a dotted schema path is required")
            if item.field in filters:
                raise self._invalid(field, f"{item.field!r} is filtered twice; use one Filter")
            has_range = item.gte is not None or item.lte is not None
            if item.terms is not None and has_range:
                raise self._invalid(field, "give either terms or a gte/lte range, not both")
            if item.terms is not None:
                filters[item.field] = list(item.terms)
            elif has_range:
                filters[item.field] = {
                    bound: value
                    for bound, value in (("gte", item.gte), ("lte", item.lte))
                    if value is not None
                }
            else:
                raise self._invalid(field, "give terms or a gte/lte range")
        sort = [(item.field, bool(item.descending)) for item in request.sort or []]
        page = self.store.search(
            s.Measurement,
            text=request.text or None,
            filters=filters,
            facets=list(request.facets or []),
            sort=sort,
            page_size=20 if request.page_size is None else request.page_size,
            page_token=request.page_token or None,
        )
        facets = {
            path: [s.FacetBucket(value=value, count=count) for value, count in buckets]
            for path, buckets in page.facets.items()
        }
        return s.MeasurementPage(
            hits=page.hits,
            total=page.total,
            facets=facets,
            next_page_token=page.next_page_token,
        )

    @_thrift_errors
    def saveParameterSet(
        self, name: str, values: list[Any], author: str, comment: str | None
    ) -> Any:
        self._allow(Action.SAVE_PARAMETER_SET)
        author = policy.parameter_set_author(self.user)  # the signed-in user, whatever is sent
        check_identifier(name, "ParameterSet.name")
        if not values:
            raise self._invalid("values", "at least one ParameterValue is required")
        for position, value in enumerate(values):
            given = [f for f in ("number", "text", "numbers") if getattr(value, f) is not None]
            if not value.step or not value.name:
                raise self._invalid(f"values[{position}]", "step and name are required")
            if len(given) != 1:
                raise self._invalid(
                    f"values[{position}]",
                    f"{value.step}.{value.name}: set exactly one of number, text, numbers "
                    f"(got {', '.join(given) or 'none'})",
                )
        as_dict = parameter_sets.values_from_documents(values)
        # the one check, the one hash: InvalidParameterSet becomes InvalidDocument naming it
        return parameter_sets.save(
            self.store, name, as_dict, author=author, comment=comment or None
        )

    @_thrift_errors
    def getParameterSet(self, id: str) -> Any:
        self._allow(Action.READ)
        return self.store.get_parameter_set(id)

    @_thrift_errors
    def listParameterSets(self, name: str) -> list[Any]:
        self._allow(Action.READ)
        return self.store.parameter_sets(name)

    @_thrift_errors
    def recordWorkflowRun(self, run: Any) -> Any:
        """Create or replace a run's record (runs are recorded again as their status moves)."""
        policy.may_record_workflow_run(self.user)
        self._require(run, "run")
        return self.store.update(run, None).doc

    @_thrift_errors
    def workflowRunsOf(self, measurement_id: str) -> list[Any]:
        """Every run of a measurement, oldest first, including runs recorded just now."""
        self._allow(Action.READ)
        self.store.refresh()
        runs: list[Any] = []
        token = None
        while True:
            page = self.store.search(
                self.schema.WorkflowRun,
                filters={"measurement_id": measurement_id},
                sort=["started_at"],
                page_size=WORKFLOW_RUN_PAGE,
                page_token=token,
            )
            runs += page.hits
            token = page.next_page_token
            if token is None:
                return runs

    @_thrift_errors
    def publishWorkflow(self, workflow: Any) -> Any:
        """Make a code-defined workflow startable by technicians; recorded as the signed-in user."""
        self._allow(Action.PUBLISH_WORKFLOW)
        self._require(workflow, "workflow")
        if not workflow.name or not workflow.assets:
            raise self._invalid("workflow", "a name and at least one asset are required")
        workflow.id = workflow.name
        workflow.published_by = self.user.name
        workflow.published_at = utc_now()
        return self.store.update(workflow, None, refresh=True).doc

    @_thrift_errors
    def listWorkflows(self) -> list[Any]:
        """Every published workflow, by name."""
        self._allow(Action.READ)
        return self.store.search(self.schema.Workflow, sort=["name"], page_size=1000).hits

    # ------------------------------------------------------------------ helpers

    def _require(self, value: Any, field: str) -> None:
        if value is None:
            raise self._invalid(field, "required argument is missing")

    def _stored(self, stored: Any) -> Any:
        s = self.schema
        version = s.DocumentVersion(seq_no=stored.seq_no, primary_term=stored.primary_term)
        return s.StoredMeasurement(measurement=stored.doc, version=version)


class MetadataServer(TThreadedServer):
    """A threaded Thrift server that is bound on creation and stops cleanly on :meth:`close`.

    Binary protocol over a buffered transport, one daemon thread per connection. Client
    connections have no idle timeout (a tool may hold one open); :meth:`close` shuts the
    listening socket and every open connection down, so :meth:`serve` returns.
    """

    def __init__(self, handler: MetadataServiceHandler, host: str, port: int) -> None:
        server_socket = TServerSocket(host=host, port=port, client_timeout=None)
        super().__init__(
            TProcessor(handler.service, handler),
            server_socket,
            iprot_factory=TBinaryProtocolFactory(),
            itrans_factory=TBufferedTransportFactory(),
            daemon=True,
        )
        self.handler = handler
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.trans.listen()
        self.host, self.port = self.trans.sock.getsockname()[:2]

    def serve(self) -> None:
        while not self.closed:
            try:
                client = self.trans.accept()
            except Exception:
                if self.closed:
                    break
                logger.exception("accepting a Thrift connection failed")
                continue
            threading.Thread(
                target=self.handle, args=(client,), name="em2q-thrift-connection", daemon=True
            ).start()

    def handle(self, client: Any) -> None:
        """Serve one connection with a handler of its own (who it is signed in as)."""
        with self._lock:
            self._connections.add(client.sock)
        processor = TProcessor(self.handler.service, self.handler.for_connection())
        itrans = self.itrans_factory.get_transport(client)
        otrans = self.otrans_factory.get_transport(client)
        iprot = self.iprot_factory.get_protocol(itrans)
        oprot = self.oprot_factory.get_protocol(otrans)
        try:
            while True:
                processor.process(iprot, oprot)
        except TTransportException:
            pass
        except Exception:
            logger.exception("a Thrift connection failed")
        finally:
            itrans.close()
            otrans.close()
            with self._lock:
                self._connections.discard(client.sock)

    def close(self) -> None:
        self.closed = True
        self.trans.close()  # shutdown() wakes the blocked accept()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def make_server(
    store: MetadataStore,
    host: str = "127.0.0.1",
    port: int = 0,
    authenticator: Authenticator | None = None,
    storage: StorageResource | None = None,
) -> MetadataServer:
    """A ``MetadataService`` server bound to ``host:port`` (``0``: a free port, see ``.port``).

    ``authenticator`` decides who connections act as (default: the local admin, no login).
    ``storage`` is the platform's storage: file URIs of measurements must lie in it (``None``:
    measurements with files are refused). Call ``serve()`` (blocking, e.g. in a thread) to
    answer clients and ``close()`` to stop.
    """
    return MetadataServer(MetadataServiceHandler(store, authenticator, storage), host, port)


def serve(
    store: MetadataStore,
    host: str = "127.0.0.1",
    port: int = 9090,
    *,
    ready: Callable[[MetadataServer], None] | None = None,
    authenticator: Authenticator | None = None,
    storage: StorageResource | None = None,
) -> None:
    """Serve ``MetadataService`` until interrupted (Ctrl-C or SIGTERM)."""
    server = make_server(store, host, port, authenticator, storage)
    if ready is not None:
        ready(server)

    def stop(signum: int, frame: Any) -> None:
        server.close()

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
