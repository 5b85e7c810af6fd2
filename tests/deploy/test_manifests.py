"""deploy/: every manifest parses, and the parts that must agree with each other do.

The Kubernetes manifests are checked against the API schemas (kubernetes-validate, strict: an
unknown or misspelt field fails), then for what a schema can't see: the socket volume, the
probes, the Secrets, the UID that makes the owner-only socket usable, the NATS Service and
routes. The tollgate config inside the ConfigMap goes through the sidecar's own config loader.
The NATS configurations pass ``nats-server -t`` and are then run as real 3-node clusters on
loopback, with tollgate's JetStream store on them, and the sidecar itself on the ConfigMap's
config. The systemd unit and the Containerfile are read by small parsers (deploy_parsers).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
import anyio
import kubernetes_validate
import msgspec
import nats
import pytest
import yaml
from deploy_cluster import ClusterNode, running_cluster
from deploy_parsers import (
    Var,
    env_pairs,
    exec_form,
    ignored_by,
    parse_containerfile,
    parse_nats_conf,
    parse_unit,
)
from nats_server import find_nats_server

from events import FallbackTaken, new_id, open_jetstream_store
from sidecar._config import Config, parse_config
from sidecar._prices import PriceTable
from sidecar._service import open_sidecar

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
NATS_DIR = DEPLOY / "nats"

# Native sidecars (restartable init containers) need 1.29; the schemas' newest version too.
KUBERNETES_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


# --- loading -----------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """Refuses a key given twice in one map. PyYAML would silently keep the last one, and the
    tests would pass a manifest that kubectl refuses."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> Any:
    keys = [loader.construct_object(key) for key, _ in node.value]
    if duplicated := sorted({str(k) for k in keys if keys.count(k) > 1}):
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate keys {duplicated}", node.start_mark
        )
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def _documents() -> list[tuple[str, int, dict[str, Any]]]:
    docs = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for index, doc in enumerate(yaml.load_all(path.read_text(), Loader=_StrictLoader)):
            assert isinstance(doc, dict), f"{path.name} document {index} is empty or not a map"
            docs.append((path.name, index, doc))
    return docs


DOCUMENTS = _documents()
API_DOCUMENTS = [d for d in DOCUMENTS if d[2]["kind"] != "Kustomization"]


def _only(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for _, _, doc in DOCUMENTS
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _secrets() -> dict[str, dict[str, str]]:
    """Each Secret's keys and (decoded) values."""
    secrets = {}
    for _, _, doc in DOCUMENTS:
        if doc["kind"] == "Secret":
            values = dict(doc.get("stringData") or {})
            for key, encoded in (doc.get("data") or {}).items():
                values[key] = base64.b64decode(encoded).decode()
            secrets[doc["metadata"]["name"]] = values
    return secrets


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _all_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _is_tollgate(container: dict[str, Any]) -> bool:
    repository = container["image"].rsplit(":", 1)[0]
    return repository.rsplit("/", 1)[-1] == "tollgate"


def _app_pod() -> dict[str, Any]:
    pods = [
        _pod_spec(doc)
        for _, _, doc in DOCUMENTS
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
        and any(_is_tollgate(c) for c in _all_containers(_pod_spec(doc)))
    ]
    assert len(pods) == 1, "expected one workload with a tollgate sidecar"
    return pods[0]


def _sidecar_and_apps(pod: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    sidecars = [c for c in _all_containers(pod) if _is_tollgate(c)]
    assert len(sidecars) == 1
    apps = [c for c in pod["containers"] if not _is_tollgate(c)]
    assert apps, "no application container beside the sidecar"
    return sidecars[0], apps


def _effective(pod: dict[str, Any], container: dict[str, Any], field: str) -> Any:
    """A securityContext field as the kubelet applies it: the container's, else the pod's."""
    own = container.get("securityContext", {})
    return own[field] if field in own else pod.get("securityContext", {}).get(field)


def _config_path(container: dict[str, Any]) -> PurePosixPath:
    argv = [*container.get("command", []), *container.get("args", [])]
    assert "serve" in argv, f"the sidecar does not run 'serve': {argv}"
    return PurePosixPath(argv[argv.index("--config") + 1])


def _mount_for(container: dict[str, Any], path: PurePosixPath) -> dict[str, Any]:
    """The volume mount that holds ``path`` (the deepest mount above it)."""
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if path == PurePosixPath(m["mountPath"]) or PurePosixPath(m["mountPath"]) in path.parents
    ]
    assert mounts, f"{container['name']}: nothing is mounted at {path}"
    return max(mounts, key=lambda m: len(PurePosixPath(m["mountPath"]).parts))


def _volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (volume,) = [v for v in pod.get("volumes", []) if v["name"] == name]
    return volume


def _container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a name or a number) as the container's port number."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert isinstance(number, int)
    return number


@pytest.fixture(scope="module")
def tollgate_config() -> Config:
    configmap = _configmap_for(_sidecar_and_apps(_app_pod())[0])
    path = _config_path(_sidecar_and_apps(_app_pod())[0])
    return parse_config(
        configmap["data"][path.name], base_dir=Path(path.parent), source="tollgate-config"
    )


def _configmap_for(container: dict[str, Any]) -> dict[str, Any]:
    pod = _app_pod()
    path = _config_path(container)
    mount = _mount_for(container, path)
    volume = _volume(pod, mount["name"])
    assert "configMap" in volume, f"{path} is not mounted from a ConfigMap"
    return _only("ConfigMap", volume["configMap"]["name"])


def _size(quantity: str) -> int:
    """A Kubernetes quantity (binary suffixes only, as deploy/ uses them) in bytes."""
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", quantity)
    assert match, f"unsupported quantity {quantity!r}"
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


# --- Kubernetes: schemas and completeness -------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "doc", [d[2] for d in API_DOCUMENTS], ids=[f"{f}#{i}" for f, i, _ in API_DOCUMENTS]
)
def test_manifest_is_valid_for_kubernetes(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_manifest_loader_refuses_duplicate_keys() -> None:
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate keys"):
        list(yaml.load_all("a: 1\nb: {c: 2, c: 3}\n", Loader=_StrictLoader))


def test_kustomization_lists_every_manifest() -> None:
    kustomization = _only("Kustomization")
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    expected = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == expected


def test_secret_values_are_only_placeholders() -> None:
    secrets = _secrets()
    assert secrets
    for name, values in secrets.items():
        assert values, f"Secret {name} is empty"
        for key, value in values.items():
            assert value == "REPLACE_ME", f"Secret {name}.{key} holds a value, not a placeholder"


# --- Kubernetes: the tollgate sidecar -----------------------------------------------------------


def test_configmap_holds_a_complete_jetstream_config(tollgate_config: Config) -> None:
    config = tollgate_config
    assert config.store.kind == "jetstream"
    assert config.nats.enabled
    assert config.nats.servers == ["nats://nats:4222"]
    assert config.server.admin_address is not None
    # The sidecar refuses to start with an unpriced model; this is the table it builds.
    assert PriceTable.from_config(config).models == frozenset(config.models)


def test_socket_is_shared_through_an_emptydir_at_the_configured_path(
    tollgate_config: Config,
) -> None:
    pod = _app_pod()
    sidecar, apps = _sidecar_and_apps(pod)
    socket = PurePosixPath(tollgate_config.server.socket)
    mount = _mount_for(sidecar, socket.parent)
    assert PurePosixPath(mount["mountPath"]) == socket.parent
    assert not mount.get("readOnly", False), "the sidecar must be able to create the socket"
    assert "emptyDir" in _volume(pod, mount["name"])
    for app in apps:
        app_mount = _mount_for(app, socket.parent)
        assert app_mount["name"] == mount["name"], f"{app['name']} mounts another volume"
        assert app_mount["mountPath"] == mount["mountPath"]
        advertised = {e["name"]: e.get("value") for e in app.get("env", [])}
        if "TOLLGATE_SOCKET" in advertised:
            assert advertised["TOLLGATE_SOCKET"] == str(socket)


def test_app_can_use_the_socket(tollgate_config: Config) -> None:
    pod = _app_pod()
    sidecar, apps = _sidecar_and_apps(pod)
    mode = tollgate_config.server.socket_mode
    sidecar_uid = _effective(pod, sidecar, "runAsUser")
    _, stages = parse_containerfile((DEPLOY / "Containerfile").read_text())
    image_uid = int(stages[-1].all("USER")[-1].split(":")[0])
    assert sidecar_uid == image_uid, "runAsUser differs from the image's USER"
    security = pod.get("securityContext", {})
    # In an emptyDir with an fsGroup (setgid), the socket belongs to that group.
    socket_group = security.get("fsGroup", _effective(pod, sidecar, "runAsGroup"))
    for app in apps:
        if _effective(pod, app, "runAsUser") == sidecar_uid:
            assert mode & 0o600 == 0o600
            continue
        # Another UID: only the group bits can let it in, through a group both share.
        assert mode & 0o060 == 0o060, f"socket_mode {mode:#o} shuts out {app['name']}"
        app_groups = {
            _effective(pod, app, "runAsGroup"),
            security.get("fsGroup"),
            *security.get("supplementalGroups", []),
        }
        assert socket_group in app_groups, f"{app['name']} is not in the socket's group"


def test_containers_run_unprivileged_and_bounded() -> None:
    for _, _, doc in DOCUMENTS:
        if doc["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        pod = _pod_spec(doc)
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod.get("automountServiceAccountToken") is False
        for container in _all_containers(pod):
            where = f"{doc['metadata']['name']}/{container['name']}"
            assert _effective(pod, container, "runAsNonRoot") is True, where
            assert _effective(pod, container, "runAsUser") not in (None, 0), where
            assert _effective(pod, container, "allowPrivilegeEscalation") is False, where
            assert _effective(pod, container, "readOnlyRootFilesystem") is True, where
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), where
            assert "memory" in resources["limits"], where


def test_sidecar_is_a_native_sidecar() -> None:
    # An init container that never exits would hold the app back forever; restartPolicy
    # Always makes it a sidecar that runs beside the app.
    pod = _app_pod()
    sidecar, _ = _sidecar_and_apps(pod)
    if sidecar in pod.get("initContainers", []):
        assert sidecar["restartPolicy"] == "Always"
        assert "startupProbe" in sidecar, "the app would start before the socket exists"


def test_probes_and_scrape_target_the_admin_listener(tollgate_config: Config) -> None:
    pod = _app_pod()
    sidecar, _ = _sidecar_and_apps(pod)
    assert tollgate_config.server.admin_address is not None
    host, _, port = tollgate_config.server.admin_address.rpartition(":")
    # The kubelet probes the pod's IP, not its loopback.
    assert host in ("0.0.0.0", "[::]"), f"admin_address {host} is unreachable for probes"
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": None}
    for probe_name, path in expected.items():
        probe = sidecar.get(probe_name)
        if probe is None:
            assert path is None, f"the sidecar has no {probe_name}"
            continue
        assert _container_port(sidecar, probe["httpGet"]["port"]) == int(port), probe_name
        if path is not None:
            assert probe["httpGet"]["path"] == path
        else:
            assert probe["httpGet"]["path"] in ("/healthz", "/readyz")
    template = next(
        doc["spec"]["template"] for _, _, doc in DOCUMENTS if doc["kind"] == "Deployment"
    )
    annotations = template["metadata"].get("annotations", {})
    if "prometheus.io/port" in annotations:
        assert annotations["prometheus.io/port"] == port
        assert annotations["prometheus.io/path"] == "/metrics"


def test_every_secret_the_config_names_comes_from_a_secret(tollgate_config: Config) -> None:
    pod = _app_pod()
    sidecar, _ = _sidecar_and_apps(pod)
    nats_config = tollgate_config.nats
    needed = {p.api_key_env for p in tollgate_config.providers.values()}
    needed |= {nats_config.token_env, nats_config.password_env}
    needed.discard(None)
    assert needed, "the example config should name at least one secret"
    env = {e["name"]: e for e in sidecar.get("env", [])}
    secrets = _secrets()
    for variable in needed:
        assert variable in env, f"{variable} is not set in the sidecar"
        assert "value" not in env[variable], f"{variable} is written in the manifest"
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        assert ref["name"] in secrets, f"{variable}: no Secret {ref['name']}"
        assert ref["key"] in secrets[ref["name"]], f"{variable}: no key {ref['key']}"
        assert not ref.get("optional", False), f"{variable} must not be optional"
    for name, entry in env.items():
        if _SECRET_NAME.search(name):
            assert "secretKeyRef" in entry.get("valueFrom", {}), f"{name} is not from a Secret"


def test_writable_paths_are_volumes(tollgate_config: Config) -> None:
    # The root file system is read-only: whatever the sidecar writes needs a volume.
    pod = _app_pod()
    sidecar, _ = _sidecar_and_apps(pod)
    store = tollgate_config.store
    assert store.checkpoint is not None  # resolved by the loader
    for path in (
        PurePosixPath(tollgate_config.server.socket).parent,
        PurePosixPath(store.path).parent,
        PurePosixPath(store.checkpoint).parent,
        PurePosixPath("/tmp"),
    ):
        mount = _mount_for(sidecar, path)
        assert not mount.get("readOnly", False), f"{path} is read-only"
    config_mount = _mount_for(sidecar, _config_path(sidecar))
    assert config_mount.get("readOnly") is True


def test_shutdown_grace_fits_the_termination_grace_period(tollgate_config: Config) -> None:
    pod = _app_pod()
    assert tollgate_config.server.shutdown_grace_s < pod["terminationGracePeriodSeconds"]


# --- Kubernetes: the NATS cluster ---------------------------------------------------------------


def _nats_statefulset() -> dict[str, Any]:
    sets = [
        doc
        for _, _, doc in DOCUMENTS
        if doc["kind"] == "StatefulSet"
        and any(c["image"].startswith("nats:") for c in _pod_spec(doc)["containers"])
    ]
    assert len(sets) == 1
    return sets[0]


def _nats_container() -> dict[str, Any]:
    (container,) = _pod_spec(_nats_statefulset())["containers"]
    return container


def _nats_k8s_conf_text() -> str:
    container = _nats_container()
    argv = [*container.get("command", []), *container.get("args", [])]
    path = PurePosixPath(argv[argv.index("--config") + 1])
    mount = _mount_for(container, path)
    volume = _volume(_pod_spec(_nats_statefulset()), mount["name"])
    text: str = _only("ConfigMap", volume["configMap"]["name"])["data"][path.name]
    return text


def _service_selects(service: dict[str, Any], workload: dict[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in service["spec"]["selector"].items())


def test_nats_service_is_where_the_sidecars_connect(tollgate_config: Config) -> None:
    statefulset = _nats_statefulset()
    container = _nats_container()
    conf = parse_nats_conf(_nats_k8s_conf_text())
    client_port = int(conf["listen"].rpartition(":")[2])
    for url in tollgate_config.nats.servers:
        match = re.fullmatch(r"nats://([a-z0-9-]+):(\d+)", url)
        assert match, url
        service = _only("Service", match.group(1))
        assert _service_selects(service, statefulset)
        (port,) = [p for p in service["spec"]["ports"] if p["port"] == int(match.group(2))]
        assert _container_port(container, port["targetPort"]) == client_port


def test_nats_statefulset_is_a_routed_three_node_jetstream_cluster(
    tollgate_config: Config,
) -> None:
    statefulset = _nats_statefulset()
    pod = _pod_spec(statefulset)
    container = _nats_container()
    conf = parse_nats_conf(_nats_k8s_conf_text())
    replicas = statefulset["spec"]["replicas"]
    assert replicas == 3
    assert tollgate_config.store.replicas <= replicas

    headless = _only("Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    # Routes must resolve before the pods are ready, or the cluster never forms.
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert _service_selects(headless, statefulset)

    cluster_port = int(conf["cluster"]["listen"].rpartition(":")[2])
    assert _container_port(container, "cluster") == cluster_port
    name, service = statefulset["metadata"]["name"], headless["metadata"]["name"]
    expected = {f"nats-route://{name}-{i}.{service}:{cluster_port}" for i in range(replicas)}
    assert set(conf["cluster"]["routes"]) == expected

    # Each pod names itself, and every variable the configuration uses is set.
    assert conf["server_name"] == Var("POD_NAME")
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    secrets = _secrets()
    for variable in _variables(conf):
        assert variable in env, f"nats.conf uses ${variable}, which is not set"
        if "secretKeyRef" in env[variable].get("valueFrom", {}):
            ref = env[variable]["valueFrom"]["secretKeyRef"]
            assert ref["key"] in secrets[ref["name"]]
    # The client token is the one the sidecars present.
    nats_token = env[str(conf["authorization"]["token"])]["valueFrom"]["secretKeyRef"]
    sidecar_env = {e["name"]: e for e in _sidecar_and_apps(_app_pod())[0]["env"]}
    assert tollgate_config.nats.token_env is not None
    sidecar_token = sidecar_env[tollgate_config.nats.token_env]["valueFrom"]["secretKeyRef"]
    assert sidecar_token == nats_token

    # JetStream lives on the claim, within its size; the pid file (for lame duck) is writable.
    store = _mount_for(container, PurePosixPath(conf["jetstream"]["store_dir"]))
    (claim,) = [
        c
        for c in statefulset["spec"]["volumeClaimTemplates"]
        if c["metadata"]["name"] == store["name"]
    ]
    assert conf["jetstream"]["max_file_store"] < _size(
        claim["spec"]["resources"]["requests"]["storage"]
    )
    assert not _mount_for(container, PurePosixPath(conf["pid_file"]).parent).get("readOnly")
    lame_duck = int(conf["lame_duck_duration"].removesuffix("s"))
    assert lame_duck < pod["terminationGracePeriodSeconds"]


def test_nats_image_is_the_version_the_tests_run() -> None:
    image_version = _nats_container()["image"].split(":", 1)[1].split("-")[0]
    output = subprocess.run(
        [find_nats_server(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    tested = re.search(r"v(\d+\.\d+)\.", output)
    assert tested, output
    assert image_version.startswith(tested.group(1) + "."), (image_version, output)


def _variables(conf: Any) -> Iterator[str]:
    if isinstance(conf, Var):
        yield str(conf)
    elif isinstance(conf, dict):
        for value in conf.values():
            yield from _variables(value)
    elif isinstance(conf, list):
        for value in conf:
            yield from _variables(value)


# --- NATS: the configurations -------------------------------------------------------------------

NATS_FILES = sorted(NATS_DIR.glob("*.conf"))


def _nats_server_test(path: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [find_nats_server(), "-c", str(path), "-t"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), **env},
    )
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize("path", NATS_FILES, ids=[p.name for p in NATS_FILES])
def test_nats_config_passes_nats_server_check(path: Path) -> None:
    _nats_server_test(path, {"NATS_TOKEN": "placeholder"})


def test_nats_kubernetes_config_passes_nats_server_check(tmp_path: Path) -> None:
    path = tmp_path / "nats.conf"
    path.write_text(_nats_k8s_conf_text())
    _nats_server_test(path, {"NATS_TOKEN": "placeholder", "POD_NAME": "nats-0"})


def test_nats_checker_refuses_a_broken_config(tmp_path: Path) -> None:
    # The check above must be able to fail: an unclosed block does.
    path = tmp_path / "broken.conf"
    path.write_text(NATS_FILES[0].read_text().replace("cluster {", "cluster {{"))
    with pytest.raises(AssertionError):
        _nats_server_test(path, {"NATS_TOKEN": "placeholder"})


def test_nats_nodes_are_three_distinct_servers_routed_to_each_other() -> None:
    assert len(NATS_FILES) == 3
    confs = [parse_nats_conf(p.read_text()) for p in NATS_FILES]
    names = [c["server_name"] for c in confs]
    assert len(set(names)) == 3
    # A route names a node by host (nats-1.example.internal) and its cluster port.
    cluster_ports = {
        c["server_name"]: int(c["cluster"]["listen"].rpartition(":")[2]) for c in confs
    }
    for conf in confs:
        me = conf["server_name"]
        routed = set()
        for route in conf["cluster"]["routes"]:
            match = re.fullmatch(r"nats-route://([^.:]+)[^:]*:(\d+)", route)
            assert match, route
            node, port = match.group(1), int(match.group(2))
            assert node in cluster_ports, f"{me}: route to unknown node {route}"
            assert port == cluster_ports[node], f"{me}: {route} is not {node}'s cluster port"
            routed.add(node)
        assert routed - {me} == set(names) - {me}, f"{me} does not route to every other node"
    # What must agree across the cluster.
    for key in ("authorization", "max_payload", "jetstream"):
        values = [
            json.dumps({**c[key], "store_dir": None} if key == "jetstream" else c[key])
            for c in confs
        ]
        assert len(set(values)) == 1, f"{key} differs between nodes"
    assert len({c["cluster"]["name"] for c in confs}) == 1
    for conf in confs:
        assert conf["jetstream"]["store_dir"].startswith("/")
        assert conf["jetstream"]["max_file_store"] > 0


def test_nats_kubernetes_and_host_configs_agree() -> None:
    # Two spellings of one cluster: they differ only in what ties them to hosts or volumes.
    k8s = parse_nats_conf(_nats_k8s_conf_text())
    host = parse_nats_conf(NATS_FILES[0].read_text())
    shared = (
        "listen",
        "http",
        "authorization",
        "max_payload",
        "max_pending",
        "max_connections",
        "write_deadline",
        "ping_interval",
        "lame_duck_duration",
        "lame_duck_grace_period",
    )
    assert {k: k8s[k] for k in shared} == {k: host[k] for k in shared}
    assert k8s["cluster"]["name"] == host["cluster"]["name"]
    assert k8s["cluster"]["listen"] == host["cluster"]["listen"]
    assert k8s["jetstream"]["max_memory_store"] == host["jetstream"]["max_memory_store"]


def _k8s_node_confs() -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    conf = parse_nats_conf(_nats_k8s_conf_text())
    envs = [{"POD_NAME": f"nats-{i}", "NATS_TOKEN": "s3cret-token"} for i in range(3)]
    return [conf] * 3, envs


def _host_node_confs() -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    confs = [parse_nats_conf(p.read_text()) for p in NATS_FILES]
    return confs, [{"NATS_TOKEN": "s3cret-token"}] * 3


def _monitor(node: ClusterNode, endpoint: str) -> dict[str, Any]:
    with urllib.request.urlopen(node.monitor_url + endpoint, timeout=5) as response:
        result: dict[str, Any] = json.load(response)
    return result


def _meta_cluster_formed(nodes: list[ClusterNode]) -> bool:
    """Every node follows one meta leader, which sees both other nodes up to date."""
    metas = {_monitor(n, "/varz")["server_name"]: _monitor(n, "/jsz") for n in nodes}
    leaders = {jsz.get("meta_cluster", {}).get("leader") for jsz in metas.values()}
    if len(leaders) != 1 or (leader := leaders.pop()) not in metas:
        return False
    peers = metas[leader]["meta_cluster"].get("replicas", [])
    return len(peers) == 2 and all(p["current"] for p in peers)


async def _connect_without_token(node: ClusterNode) -> bytes:
    """The server's answer to a client that connects with no credentials (plain protocol)."""
    async with await anyio.connect_tcp("127.0.0.1", node.client_port) as stream:
        info = b""
        while not info.endswith(b"\r\n"):
            info += await stream.receive()
        assert json.loads(info.removeprefix(b"INFO "))["auth_required"] is True
        await stream.send(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        answer = b""
        with anyio.move_on_after(10):
            while b"-ERR" not in answer:
                answer += await stream.receive()
        return answer


async def _until(condition: Callable[[], bool], limit_s: float = 30) -> None:
    """Polls ``condition`` until it holds; fails after ``limit_s`` (a bound, not a measure)."""
    for _ in range(int(limit_s / 0.1)):
        if condition():
            return
        await anyio.sleep(0.1)
    raise AssertionError("the cluster did not form")


@pytest.mark.parametrize("source", [_host_node_confs, _k8s_node_confs], ids=["hosts", "kubernetes"])
async def test_nats_configs_form_a_jetstream_cluster(
    source: Any, tmp_path: Path, tollgate_config: Config
) -> None:
    confs, envs = source()
    with running_cluster(confs, envs, tmp_path) as nodes:
        # The JetStream meta group elects a leader and learns all its peers over the routes.
        await _until(lambda: _meta_cluster_formed(nodes))
        for node, conf, env in zip(nodes, confs, envs, strict=True):
            varz = _monitor(node, "/varz")
            name = conf["server_name"]
            assert varz["server_name"] == (env[name] if isinstance(name, Var) else name)
            assert varz["max_payload"] == conf["max_payload"]
            assert varz["cluster"]["name"] == conf["cluster"]["name"]

        # The token is required: a client without it is refused.
        assert b"Authorization Violation" in await _connect_without_token(nodes[0])

        # tollgate's own event store, as the ConfigMap sets it up (stream, 3 replicas), on
        # this cluster: atomic batches and dedup go through the clustered code paths.
        token = envs[0]["NATS_TOKEN"]
        writer = await nats.connect(nodes[0].url, token=token, allow_reconnect=False)
        reader = await nats.connect(nodes[2].url, token=token, allow_reconnect=False)
        try:
            stream, replicas = tollgate_config.store.stream, tollgate_config.store.replicas
            events = [_event(i) for i in range(3)]
            async with open_jetstream_store(writer, stream=stream, replicas=replicas) as store:
                assert await store.append(events) == [1, 2, 3]
                # A retried append (same event ids) stores nothing twice.
                await store.append(events)
                assert await store.last_seq() == 3
            info = await writer.jetstream().stream_info(stream)
            assert info.config.num_replicas == replicas
            assert info.cluster is not None and info.cluster.leader
            assert len(info.cluster.replicas or []) == replicas - 1
            # Another node serves the same log.
            async with open_jetstream_store(reader, stream=stream, replicas=replicas) as store:
                assert [stored.event for stored in await store.read(0)] == events
        finally:
            await writer.close()
            await reader.close()


async def test_sidecar_serves_with_the_configmap_config_on_the_cluster(
    tollgate_config: Config, tmp_path: Path
) -> None:
    """The ConfigMap's config, run by the real sidecar on the Kubernetes NATS config: the probes'
    endpoints answer on the admin listener and the owner-only socket serves. Only what ties it
    to the pod changes: paths move to a temporary directory, the admin listener and the NATS
    servers to loopback."""
    confs, envs = _k8s_node_confs()
    run_dir = Path(tempfile.mkdtemp(prefix="tg-", dir="/tmp"))  # short: a socket path
    try:
        with running_cluster(confs, envs, tmp_path) as nodes:
            await _until(lambda: _meta_cluster_formed(nodes))
            admin_port = _free_port()
            replace = msgspec.structs.replace
            config = replace(
                tollgate_config,
                server=replace(
                    tollgate_config.server,
                    socket=str(run_dir / "tollgate.sock"),
                    admin_address=f"127.0.0.1:{admin_port}",
                ),
                store=replace(
                    tollgate_config.store,
                    path=str(run_dir / "events.db"),
                    checkpoint=str(run_dir / "events.db.projections"),
                ),
                nats=replace(tollgate_config.nats, servers=[n.url for n in nodes]),
            )
            assert config.nats.token_env is not None
            environ = {
                p.api_key_env: "placeholder" for p in config.providers.values() if p.api_key_env
            }
            environ[config.nats.token_env] = envs[0]["NATS_TOKEN"]
            async with (
                open_sidecar(config, environ=environ),
                aiohttp.ClientSession() as session,
            ):
                admin = f"http://127.0.0.1:{admin_port}"
                for path in ("/healthz", "/readyz", "/metrics"):
                    async with session.get(admin + path) as response:
                        assert response.status == 200, path
                async with session.get(admin + "/readyz") as response:
                    assert (await response.json())["ready"] is True
                socket_mode = stat.S_IMODE(os.stat(config.server.socket).st_mode)
                assert socket_mode == tollgate_config.server.socket_mode
                connector = aiohttp.UnixConnector(path=config.server.socket)
                async with (
                    aiohttp.ClientSession(connector=connector) as over_socket,
                    over_socket.get("http://tollgate/healthz") as response,
                ):
                    assert response.status == 200
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _event(index: int) -> FallbackTaken:
    return FallbackTaken(
        event_id=new_id(),
        ts_ns=1_700_000_000_000_000_000 + index,
        request_id="req-1",
        tenant="acme",
        task="chat",
        config_hash="cfg",
        from_model="gpt-4o",
        to_model=f"gpt-4o-mini-{index}",
        error_class="overloaded",
    )


# --- systemd ------------------------------------------------------------------------------------

UNIT = DEPLOY / "systemd" / "tollgate.service"


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def _one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values, f"[{section}] {key}= is missing"
    assert len(values) == 1, f"[{section}] {key}= is set more than once"
    return values[0]


def _example_config() -> Config:
    path = DEPLOY / "tollgate.example.toml"
    return parse_config(path.read_bytes(), base_dir=path.parent)


def test_systemd_unit_runs_tollgate_serve_hardened(unit: dict[str, dict[str, list[str]]]) -> None:
    service = "Service"
    argv = _one(unit, service, "ExecStart").split()
    assert argv[0].startswith("/") and PurePosixPath(argv[0]).name == "tollgate"
    assert argv[1:] == ["serve", "--config", "/etc/tollgate/tollgate.toml"]
    dynamic = unit[service].get("DynamicUser", ["no"])[-1] == "yes"
    user = unit[service].get("User", [""])[-1]
    assert dynamic or user not in ("", "root", "0"), "runs as root"
    assert _one(unit, service, "NoNewPrivileges") == "yes"
    assert _one(unit, service, "ProtectSystem") == "strict"
    assert _one(unit, service, "Restart") == "on-failure"
    assert _one(unit, service, "EnvironmentFile").lstrip("-").startswith("/etc/tollgate/")
    assert _one(unit, service, "CapabilityBoundingSet") == ""
    assert _one(unit, "Install", "WantedBy") == "multi-user.target"
    for line in unit[service].get("Environment", []):
        for assignment in line.split():
            key = assignment.partition("=")[0]
            assert not _SECRET_NAME.search(key), f"{key} belongs in the EnvironmentFile"


def test_systemd_unit_matches_the_example_config(unit: dict[str, dict[str, list[str]]]) -> None:
    config = _example_config()
    assert PurePosixPath(config.server.socket).parent == PurePosixPath(
        "/run", _one(unit, "Service", "RuntimeDirectory")
    )
    state = PurePosixPath("/var/lib", _one(unit, "Service", "StateDirectory"))
    assert PurePosixPath(config.store.path).parent == state
    assert config.store.checkpoint is not None
    assert PurePosixPath(config.store.checkpoint).parent == state
    config_file = PurePosixPath(_one(unit, "Service", "ExecStart").split()[-1])
    assert config_file.parent == PurePosixPath(
        "/etc", _one(unit, "Service", "ConfigurationDirectory")
    )
    # Group members (server.socket_mode = 0o660) must be able to reach the socket.
    assert int(_one(unit, "Service", "RuntimeDirectoryMode"), 8) & 0o050 == 0o050
    # systemd's stop timeout leaves the sidecar its grace period.
    stop = _one(unit, "Service", "TimeoutStopSec")
    assert float(stop.removesuffix("s")) > config.server.shutdown_grace_s


def test_systemd_user_and_keys_files(unit: dict[str, dict[str, list[str]]]) -> None:
    sysusers = (DEPLOY / "systemd" / "tollgate.sysusers").read_text().splitlines()
    entries = [line.split() for line in sysusers if line and not line.startswith("#")]
    users = {e[1] for e in entries if e[0] == "u"}
    assert _one(unit, "Service", "User") in users
    # "u NAME" creates a group of the same name.
    assert _one(unit, "Service", "Group") in users | {e[1] for e in entries if e[0] == "g"}

    example = DEPLOY / "systemd" / "tollgate.env.example"
    keys = {}
    for line in example.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys[key] = value
    config = _example_config()
    needed = {p.api_key_env for p in config.providers.values() if p.api_key_env}
    assert needed <= keys.keys()
    assert set(keys.values()) == {"REPLACE_ME"}


def test_unit_parser_keeps_repeated_keys_and_continuations() -> None:
    parsed = parse_unit("[Service]\nA=1\nA=2\nB=x \\\n  y\n# c\n[Install]\nC=\n")
    assert parsed == {"Service": {"A": ["1", "2"], "B": ["x y"]}, "Install": {"C": [""]}}
    with pytest.raises(ValueError):
        parse_unit("A=1\n")


# --- the container image ------------------------------------------------------------------------

CONTAINERFILE = DEPLOY / "Containerfile"


def test_containerfile_builds_in_stages_and_runs_unprivileged() -> None:
    _, stages = parse_containerfile(CONTAINERFILE.read_text())
    assert len(stages) >= 2, "build the wheel in a separate stage"
    final = stages[-1]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", final.base)
    # The runtime stage takes what it needs from a build stage, not from the context.
    copies = final.all("COPY")
    assert copies and all(c.startswith("--from=") for c in copies)
    assert all(c.split()[0].removeprefix("--from=") in {s.name for s in stages} for c in copies)
    user = final.all("USER")[-1]
    uid, _, gid = user.partition(":")
    # Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0)
    assert exec_form(final.all("ENTRYPOINT")[-1]) == ["tollgate"]
    command = exec_form(final.all("CMD")[-1])
    assert command[0] == "serve"
    assert command[command.index("--config") + 1] == "/etc/tollgate/tollgate.toml"


def test_containerfile_bakes_in_no_secrets() -> None:
    global_args, stages = parse_containerfile(CONTAINERFILE.read_text())
    arguments = [*global_args.items()]
    for stage in stages:
        for args in stage.all("ENV"):
            arguments += env_pairs(args)
        for args in stage.all("ARG"):
            key, _, value = args.partition("=")
            arguments.append((key, value))
        for args in [*stage.all("COPY"), *stage.all("ADD")]:
            for source in args.split()[:-1]:
                assert not re.search(r"\.env\b|\.pem$|\.key$|secret|credential", source), source
        assert not stage.all("ADD"), "ADD fetches URLs and unpacks archives: use COPY"
    for key, value in arguments:
        assert not (_SECRET_NAME.search(key) and value), f"{key} is baked into the image"


def test_build_context_holds_what_the_build_copies() -> None:
    _, stages = parse_containerfile(CONTAINERFILE.read_text())
    patterns = [
        line.strip()
        for line in (DEPLOY / "Containerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = set()
    for stage in stages:
        for args in stage.all("COPY"):
            words = args.split()
            if words[0].startswith("--from="):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not ignored_by(patterns, source), (
                    f"COPY {source}: excluded by the ignore file"
                )
                copied.add(source)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    missing = {*packages, "pyproject.toml", pyproject["project"]["readme"]} - copied
    assert not missing, f"the wheel needs {sorted(missing)}"
    for private in (
        ".venv/bin/python",
        ".git/config",
        "tollgate.toml",
        "deploy/systemd/tollgate.env",
    ):
        assert ignored_by(patterns, private), f"{private} would be sent to the builder"


def test_containerfile_parser_reads_continuations_and_args() -> None:
    text = (
        "ARG BASE=python:3.11-slim\n# c\nFROM ${BASE} AS b\nRUN a \\\n  && b\nFROM $BASE\nUSER 1\n"
    )
    global_args, stages = parse_containerfile(text)
    assert global_args == {"BASE": "python:3.11-slim"}
    assert [(s.base, s.name) for s in stages] == [
        ("python:3.11-slim", "b"),
        ("python:3.11-slim", None),
    ]
    assert stages[0].instructions == [("RUN", "a && b")]
    with pytest.raises(ValueError):
        exec_form("tollgate serve")
