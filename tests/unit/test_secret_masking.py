"""Config errors mask secrets, and only secrets, as a user reads them from ``bridge validate``.

The end-to-end leak test (tests/e2e/test_secrets.py) searches every output of a
real bridge for secret values; these tests pin down which values count as secret:
a port from ``${PORT}`` stays readable, a ``${secret:NAME}``, a variable named
like a secret, the value of a secret-bearing key and a URL's password are ``***``.
"""

from __future__ import annotations

from pathlib import Path

from bridge.redaction import Masker, is_secret_env, is_secret_key
from tests.support import bridge_command

ENV = {
    "HOST": "127.0.0.1",
    "PORT": "8787",
    "HOOK": "hooksecret-1",  # marked with ${secret:HOOK}
    "DB_PASSWORD": "dbpw-333",  # named like a secret
    "BUDGET": "budget-5555",  # plain name, but an auth header's value below
    "AUTHZ": "authz-6666",  # plain name, but under a secret-bearing key below
    "APP_PASS": "apppass-22",  # plain name, but a URL's password
    "LOG_LEVEL": "debug",  # plain: shown
}

CONFIG = """\
version: 1
store: memory://
server: {listen: "${HOST}:${PORT}"}
events: {job/*: {schema: none}}
connectors:
  hook: {type: webhook, provider: supabase, auth: {secret: "${secret:HOOK}"}}
handlers:
  - {id: a, on: "jab/${PORT}", type: log, retry_budget: "${DB_PASSWORD}"}
  - {id: b, on: "job/x", type: publish, connector: "${LOG_LEVEL}-${secret:HOOK}", destination: t}
  - {id: c, on: "job/x", type: publish, connector: "amqp://al:${APP_PASS}@h", destination: t}
  - id: d
    on: job/x
    type: http
    url: http://127.0.0.1/x
    auth: {header: x-token, value: "${BUDGET}"}
    retry_budget: "x-${BUDGET}"
  - id: e
    on: job/x
    type: http
    url: http://127.0.0.1/x
    headers: {authorization: "${AUTHZ}"}
    retry_budget: "${AUTHZ}"
"""


def validate(tmp_path: Path, text: str) -> tuple[int, str]:
    config = tmp_path / "bridge.yaml"
    config.write_text(text)
    done = bridge_command("validate", "-c", str(config), env=ENV)
    return done.returncode, done.stdout + done.stderr


def test_validate_masks_secrets_and_shows_everything_else(tmp_path: Path) -> None:
    code, out = validate(tmp_path, CONFIG)
    assert code == 1, out
    lines = out.splitlines()
    # Plain values stay readable: the port, the log level.
    assert any("'jab/8787'" in line for line in lines), out
    assert any("unknown connector 'debug-***'" in line for line in lines), out
    # A variable named like a secret, a URL's password (only that part), a secret key's value.
    assert any("unknown retry budget '***'" in line and "handlers[0]" in line for line in lines)
    assert any("'amqp://al:***@h'" in line for line in lines), out
    assert any("unknown retry budget 'x-***'" in line for line in lines), out
    assert any("handlers[4].retry_budget: unknown retry budget '***'" in line for line in lines)
    assert "unknown key" not in out, out
    for name in ("HOOK", "DB_PASSWORD", "BUDGET", "AUTHZ", "APP_PASS"):
        assert ENV[name] not in out, (name, out)
    assert out.count("***") == 5, out


def test_a_valid_config_with_marked_secrets_validates(tmp_path: Path) -> None:
    text = (
        "version: 1\nstore: memory://\nserver: {listen: '${HOST}:${PORT}'}\n"
        "connectors:\n  hook: {type: webhook, provider: supabase, "
        "auth: {secret: '${secret:HOOK}'}}\n"
    )
    code, out = validate(tmp_path, text)
    assert code == 0, out


def test_which_keys_and_names_are_secret() -> None:
    for key in ("token", "secret", "secrets", "password", "sasl_password", "api_key", "x-api-key"):
        assert is_secret_key(key), key
    for key in ("listen", "key", "idempotency_key", "url", "header", "scheme", "path"):
        assert not is_secret_key(key), key
    for name in (
        "API_TOKEN",
        "DB_PASSWORD",
        "STRIPE_KEY",
        "HOOK_SECRET",
        "PG_PWD",
        "GCP_CREDS_KEY",
    ):
        assert is_secret_env(name), name
    for name in ("PORT", "HOST", "KAFKA_BOOTSTRAP", "KEYSPACE", "MONKEY", "LOG_LEVEL"):
        assert not is_secret_env(name), name


def test_masker_masks_url_passwords_and_whole_short_values() -> None:
    mask = Masker(["abc", "longsecret"])
    assert mask("postgresql://bridge:pw@db:5432/x") == "postgresql://bridge:***@db:5432/x"
    assert mask("abc abcdef longsecret!") == "*** abcdef ***!"
    assert Masker(["ab"])("table ab") == "table ab"  # two characters protect nothing
