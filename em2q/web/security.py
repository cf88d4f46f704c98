"""Cross-site request forgery protection and security headers for the web catalog.

In local mode every browser on the machine is the admin, so any page the user visits could
otherwise post a form to the catalog (save a parameter set, delete a measurement). Three
defences, each enough on its own against a browser:

* **Origin check**: an unsafe request (POST, PUT, PATCH, DELETE) whose ``Origin`` (or, without
  one, ``Referer``) is not the catalog's own origin, or that the browser marks
  ``Sec-Fetch-Site: cross-site``, is refused.
* **Double-submit token**: the catalog sets a signed random token in a ``SameSite=Strict``,
  ``HttpOnly`` cookie; every unsafe request must repeat it in the ``X-CSRF-Token`` header or in a
  ``csrf_token`` form field (before any file part of a multipart form). Signing is itsdangerous'
  (the library Flask and Starlette's sessions use), so a token planted by someone without the
  secret is refused.
* **Headers** on every response: a Content-Security-Policy without inline scripts and with
  ``frame-ancestors 'none'``, ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: same-origin``.

Requests that carry ``Authorization: Bearer`` are exempt from the token (a browser never sends
that header cross-site by itself); the Origin check still applies.

Templates get the token from :func:`csrf_input` (``{{ csrf_input() }}`` in any form) or
:func:`csrf_token` (``<meta name="csrf-token">`` in ``base.html``, read by the page scripts).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from itsdangerous import BadSignature, URLSafeSerializer
from jinja2 import pass_context
from markupsafe import Markup, escape
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from em2q.web.uploads import multipart_parser

COOKIE_NAME = "em2q_csrf"
HEADER_NAME = "x-csrf-token"
FORM_FIELD = "csrf_token"
SCOPE_KEY = "em2q.csrf_token"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
#: the most of a form body read to find the token (a urlencoded form; a multipart prefix)
MAX_TOKEN_SEARCH_BYTES = 1024 * 1024

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Refuse = Callable[[Scope, Receive, Send, str], Awaitable[None]]


class _TokenFound(Exception):
    pass


class _FileFirst(Exception):
    pass


class CSRFMiddleware:
    """ASGI middleware: Origin check and double-submit token on unsafe methods, security
    headers on every response. ``refuse(scope, receive, send, message)`` answers a refusal
    (the app renders its 403 page)."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        secret: str,
        refuse: Refuse,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.signer = URLSafeSerializer(secret, salt="em2q-csrf")
        self.refuse = refuse
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins if o}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        token = self._cookie_token(headers)
        set_cookie = token is None
        if token is None:
            token = self.signer.dumps(secrets.token_urlsafe(24))
        scope = {**scope, SCOPE_KEY: token}
        secure = scope.get("scheme") == "https"

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                extra = list(SECURITY_HEADERS)
                if set_cookie:
                    cookie = f"{COOKIE_NAME}={token}; Path=/; SameSite=Strict; HttpOnly"
                    extra.append(
                        (b"set-cookie", (cookie + ("; Secure" if secure else "")).encode())
                    )
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        if scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send_with_headers)
            return
        problem = self._origin_problem(scope, headers)
        if problem:
            await self.refuse(scope, receive, send_with_headers, problem)
            return
        if headers.get("authorization", "").startswith("Bearer "):
            await self.app(scope, receive, send_with_headers)
            return
        if set_cookie:  # no valid cookie: nothing the request could repeat
            await self.refuse(scope, receive, send_with_headers, _NO_COOKIE)
            return
        if secrets.compare_digest(headers.get(HEADER_NAME, "").encode(), token.encode()):
            await self.app(scope, receive, send_with_headers)
            return
        submitted, replay = await _token_from_body(headers.get("content-type", ""), receive)
        if submitted is None or not secrets.compare_digest(submitted.encode(), token.encode()):
            await self.refuse(scope, replay, send_with_headers, _NO_TOKEN)
            return
        await self.app(scope, replay, send_with_headers)

    def _cookie_token(self, headers: dict[str, str]) -> str | None:
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except CookieError:
            return None
        morsel = cookie.get(COOKIE_NAME)
        if morsel is None:
            return None
        try:
            self.signer.loads(morsel.value)
        except BadSignature:
            return None
        return morsel.value

    def _origin_problem(self, scope: Scope, headers: dict[str, str]) -> str | None:
        own = _own_origin(scope, headers)
        origin = headers.get("origin")
        if origin is None and headers.get("referer"):
            parts = urlsplit(headers["referer"])
            origin = f"{parts.scheme}://{parts.netloc}"
        if origin is not None:
            origin = origin.rstrip("/").lower()
            if origin != own and origin not in self.allowed_origins:
                return (
                    f"this form was sent from another site ({origin or 'an opaque origin'}); "
                    "the catalog takes changes only from its own pages"
                )
        elif headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return "this request was sent from another site; the catalog takes changes only from its own pages"
        return None


_NO_COOKIE = (
    "the form's security token is missing (the page was opened before the catalog restarted, "
    "or cookies are blocked): reload the page and submit it again"
)
_NO_TOKEN = "the form's security token is missing or wrong: reload the page and submit it again"


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _own_origin(scope: Scope, headers: dict[str, str]) -> str:
    host = headers.get("host")
    if not host:
        server = scope.get("server") or ("localhost", None)
        host = f"{server[0]}:{server[1]}" if server[1] else str(server[0])
    return f"{scope.get('scheme', 'http')}://{host}".lower()


async def _token_from_body(content_type: str, receive: Receive) -> tuple[str | None, Receive]:
    """The ``csrf_token`` field of a form body, reading only as much of the body as needed;
    and a ``receive`` that replays what was read, then reads on."""
    kind, options = parse_options_header(content_type)
    read: list[dict[str, Any]] = []

    async def replay() -> dict[str, Any]:
        return read.pop(0) if read else await receive()

    async def next_chunk() -> tuple[bytes, bool]:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            return b"", False
        return message.get("body", b""), message.get("more_body", False)

    if kind == b"application/x-www-form-urlencoded":
        body, more, size = b"", True, 0
        while more and size <= MAX_TOKEN_SEARCH_BYTES:
            chunk, more = await next_chunk()
            body += chunk
            size += len(chunk)
        if more:
            return None, replay
        fields = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
        return fields.get(FORM_FIELD), replay
    if kind == b"multipart/form-data" and options.get(b"boundary"):
        return await _token_from_multipart(options[b"boundary"], next_chunk), replay
    return None, replay


async def _token_from_multipart(
    boundary: bytes, next_chunk: Callable[[], Awaitable[tuple[bytes, bool]]]
) -> str | None:
    """The ``csrf_token`` part of a multipart body, which must come before any file part (the
    token is the form's first input), so a gigabyte upload is never buffered here."""
    state: dict[str, Any] = {"field": None, "value": bytearray()}

    def on_part(disposition_header: bytes) -> None:
        _, disposition = parse_options_header(disposition_header)
        if b"filename" in disposition:
            raise _FileFirst
        state["field"] = disposition.get(b"name")
        state["value"].clear()

    def on_data(data: bytes) -> None:
        state["value"] += data
        if len(state["value"]) > MAX_TOKEN_SEARCH_BYTES:
            raise _FileFirst

    def on_end() -> None:
        if state["field"] == FORM_FIELD.encode():
            raise _TokenFound(bytes(state["value"]).decode("latin-1"))

    parser = multipart_parser(boundary, on_part, on_data, on_end)
    more, size = True, 0
    try:
        while more and size <= MAX_TOKEN_SEARCH_BYTES:
            chunk, more = await next_chunk()
            size += len(chunk)
            parser.write(chunk)
    except _TokenFound as found:
        return str(found.args[0])
    except (_FileFirst, MultipartParseError, ValueError):
        return None
    return None


@pass_context
def csrf_token(context: Any) -> str:
    """The request's CSRF token (for ``<meta name="csrf-token">`` and scripts)."""
    request = context.get("request")
    return str(request.scope.get(SCOPE_KEY, "")) if request is not None else ""


@pass_context
def csrf_input(context: Any) -> Markup:
    """The hidden form input every state-changing form starts with: ``{{ csrf_input() }}``."""
    token = csrf_token(context)
    return Markup(f'<input type="hidden" name="{FORM_FIELD}" value="{escape(token)}">')
