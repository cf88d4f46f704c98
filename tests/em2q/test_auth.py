"""Roles and the authenticator: one permission table, three ways to say who is asking."""

from __future__ import annotations

import pytest

from em2q_resources.auth import (
    Action,
    Authenticator,
    Forbidden,
    Role,
    TokensFile,
    Unauthenticated,
    User,
    allowed,
    require,
)
from em2q_resources.settings import Settings


@pytest.mark.parametrize(
    ("role", "may"),
    [
        (Role.TECHNICIAN, {"read", "upload", "start_workflow"}),
        (Role.SCIENTIST, {"read", "upload", "start_workflow", "save_parameter_set"}),
        (Role.ADMIN, set(Action)),
    ],
)
def test_each_role_may_do_exactly_its_actions(role, may):
    user = User("u", role)
    assert {a for a in Action if allowed(user, a)} == may


def test_refusal_names_user_role_action_and_the_role_needed():
    with pytest.raises(Forbidden) as raised:
        require(User("tess", Role.TECHNICIAN), Action.SAVE_PARAMETER_SET)
    assert str(raised.value) == (
        "tess has the technician role, which may not save parameter set; "
        "it needs the scientist role (or higher); ask an admin"
    )
    assert raised.value.needed == Role.SCIENTIST


def test_nobody_signed_in_is_unauthenticated():
    with pytest.raises(Unauthenticated, match="nobody is signed in"):
        require(None, Action.READ)


def test_local_mode_is_the_local_user_with_the_configured_role():
    settings = Settings.from_env({"USER": "lab", "EM2Q_LOCAL_ROLE": "scientist"})
    user = Authenticator.from_settings(settings).authenticate({})
    assert user == User("lab", Role.SCIENTIST)


def test_token_mode_reads_the_tokens_file(tmp_path):
    tokens = tmp_path / "tokens.yaml"
    _, secret = TokensFile(tokens).add("ada", "admin")
    auth = Authenticator.from_settings(
        Settings.from_env({"EM2Q_AUTH_MODE": "token", "EM2Q_TOKENS_FILE": str(tokens)})
    )
    assert auth.authenticate({"authorization": f"Bearer {secret}"}) == User("ada", Role.ADMIN)
    with pytest.raises(Unauthenticated, match="not recognised"):
        auth.authenticate({"Authorization": f"Bearer {secret[:-1]}"})
    with pytest.raises(Unauthenticated, match="no API token"):
        auth.authenticate({})


def test_token_mode_without_a_tokens_file_is_a_configuration_error():
    with pytest.raises(ValueError, match="EM2Q_TOKENS_FILE"):
        Authenticator.from_settings(Settings(auth_mode="token"))


def test_header_mode_trusts_the_proxy_headers():
    auth = Authenticator.from_settings(
        Settings.from_env(
            {
                "EM2Q_AUTH_MODE": "header",
                "EM2Q_ROLE_HEADER": "X-Role",
                "EM2Q_TRUSTED_PROXIES": "10.0.0.0/8",
            }
        )
    )
    assert auth.authenticate(
        {"X-Forwarded-User": "tess", "X-Role": "Technician"}, client="10.1.2.3"
    ) == User("tess", Role.TECHNICIAN)
    with pytest.raises(Unauthenticated, match="unknown role 'boss'"):
        auth.authenticate({"X-Forwarded-User": "tess", "X-Role": "boss"}, client="10.1.2.3")
    with pytest.raises(Unauthenticated, match="reverse proxy"):
        auth.authenticate({})
