"""The deployment artifacts under deploy/: image recipe, Kubernetes overlays, compose file.

No cluster and no Docker daemon: kustomize (``kubectl kustomize``, offline) renders
every overlay, kubernetes-validate checks each built-in object against the bundled
1.29 schemas (native sidecars need 1.29) and the newest ones, and everything else is
checked against the bridge itself: the ConfigMap's bridge.yaml passes ``bridge
validate`` with exactly the environment its container gets, the probes hit routes the
server has on the port it listens on, and the grace period covers the drain.
"""

from __future__ import annotations

import functools
import http.server
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from bridge.app import load_config
from bridge.app.cli import main as bridge_main
from bridge.app.runtime import Runtime
from bridge.config import BridgeConfig
from bridge.server import Server
from bridge.store import MemoryStore
from bridge.store.sqlite import sqlite_path
from connectors.kafka import KafkaConfig
from connectors.nats import NatsConfig
from connectors.rabbitmq import RabbitMQConfig
from connectors.redis import RedisConfig
from connectors.sqs import SqsConfig
from handlers.http import HttpHandlerConfig

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ["sidecar", "standalone", "keda"]
K8S_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
CONFIG_PATH = "/etc/bridge/bridge.yaml"
SECRET = "bridge-credentials"
# bridge.app.runtime gives each source at least this long to close after the drain, one after another.
SOURCE_STOP_SECONDS = 5.0
# What the sidecar overlay leaves an application for its own shutdown, beyond its preStop.
APP_SHUTDOWN_SECONDS = 10.0
# Stand-ins for values from the Secret: what docs/deployment.md asks those keys to hold.
SECRET_SAMPLES = {
    "BRIDGE_STORE_URL": "postgresql://bridge:secret@postgres:5432/bridge",
    "RABBITMQ_URL": "amqps://bridge:secret@rabbitmq:5671/",
}


# --------------------------------------------------------------------------- rendering


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = Path(sys.executable).parent / "kubectl"
    if not kubectl.exists():
        pytest.fail(f"{kubectl} is missing: `make install` puts kubectl (kustomize) in .venv")
    out = subprocess.run(
        [str(kubectl), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, f"kustomize {overlay}: {out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def is_bridge(container: dict[str, Any]) -> bool:
    return str(container["image"]).rpartition(":")[0].endswith("fanout-bridge")


def pods(overlay: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(Deployment, pod spec) of every Deployment that runs the bridge."""
    for dep in of_kind(render(overlay), "Deployment"):
        spec = dep["spec"]["template"]["spec"]
        if any(is_bridge(c) for c in all_containers(spec)):
            yield dep, spec


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def bridge_container(spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in all_containers(spec) if is_bridge(c)]
    return container


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment; Secret values replaced by samples."""
    assert "envFrom" not in container, "name every variable: the config's needs stay explicit"
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            key = var["valueFrom"]["secretKeyRef"]["key"]
            env[var["name"]] = SECRET_SAMPLES.get(key, f"sample-{key.lower()}")
    return env


def config_text(overlay: str, spec: dict[str, Any]) -> str:
    container = bridge_container(spec)
    assert container.get("args", ["run", "-c", CONFIG_PATH]) == ["run", "-c", CONFIG_PATH]
    config_dir = str(PurePosixPath(CONFIG_PATH).parent)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == config_dir]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    config_map = named(render(overlay), "ConfigMap", volume["configMap"]["name"])
    return str(config_map["data"][PurePosixPath(CONFIG_PATH).name])


def bridge_config(overlay: str, spec: dict[str, Any], tmp_path: Path) -> BridgeConfig:
    path = tmp_path / "bridge.yaml"
    path.write_text(config_text(overlay, spec))
    # Exactly the container's environment: a ${VAR} it does not set fails here.
    return load_config(path, env=container_env(bridge_container(spec)))


def listen_of(cfg: BridgeConfig, container: dict[str, Any]) -> tuple[str, int]:
    """Where the server listens: BRIDGE_LISTEN (the container's, else the image's)
    overrides server.listen (bridge.settings)."""
    listen = container_env(container).get("BRIDGE_LISTEN") or image_env()["BRIDGE_LISTEN"]
    assert cfg.server.listen == listen, "server.listen disagrees with BRIDGE_LISTEN, which wins"
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def consumer(cfg: BridgeConfig, kind: type[T]) -> T:
    """The one connector of this config class that consumes."""
    (found,) = [c for c in cfg.connectors.values() if isinstance(c, kind) and c.consume]
    return found


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return int(number)


def sleep_seconds(container: dict[str, Any]) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0.0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", f"a preStop pause is `sleep N`, not {command}"
    return float(command[1])


@functools.cache
def server_routes() -> frozenset[tuple[str, str]]:
    """(method, path) of every route of the bridge's HTTP server (built, not started)."""
    cfg = load_config(DEPLOY / "compose" / "bridge.yaml", env={})
    return frozenset(
        (r.method, r.resource.canonical)
        for r in Server(Runtime(cfg, store=MemoryStore("memory://"))).app.router.routes()
        if r.resource is not None
    )


# --------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_overlay_validates_against_kubernetes_schemas(overlay: str, version: str) -> None:
    docs = render(overlay)
    assert of_kind(docs, "Deployment")
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: test_keda_scaled_objects checks its structure
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.absolute_path)
            pytest.fail(
                f"{overlay}: {doc['kind']}/{doc['metadata']['name']} {where}: {exc.message}"
            )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_map_passes_bridge_validate(
    overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _, spec in pods(overlay):
        bridge_config(overlay, spec, tmp_path)
        path = tmp_path / "bridge.yaml"
        for name, value in container_env(bridge_container(spec)).items():
            monkeypatch.setenv(name, value)
        assert bridge_main(["validate", "-c", str(path)]) == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_reach_the_server(overlay: str, tmp_path: Path) -> None:
    routes = server_routes()
    for dep, spec in pods(overlay):
        container = bridge_container(spec)
        cfg = bridge_config(overlay, spec, tmp_path)
        host, port = listen_of(cfg, container)
        assert host in ("0.0.0.0", "::"), "the kubelet probes the pod IP, not 127.0.0.1"
        expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
        if "startupProbe" in container:
            expected["startupProbe"] = "/healthz"  # /readyz would hold the pod on a broker
        for probe, path in expected.items():
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{probe} of {dep['metadata']['name']}"
            assert ("GET", path) in routes
            assert port_number(container, get["port"]) == port
        annotations = dep["spec"]["template"]["metadata"].get("annotations", {})
        if "prometheus.io/port" in annotations:
            assert int(annotations["prometheus.io/port"]) == port
            assert ("GET", annotations["prometheus.io/path"]) in routes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_and_drain(overlay: str, tmp_path: Path) -> None:
    for dep, spec in pods(overlay):
        cfg = bridge_config(overlay, spec, tmp_path)
        runtime = Runtime(cfg, store=MemoryStore("memory://"))
        runtime.build()
        container = bridge_container(spec)
        needed = sleep_seconds(container) + cfg.drain_timeout
        needed += SOURCE_STOP_SECONDS * len(runtime.slots)
        if container.get("restartPolicy") == "Always":
            # A native sidecar gets SIGTERM only once the app containers have exited.
            apps = spec["containers"]
            needed += max(sleep_seconds(c) for c in apps) + APP_SHUTDOWN_SECONDS
        grace = spec["terminationGracePeriodSeconds"]
        assert cfg.drain_timeout < grace
        assert needed < grace, f"{dep['metadata']['name']}: {needed}s of shutdown > {grace}s grace"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_are_locked_down(overlay: str) -> None:
    uid = dockerfile_user()
    for dep, spec in pods(overlay):
        pod_ctx = spec.get("securityContext", {})
        assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        for c in all_containers(spec):
            ctx = c.get("securityContext", {})
            where = f"{dep['metadata']['name']}/{c['name']}"
            assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, where
            assert ctx.get("readOnlyRootFilesystem") is True, where
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
            assert "add" not in ctx.get("capabilities", {}), where
            resources = c.get("resources", {})
            assert {"cpu", "memory"} <= resources.get("requests", {}).keys(), where
            assert "memory" in resources.get("limits", {}), where
        assert ctx_uid(spec, bridge_container(spec)) == uid, "the image's USER"


def ctx_uid(spec: dict[str, Any], container: dict[str, Any]) -> int:
    pod_uid = spec.get("securityContext", {}).get("runAsUser")
    return int(container.get("securityContext", {}).get("runAsUser", pod_uid))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_writable_volume_only_for_the_sqlite_store(overlay: str, tmp_path: Path) -> None:
    for dep, spec in pods(overlay):
        cfg = bridge_config(overlay, spec, tmp_path)
        writable = [m for m in bridge_container(spec)["volumeMounts"] if not m.get("readOnly")]
        if not cfg.store.startswith("sqlite:"):
            assert writable == [], f"{dep['metadata']['name']}: the store is not on a volume"
            continue
        db = PurePosixPath(sqlite_path(cfg.store))
        assert db.is_absolute(), "a relative SQLite path lands on the read-only root"
        (mount,) = writable
        assert PurePosixPath(mount["mountPath"]) == db.parent  # the db and its WAL files
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert "emptyDir" in volume or "persistentVolumeClaim" in volume


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_inline(overlay: str, tmp_path: Path) -> None:
    docs = render(overlay)
    assert of_kind(docs, "Secret") == [], "the Secret is created outside of kustomize"
    secret_name = re.compile(r"TOKEN|PASSWORD|SECRET|ACCESS_KEY|CREDENTIAL")
    userinfo = re.compile(r"://[^/@]+@")  # scheme://user:password@host
    for _, spec in pods(overlay):
        for c in all_containers(spec):
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    assert ref["name"] == SECRET
                elif secret_name.search(var["name"]) or userinfo.search(var.get("value", "")):
                    pytest.fail(f"{c['name']}: {var['name']} is inline; take it from {SECRET}")
        raw = yaml.safe_load(config_text(overlay, spec))
        for path, value in walk(raw):
            key = path[-1]
            if key in ("token", "password", "secret", "key_password") or (
                key in ("url", "store") and "@" in str(value)
            ):
                assert "${" in str(value), f"{'.'.join(map(str, path))} is written in the file"


def walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, (*path, i))
    else:
        yield path, node


def test_sidecar_is_a_native_sidecar(tmp_path: Path) -> None:
    ((_, spec),) = pods("sidecar")
    (bridge,) = [c for c in spec.get("initContainers", []) if is_bridge(c)]
    assert bridge.get("restartPolicy") == "Always"  # starts before the app, stops after it
    assert "startupProbe" in bridge, "the app starts once the bridge's server answers"
    apps = spec["containers"]
    assert apps and not any(is_bridge(c) for c in apps)
    cfg = bridge_config("sidecar", spec, tmp_path)
    _, port = listen_of(cfg, bridge)
    # The app reaches the event API on localhost ...
    for app in apps:
        url = urlsplit(container_env(app)["BRIDGE_URL"])
        assert (url.hostname, url.port) == ("127.0.0.1", port)
    # ... and receives deliveries on its own port.
    app_ports = {p["containerPort"] for app in apps for p in app.get("ports", [])}
    local = [h for h in cfg.handlers if isinstance(h, HttpHandlerConfig)]
    assert local
    for handler in local:
        url = urlsplit(handler.url)
        assert url.hostname in ("127.0.0.1", "localhost") and url.port in app_ports


@pytest.mark.parametrize("overlay", ["standalone", "keda"])
def test_standalone_objects_fit_together(overlay: str, tmp_path: Path) -> None:
    docs = render(overlay)
    ((dep, spec),) = pods(overlay)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    container = bridge_container(spec)
    cfg = bridge_config(overlay, spec, tmp_path)
    _, port = listen_of(cfg, container)
    (service,) = of_kind(docs, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    (service_port,) = service["spec"]["ports"]
    assert port_number(container, service_port["targetPort"]) == port
    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    scalers = [*of_kind(docs, "HorizontalPodAutoscaler"), *of_kind(docs, "ScaledObject")]
    assert len(scalers) == 1, "one autoscaler per Deployment (an HPA and KEDA would fight)"
    (scaler,) = scalers
    assert scaler["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert "replicas" not in dep["spec"], "the autoscaler owns the replica count"
    # Scaling down deletes pods: state shared by replicas lives in PostgreSQL.
    assert cfg.store.startswith(("postgresql:", "postgres:"))


KEDA_METADATA = {
    "kafka": {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"},
    "rabbitmq": {"queueName", "mode", "value"},
    "aws-sqs-queue": {"queueURL", "queueLength", "awsRegion"},
    "redis-streams": {"address", "stream", "consumerGroup", "lagCount"},
    "nats-jetstream": {
        "natsServerMonitoringEndpoint",
        "account",
        "stream",
        "consumer",
        "lagThreshold",
    },
}

KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


def test_keda_scaled_objects(tmp_path: Path) -> None:
    docs = render("keda")
    ((dep, spec),) = pods("keda")
    env = container_env(bridge_container(spec))
    cfg = bridge_config("keda", spec, tmp_path)
    secret_keys = {
        v["valueFrom"]["secretKeyRef"]["key"]
        for v in bridge_container(spec)["env"]
        if "valueFrom" in v
    }
    auths = {a["metadata"]["name"]: a for a in of_kind(docs, "TriggerAuthentication")}
    (scaled,) = of_kind(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    triggers = {t["type"]: t for t in scaled["spec"]["triggers"]}
    assert triggers.keys() == KEDA_METADATA.keys()
    for kind, trigger in triggers.items():
        meta = trigger["metadata"]
        assert KEDA_METADATA[kind] <= meta.keys(), kind
        assert all(isinstance(v, str) for v in meta.values()), f"{kind}: KEDA metadata are strings"
        if "authenticationRef" not in trigger:
            continue  # nats-jetstream reads the unauthenticated monitoring port
        auth = auths[trigger["authenticationRef"]["name"]]["spec"]
        for ref in auth.get("secretTargetRef", []):
            assert ref["name"] == SECRET and ref["key"] in secret_keys  # the bridge's own
    # Each trigger watches what the bridge consumes, where the bridge consumes it.
    kafka = consumer(cfg, KafkaConfig)
    assert kafka.consume is not None and kafka.sasl is not None
    meta = triggers["kafka"]["metadata"]
    assert meta["bootstrapServers"] == env["KAFKA_BOOTSTRAP"] == ",".join(kafka.bootstrap_servers)
    assert meta["consumerGroup"] == kafka.consume.group_id
    assert meta["topic"] in kafka.consume.topics
    assert meta["sasl"] == KEDA_SASL[kafka.sasl.mechanism]
    assert (meta["tls"] == "enable") == (kafka.tls is not None)
    rabbitmq = consumer(cfg, RabbitMQConfig)
    assert rabbitmq.consume is not None
    assert triggers["rabbitmq"]["metadata"]["queueName"] == rabbitmq.consume.queue
    sqs = consumer(cfg, SqsConfig)
    assert sqs.consume is not None
    meta = triggers["aws-sqs-queue"]["metadata"]
    assert meta["queueURL"] == sqs.consume.queue
    assert meta["awsRegion"] == sqs.region == str(urlsplit(meta["queueURL"]).hostname).split(".")[1]
    redis = consumer(cfg, RedisConfig)
    assert redis.consume is not None
    meta = triggers["redis-streams"]["metadata"]
    url = urlsplit(redis.url)
    assert meta["address"] == f"{url.hostname}:{url.port}"
    assert meta["stream"] == redis.consume.stream
    assert meta["consumerGroup"] == redis.consume.group
    assert (meta["enableTLS"] == "true") == (url.scheme == "rediss")
    nats = consumer(cfg, NatsConfig)
    assert nats.consume is not None
    meta = triggers["nats-jetstream"]["metadata"]
    assert meta["stream"] == nats.consume.stream
    assert meta["consumer"] == nats.consume.durable
    monitor_host = meta["natsServerMonitoringEndpoint"].partition(":")[0]
    assert monitor_host == urlsplit(env["NATS_URL"]).hostname  # the server the bridge uses
    assert nats.servers == [env["NATS_URL"]]


# --------------------------------------------------------------------------- the image


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines()]
    return [
        (ln.split(None, 1)[0].upper(), ln.split(None, 1)[1])
        for ln in lines
        if ln and not ln.startswith("#")
    ]


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = [[]]
    for instr in dockerfile():
        if instr[0] == "FROM":
            out.append([])
        out[-1].append(instr)
    return out


def image_env() -> dict[str, str]:
    env = " ".join(args for instr, args in stages()[-1] if instr == "ENV")
    return dict(item.split("=", 1) for item in env.split())


def dockerfile_user() -> int:
    users = [args for instr, args in stages()[-1] if instr == "USER"]
    uid = int(users[-1].partition(":")[0])
    assert uid != 0
    return uid


def json_args(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    values = [args for instr, args in stage if instr == instruction]
    return [str(a) for a in yaml.safe_load(values[-1])]  # exec form: a JSON array


def test_dockerfile_builds_from_the_lock_into_a_slim_non_root_image() -> None:
    preamble, *built = stages()
    args = dict(a.split("=", 1) for instr, a in preamble if instr == "ARG")
    assert len(built) >= 2, "multi-stage: the runtime stage has no build tools"
    for stage in built:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert image.startswith("python:3.11") and "slim" in image
    builder, runtime = built[0], built[-1]
    runs = " ".join(a for instr, a in builder if instr == "RUN")
    assert "uv sync --frozen --no-dev" in runs and "--no-editable" in runs
    assert not any(instr == "RUN" and "uv " in a for instr, a in runtime)
    copies = [a for instr, a in runtime if instr == "COPY"]
    assert copies and all(a.startswith("--from=") for a in copies), "only the built venv"
    entry = json_args(runtime, "ENTRYPOINT") + json_args(runtime, "CMD")
    assert entry == ["bridge", "run", "-c", CONFIG_PATH]
    env = image_env()
    assert env["BRIDGE_CONFIG"] == CONFIG_PATH
    host, _, port = env["BRIDGE_LISTEN"].rpartition(":")
    assert host == "0.0.0.0"
    assert [a for instr, a in runtime if instr == "EXPOSE"] == [port]
    for overlay in OVERLAYS:
        for _, spec in pods(overlay):
            assert [p["containerPort"] for p in bridge_container(spec)["ports"]] == [int(port)]
    assert not any(instr == "VOLUME" for instr, _ in runtime), "volumes are the platform's choice"
    dockerfile_user()


def test_dockerfile_copies_every_package_and_the_context_allows_it() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    sources = []
    for stage in stages():
        for instr, args in stage:
            if instr == "COPY" and not args.startswith("--from="):
                sources += args.split()[:-1]
    assert set(packages) <= set(sources)
    allowed = {
        ln[1:].rstrip("/")
        for ln in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if ln.startswith("!")
    }
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        assert source in allowed, f"COPY {source}: excluded by deploy/Dockerfile.dockerignore"


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command_follows_healthz(status: int, healthy: bool) -> None:
    line = next(a for instr, a in stages()[-1] if instr == "HEALTHCHECK")
    command = yaml.safe_load(line[line.index("CMD") + 3 :])
    assert command[:2] == ["python", "-c"]
    handler = type("Health", (_Health,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {"BRIDGE_LISTEN": f"0.0.0.0:{server.server_address[1]}"}
        done = subprocess.run(
            [sys.executable, "-c", command[2]],
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (done.returncode == 0) is healthy, done.stderr


# --------------------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return parsed


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port; every port bound to 127.0.0.1 only."""
    ports = {}
    for spec in service.get("ports", []):
        host_ip, host, container = str(spec).split(":")
        assert host_ip == "127.0.0.1", f"{spec}: local development binds to 127.0.0.1"
        ports[int(container)] = int(host)
    return ports


def example_ports() -> dict[str, int]:
    ports = {}
    for path in sorted((ROOT / "examples").glob("*/bridge.yaml")):
        ports[path.parent.name] = load_config(path, env={}, check=False).server.port
    return ports


def test_compose_bridge_runs_its_config_on_the_examples_port() -> None:
    services = compose()["services"]
    assert {"kafka", "rabbitmq", "sqs", "bridge"} <= services.keys()
    bridge = services["bridge"]
    build = bridge["build"]
    assert (DEPLOY / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    (mount,) = [v for v in bridge["volumes"] if v.endswith(f":{CONFIG_PATH}:ro")]
    env = {k: str(v) for k, v in bridge["environment"].items()}
    cfg = load_config(DEPLOY / mount.split(":")[0], env=env)
    port = int(env.get("BRIDGE_LISTEN", cfg.server.listen).rpartition(":")[2])
    host_port = published(bridge)[port]
    examples = example_ports()
    # The port `make run`, `bridge send` and the newsletter example use.
    assert host_port == examples["newsletter"]
    grace = float(bridge["stop_grace_period"].removesuffix("s"))
    assert cfg.drain_timeout < grace
    # The brokers are where the config reaches them, and clear of every example's port.
    bootstrap = consumer(cfg, KafkaConfig).bootstrap_servers[0]
    assert f":{bootstrap.rpartition(':')[2]}" in services["kafka"]["environment"]["KAFKA_LISTENERS"]
    assert urlsplit(consumer(cfg, RabbitMQConfig).url).port in published(services["rabbitmq"])
    endpoint = str(consumer(cfg, SqsConfig).endpoint_url)
    assert urlsplit(endpoint).port in published(services["sqs"])
    for name, service in services.items():
        if name != "bridge":
            assert not set(published(service).values()) & set(examples.values()), name


def test_compose_brokers_answer_on_their_usual_host_ports() -> None:
    services = compose()["services"]
    kafka = services["kafka"]
    advertised = dict(
        item.split("://") for item in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    host_listener = urlsplit(f"//{advertised['HOST']}")
    assert published(kafka)[9092] == host_listener.port == 9092
    # A rabbitmq connector without `url` reaches the compose broker from the host.
    default = urlsplit(RabbitMQConfig.model_fields["url"].default)
    assert published(services["rabbitmq"])[5672] == default.port
    assert published(services["sqs"])[9324] == 9324
