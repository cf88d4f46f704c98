"""`em2q tokens add|list|revoke`: hashed tokens in a 0600 file, managed by admins."""

from __future__ import annotations

import json

from click.testing import CliRunner

from em2q.cli import main


def tokens_cli(env, *args):
    return CliRunner().invoke(main, list(args), env=env)


def token_env(tmp_path, **extra):
    return {
        "EM2Q_AUTH_MODE": "token",
        "EM2Q_TOKENS_FILE": str(tmp_path / "tokens.yaml"),
        "EM2Q_CACHE_DIR": str(tmp_path / "cache"),
        **extra,
    }


def test_add_prints_the_token_once_and_stores_only_its_hash(tmp_path):
    env = token_env(tmp_path)
    added = tokens_cli(env, "tokens", "add", "ada", "--role", "admin", "--json")
    assert added.exit_code == 0, added.output
    issued = json.loads(added.output)
    text = (tmp_path / "tokens.yaml").read_text(encoding="utf-8")
    assert issued["token"] not in text and "scrypt$" in text
    assert (tmp_path / "tokens.yaml").stat().st_mode & 0o777 == 0o600
    listed = tokens_cli(env, "--token", issued["token"], "tokens", "list", "--json")
    rows = [{k: v for k, v in row.items() if k != "created"} for row in json.loads(listed.output)]
    assert rows == [{"id": issued["id"], "user": "ada", "role": "admin"}]
    assert issued["token"] not in listed.output


def test_only_an_admin_manages_tokens_once_there_are_any(tmp_path):
    env = token_env(tmp_path)
    admin = json.loads(tokens_cli(env, "tokens", "add", "ada", "--role", "admin", "--json").output)
    tech = json.loads(
        tokens_cli(env, "--token", admin["token"], "tokens", "add", "tess", "--role", "technician",
                   "--json").output
    )  # fmt: skip
    anonymous = tokens_cli(env, "tokens", "add", "eve", "--role", "admin")
    assert anonymous.exit_code == 4 and "no API token" in anonymous.output
    refused = tokens_cli(env, "--token", tech["token"], "tokens", "add", "eve", "--role", "admin")
    assert refused.exit_code == 4
    assert "may not manage tokens" in refused.output
    listed = tokens_cli(env, "--token", admin["token"], "tokens", "list", "--json")
    assert sorted(row["user"] for row in json.loads(listed.output)) == ["ada", "tess"]


def test_a_revoked_token_is_refused_afterwards(tmp_path):
    env = token_env(tmp_path)
    admin = json.loads(tokens_cli(env, "tokens", "add", "ada", "--role", "admin", "--json").output)
    tess = json.loads(
        tokens_cli(env, "--token", admin["token"], "tokens", "add", "tess", "--role", "technician",
                   "--json").output
    )  # fmt: skip
    revoked = tokens_cli(env, "--token", admin["token"], "tokens", "revoke", "tess")
    assert revoked.exit_code == 0 and tess["id"] in revoked.output
    after = tokens_cli(env, "--token", tess["token"], "tokens", "list")
    assert after.exit_code == 4 and "not recognised" in after.output


def test_a_world_readable_tokens_file_stops_every_command_with_the_fix(tmp_path):
    env = token_env(tmp_path)
    admin = json.loads(tokens_cli(env, "tokens", "add", "ada", "--role", "admin", "--json").output)
    (tmp_path / "tokens.yaml").chmod(0o644)
    result = tokens_cli(env, "--token", admin["token"], "search")
    assert result.exit_code == 2
    assert "chmod 600" in result.output
