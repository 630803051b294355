"""``bridge dev`` with a config that does not load: the server stays up and shows why.

While the file is broken, a small server takes the bridge's address and answers:

* ``/ui`` (any page of it): an HTML page with every error (file, line, path,
  message), reloading itself every two seconds, so the real UI appears once
  the file is fixed;
* ``/readyz`` and any API path: ``503`` with the errors as JSON
  (``{"status": "config_error", "errors": [...]}``);
* ``/healthz``: ``200`` with the same JSON (the process is alive and waiting).

It serves nothing else (no event intake, no dead letters, no actions), and it
stops before the fixed config's runtime takes the address.
"""

from __future__ import annotations

import html
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aiohttp import web

from bridge.app.config import config_error_lines
from bridge.config import ServerConfig
from bridge.config.yamlfile import parse
from bridge.errors import ConfigError
from bridge.redaction import redact


@dataclass(frozen=True)
class Problem:
    """Why the bridge is not running: a title and one line per error."""

    title: str
    errors: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, exc: BaseException, title: str) -> Problem:
        """The problem ``exc`` describes: a config error's issues, else its message."""
        if isinstance(exc, ConfigError):
            *lines, count = config_error_lines(exc)
            return cls(count, lines)
        return cls(title, [redact(str(exc)) or type(exc).__name__])

    def as_json(self) -> dict[str, object]:
        return {"status": "config_error", "title": self.title, "errors": self.errors}

    def as_html(self) -> str:
        items = "\n".join(f"<li><code>{html.escape(e)}</code></li>" for e in self.errors)
        return (
            "<!doctype html><html><head><meta charset=utf-8>"
            '<meta http-equiv="refresh" content="2"><title>bridge dev: config error</title>'
            "<style>body{font:15px system-ui,sans-serif;margin:2rem;max-width:60rem}"
            "h1{color:#b00020;font-size:1.3rem}li{margin:.4rem 0}code{white-space:pre-wrap}"
            "</style></head><body>"
            f"<h1>The bridge is not running: {html.escape(self.title)}</h1>"
            f"<ul>{items}</ul>"
            "<p>Fix the file and save it: this page reloads itself, and the bridge starts "
            "again as soon as the config loads.</p></body></html>"
        )


def listen_of(config: Path, override: str | None, last: str | None) -> ServerConfig:
    """Where the error page listens: ``--listen``, else the broken file's own
    ``server.listen`` when it is a plain valid value, else the last good one, else
    the default."""
    candidates = [override]
    try:
        raw, _ = parse(config.read_text(), str(config))
        server = raw.get("server") if isinstance(raw, dict) else None
        listen = server.get("listen") if isinstance(server, dict) else None
        if isinstance(listen, str) and "${" not in listen:
            candidates.append(listen)
    except (OSError, ConfigError):
        pass
    candidates.append(last)
    for candidate in candidates:
        if candidate:
            try:
                return ServerConfig(listen=candidate)
            except ValueError:
                continue
    return ServerConfig()


class ErrorPage:
    """The error server, as an async context manager; a busy address is reported
    on stderr and the page skipped (the console still shows the errors)."""

    def __init__(self, problem: Problem, server: ServerConfig) -> None:
        self.problem = problem
        self.server = server
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> ErrorPage:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.server.host, self.server.port).start()
        except OSError as exc:
            await runner.cleanup()
            print(f"bridge dev: cannot show the error page: {exc}", file=sys.stderr, flush=True)
            return self
        self._runner = runner
        host = "127.0.0.1" if self.server.host in ("0.0.0.0", "::", "") else self.server.host
        print(
            f"bridge dev: http://{host}:{self.server.port}/ui shows the errors until the "
            "file is fixed",
            file=sys.stderr,
            flush=True,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/healthz":
            return web.json_response(self.problem.as_json())
        if (path == "/ui" or path.startswith("/ui/")) and not path.startswith("/ui/api/"):
            return web.Response(text=self.problem.as_html(), content_type="text/html")
        return web.json_response(self.problem.as_json(), status=503)
