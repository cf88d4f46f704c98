"""Roles and the authenticator: one permission table, three ways to say who is asking."""

from __future__ import annotations

import pytest

from em2q_resources.auth import (
    Action,
    Authenticator,
    Forbidden,
    Role,
    TokensFile,
    TokensFileError,
    Unauthenticated,
    User,
    allowed,
    hash_token,
    require,
    verify_token,
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


# ----------------------------------------------------------------------------- header mode


def _header_auth(**settings) -> Authenticator:
    return Authenticator.from_settings(Settings(auth_mode="header", **settings))


SPOOF = {"X-Forwarded-User": "mallory", "X-Forwarded-Role": "admin"}


def test_header_mode_without_a_trusted_proxy_configured_refuses_to_start():
    with pytest.raises(ValueError, match="EM2Q_TRUSTED_PROXIES"):
        _header_auth()


def test_identity_headers_from_an_untrusted_address_are_refused():
    auth = _header_auth(trusted_proxies=("10.0.0.5", "fd00::/8"))
    with pytest.raises(Unauthenticated, match="only from the trusted reverse proxy"):
        auth.authenticate(SPOOF, client="192.168.1.50")
    with pytest.raises(Unauthenticated, match="only from the trusted reverse proxy"):
        auth.authenticate(SPOOF, client=None)
    assert auth.authenticate(SPOOF, client="10.0.0.5") == User("mallory", Role.ADMIN)
    assert auth.authenticate(SPOOF, client="fd00::1").role == Role.ADMIN


def test_identity_headers_with_the_shared_secret_are_believed_without_it_refused():
    auth = _header_auth(proxy_secret="s3cret-of-the-proxy")
    with pytest.raises(Unauthenticated, match="trusted reverse proxy"):
        auth.authenticate({**SPOOF, "X-EM2Q-Proxy-Secret": "guess"}, client="127.0.0.1")
    with pytest.raises(Unauthenticated, match="trusted reverse proxy"):
        auth.authenticate(SPOOF, client="127.0.0.1")
    trusted = {**SPOOF, "X-EM2Q-Proxy-Secret": "s3cret-of-the-proxy"}
    assert auth.authenticate(trusted) == User("mallory", Role.ADMIN)


def test_a_token_is_never_combined_with_a_role_header(tmp_path):
    tokens = tmp_path / "tokens.yaml"
    _, token = TokensFile(tokens).add("tess", "technician")
    auth = _header_auth(trusted_proxies=("127.0.0.1",), tokens_file=tokens)
    combined = {"Authorization": f"Bearer {token}", "X-Forwarded-Role": "scientist"}
    with pytest.raises(Unauthenticated, match="never both"):
        auth.authenticate(combined, client="127.0.0.1")
    alone = auth.authenticate({"Authorization": f"Bearer {token}"}, client="127.0.0.1")
    assert alone == User("tess", Role.TECHNICIAN)


def test_token_mode_ignores_identity_headers(tmp_path):
    tokens = tmp_path / "tokens.yaml"
    _, token = TokensFile(tokens).add("tess", "technician")
    auth = Authenticator.from_settings(Settings(auth_mode="token", tokens_file=tokens))
    user = auth.authenticate({"Authorization": f"Bearer {token}", **SPOOF})
    assert user == User("tess", Role.TECHNICIAN)
    with pytest.raises(Unauthenticated, match="no API token"):
        auth.authenticate(SPOOF)


# ----------------------------------------------------------------------------- tokens file


def test_the_tokens_file_holds_salted_hashes_only_with_mode_0600(tmp_path):
    tokens = tmp_path / "tokens.yaml"
    first, token = TokensFile(tokens).add("ada", "admin")
    _, other = TokensFile(tokens).add("sam", "scientist")
    text = tokens.read_text(encoding="utf-8")
    secret = token.split("_", 2)[2]  # em2q_<id>_<secret>; the secret itself may hold "_"
    assert token not in text and secret not in text and other not in text
    assert "scrypt$" in text and first.id in text
    assert tokens.stat().st_mode & 0o777 == 0o600
    hashes = [r.hash for r in TokensFile(tokens).load()]
    assert len(set(hashes)) == 2  # salted: never the same hash twice


def test_a_hash_verifies_only_its_own_token():
    hashed = hash_token("em2q_abcd_secret")
    assert verify_token("em2q_abcd_secret", hashed)
    assert not verify_token("em2q_abcd_secreT", hashed)
    assert hash_token("em2q_abcd_secret") != hashed


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_tokens_file_others_may_read_is_refused(tmp_path, mode):
    tokens = tmp_path / "tokens.yaml"
    TokensFile(tokens).add("ada", "admin")
    tokens.chmod(mode)
    with pytest.raises(TokensFileError, match="chmod 600"):
        Authenticator.from_settings(Settings(auth_mode="token", tokens_file=tokens))


def test_a_clear_text_tokens_file_is_refused_saying_how_to_reissue(tmp_path):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("s3cret: {user: ada, role: admin}\n", encoding="utf-8")
    tokens.chmod(0o600)
    with pytest.raises(TokensFileError, match="clear text.*em2q tokens add"):
        Authenticator.from_settings(Settings(auth_mode="token", tokens_file=tokens))


def test_a_revoked_token_stops_working_without_a_restart(tmp_path):
    tokens = tmp_path / "tokens.yaml"
    record, token = TokensFile(tokens).add("tess", "technician")
    auth = Authenticator.from_settings(Settings(auth_mode="token", tokens_file=tokens))
    assert auth.user_for_token(token) == User("tess", Role.TECHNICIAN)
    assert [r.id for r in TokensFile(tokens).revoke(record.id)] == [record.id]
    with pytest.raises(Unauthenticated, match="not recognised"):
        auth.user_for_token(token)


def test_a_killed_tokens_writers_scratch_file_is_swept_by_the_next_write(tmp_path):
    import subprocess
    import sys

    from em2q_msi import temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, encoding="utf-8", check=True)  # fmt: skip
    scratch = (
        tmp_path / f".tokens.yaml{temporaries.MARK}{temporaries._HOST}-{int(dead.stdout)}-ab12"
    )
    scratch.write_text("tokens: [half", encoding="utf-8")

    TokensFile(tmp_path / "tokens.yaml").add("ada", "admin")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.yaml"]
