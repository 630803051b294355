"""Authentication of webhook requests: a shared-secret header, an HMAC-SHA256 signature
header, or Standard Webhooks.

Every verifier answers one question, "is this request authentic?", with True or
False. It never raises, whatever the headers or the body hold (empty, non-ASCII,
truncated base64, a signature list without commas, a timestamp that overflows), so
a failure is always a 401 and never a 500. Secrets are compared in constant time
and never appear in logs or answers.

Several secrets may be configured at once (``secrets:``) so a secret can be rotated
without downtime: a request is authentic when it matches any of them. Standard
Webhooks senders may also put several signatures in one ``webhook-signature``
header (space-separated); one match is enough.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scheme = Literal["shared_secret", "hmac", "standard_webhooks"]


class WebhookAuth(BaseModel):
    """How a webhook connector authenticates requests.

    ``scheme`` defaults to ``hmac`` for the ``planetscale`` provider (header
    ``x-planetscale-signature``, hex) and to ``shared_secret`` otherwise.
    """

    model_config = ConfigDict(extra="forbid")

    scheme: Scheme | None = Field(
        None,
        description="`shared_secret` (a header holding the secret), `hmac` (an HMAC-SHA256 of "
        "the body in a header) or `standard_webhooks` (webhook-id/-timestamp/-signature). "
        "Default: `hmac` for the planetscale provider, else `shared_secret`.",
    )
    header: str | None = Field(
        None,
        description="Header holding the secret or the signature. Default: `x-webhook-secret` "
        "(shared_secret), `x-signature` (hmac), `x-planetscale-signature` (planetscale).",
    )
    secret: str | None = Field(
        None, description="The secret; use `${VAR}` or `${file:PATH}`, never a literal."
    )
    secrets: list[str] = Field(
        default_factory=list,
        description="More accepted secrets, for rotation: a request matching any one passes.",
    )
    encoding: Literal["hex", "base64"] = Field(
        "hex", description="hmac: how the signature is encoded in the header."
    )
    prefix: str = Field(
        "", description="hmac: text before the signature in the header, e.g. `sha256=`."
    )

    @model_validator(mode="after")
    def _check(self) -> WebhookAuth:
        if self.secret == "" or any(not s for s in self.secrets):
            raise ValueError("a secret is empty (is its ${VAR} set?)")
        keys = self.all_secrets()
        if not keys:
            raise ValueError("set `secret` (or `secrets`)")
        if self.scheme == "standard_webhooks":
            for key in keys:
                _standard_webhook(key)  # raises ValueError when the secret is unusable
        return self

    def all_secrets(self) -> list[str]:
        """Every accepted secret, the main one first."""
        keys = [self.secret] if self.secret else []
        return keys + [s for s in self.secrets if s not in keys]


class Verifier(Protocol):
    """Checks one request. ``needs_body``: the check covers the body, read it first."""

    needs_body: bool

    def __call__(self, headers: Mapping[str, str], body: bytes) -> bool:
        """True when the request is authentic; never raises."""


class SharedSecret:
    """A header whose value is the secret itself (Supabase's custom header, a bearer token)."""

    needs_body = False

    def __init__(self, header: str, secrets: Sequence[str]) -> None:
        self.header = header
        # `Authorization: Bearer x` = `bearer x`: the scheme is case-insensitive (RFC 9110
        # §11.1), the credentials are not.
        self._fold = header.lower() == "authorization"
        self._secrets = [_fold_scheme(s.encode()) if self._fold else s.encode() for s in secrets]

    def __call__(self, headers: Mapping[str, str], body: bytes) -> bool:
        given = _header_bytes(headers, self.header)
        if given is None:
            return False
        if self._fold:
            given = _fold_scheme(given)
        ok = False
        for secret in self._secrets:  # no early exit: the time does not tell which one matched
            ok |= hmac.compare_digest(given, secret)
        return ok


class HmacSignature:
    """A header holding HMAC-SHA256(secret, body), hex or base64, after an optional prefix."""

    needs_body = True

    def __init__(
        self, header: str, secrets: Sequence[str], encoding: str = "hex", prefix: str = ""
    ) -> None:
        self.header = header
        self.encoding = encoding
        self.prefix = prefix.encode()
        self._secrets = [s.encode() for s in secrets]

    def __call__(self, headers: Mapping[str, str], body: bytes) -> bool:
        given = _header_bytes(headers, self.header)
        if given is None:
            return False
        given = given.strip()
        if self.prefix:
            if not given.startswith(self.prefix):
                return False
            given = given[len(self.prefix) :]
        signature = self._decode(given)
        if signature is None:
            return False
        ok = False
        for secret in self._secrets:
            expected = hmac.new(secret, body, hashlib.sha256).digest()
            ok |= hmac.compare_digest(signature, expected)
        return ok

    def _decode(self, text: bytes) -> bytes | None:
        try:
            if self.encoding == "hex":
                return bytes.fromhex(text.decode("ascii"))
            return base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None


class StandardWebhooks:
    """Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``),
    verified by the ``standardwebhooks`` library: the timestamp must be within 5
    minutes of now, and one of the space-separated ``v1,<base64>`` signatures must
    match one of the secrets."""

    needs_body = True

    def __init__(self, secrets: Sequence[str]) -> None:
        self._hooks = [_standard_webhook(s) for s in secrets]

    def __call__(self, headers: Mapping[str, str], body: bytes) -> bool:
        wanted = {
            "webhook-id": _header_str(headers, "webhook-id"),
            "webhook-timestamp": _header_str(headers, "webhook-timestamp"),
            "webhook-signature": _header_str(headers, "webhook-signature"),
        }
        if not all(wanted.values()):
            return False
        for hook in self._hooks:
            try:
                hook.verify(body, wanted, json_parse=False)
            except Exception:  # the library raises many types on malformed input: all mean "no"
                continue
            return True
        return False


class NoAuth:
    """Accepts every request (a connector without ``auth``, e.g. on localhost only)."""

    needs_body = False

    def __call__(self, headers: Mapping[str, str], body: bytes) -> bool:
        return True


def build_verifier(auth: WebhookAuth | None, provider: str) -> Verifier:
    """The verifier for a connector's ``auth`` (``NoAuth`` without one)."""
    if auth is None:
        return NoAuth()
    scheme = auth.scheme or ("hmac" if provider == "planetscale" else "shared_secret")
    secrets = auth.all_secrets()
    if scheme == "shared_secret":
        return SharedSecret(auth.header or "x-webhook-secret", secrets)
    if scheme == "hmac":
        default = "x-planetscale-signature" if provider == "planetscale" else "x-signature"
        return HmacSignature(auth.header or default, secrets, auth.encoding, auth.prefix)
    return StandardWebhooks(secrets)


def _standard_webhook(secret: str) -> Any:
    try:
        from standardwebhooks.webhooks import Webhook
    except ImportError as exc:  # pragma: no cover - the extra is part of the locked env
        raise ValueError(
            "the standard_webhooks scheme needs the `webhooks` extra (standardwebhooks)"
        ) from exc
    try:
        return Webhook(secret)
    except Exception:  # bad base64 or empty: say so without echoing the secret
        raise ValueError(
            "a standard_webhooks secret must be base64, optionally prefixed with whsec_"
        ) from None


def _header_str(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, val in headers.items():
            if key.lower() == lowered:
                return val
    return value


def _fold_scheme(value: bytes) -> bytes:
    """``Bearer  abc`` -> ``bearer abc``; a value without a scheme is left alone."""
    scheme, sep, rest = value.strip().partition(b" ")
    if not sep:
        return value
    return scheme.lower() + b" " + rest.lstrip(b" ")


def _header_bytes(headers: Mapping[str, str], name: str) -> bytes | None:
    value = _header_str(headers, name)
    if not value:
        return None
    # Header values may hold any byte; surrogateescape keeps them comparable as bytes.
    return value.encode("utf-8", "surrogateescape")
