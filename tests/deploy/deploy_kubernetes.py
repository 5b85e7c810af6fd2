"""What Kubernetes does with two parts of the manifests that no schema can check.

``container_env``: the environment a container gets, with ``$(NAME)`` references expanded the
way the kubelet does. ``ingress_allowed``: whether NetworkPolicies let one pod reach another's
port. Each implements the subset deploy/ uses and raises ``ValueError`` on anything else, so a
construct it does not understand fails the tests instead of being judged wrongly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["container_env", "ingress_allowed", "selects"]


# --- environment variables ------------------------------------------------------------------

# "$$" is an escaped "$"; "$(NAME)" a reference (k8s.io/kubernetes third_party/forked/golang/
# expansion). A reference to a variable not defined earlier in the list stays as written.
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def container_env(
    container: Mapping[str, Any], value_from: Callable[[Mapping[str, Any]], str]
) -> dict[str, str]:
    """The container's variables; ``value_from`` resolves a ``valueFrom`` (a Secret's key...)."""
    if container.get("envFrom"):
        raise ValueError("envFrom is not supported")
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            env[entry["name"]] = value_from(entry["valueFrom"])
            continue
        # Only the variables above this one are expanded: the list is read in order.
        defined = dict(env)

        def expand(match: re.Match[str], defined: dict[str, str] = defined) -> str:
            if match.group(0) == "$$":
                return "$"
            return defined.get(match.group(1), match.group(0))

        env[entry["name"]] = _REFERENCE.sub(expand, entry.get("value", ""))
    return env


# --- NetworkPolicy ---------------------------------------------------------------------------


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels only; an empty selector selects every pod)."""
    if set(selector) - {"matchLabels"}:
        raise ValueError(f"unsupported selector {dict(selector)}")
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def ingress_allowed(
    policies: Sequence[Mapping[str, Any]],
    *,
    source_labels: Mapping[str, str],
    target_labels: Mapping[str, str],
    target_ports: Mapping[str, int],
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether a pod may open a connection to another pod's port, both in the policies'
    namespace. ``target_ports`` maps the target's named container ports to numbers.

    A pod that no policy selects for ingress takes every connection; one that is selected takes
    only what some rule of those policies allows (policies add up, they never subtract).
    """
    isolating = [
        p
        for p in policies
        if selects(p["spec"]["podSelector"], target_labels) and "Ingress" in _types(p["spec"])
    ]
    if not isolating:
        return True
    return any(
        _port_matches(rule.get("ports"), port, protocol, target_ports)
        and _peer_matches(rule.get("from"), source_labels)
        for policy in isolating
        for rule in policy["spec"].get("ingress", [])
    )


def _types(spec: Mapping[str, Any]) -> list[str]:
    # Without policyTypes, a policy is an ingress policy, and an egress one too if it has
    # egress rules.
    default = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]
    types: list[str] = spec.get("policyTypes", default)
    return types


def _port_matches(
    ports: list[Mapping[str, Any]] | None, port: int, protocol: str, named: Mapping[str, int]
) -> bool:
    if not ports:
        return True  # a rule without ports covers them all
    for entry in ports:
        if "endPort" in entry:
            raise ValueError("endPort is not supported")
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        # A named port is the target pod's container port of that name.
        if (named.get(wanted) if isinstance(wanted, str) else wanted) == port:
            return True
    return False


def _peer_matches(peers: list[Mapping[str, Any]] | None, labels: Mapping[str, str]) -> bool:
    if not peers:
        return True  # a rule without "from" admits every source
    for peer in peers:
        if set(peer) != {"podSelector"}:
            raise ValueError(f"unsupported peer {dict(peer)}")
        if selects(peer["podSelector"], labels):
            return True
    return False
