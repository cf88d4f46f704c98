"""Who is asking and what they may do: three roles, one permission table, one authenticator.

Technicians upload measurements and start published workflows; scientists also save parameter
sets; admins also publish workflows and delete. Every surface (CLI, notebook client, web
catalog, Thrift service) asks the same :class:`Authenticator` who the caller is and calls
:func:`require` before acting, so the rules are written down once, here.

Where the user comes from (``EM2Q_AUTH_MODE``):

* ``local`` (default): one person at their own machine: user ``$USER`` (``EM2Q_LOCAL_USER``)
  with role ``EM2Q_LOCAL_ROLE`` (default ``admin``); nothing is asked for.
* ``token``: API tokens, ``Authorization: Bearer <token>``, looked up in the YAML file
  ``EM2Q_TOKENS_FILE`` (``<token>: {user: ada, role: scientist}``).
* ``header``: a trusted reverse proxy (oauth2-proxy, JupyterHub …) that authenticates and
  forwards the user and role in ``EM2Q_USER_HEADER`` / ``EM2Q_ROLE_HEADER`` (default
  ``X-Forwarded-User`` / ``X-Forwarded-Role``). Only safe when nothing else can reach the
  service; API tokens from ``EM2Q_TOKENS_FILE`` are accepted as well (scripts behind the proxy).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from em2q_resources.settings import Settings

__all__ = [
    "PERMISSIONS",
    "Action",
    "AuthError",
    "Authenticator",
    "Forbidden",
    "Role",
    "Unauthenticated",
    "User",
    "allowed",
    "least_role_for",
    "require",
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


_TECHNICIAN = frozenset({Action.READ, Action.UPLOAD, Action.START_WORKFLOW})
_SCIENTIST = _TECHNICIAN | {Action.SAVE_PARAMETER_SET}
_ADMIN = _SCIENTIST | {Action.PUBLISH_WORKFLOW, Action.DELETE}

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


class Authenticator:
    """Turns a request's headers into a :class:`User`, as configured by ``Settings``."""

    MODES = ("local", "token", "header")

    def __init__(
        self,
        mode: str = "local",
        *,
        local_user: str = "local",
        local_role: Role | str = Role.ADMIN,
        tokens: Mapping[str, User] | None = None,
        user_header: str = "X-Forwarded-User",
        role_header: str = "X-Forwarded-Role",
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"EM2Q_AUTH_MODE={mode!r}: use one of {', '.join(self.MODES)}")
        self.mode = mode
        self.local_user = User(local_user, parse_role(local_role, "EM2Q_LOCAL_ROLE"))
        self.tokens = dict(tokens or {})
        self.user_header = user_header.lower()
        self.role_header = role_header.lower()

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        tokens = load_tokens(settings.tokens_file) if settings.tokens_file else {}
        if settings.auth_mode == "token" and not settings.tokens_file:
            raise ValueError("EM2Q_AUTH_MODE=token needs EM2Q_TOKENS_FILE (token: {user, role})")
        return cls(
            settings.auth_mode,
            local_user=settings.local_user,
            local_role=settings.local_role,
            tokens=tokens,
            user_header=settings.user_header,
            role_header=settings.role_header,
        )

    @property
    def default_user(self) -> User | None:
        """Who a caller that sends nothing is: the local user in local mode, else nobody."""
        return self.local_user if self.mode == "local" else None

    def authenticate(self, headers: Mapping[str, str]) -> User:
        """The user a request comes from; :class:`Unauthenticated` when it names nobody valid."""
        if self.mode == "local":
            return self.local_user
        lowered = {k.lower(): v for k, v in headers.items()}
        if self.mode == "header" and lowered.get(self.user_header):
            role = lowered.get(self.role_header)
            if not role:
                raise Unauthenticated(
                    f"the proxy sent user {lowered[self.user_header]!r} but no "
                    f"{self.role_header} header; configure it to send the role"
                )
            return User(lowered[self.user_header], parse_role(role, self.role_header))
        authorization = lowered.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return self.user_for_token(token.strip())
        if self.mode == "header":
            raise Unauthenticated(
                f"no {self.user_header} header: sign in through the reverse proxy "
                "(or send an API token)"
            )
        raise Unauthenticated("no API token: send `Authorization: Bearer <token>`")

    def user_for_token(self, token: str) -> User:
        """The user an API token belongs to (compared in constant time)."""
        if self.mode == "local":
            return self.local_user
        found = None
        encoded = token.encode()
        for candidate, user in self.tokens.items():
            if hmac.compare_digest(candidate.encode(), encoded):
                found = user
        if found is None:
            raise Unauthenticated("the API token is not recognised; ask an admin for a token")
        return found


def load_tokens(path: Path) -> dict[str, User]:
    """``{token: User}`` from a YAML file of ``<token>: {user: <name>, role: <role>}``."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ValueError(f"EM2Q_TOKENS_FILE {path}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of token: {{user, role}}")
    tokens = {}
    for token, entry in data.items():
        if not isinstance(entry, Mapping) or not entry.get("user") or not entry.get("role"):
            raise ValueError(f"{path}: each token needs {{user: <name>, role: <role>}}")
        tokens[str(token)] = User(str(entry["user"]), parse_role(entry["role"], str(path)))
    return tokens
