"""The restricted Pod Security Standard (https://kubernetes.io/docs/concepts/security/pod-security-standards/)
as a checker of rendered pod specs, so unit tests catch a violation before a restricted namespace's
admission does (the cluster tier checks the real admission too)."""

from __future__ import annotations

from typing import Any

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SECCOMP = {"RuntimeDefault", "Localhost"}


def violations(pod: dict[str, Any]) -> list[str]:
    """What in ``pod`` (a PodSpec) the restricted profile (baseline included) forbids; empty when none."""
    found = [f"{key}: true" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            found.append(f"volume {volume['name']}: {', '.join(sorted(kinds - ALLOWED_VOLUMES))}")
    pod_context = pod.get("securityContext") or {}
    if pod_context.get("runAsUser") == 0:
        found.append("pod: runAsUser 0")
    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        found += [f"{container['name']}: {problem}" for problem in _container(container, pod_context)]
    return found


def _container(container: dict[str, Any], pod_context: dict[str, Any]) -> list[str]:
    context = container.get("securityContext") or {}
    problems = []
    if context.get("privileged"):
        problems.append("privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation must be false")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in capabilities.get("drop", []):
        problems.append("capabilities must drop ALL")
    if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
        problems.append("capabilities may add only NET_BIND_SERVICE")
    if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
        problems.append("runAsNonRoot must be true")
    if context.get("runAsUser") == 0:
        problems.append("runAsUser 0")
    seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
    if seccomp not in SECCOMP:
        problems.append("seccompProfile must be RuntimeDefault or Localhost")
    if any(port.get("hostPort") for port in container.get("ports", [])):
        problems.append("hostPort")
    return problems
