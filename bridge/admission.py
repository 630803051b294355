"""Who may call what on the bridge's server: the event API's bearer token, and the
admin endpoints' loopback rule, bearer token and the UI's login cookie.

Tokens are compared in constant time. A refusal is an RFC 9457 problem that also
carries the API's usual ``error`` key.
"""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web

# Admin endpoints: a path equal to one of these or below it (the UI's routes included).
ADMIN_PREFIXES = ("/v1/dead-letters", "/ui")
TOKEN_COOKIE = "bridge_admin_token"


def under(path: str, prefixes: tuple[str, ...]) -> bool:
    """``path`` is one of ``prefixes`` or below one."""
    return any(path == p or path.startswith(p + "/") for p in prefixes)


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
