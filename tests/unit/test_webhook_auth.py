"""Webhook authentication: shared secret, HMAC signature, Standard Webhooks.

Each verifier says yes only to a request signed with a configured secret, and
says no (never raises) to anything else a header can hold.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook

from connectors.webhook.auth import (
    HmacSignature,
    SharedSecret,
    StandardWebhooks,
    WebhookAuth,
    build_verifier,
)

BODY = b'{"type":"INSERT","table":"users","schema":"public","record":{"id":1},"old_record":null}'
KEY_A = "whsec_" + base64.b64encode(b"key-a-0123456789abcdef").decode()
KEY_B = "whsec_" + base64.b64encode(b"key-b-0123456789abcdef").decode()


def standard_headers(
    secret: str, body: bytes = BODY, msg_id: str = "msg_1", at: datetime | None = None
) -> dict[str, str]:
    """Headers as a Standard Webhooks sender makes them."""
    moment = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, moment, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }


def hex_hmac(secret: str, body: bytes = BODY) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_shared_secret_accepts_any_configured_secret_only() -> None:
    verify = SharedSecret("x-webhook-secret", ["current", "previous"])
    assert verify({"x-webhook-secret": "current"}, b"")
    assert verify({"X-Webhook-Secret": "previous"}, b"")
    assert not verify({"x-webhook-secret": "curren"}, b"")
    assert not verify({"x-webhook-secret": ""}, b"")
    assert not verify({}, b"")
    assert not verify({"x-webhook-secret": "currént\udcff"}, b"")


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_authorization_scheme_is_case_insensitive_and_the_token_is_not(scheme: str) -> None:
    # RFC 9110 §11.1: the auth-scheme is case-insensitive; Debezium Server's JWT and
    # OAuth2 authenticators and most HTTP clients write "Bearer", some write "bearer".
    verify = build_verifier(
        WebhookAuth(header="Authorization", secret="Bearer s3cret-T0ken"), "debezium"
    )
    assert verify({"authorization": f"{scheme} s3cret-T0ken"}, b"")
    assert verify({"Authorization": f"{scheme}  s3cret-T0ken"}, b"")
    assert not verify({"authorization": f"{scheme} S3CRET-t0ken"}, b"")
    assert not verify({"authorization": "Basic s3cret-T0ken"}, b"")
    assert not verify({"authorization": "s3cret-T0ken"}, b"")
    # Another header keeps an exact comparison: its value is all secret.
    exact = SharedSecret("x-webhook-secret", ["Bearer abc"])
    assert not exact({"x-webhook-secret": "bearer abc"}, b"")


def test_hmac_hex_with_prefix_and_base64() -> None:
    verify = HmacSignature("x-hub-signature-256", ["s3cret"], "hex", "sha256=")
    good = "sha256=" + hex_hmac("s3cret")
    assert verify({"x-hub-signature-256": good}, BODY)
    assert not verify({"x-hub-signature-256": good}, BODY + b" ")  # body changed
    assert not verify({"x-hub-signature-256": hex_hmac("s3cret")}, BODY)  # prefix missing
    assert not verify({"x-hub-signature-256": "sha256=" + hex_hmac("other")}, BODY)
    assert not verify({"x-hub-signature-256": "sha256=zz"}, BODY)
    b64 = HmacSignature("x-signature", ["s3cret"], "base64")
    digest = hmac.new(b"s3cret", BODY, hashlib.sha256).digest()
    assert b64({"x-signature": base64.b64encode(digest).decode()}, BODY)
    assert not b64({"x-signature": "%%%"}, BODY)


def test_planetscale_defaults_to_its_signature_header() -> None:
    verify = build_verifier(WebhookAuth(secret="ps-secret"), "planetscale")
    assert verify.needs_body
    assert verify({"X-PlanetScale-Signature": hex_hmac("ps-secret")}, BODY)
    assert not verify({"x-signature": hex_hmac("ps-secret")}, BODY)


def test_standard_webhooks_signature_rotation_and_multiple_signatures() -> None:
    verify = StandardWebhooks([KEY_A, KEY_B])
    assert verify(standard_headers(KEY_A), BODY)
    assert verify(standard_headers(KEY_B), BODY)  # the receiver's second secret
    other = "whsec_" + base64.b64encode(b"someone-else-key").decode()
    assert not verify(standard_headers(other), BODY)
    # The sender rotates: one header, two signatures, one of them ours.
    ours = standard_headers(KEY_A)
    theirs = standard_headers(other)
    both = {
        **ours,
        "webhook-signature": f"{theirs['webhook-signature']} {ours['webhook-signature']}",
    }
    assert verify(both, BODY)


@pytest.mark.parametrize("minutes", [-6, 6])
def test_standard_webhooks_timestamp_tolerance_is_five_minutes(minutes: int) -> None:
    verify = StandardWebhooks([KEY_A])
    at = datetime.now(UTC) + timedelta(minutes=minutes)
    assert not verify(standard_headers(KEY_A, at=at), BODY)
    assert verify(standard_headers(KEY_A, at=datetime.now(UTC) - timedelta(minutes=4)), BODY)


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-signature": "garbage"},
        {"webhook-signature": "v1,@@@not-base64"},
        {"webhook-signature": "v1"},
        {"webhook-signature": "v2,AAAA"},
        {"webhook-signature": ""},
        {"webhook-timestamp": "nan"},
        {"webhook-timestamp": "1e400"},
        {"webhook-timestamp": "yesterday"},
        {"webhook-id": ""},
        {"webhook-id": "msg_2"},  # the id is signed too
    ],
)
def test_standard_webhooks_malformed_headers_are_refused(change: dict[str, str]) -> None:
    verify = StandardWebhooks([KEY_A])
    assert not verify({**standard_headers(KEY_A), **change}, BODY)


def test_standard_webhooks_non_utf8_body_is_refused_not_raised() -> None:
    verify = StandardWebhooks([KEY_A])
    assert not verify(standard_headers(KEY_A), b"\xff\xfe")


@pytest.mark.parametrize(
    "auth",
    [
        {"secret": ""},
        {},
        {"secrets": ["a", ""]},
        {"scheme": "standard_webhooks", "secret": "not base64 !"},
        {"scheme": "magic", "secret": "x"},
    ],
)
def test_unusable_auth_configs_are_refused(auth: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        WebhookAuth.model_validate(auth)


header_values = st.text(max_size=80) | st.text(
    alphabet=st.sampled_from("v1,= .0123456789abcdefABCDEF+/_-"), max_size=120
)


@settings(max_examples=200, deadline=None)
@given(
    values=st.fixed_dictionaries(
        {},
        optional={
            "webhook-id": header_values,
            "webhook-timestamp": header_values | st.just(str(int(time.time()))),
            "webhook-signature": header_values,
            "x-webhook-secret": header_values,
            "x-signature": header_values,
        },
    ),
    body=st.binary(max_size=64),
)
def test_forged_headers_never_pass_and_never_raise(values: dict[str, str], body: bytes) -> None:
    for verify in (
        StandardWebhooks([KEY_A]),
        SharedSecret("x-webhook-secret", ["the-real-secret"]),
        HmacSignature("x-signature", ["the-real-secret"], "hex", ""),
        HmacSignature("x-signature", ["the-real-secret"], "base64", "sha256="),
    ):
        assert verify(values, body) is False
