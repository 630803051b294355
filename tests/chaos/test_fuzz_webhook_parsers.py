"""Fuzz targets: every webhook provider's parser, and every signature check.

Parsers (supabase, debezium, planetscale, cloudevents, json): any body and
headers give candidates, an ignored request (a tombstone), or ``InvalidEvent``
whose reason maps to the documented status (400 unreadable, 415 unsupported
data, 422 anything else). Verifiers (shared secret, HMAC hex/base64 with a prefix,
PlanetScale's HMAC, Standard Webhooks) answer True or False and never raise; a
true answer needs the right secret over exactly these bytes, a fresh timestamp
for Standard Webhooks, and nothing forged passes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import InvalidEvent
from connectors.webhook.auth import WebhookAuth, build_verifier
from connectors.webhook.providers import PROVIDERS, UNREADABLE, parser
from tests.chaos.fuzz_inputs import (
    EXAMPLES,
    FUZZ_TIMEOUT,
    Tally,
    broken,
    deeply_nested,
    fuzz_settings,
    header_names,
    header_values,
    huge_string,
    json_values,
    mutated,
)
from tests.conftest import CHAOS_FULL
from tests.unit.test_webhook_providers import (
    ANNE,
    CE_STRUCTURED,
    MYSQL_CREATE,
    PLANETSCALE_BRANCH_READY,
    SUPABASE_DELETE,
    SUPABASE_INSERT,
    SUPABASE_UPDATE,
    debezium,
    envelope,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(FUZZ_TIMEOUT)]

SAMPLES: dict[str, list[Any]] = {
    "supabase": [SUPABASE_INSERT, SUPABASE_UPDATE, SUPABASE_DELETE],
    "debezium": [debezium("c", None, ANNE), envelope(debezium("u", ANNE, ANNE)), MYSQL_CREATE],
    "planetscale": [PLANETSCALE_BRANCH_READY],
    "cloudevents": [CE_STRUCTURED, [CE_STRUCTURED, {**CE_STRUCTURED, "id": "2"}]],
    "json": [{"kind": "a", "id": 1}],
}
ALL_SAMPLES = [s for samples in SAMPLES.values() for s in samples]

CE_HEADERS = st.dictionaries(
    st.sampled_from(
        ["ce-specversion", "ce-id", "ce-type", "ce-source", "ce-datacontenttype", "content-type"]
    ),
    st.sampled_from(["1.0", "0.3", "", "x", "application/json", "text/plain", "image/png"])
    | st.text(max_size=10),
)


_OWN = st.sampled_from(ALL_SAMPLES)
BODIES = st.one_of(
    _OWN.map(orjson.dumps),
    mutated(_OWN).map(orjson.dumps),
    broken(_OWN.map(orjson.dumps)),
    st.lists(mutated(_OWN), max_size=3).map(orjson.dumps),
    json_values().map(orjson.dumps),
    deeply_nested(),
    huge_string(65_536),
    st.binary(max_size=200),
    st.sampled_from([b"", b" ", b"null", b"[]", b"{}", b"[null]", b"\xef\xbb\xbf{}"]),
)


def _status(reason: str) -> int:
    return 400 if reason in UNREADABLE else 415 if reason == "unsupported_data" else 422


def test_fuzz_webhook_parsers() -> None:
    """Each example (documented payloads of every provider, mutated or broken, and
    plain garbage) goes through all five parsers: 100,000 inputs each."""
    parsers = {provider: parser(provider) for provider in PROVIDERS}
    tallies = {provider: Tally(f"fuzz_webhook_parser_{provider}") for provider in PROVIDERS}

    @fuzz_settings(EXAMPLES)
    @given(body=BODIES, headers=CE_HEADERS)
    def check(body: bytes, headers: dict[str, str]) -> None:
        for provider, parse in parsers.items():
            tally = tallies[provider]
            try:
                parsed = parse(body, headers)
            except InvalidEvent as exc:
                failure = exc
            else:
                assert parsed.candidates or parsed.ignored
                for candidate in parsed.candidates:
                    assert candidate.native_id is None or isinstance(candidate.native_id, str)
                    assert candidate.time is None or isinstance(candidate.time, str)
                tally.count(f"ok {len(parsed.candidates)}" if parsed.candidates else parsed.ignored)
                continue
            status = _status(failure.reason)
            assert isinstance(failure.reason, str) and failure.reason and str(failure)
            if status == 422:  # details name each problem, for the 422 answer
                assert failure.detail
            tally.count(f"{status} {failure.reason}")

    try:
        check()
    finally:
        for tally in tallies.values():
            tally.write()
    # Every provider parsed some inputs and refused others (per provider at full size).
    outcomes = {k for t in tallies.values() for k in t.outcomes}
    assert any(k.startswith("ok") for k in outcomes) and any(k.startswith("422") for k in outcomes)
    if CHAOS_FULL:
        for provider, tally in tallies.items():
            assert any(k.startswith("ok") for k in tally.outcomes), provider
            assert any(k.startswith(("400", "422")) for k in tally.outcomes), provider


# --------------------------------------------------------------------------- signatures

SECRET = "s3cret-Value"
OTHER = "s3cret-Valu3"
SW_KEY = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
SW_OTHER = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()


def _sw_sign(key: str, msg_id: str, at: datetime, body: bytes) -> str:
    """Standard Webhooks' signature over the raw bytes (the library signs text only)."""
    raw = base64.b64decode(key.removeprefix("whsec_"))
    signed = f"{msg_id}.{int(at.timestamp())}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(raw, signed, hashlib.sha256).digest()).decode()


def _hmac(secret: str, body: bytes, encoding: str) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


SCHEMES: dict[str, dict[str, Any]] = {
    "shared_secret": {"auth": {"secret": SECRET, "secrets": ["rotated-old"]}, "provider": "json"},
    "hmac_hex_prefix": {
        "auth": {
            "scheme": "hmac",
            "header": "x-hub-signature-256",
            "prefix": "sha256=",
            "secret": SECRET,
        },
        "provider": "json",
    },
    "hmac_base64": {
        "auth": {"scheme": "hmac", "encoding": "base64", "secret": SECRET},
        "provider": "json",
    },
    "planetscale_hmac": {"auth": {"secret": SECRET}, "provider": "planetscale"},
    "standard_webhooks": {
        "auth": {"scheme": "standard_webhooks", "secrets": [SW_KEY]},
        "provider": "debezium",
    },
}


AUTH_HEADERS = {
    "x-webhook-secret",
    "x-signature",
    "x-hub-signature-256",
    "x-planetscale-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
}


@st.composite
def signed_requests(draw: st.DrawFn, scheme: str) -> tuple[dict[str, str], bytes, bool, str]:
    """(headers, body, authentic, how): a request signed right, or forged one way or another."""
    body = draw(st.binary(max_size=64) | st.sampled_from(ALL_SAMPLES).map(orjson.dumps))
    cfg = SCHEMES[scheme]["auth"]
    how = draw(
        st.sampled_from(
            ["valid", "missing", "wrong_secret", "other_body", "garbage", "duplicated", "case"]
            + (
                ["stale", "future", "replayed", "bad_timestamp"]
                if scheme == "standard_webhooks"
                else []
            )
            + (["truncated", "no_prefix"] if scheme.startswith(("hmac", "planet")) else [])
        )
    )
    garbage = draw(header_values)
    garbage_text = (
        garbage if isinstance(garbage, str) else garbage.decode("utf-8", "surrogateescape")
    )
    if scheme == "shared_secret":
        name = "x-webhook-secret"
        value = {"wrong_secret": OTHER, "garbage": garbage_text, "truncated": SECRET[:-1]}.get(
            how, SECRET
        )
        headers = {} if how == "missing" else {name: value}
        if how == "case":
            headers = {"X-WEBHOOK-SECRET": SECRET}
        return headers, body, how in ("valid", "other_body", "duplicated", "case"), how
    if scheme == "standard_webhooks":
        now = datetime.now(UTC)
        at = {"stale": now - timedelta(minutes=6), "future": now + timedelta(minutes=6)}.get(
            how, now
        )
        msg_id = draw(st.text("abcdef0123456789_", min_size=1, max_size=12))
        key = SW_OTHER if how == "wrong_secret" else SW_KEY
        signed_body = body + b" " if how == "other_body" else body
        signature = _sw_sign(key, msg_id, at, signed_body)
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature,
        }
        if how == "missing":
            del headers[draw(st.sampled_from(sorted(headers)))]
        elif how == "garbage":
            headers["webhook-signature"] = garbage_text
        elif how == "bad_timestamp":
            headers["webhook-timestamp"] = draw(
                st.sampled_from(["", "1e999", "-1", "99999999999999999999", "now"])
                | st.text(max_size=8)
            )
        elif how == "duplicated":  # two signatures, one of them right
            headers["webhook-signature"] = "v1,AAAA " + signature
        elif how == "replayed":  # the same signed request again: authentic, deduplicated later
            pass
        elif how == "case":
            headers = {k.upper(): v for k, v in headers.items()}
        authentic = how in ("valid", "duplicated", "replayed", "case")
        try:
            signed_body.decode("utf-8")
        except UnicodeDecodeError:
            authentic = False  # the library signs text: bytes that are not UTF-8 never verify
        return headers, body, authentic, how
    # hmac and planetscale
    name = cfg.get("header") or (
        "x-planetscale-signature" if scheme == "planetscale_hmac" else "x-signature"
    )
    encoding = cfg.get("encoding", "hex")
    prefix = cfg.get("prefix", "")
    secret = OTHER if how == "wrong_secret" else SECRET
    signed_body = body + b"\n" if how == "other_body" else body
    value = prefix + _hmac(secret, signed_body, encoding)
    if how == "garbage":
        value = garbage_text
    elif how == "truncated":
        value = value[:-2]
    elif how == "no_prefix":
        value = _hmac(SECRET, body, encoding) if prefix else value
    headers = {} if how == "missing" else {name: value}
    if how == "case":
        headers = {name.upper(): value}
    authentic = how in ("valid", "duplicated", "case") or (how == "no_prefix" and not prefix)
    return headers, body, authentic, how


def test_fuzz_signature_checks() -> None:
    """Each example holds one request per scheme, signed right or forged: 100,000 each."""
    verifiers = {
        scheme: build_verifier(WebhookAuth.model_validate(spec["auth"]), spec["provider"])
        for scheme, spec in SCHEMES.items()
    }
    tallies = {scheme: Tally(f"fuzz_signature_{scheme}") for scheme in SCHEMES}
    noise_headers = st.dictionaries(
        header_names,
        header_values.map(lambda v: v if isinstance(v, str) else v.decode("latin-1")),
        max_size=3,
    )

    @fuzz_settings(EXAMPLES)
    @given(
        requests=st.tuples(*(signed_requests(scheme) for scheme in SCHEMES)),
        noise=noise_headers,
    )
    def check(
        requests: tuple[tuple[dict[str, str], bytes, bool, str], ...], noise: dict[str, str]
    ) -> None:
        for scheme, (headers, body, authentic, how) in zip(SCHEMES, requests, strict=True):
            taken = {k.lower() for k in headers} | AUTH_HEADERS
            merged = {**{k: v for k, v in noise.items() if k.lower() not in taken}, **headers}
            verdict = verifiers[scheme](merged, body)  # must not raise, whatever it gets
            assert verdict is authentic, (scheme, how, merged, body)
            tallies[scheme].count(f"{how} {'accepted' if verdict else 'refused'}")

    try:
        check()
    finally:
        for tally in tallies.values():
            tally.write()
    for scheme, tally in tallies.items():
        assert any(k.endswith("accepted") for k in tally.outcomes), scheme
        assert any(k.endswith("refused") for k in tally.outcomes), scheme
