"""deploy/: every manifest parses, and the parts that must agree with each other do.

The Kubernetes manifests are checked against the API schemas (kubernetes-validate, strict: an
unknown or misspelt field fails), then for what a schema can't see: the socket volume, the
probes, the Secrets, the UID that makes the owner-only socket usable, the NATS Service and
routes. The tollgate config inside the ConfigMap goes through the sidecar's own config loader.
The NATS configurations pass ``nats-server -t`` and are then run as real 3-node clusters on
loopback, with TLS on a throwaway CA (deploy_tls), tollgate's JetStream store on them, and the
sidecar itself on the ConfigMap's config; a fourth nats-server tries to join as a route without
the credentials and is refused. The NetworkPolicy and the containers' environment are
evaluated the way Kubernetes does (deploy_kubernetes). The systemd unit and the Containerfile
are read by small parsers (deploy_parsers).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
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
import anyio.abc
import anyio.streams.tls
import kubernetes_validate
import msgspec
import nats
import pytest
import yaml
from deploy_cluster import ClusterNode, running_cluster
from deploy_kubernetes import container_env, ingress_allowed, selects
from deploy_parsers import (
    Var,
    env_pairs,
    exec_form,
    ignored_by,
    parse_containerfile,
    parse_env_file,
    parse_nats_conf,
    parse_unit,
)
from deploy_tls import NatsCerts, make_certs
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
# What marks a pod with the tollgate sidecar, for the NetworkPolicy in front of NATS.
SIDECAR_LABEL = ("tollgate/sidecar", "true")
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


def _pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def _workloads() -> list[dict[str, Any]]:
    kinds = ("Deployment", "StatefulSet", "DaemonSet")
    return [doc for _, _, doc in DOCUMENTS if doc["kind"] in kinds]


def _all_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _is_tollgate(container: dict[str, Any]) -> bool:
    repository = container["image"].rsplit(":", 1)[0]
    return repository.rsplit("/", 1)[-1] == "tollgate"


def _has_sidecar(workload: dict[str, Any]) -> bool:
    return any(_is_tollgate(c) for c in _all_containers(_pod_spec(workload)))


def _app_workload() -> dict[str, Any]:
    found = [doc for doc in _workloads() if _has_sidecar(doc)]
    assert len(found) == 1, "expected one workload with a tollgate sidecar"
    return found[0]


def _app_pod() -> dict[str, Any]:
    return _pod_spec(_app_workload())


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


def _secret_file(
    pod: dict[str, Any], container: dict[str, Any], path: PurePosixPath
) -> tuple[dict[str, Any], str]:
    """The Secret volume that ``path`` is mounted from, and the Secret's key in that file."""
    mount = _mount_for(container, path)
    volume = _volume(pod, mount["name"])
    assert "secret" in volume, f"{path} is not mounted from a Secret"
    assert "subPath" not in mount
    relative = str(path.relative_to(mount["mountPath"]))
    items = volume["secret"].get("items")
    if items is None:
        return volume, relative
    (key,) = [item["key"] for item in items if item["path"] == relative]
    return volume, str(key)


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
    # tls:// refuses a server that does not speak TLS, and the CA is the one to check it with.
    assert config.nats.servers == ["tls://nats:4222"]
    assert config.nats.tls_ca_file is not None
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


def _nats_pod_env(pod_name: str, secret: Callable[[str, str], str]) -> dict[str, str]:
    """The NATS container's environment in pod ``pod_name``, each Secret key's value from
    ``secret(name, key)``; ``$(VAR)`` references expanded as the kubelet does."""
    secrets = _secrets()

    def value_from(source: Any) -> str:
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["key"] in secrets[ref["name"]], f"no key {ref['key']} in {ref['name']}"
            return secret(ref["name"], ref["key"])
        assert source["fieldRef"]["fieldPath"] == "metadata.name", source
        return pod_name

    return container_env(_nats_container(), value_from)


def _marker(secret: str, key: str) -> str:
    """Stands for a Secret key's value, naming it (URL-safe: it may land in a route URL)."""
    return f"{secret}.{key}"


def _resolved(values: list[Any], env: dict[str, str]) -> list[str]:
    return [env[str(v)] if isinstance(v, Var) else v for v in values]


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
        match = re.fullmatch(r"(?:nats|tls)://([a-z0-9-]+):(\d+)", url)
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
    # Each route goes to a pod by its stable name and logs in with the route user and the
    # password from the Secret: the pod's environment composes the URLs (nats-server does
    # not substitute inside a string), the configuration names them.
    authorization = conf["cluster"]["authorization"]
    assert isinstance(authorization["password"], Var), "the route password is written in"
    password_ref = {e["name"]: e for e in container["env"]}[str(authorization["password"])]
    ref = password_ref["valueFrom"]["secretKeyRef"]
    pod_env = _nats_pod_env("nats-0", _marker)
    name, service = statefulset["metadata"]["name"], headless["metadata"]["name"]
    login = f"{authorization['user']}:{_marker(ref['name'], ref['key'])}"
    expected = {
        f"nats-route://{login}@{name}-{i}.{service}:{cluster_port}" for i in range(replicas)
    }
    assert set(_resolved(conf["cluster"]["routes"], pod_env)) == expected

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


def _tls_blocks(conf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"clients": conf["tls"], "routes": conf["cluster"]["tls"]}


def test_nats_tls_files_come_from_the_tls_secret(tollgate_config: Config) -> None:
    conf = parse_nats_conf(_nats_k8s_conf_text())
    pod, container = _pod_spec(_nats_statefulset()), _nats_container()
    secrets = _secrets()
    used = set()
    for where, block in _tls_blocks(conf).items():
        assert {"cert_file", "key_file", "ca_file"} <= block.keys(), where
        for field in ("cert_file", "key_file", "ca_file"):
            volume, key = _secret_file(pod, container, PurePosixPath(block[field]))
            name = volume["secret"]["secretName"]
            assert key in secrets[name], f"{where}: {block[field]} is no key of Secret {name}"
            assert volume["secret"].get("defaultMode", 0o644) & 0o007 == 0, "world-readable key"
            used.add((name, key, field))
    # Routes are mutual TLS: a node checks its peer's certificate, not only the other way round.
    assert _tls_blocks(conf)["routes"].get("verify") is True
    # One certificate, key and CA.
    assert len(used) == 3

    # The sidecars check the servers against that CA and dial them over TLS; their pod gets
    # the CA alone, never the servers' private key.
    ((tls_secret, ca_key, _),) = [u for u in used if u[2] == "ca_file"]
    app_pod = _app_pod()
    sidecar, _ = _sidecar_and_apps(app_pod)
    assert tollgate_config.nats.tls_ca_file is not None
    volume, key = _secret_file(app_pod, sidecar, PurePosixPath(tollgate_config.nats.tls_ca_file))
    assert (volume["secret"]["secretName"], key) == (tls_secret, ca_key)
    assert [item["key"] for item in volume["secret"]["items"]] == [ca_key]
    assert all(url.startswith("tls://") for url in tollgate_config.nats.servers)


def test_route_password_reaches_only_the_nats_pods() -> None:
    conf = parse_nats_conf(_nats_k8s_conf_text())
    password_var = str(conf["cluster"]["authorization"]["password"])
    ref = {e["name"]: e for e in _nats_container()["env"]}[password_var]["valueFrom"]
    route_secret = (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
    for workload in _workloads():
        if workload is _nats_statefulset():
            continue
        for container in _all_containers(_pod_spec(workload)):
            for entry in container.get("env", []):
                key_ref = entry.get("valueFrom", {}).get("secretKeyRef", {})
                assert (key_ref.get("name"), key_ref.get("key")) != route_secret, entry["name"]
            assert not container.get("envFrom"), "envFrom would hand over every key"


def _network_policies() -> list[dict[str, Any]]:
    return [doc for _, _, doc in DOCUMENTS if doc["kind"] == "NetworkPolicy"]


def test_network_policy_admits_only_sidecars_to_clients_and_nodes_to_routes() -> None:
    policies = _network_policies()
    statefulset = _nats_statefulset()
    nats_labels = _pod_labels(statefulset)
    conf = parse_nats_conf(_nats_k8s_conf_text())
    client = int(conf["listen"].rpartition(":")[2])
    route = int(conf["cluster"]["listen"].rpartition(":")[2])
    monitor = int(conf["http"].rpartition(":")[2])
    named_ports = {p["name"]: p["containerPort"] for p in _nats_container()["ports"]}
    assert {client, route, monitor} <= set(named_ports.values())

    def allowed(source: dict[str, str], port: int) -> bool:
        return ingress_allowed(
            policies,
            source_labels=source,
            target_labels=nats_labels,
            target_ports=named_ports,
            port=port,
        )

    app = _pod_labels(_app_workload())
    key, value = SIDECAR_LABEL
    assert app.get(key) == value, f"the sidecar's pods are not labelled {key}: {value!r}"
    unlabelled = {k: v for k, v in app.items() if k != key}  # the same app, no sidecar label
    stranger = {"app.kubernetes.io/name": "something-else"}
    assert allowed(nats_labels, route), "the nodes cannot route to each other"
    assert allowed(app, client), "the sidecars cannot reach NATS"
    assert not allowed(app, route), "a sidecar pod can join the cluster as a route"
    for source in (stranger, unlabelled):
        for port in (client, route, monitor):
            assert not allowed(source, port), (source, port)
    # Every pod that runs the sidecar carries the label; none that doesn't (NATS aside).
    for workload in _workloads():
        if workload is not statefulset:
            assert allowed(_pod_labels(workload), client) == _has_sidecar(workload)
    # The policy selects the NATS pods and nothing else in the kustomization.
    for policy in policies:
        for workload in _workloads():
            assert selects(policy["spec"]["podSelector"], _pod_labels(workload)) == (
                workload is statefulset
            )


def test_network_policy_evaluation() -> None:
    # The evaluator above must be able to say no, and must not guess at what it can't read.
    policy: dict[str, Any] = {
        "spec": {
            "podSelector": {"matchLabels": {"role": "db"}},
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"role": "web"}}}],
                    "ports": [{"port": "sql"}],
                }
            ],
        }
    }

    def allowed(source: str, target: str, port: int) -> bool:
        return ingress_allowed(
            [policy],
            source_labels={"role": source},
            target_labels={"role": target},
            target_ports={"sql": 5432},
            port=port,
        )

    assert allowed("web", "db", 5432)
    assert not allowed("web", "db", 5433)
    assert not allowed("batch", "db", 5432)
    assert allowed("batch", "cache", 1), "a pod no policy selects takes every connection"
    namespaced: dict[str, Any] = {"namespaceSelector": {}, "podSelector": {}}
    policy["spec"]["ingress"][0]["from"] = [namespaced]
    with pytest.raises(ValueError, match="unsupported peer"):
        allowed("web", "db", 5432)


def test_container_env_expands_references_like_the_kubelet() -> None:
    container = {
        "env": [
            {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "B", "value": "x:$(A)@$(C)/$$(A)"},
            {"name": "C", "value": "late"},
        ]
    }
    env = container_env(container, lambda source: "secret")
    # A reference to a later or unknown variable stays as written; $$ escapes.
    assert env == {"A": "secret", "B": "x:secret@$(C)/$(A)", "C": "late"}


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
NATS_ENV_EXAMPLE = NATS_DIR / "nats.env.example"
PLACEHOLDER = "REPLACE_ME"


@pytest.fixture(scope="module")
def nats_certs(tmp_path_factory: pytest.TempPathFactory) -> NatsCerts:
    return make_certs(tmp_path_factory.mktemp("nats-tls"))


def _test_secret(name: str, key: str) -> str:
    """A Secret key's value for the running clusters (URL-safe: it may land in a route URL)."""
    return f"{name}-{key}-s3cret"


def _host_env() -> dict[str, str]:
    """nats.env.example filled in as it says: a token, and one route password, both in its own
    variable and in place of the placeholder in every route URL."""
    example = parse_env_file(NATS_ENV_EXAMPLE.read_text())
    token, password = _test_secret("hosts", "token"), _test_secret("hosts", "route-password")
    return {
        key: value.replace(PLACEHOLDER, token if key == "NATS_TOKEN" else password)
        for key, value in example.items()
    }


def _with_test_certs(text: str, certs: NatsCerts) -> str:
    """The configuration's text with its TLS files swapped for the test's; nothing else moves."""
    for block in _tls_blocks(parse_nats_conf(text)).values():
        swapped = certs.tls_block(block)
        for key, path in block.items():
            if key.endswith("_file"):
                text = re.sub(re.escape(path) + r"(?=\s)", swapped[key], text)
    return text


def _nats_server_test(path: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [find_nats_server(), "-c", str(path), "-t"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), **env},
    )
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize("path", NATS_FILES, ids=[p.name for p in NATS_FILES])
def test_nats_config_passes_nats_server_check(
    path: Path, tmp_path: Path, nats_certs: NatsCerts
) -> None:
    checked = tmp_path / path.name
    checked.write_text(_with_test_certs(path.read_text(), nats_certs))
    _nats_server_test(checked, _host_env())


def test_nats_kubernetes_config_passes_nats_server_check(
    tmp_path: Path, nats_certs: NatsCerts
) -> None:
    path = tmp_path / "nats.conf"
    path.write_text(_with_test_certs(_nats_k8s_conf_text(), nats_certs))
    _nats_server_test(path, _nats_pod_env("nats-0", _test_secret))


def test_nats_checker_refuses_a_broken_config(tmp_path: Path, nats_certs: NatsCerts) -> None:
    # The check above must be able to fail: an unclosed block does, and so does a missing
    # secret (nats-server has no default for a variable) or a certificate file.
    text = _with_test_certs(NATS_FILES[0].read_text(), nats_certs)
    path = tmp_path / "broken.conf"
    path.write_text(text.replace("cluster {", "cluster {{"))
    with pytest.raises(AssertionError):
        _nats_server_test(path, _host_env())
    path.write_text(text)
    env = _host_env()
    del env["NATS_ROUTE_PASSWORD"]
    with pytest.raises(AssertionError, match="NATS_ROUTE_PASSWORD"):
        _nats_server_test(path, env)
    with pytest.raises(AssertionError, match="no such file"):
        _nats_server_test(NATS_FILES[0], _host_env())


def test_nats_env_example_sets_what_the_host_configs_use() -> None:
    example = parse_env_file(NATS_ENV_EXAMPLE.read_text())
    used = {v for p in NATS_FILES for v in _variables(parse_nats_conf(p.read_text()))}
    assert set(example) == used, "nats.env.example and the configurations disagree"
    for key, value in example.items():
        if _SECRET_NAME.search(key):
            assert value == PLACEHOLDER, f"{key} holds a value, not a placeholder"


def test_nats_nodes_are_three_distinct_servers_routed_to_each_other() -> None:
    assert len(NATS_FILES) == 3
    confs = [parse_nats_conf(p.read_text()) for p in NATS_FILES]
    env = parse_env_file(NATS_ENV_EXAMPLE.read_text())
    names = [c["server_name"] for c in confs]
    assert len(set(names)) == 3
    # A route names a node by host (nats-1.example.internal) and its cluster port, and logs
    # in with the route user and password.
    cluster_ports = {
        c["server_name"]: int(c["cluster"]["listen"].rpartition(":")[2]) for c in confs
    }
    for conf in confs:
        me = conf["server_name"]
        authorization = conf["cluster"]["authorization"]
        assert isinstance(authorization["password"], Var), f"{me}: the password is written in"
        routed = set()
        for route in _resolved(conf["cluster"]["routes"], env):
            match = re.fullmatch(r"nats-route://([^:@/]+):([^@/]+)@([^.:]+)[^:]*:(\d+)", route)
            assert match, f"{me}: {route} does not log in"
            user, password, node, port = match.groups()
            assert user == authorization["user"], f"{me}: {route} logs in as another user"
            # The example's placeholders: the same one as the password's, to be the same value.
            assert password == env[authorization["password"]], f"{me}: {route}'s password"
            assert node in cluster_ports, f"{me}: route to unknown node {route}"
            assert int(port) == cluster_ports[node], f"{me}: {route} is not {node}'s port"
            routed.add(node)
        assert routed - {me} == set(names) - {me}, f"{me} does not route to every other node"
    # What must agree across the cluster.
    for key in ("authorization", "tls", "max_payload", "jetstream", "cluster"):
        values = [
            json.dumps(
                {**c[key], "store_dir": None}
                if key == "jetstream"
                else {**c[key], "routes": None}
                if key == "cluster"
                else c[key]
            )
            for c in confs
        ]
        assert len(set(values)) == 1, f"{key} differs between nodes"
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
    cluster_shared = ("name", "listen", "no_advertise", "authorization")
    assert {k: k8s["cluster"][k] for k in cluster_shared} == {
        k: host["cluster"][k] for k in cluster_shared
    }
    assert k8s["jetstream"]["max_memory_store"] == host["jetstream"]["max_memory_store"]
    # TLS alike on both ports but for where the files are.
    for where, block in _tls_blocks(k8s).items():
        other = _tls_blocks(host)[where]
        assert block.keys() == other.keys(), where
        assert {k: v for k, v in block.items() if not k.endswith("_file")} == {
            k: v for k, v in other.items() if not k.endswith("_file")
        }, where


def test_nats_conf_parser_refuses_a_variable_inside_a_string() -> None:
    # nats-server would take "$P" literally there, and the route would fail to log in.
    assert parse_nats_conf("a: $P\nb: [$Q]\n") == {"a": Var("P"), "b": [Var("Q")]}
    for text in ('r: "nats-route://u:$P@h:6222"', "r: nats-route://u:$P@h:6222", "r: $P.x"):
        with pytest.raises(ValueError):
            parse_nats_conf(text)


def test_env_file_parser_reads_only_what_both_readers_agree_on() -> None:
    assert parse_env_file("# c\n\nA=1\nB=x://u:p@h:1\n") == {"A": "1", "B": "x://u:p@h:1"}
    for text in ('A="1"', "A=$B", "A=1 2", "A=1\nA=2", "not a line"):
        with pytest.raises(ValueError):
            parse_env_file(text)


def _for_test(conf: dict[str, Any], env: dict[str, str], certs: NatsCerts) -> dict[str, Any]:
    """A node's configuration for running_cluster: the TLS files swapped for the test's, the
    routes resolved from the node's environment (running_cluster keeps their credentials)."""
    local = copy.deepcopy(conf)
    local["tls"] = certs.tls_block(conf["tls"])
    local["cluster"]["tls"] = certs.tls_block(conf["cluster"]["tls"])
    local["cluster"]["routes"] = _resolved(conf["cluster"]["routes"], env)
    return local


NodeConfs = tuple[list[dict[str, Any]], list[dict[str, str]]]


def _k8s_node_confs(certs: NatsCerts) -> NodeConfs:
    conf = parse_nats_conf(_nats_k8s_conf_text())
    envs = [_nats_pod_env(f"nats-{i}", _test_secret) for i in range(3)]
    return [_for_test(conf, env, certs) for env in envs], envs


def _host_node_confs(certs: NatsCerts) -> NodeConfs:
    env = _host_env()
    return [_for_test(parse_nats_conf(p.read_text()), env, certs) for p in NATS_FILES], [env] * 3


def _tls_url(node: ClusterNode) -> str:
    return node.url.replace("nats://", "tls://", 1)


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


def _route_names(node: ClusterNode) -> set[str]:
    return {route["remote_name"] for route in _monitor(node, "/routez")["routes"]}


async def _client_session(
    node: ClusterNode, connect: dict[str, Any], certs: NatsCerts | None
) -> tuple[dict[str, Any], bytes, bool]:
    """A client's INFO from ``node``, and what the server answers to its CONNECT and PING
    (over TLS if ``certs``, else in plaintext); and whether the server hung up."""
    async with await anyio.connect_tcp("127.0.0.1", node.client_port) as tcp:
        info = b""
        while not info.endswith(b"\r\n"):
            info += await tcp.receive()
        stream: anyio.abc.ByteStream = tcp
        if certs is not None:
            stream = await anyio.streams.tls.TLSStream.wrap(
                tcp,
                hostname="127.0.0.1",
                ssl_context=certs.client_context(),
                standard_compatible=False,
            )
        await stream.send(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        answer, closed = b"", False
        with anyio.move_on_after(10):
            try:
                while b"-ERR" not in answer and b"PONG" not in answer:
                    answer += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                closed = True
        return json.loads(info.removeprefix(b"INFO ")), answer, closed


async def _until(condition: Callable[[], bool], what: str, limit_s: float = 30) -> None:
    """Polls ``condition`` until it holds; fails after ``limit_s`` (a bound, not a measure)."""
    for _ in range(int(limit_s / 0.1)):
        if condition():
            return
        await anyio.sleep(0.1)
    raise AssertionError(what)


def _cluster_formed(nodes: list[ClusterNode]) -> Callable[[], bool]:
    return lambda: _meta_cluster_formed(nodes)


@pytest.mark.parametrize("source", [_host_node_confs, _k8s_node_confs], ids=["hosts", "kubernetes"])
async def test_nats_configs_form_a_jetstream_cluster(
    source: Callable[[NatsCerts], NodeConfs],
    tmp_path: Path,
    tollgate_config: Config,
    nats_certs: NatsCerts,
) -> None:
    confs, envs = source(nats_certs)
    with running_cluster(confs, envs, tmp_path) as nodes:
        # The JetStream meta group elects a leader and learns all its peers over the routes,
        # which log in and speak mutual TLS.
        await _until(_cluster_formed(nodes), "the cluster did not form")
        for node, conf, env in zip(nodes, confs, envs, strict=True):
            varz = _monitor(node, "/varz")
            name = conf["server_name"]
            assert varz["server_name"] == (env[name] if isinstance(name, Var) else name)
            assert varz["max_payload"] == conf["max_payload"]
            assert varz["cluster"]["name"] == conf["cluster"]["name"]
            assert varz["tls_required"] is True
            assert varz["cluster"]["tls_required"] is True
            assert varz["cluster"]["tls_verify"] is True

        # A client needs TLS and the token: with both it is served, without either refused
        # (in plaintext the server hangs up before it reads a word).
        token = envs[0]["NATS_TOKEN"]
        quiet = {"verbose": False, "pedantic": False}
        hello, answer, _ = await _client_session(
            nodes[0], {**quiet, "auth_token": token}, nats_certs
        )
        assert hello["auth_required"] is True and hello["tls_required"] is True
        assert b"PONG" in answer, answer
        _, answer, _ = await _client_session(nodes[0], quiet, nats_certs)
        assert b"Authorization Violation" in answer, answer
        _, answer, closed = await _client_session(nodes[0], {**quiet, "auth_token": token}, None)
        assert closed and b"PONG" not in answer, answer

        # tollgate's own event store, as the ConfigMap sets it up (stream, 3 replicas), on
        # this cluster: atomic batches and dedup go through the clustered code paths.
        tls = nats_certs.client_context()
        writer = await nats.connect(_tls_url(nodes[0]), token=token, tls=tls, allow_reconnect=False)
        reader = await nats.connect(_tls_url(nodes[2]), token=token, tls=tls, allow_reconnect=False)
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


@contextlib.contextmanager
def _nats_server(config: dict[str, Any], directory: Path) -> Iterator[Path]:
    """nats-server on ``config`` for the duration of the block; yields its log file."""
    directory.mkdir()
    config_file, log_file = directory / "nats.json", directory / "nats.log"
    config_file.write_text(json.dumps(config))
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [find_nats_server(), "-c", str(config_file)], stdout=subprocess.DEVNULL, stderr=log
        )
    try:
        yield log_file
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _logged(log: Path, text: bytes) -> bool:
    return text in log.read_bytes()


@pytest.mark.parametrize("source", [_host_node_confs, _k8s_node_confs], ids=["hosts", "kubernetes"])
async def test_nats_cluster_admits_only_routes_that_log_in(
    source: Callable[[NatsCerts], NodeConfs], tmp_path: Path, nats_certs: NatsCerts
) -> None:
    """Another nats-server dials a node's route port, as any pod that reaches 6222 could. With
    the route credentials and a certificate of the CA it joins; with no password, a wrong one,
    or no TLS it is refused, although it holds a valid certificate (or the password)."""
    confs, envs = source(nats_certs)
    (tmp_path / "cluster").mkdir()
    with running_cluster(confs, envs, tmp_path / "cluster") as nodes:
        authorization = confs[0]["cluster"]["authorization"]
        user, password = authorization["user"], envs[0][authorization["password"]]
        target = f"127.0.0.1:{nodes[0].route_port}"
        tls = confs[0]["cluster"]["tls"]
        dialers = {
            "member": (f"nats-route://{user}:{password}@{target}", tls),
            "no-password": (f"nats-route://{target}", tls),
            "wrong-password": (f"nats-route://{user}:not-{password}@{target}", tls),
            "plaintext": (f"nats-route://{user}:{password}@{target}", None),
        }
        with contextlib.ExitStack() as stack:
            logs = {}
            for name, (route, route_tls) in dialers.items():
                cluster = {"name": confs[0]["cluster"]["name"], "listen": "127.0.0.1:-1"}
                cluster["routes"] = [route]
                if route_tls is not None:
                    cluster["tls"] = route_tls
                config = {"server_name": name, "listen": "127.0.0.1:-1", "cluster": cluster}
                logs[name] = stack.enter_context(_nats_server(config, tmp_path / name))

            await _until(lambda: "member" in _route_names(nodes[0]), "the member did not join")
            for log in (logs["no-password"], logs["wrong-password"]):
                await _until(
                    functools.partial(_logged, log, b"Authorization Violation"),
                    f"{log.parent.name}: no authorization error",
                )
            # The node hangs up on a route that does not start TLS: only its own log says why.
            await _until(
                lambda: b"TLS route handshake error" in nodes[0].log, "plaintext: no TLS error"
            )
            assert _route_names(nodes[0]) & set(dialers) == {"member"}


async def test_sidecar_serves_with_the_configmap_config_on_the_cluster(
    tollgate_config: Config, tmp_path: Path, nats_certs: NatsCerts
) -> None:
    """The ConfigMap's config, run by the real sidecar on the Kubernetes NATS config: the probes'
    endpoints answer on the admin listener and the owner-only socket serves. Only what ties it
    to the pod changes: paths move to a temporary directory, the admin listener and the NATS
    servers to loopback, and the CA file to the test's CA."""
    confs, envs = _k8s_node_confs(nats_certs)
    run_dir = Path(tempfile.mkdtemp(prefix="tg-", dir="/tmp"))  # short: a socket path
    try:
        with running_cluster(confs, envs, tmp_path) as nodes:
            await _until(_cluster_formed(nodes), "the cluster did not form")
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
                nats=replace(
                    tollgate_config.nats,
                    servers=[_tls_url(n) for n in nodes],
                    tls_ca_file=str(nats_certs.ca_file),
                ),
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
