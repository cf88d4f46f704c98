"""Who is asking and what they may do: three roles, one permission table, one authenticator.

Technicians upload measurements and start published workflows; scientists also save parameter
sets; admins also publish workflows and delete. Every surface (CLI, notebook client, web
catalog, Thrift service) asks the same :class:`Authenticator` who the caller is and calls
:func:`require` before acting, so the rules are written down once, here.

Where the user comes from (``EM2Q_AUTH_MODE``):

* ``local`` (default): one person at their own machine: user ``$USER`` (``EM2Q_LOCAL_USER``)
  with role ``EM2Q_LOCAL_ROLE`` (default ``admin``); nothing is asked for.
* ``token``: API tokens, ``Authorization: Bearer <token>``, checked against the tokens file
  ``EM2Q_TOKENS_FILE``, which holds only salted scrypt hashes (``em2q tokens add|list|revoke``
  writes it, mode 0600; a file others may read is refused). Identity headers are ignored.
* ``header``: a reverse proxy (oauth2-proxy, JupyterHub …) that authenticates and forwards
  the user and role in ``EM2Q_USER_HEADER`` / ``EM2Q_ROLE_HEADER`` (default
  ``X-Forwarded-User`` / ``X-Forwarded-Role``). Those headers are believed only from a
  trusted proxy: a peer address in ``EM2Q_TRUSTED_PROXIES`` (comma-separated addresses or
  CIDRs) or a request carrying the shared secret ``EM2Q_PROXY_SECRET`` in
  ``EM2Q_PROXY_SECRET_HEADER`` (default ``X-EM2Q-Proxy-Secret``); with neither configured,
  header mode refuses to start. API tokens are accepted as well (scripts behind the proxy), but
  never together with identity headers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import fsspec

from em2q_msi.temporaries import sweep_orphans, temporary_name
from em2q_resources.settings import Settings

__all__ = [
    "PERMISSIONS",
    "Action",
    "AuthError",
    "Authenticator",
    "Forbidden",
    "Role",
    "TokenRecord",
    "TokensFile",
    "TokensFileError",
    "Unauthenticated",
    "User",
    "allowed",
    "hash_token",
    "least_role_for",
    "require",
    "verify_token",
]


class Role(StrEnum):
    TECHNICIAN = "technician"
    SCIENTIST = "scientist"
    ADMIN = "admin"


class Action(StrEnum):
    READ = "read"
    UPLOAD = "upload"
    START_WORKFLOW = "start_workflow"
    SAVE_PARAMETER_SET = "save_parameter_set"
    PUBLISH_WORKFLOW = "publish_workflow"
    DELETE = "delete"
    MANAGE_TOKENS = "manage_tokens"


_TECHNICIAN = frozenset({Action.READ, Action.UPLOAD, Action.START_WORKFLOW})
_SCIENTIST = _TECHNICIAN | {Action.SAVE_PARAMETER_SET}
_ADMIN = _SCIENTIST | {Action.PUBLISH_WORKFLOW, Action.DELETE, Action.MANAGE_TOKENS}

#: what each role may do; each role may do everything the roles before it may
PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.TECHNICIAN: _TECHNICIAN,
    Role.SCIENTIST: frozenset(_SCIENTIST),
    Role.ADMIN: frozenset(_ADMIN),
}


@dataclass(frozen=True)
class User:
    name: str
    role: Role

    def __str__(self) -> str:
        return f"{self.name} ({self.role})"


class AuthError(PermissionError):
    """Base of the refusals; surfaces turn them into exit code 4, HTTP 401/403, Thrift Forbidden."""


class Unauthenticated(AuthError):
    """The request does not say who is asking, or says it in a way that is not accepted."""


class Forbidden(AuthError):
    """The user is known but their role does not allow the action."""

    def __init__(self, user: User, action: Action, needed: Role | None) -> None:
        self.user = user
        self.action = Action(action)
        self.needed = needed
        hint = (
            f"it needs the {needed} role (or higher); ask an admin"
            if needed
            else "no role may do it"
        )
        super().__init__(
            f"{user.name} has the {user.role} role, which may not {self.action.replace('_', ' ')}"
            f"; {hint}"
        )


def least_role_for(action: Action | str) -> Role | None:
    """The least role allowed to do ``action`` (roles are ordered technician < scientist < admin)."""
    for role in Role:
        if Action(action) in PERMISSIONS[role]:
            return role
    return None


def allowed(user: User | None, action: Action | str) -> bool:
    return user is not None and Action(action) in PERMISSIONS[Role(user.role)]


def require(user: User | None, action: Action | str) -> User:
    """Return ``user`` when they may do ``action``; raise :class:`Forbidden` (or
    :class:`Unauthenticated` when nobody is known) otherwise."""
    action = Action(action)
    if user is None:
        raise Unauthenticated(
            f"nobody is signed in, and to {action.replace('_', ' ')} you must be: send an API "
            "token (Authorization: Bearer …) or come through the reverse proxy"
        )
    if not allowed(user, action):
        raise Forbidden(user, action, least_role_for(action))
    return user


def parse_role(value: str, where: str) -> Role:
    try:
        return Role(str(value).strip().lower())
    except ValueError:
        choices = ", ".join(Role)
        raise Unauthenticated(f"{where}: unknown role {value!r} (one of {choices})") from None


# ----------------------------------------------------------------------------- tokens

#: scrypt cost (RFC 7914 interactive parameters: ~16 MiB, tens of ms per check)
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_TOKEN_PREFIX = "em2q"


class TokensFileError(ValueError):
    """The tokens file cannot be used: unreadable, readable by others, clear-text tokens, or not
    the expected shape. The message says how to fix it."""


def hash_token(token: str, *, salt: bytes | None = None) -> str:
    """``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (base64) of ``token``: what the tokens file keeps."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    encode = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"


def verify_token(token: str, hashed: str) -> bool:
    """Whether ``token`` hashes to ``hashed`` (compared in constant time)."""
    try:
        scheme, n, r, p, salt, digest = hashed.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            token.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
            dklen=len(expected),
        )  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True)
class TokenRecord:
    """One issued token as the file keeps it: never the token, only its salted hash."""

    id: str  # public, shown by `em2q tokens list`, part of the token (em2q_<id>_<secret>)
    user: str
    role: Role
    hash: str
    created_at: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "id": self.id, "user": self.user, "role": str(self.role), "hash": self.hash,
            "created_at": self.created_at,
        }  # fmt: skip


def _token_id(token: str) -> str | None:
    prefix, _, rest = token.partition("_")
    token_id, _, secret = rest.partition("_")
    return token_id if prefix == _TOKEN_PREFIX and token_id and secret else None


class TokensFile:
    """The tokens file (YAML ``tokens: [{id, user, role, hash, created_at}]``), written
    atomically with mode 0600 and refused when group or others may read or write it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def load(self) -> list[TokenRecord]:
        import yaml

        path = self.path
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise TokensFileError(f"EM2Q_TOKENS_FILE {path}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise TokensFileError(
                f"EM2Q_TOKENS_FILE {path} has mode {stat.filemode(mode)}: group or others may "
                f"read it; run `chmod 600 {path}` (or give the Kubernetes secret defaultMode 0400)"
            )
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise TokensFileError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, Mapping) or not isinstance(data.get("tokens", []), list):
            raise TokensFileError(f"{path}: expected `tokens: [{{id, user, role, hash}}, …]`")
        if set(data) - {"tokens"}:
            raise TokensFileError(
                f"{path}: holds tokens in clear text (the old `<token>: {{user, role}}` form); "
                "issue new ones with `em2q tokens add USER --role ROLE` and delete the old file"
            )
        records = []
        for position, entry in enumerate(data.get("tokens") or []):
            if not isinstance(entry, Mapping) or not all(
                entry.get(k) for k in ("id", "user", "role", "hash")
            ):
                raise TokensFileError(f"{path}: tokens[{position}] needs id, user, role and hash")
            if not str(entry["hash"]).startswith("scrypt$"):
                raise TokensFileError(f"{path}: tokens[{position}].hash is not a scrypt hash")
            records.append(
                TokenRecord(
                    str(entry["id"]),
                    str(entry["user"]),
                    parse_role(entry["role"], f"{path}: tokens[{position}]"),
                    str(entry["hash"]),
                    str(entry.get("created_at") or ""),
                )  # fmt: skip
            )
        return records

    def write(self, records: Iterable[TokenRecord]) -> None:
        import yaml

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # not ``write_atomic``: the scratch file is created 0600 (the hashes are never readable
        # by others), but it is named and swept like every other temporary
        sweep_orphans(fsspec.filesystem("file"), str(self.path.parent))
        scratch = self.path.with_name(temporary_name(self.path.name))
        text = yaml.safe_dump({"tokens": [r.to_dict() for r in records]}, sort_keys=False)
        descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(scratch, self.path)
        except BaseException:
            scratch.unlink(missing_ok=True)
            raise
        os.chmod(self.path, 0o600)

    def add(self, user: str, role: Role | str) -> tuple[TokenRecord, str]:
        """Issue a token for ``user``: returns its record and the token, shown once only."""
        records = self.load()
        token_id = secrets.token_hex(4)
        while any(r.id == token_id for r in records):
            token_id = secrets.token_hex(4)
        token = f"{_TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
        created = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        record = TokenRecord(token_id, user, parse_role(role, "role"), hash_token(token), created)
        self.write([*records, record])
        return record, token

    def revoke(self, id_or_user: str) -> list[TokenRecord]:
        """Remove the token with that id, or every token of that user; returns what went."""
        records = self.load()
        gone = [r for r in records if id_or_user in (r.id, r.user)]
        if gone:
            self.write([r for r in records if r not in gone])
        return gone


def _networks(entries: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"EM2Q_TRUSTED_PROXIES: {entry!r} is not an address or CIDR (e.g. 10.0.0.0/8)"
            ) from None
    return tuple(networks)


# ----------------------------------------------------------------------------- authenticator


class Authenticator:
    """Turns a request's headers (and peer address) into a :class:`User`, as ``Settings`` say."""

    MODES = ("local", "token", "header")

    def __init__(
        self,
        mode: str = "local",
        *,
        local_user: str = "local",
        local_role: Role | str = Role.ADMIN,
        tokens: Mapping[str, User] | None = None,
        tokens_file: Path | str | None = None,
        user_header: str = "X-Forwarded-User",
        role_header: str = "X-Forwarded-Role",
        trusted_proxies: Iterable[str] = (),
        proxy_secret: str | None = None,
        proxy_secret_header: str = "X-EM2Q-Proxy-Secret",
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"EM2Q_AUTH_MODE={mode!r}: use one of {', '.join(self.MODES)}")
        self.mode = mode
        self.local_user = User(local_user, parse_role(local_role, "EM2Q_LOCAL_ROLE"))
        # tokens given in code (tests, embedding): hashed here like the file's, never kept
        self._given = [
            TokenRecord(f"given-{i}", user.name, Role(user.role), hash_token(token))
            for i, (token, user) in enumerate((tokens or {}).items())
        ]
        self.tokens_file = TokensFile(tokens_file) if tokens_file else None
        self._file_records: list[TokenRecord] = []
        self._file_stamp: tuple[int, int] | None = None
        self._verified: dict[bytes, User] = {}  # SHA-256 of a checked token → its user
        self._lock = threading.Lock()
        if self.tokens_file is not None:
            self._reload()
        self.user_header = user_header.lower()
        self.role_header = role_header.lower()
        self.trusted_proxies = _networks(trusted_proxies)
        self.proxy_secret = proxy_secret or None
        self.proxy_secret_header = proxy_secret_header.lower()
        if mode == "header" and not self.trusted_proxies and not self.proxy_secret:
            raise ValueError(
                "EM2Q_AUTH_MODE=header needs EM2Q_TRUSTED_PROXIES (the proxy's addresses or "
                "CIDRs) or EM2Q_PROXY_SECRET (a secret header the proxy adds): otherwise any "
                "client could name itself in the identity headers"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        if settings.auth_mode == "token" and not settings.tokens_file:
            raise ValueError("EM2Q_AUTH_MODE=token needs EM2Q_TOKENS_FILE (em2q tokens add)")
        return cls(
            settings.auth_mode,
            local_user=settings.local_user,
            local_role=settings.local_role,
            tokens_file=settings.tokens_file,
            user_header=settings.user_header,
            role_header=settings.role_header,
            trusted_proxies=settings.trusted_proxies,
            proxy_secret=settings.proxy_secret,
            proxy_secret_header=settings.proxy_secret_header,
        )

    @property
    def default_user(self) -> User | None:
        """Who a caller that sends nothing is: the local user in local mode, else nobody."""
        return self.local_user if self.mode == "local" else None

    def _from_trusted_proxy(self, lowered: Mapping[str, str], client: str | None) -> bool:
        if self.proxy_secret is not None:
            sent = lowered.get(self.proxy_secret_header, "")
            if hmac.compare_digest(sent.encode(), self.proxy_secret.encode()):
                return True
        if client and self.trusted_proxies:
            try:
                address = ipaddress.ip_address(client)
            except ValueError:
                return False
            return any(address in network for network in self.trusted_proxies)
        return False

    def authenticate(self, headers: Mapping[str, str], client: str | None = None) -> User:
        """The user a request comes from (``client``: the peer's address); raises
        :class:`Unauthenticated` when it names nobody valid or claims an identity it may not."""
        if self.mode == "local":
            return self.local_user
        lowered = {k.lower(): v for k, v in headers.items()}
        authorization = lowered.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        has_token = scheme.lower() == "bearer" and bool(token.strip())
        if self.mode == "header":
            claims = [h for h in (self.user_header, self.role_header) if lowered.get(h)]
            if claims and has_token:
                raise Unauthenticated(
                    f"a request sends an API token or {self.user_header}/{self.role_header} "
                    "headers, never both: an identity comes from one of them"
                )
            if claims:
                if not self._from_trusted_proxy(lowered, client):
                    raise Unauthenticated(
                        f"{claims[0]} is accepted only from the trusted reverse proxy "
                        "(EM2Q_TRUSTED_PROXIES / EM2Q_PROXY_SECRET); sign in through it"
                    )
                user, role = lowered.get(self.user_header), lowered.get(self.role_header)
                if not user or not role:
                    raise Unauthenticated(
                        f"the proxy sent {claims[0]} without "
                        f"{self.role_header if user else self.user_header}; configure it to "
                        "send both the user and the role"
                    )
                return User(user, parse_role(role, self.role_header))
        if has_token:
            return self.user_for_token(token.strip())
        if self.mode == "header":
            raise Unauthenticated(
                f"no {self.user_header} header: sign in through the reverse proxy "
                "(or send an API token)"
            )
        raise Unauthenticated("no API token: send `Authorization: Bearer <token>`")

    def _reload(self) -> None:
        """Re-read the tokens file when it changed (revocations apply without a restart)."""
        assert self.tokens_file is not None
        try:
            info = self.tokens_file.path.stat()
            stamp = (info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._file_stamp or stamp is None:
            self._file_records = self.tokens_file.load()
            self._file_stamp = stamp
            self._verified.clear()

    def user_for_token(self, token: str) -> User:
        """The user an API token belongs to (salted hashes, compared in constant time)."""
        if self.mode == "local":
            return self.local_user
        with self._lock:
            if self.tokens_file is not None:
                self._reload()
            fingerprint = hashlib.sha256(token.encode()).digest()
            known = self._verified.get(fingerprint)
            if known is not None:
                return known
            token_id = _token_id(token)
            candidates = [r for r in self._file_records if r.id == token_id] + self._given
            for record in candidates:
                if verify_token(token, record.hash):
                    user = User(record.user, record.role)
                    self._verified[fingerprint] = user
                    return user
        raise Unauthenticated("the API token is not recognised; ask an admin for a token")
