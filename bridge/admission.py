"""Who may call what on the bridge's server: the event API's bearer token, and the
admin endpoints' loopback rule, bearer token and the UI's login cookie; and what a web
page in the user's browser may not do (``browser_refusal``, ``content_type_refusal``).

Tokens are compared in constant time. A refusal is an RFC 9457 problem that also
carries the API's usual ``error`` key.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging

from aiohttp import web

log = logging.getLogger("bridge.server")

# Admin endpoints: a path equal to one of these or below it (the UI's routes included).
ADMIN_PREFIXES = ("/v1/dead-letters", "/ui")
TOKEN_COOKIE = "bridge_admin_token"


def under(path: str, prefixes: tuple[str, ...]) -> bool:
    """``path`` is one of ``prefixes`` or below one."""
    return path in prefixes or path.startswith(_below(prefixes))


@functools.lru_cache(maxsize=64)  # a few tuples, written in the code
def _below(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p + "/" for p in prefixes)


def denied(status: int, message: str) -> web.Response:
    """A 401/403 problem (RFC 9457) that also carries the API's usual ``error`` key."""
    title = "Unauthorized" if status == 401 else "Forbidden"
    body = {"type": "about:blank", "title": title, "status": status, "error": message}
    response = web.json_response(body, status=status, content_type="application/problem+json")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="bridge"'
    return response


def same(given: str, token: str) -> bool:
    """``given`` equals ``token``, compared in constant time."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())


def bearer_ok(request: web.Request, token: str | None) -> bool:
    """No token is required, or ``Authorization: Bearer`` carries it."""
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and same(given.strip(), token)


def cookie_ok(request: web.Request, token: str | None) -> bool:
    """A token is required and the UI's login cookie carries it."""
    given = request.cookies.get(TOKEN_COOKIE)
    return bool(token) and given is not None and same(given, token or "")


def token_login(request: web.Request, token: str) -> web.Response:
    """``GET /ui?token=...``: a browser's way in. The right token becomes an HttpOnly,
    SameSite=Strict cookie and the browser is sent to the same URL without it."""
    if not same(request.query["token"], token):
        return denied(401, "missing or wrong bearer token")
    query = {k: v for k, v in request.query.items() if k != "token"}
    response = web.Response(
        status=303, headers={"Location": str(request.rel_url.with_query(query))}
    )
    response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
    return response


def loopback(remote: str | None) -> bool:
    """The socket peer address ``remote`` is loopback (IPv4-mapped included)."""
    try:
        address = ipaddress.ip_address((remote or "").split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


# ------------------------------------------------------------------ browsers

# Always allowed Host names. Any IP literal is allowed too: DNS rebinding needs a name the
# attacker's DNS answers, and a page whose URL holds the bridge's IP was served by the bridge.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "127.0.0.1", "::1"})
# Answered whatever the Host: the kubelet probes and Prometheus scrape by pod IP or by a
# name the config cannot know, and these answers hold no event data and change nothing.
PROBE_PATHS = ("/healthz", "/readyz", "/metrics")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"


def host_name(host: str) -> str:
    """The name of a ``Host`` header value: no port, no IPv6 brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


@functools.lru_cache(maxsize=1024)  # a few hosts in use; any a client makes up, bounded
def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """``host`` (a ``Host`` header) is a loopback name, an IP literal, or matches
    ``allowed``: a name, ``.example.com`` (that domain and its subdomains) or ``*``.
    Remembered per (host, allowed): every request asks it."""
    name = host_name(host)
    if name in LOOPBACK_NAMES:
        return True
    try:
        ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        pass
    else:
        return True
    name = name.rstrip(".")
    for pattern in allowed:
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith(".") and (name == pattern[1:] or name.endswith(pattern)):
            return True
    return False


def cross_site(request: web.Request) -> str | None:
    """Why ``request`` is a cross-site browser request that may change state, else None.

    The rule of Go's ``http.CrossOriginProtection``: safe methods pass; a browser's
    ``Sec-Fetch-Site`` must be ``same-origin`` or ``none`` (typed by the user); without
    it, an ``Origin`` must name the ``Host`` asked for. A request with neither header is
    not a browser's (curl, the CLI, a webhook provider) and passes.
    """
    if request.method in SAFE_METHODS:
        return None
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        if site.lower() in ("same-origin", "none"):
            return None
        return f"a {site} request from a browser"
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    scheme, _, authority = origin.partition("://")
    if (
        scheme in ("http", "https")
        and authority.lower() == request.headers.get("Host", "").lower().strip()
    ):
        return None
    return f"a request from the page at {origin!r}"


def browser_refusal(
    request: web.Request, allowed_hosts: tuple[str, ...], csrf_token: str
) -> web.Response | None:
    """A 403 for what a web page in the user's browser could send, else None.

    A foreign ``Host`` (DNS rebinding; the probe paths excepted), a cross-site request
    that may change state (``cross_site``), a UI action (not GET/HEAD/OPTIONS under
    ``/ui``) without the page's CSRF token in ``X-CSRF-Token``.
    """
    path = request.path
    host = request.headers.get("Host")
    if host is not None and not under(path, PROBE_PATHS) and not host_allowed(host, allowed_hosts):
        name = host_name(host)[:100]
        log.warning("foreign Host refused", extra={"host": name})
        return denied(
            403, f"Host {name!r} is not one this bridge answers; add it to server.allowed_hosts"
        )
    why = cross_site(request)
    if why is not None:
        return denied(403, f"cross-site request refused: {why} may not change anything here")
    action = request.method not in SAFE_METHODS and under(path, ("/ui",))
    if action and not same(request.headers.get(CSRF_HEADER, ""), csrf_token):
        return denied(403, f"missing or stale {CSRF_HEADER}: reload the UI page")
    return None


EVENT_TYPES = (
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
)


def content_type_refusal(request: web.Request) -> str | None:
    """Why the event API refuses this request's content type, else None.

    JSON and CloudEvents types only: a browser sends those cross-site only after a
    CORS preflight, which the bridge never answers. Binary mode (any ``ce-`` header)
    carries data of any type: a page cannot send ``ce-`` headers without a preflight
    either.
    """
    if any(name.lower().startswith("ce-") for name in request.headers):
        return None
    given = request.headers.get("Content-Type")
    mime = (given or "").partition(";")[0].strip().lower()
    if mime in EVENT_TYPES:
        return None
    return (
        f"unsupported content type {(given or 'none')[:100]!r}: send "
        "application/cloudevents+json, application/cloudevents-batch+json or "
        "application/json, or the data in binary mode with ce- headers"
    )
