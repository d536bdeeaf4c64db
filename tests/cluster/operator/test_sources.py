"""A tiny GemmaServer whose checkpoint is an hf:// URI, on the real control plane in a namespace that
enforces the restricted Pod Security Standard: Ready only after its download init container's work is
done, with SourcesReady saying Downloading (bytes done/total), then Loaded.

kwok holds the pod in its init containers (``kwok.gemma.ai/hold-init``) with a pod IP. The test plays
the init container: it runs the rendered ``gemma-runtime fetch`` command from the pod spec, as the
kubelet would (the token from the Secret the pod references, the cache in a temporary folder, progress
on the pod's IP), against a stand-in Hub serving a tiny checkpoint that the test makes. The Hub holds
the second file until the operator has reported the download's progress; then the fetch finishes, the
test tells kwok the init containers are done, and the server becomes Ready. Running the command again,
as a restarted pod with a kept cache would, downloads nothing. With a revoked token the fetch fails; its
termination message, handed to kwok as the init container's last state, makes the server Degraded
(SourceFailed) with the fetch's own error, and the token shows nowhere.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.api_cases import merge, sample
from tests.cluster.harness.control_plane import LocalCluster
from tests.cluster.harness.operator import OperatorProcess
from tests.cluster.harness.wait import wait_for
from tests.fakes.hub import PRIVATE, TOKEN, populated, serving, tiny_checkpoint

NAME = "tiny-hf"
URI = f"hf://{PRIVATE}"


def _json(cluster: LocalCluster, namespace: str, *args: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(cluster.kubectl("-n", namespace, "get", *args, "-o", "json"))
    return document


def _source_condition(cluster: LocalCluster, namespace: str) -> dict[str, Any]:
    status = _json(cluster, namespace, "gemmaserver", NAME).get("status", {})
    return next((c for c in status.get("conditions", []) if c["type"] == "SourcesReady"), {})


def _held_pod(cluster: LocalCluster, namespace: str) -> dict[str, Any] | None:
    pods = _json(cluster, namespace, "pods", "-l", f"gemma.ai/server={NAME}")["items"]
    held = [p for p in pods if p["status"].get("podIP") and p["status"].get("phase") == "Pending"]
    return held[0] if held else None


def _kubelet_command(
    cluster: LocalCluster, namespace: str, pod: dict[str, Any], cache: Path, hub_url: str
) -> tuple[list[str], dict[str, str]]:
    """The fetch init container's command and environment as the kubelet would run it here."""
    (init,) = pod["spec"]["initContainers"]
    args = list(init["args"])
    to = args.index("--to") + 1
    args[to] = str(cache / args[to].lstrip("/"))  # the cache volume, here a folder
    args += ["--status-host", pod["status"]["podIP"]]  # the pod's own address, not every interface
    env = {"HF_ENDPOINT": hub_url, "PATH": "/usr/bin:/bin"}
    for var in init["env"]:
        ref = var["valueFrom"]["secretKeyRef"]
        secret = _json(cluster, namespace, "secret", ref["name"])
        env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return [str(Path(sys.executable).with_name("gemma-runtime")), *args], env


def _apply_held_server(cluster: LocalCluster, namespace: str, token: str) -> None:
    """The restricted namespace, the token Secret, and a tiny server on hf:// whose pod kwok holds."""
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    cluster.kubectl(
        "-n", namespace, "create", "secret", "generic", "hf-token", f"--from-literal=token={token}"
    )
    doc = merge(
        sample("server-tiny-cpu"),
        {
            "metadata": {"name": NAME},
            "spec": {
                "model": {"checkpoint": {"uri": URI, "secretRef": {"name": "hf-token"}}},
                "pod": {"annotations": {"kwok.gemma.ai/hold-init": "true"}},
            },
        },
    )
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input_text=json.dumps(doc))


def test_hf_checkpoint_is_ready_only_after_the_download(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    _apply_held_server(crds, namespace, TOKEN)
    release = threading.Event()
    hub = populated(tiny_checkpoint())
    hub.on_file = lambda name: release.wait(60) if name == "model.safetensors" else None
    with serving(hub):
        pod = wait_for(lambda: _held_pod(crds, namespace), 60, "the pod to hold in its init containers")
        command, env = _kubelet_command(crds, namespace, pod, tmp_path / "node", hub.url)
        fetch = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            downloading = wait_for(
                lambda: (
                    (c := _source_condition(crds, namespace)).get("reason") == "Downloading"
                    and "%" in c["message"]
                    and c
                ),
                60,
                "SourcesReady to show the download's progress",
            )
            server = _json(crds, namespace, "gemmaserver", NAME)
            release.set()
            output, _ = fetch.communicate(timeout=60)
        finally:
            release.set()
            if fetch.poll() is None:
                fetch.kill()
                fetch.wait()
        assert fetch.returncode == 0, output
        assert TOKEN not in output
        assert "3 files downloaded, 0 skipped" in output

        assert downloading["status"] == "False"
        assert downloading["message"].startswith(f"{URI}: ")
        assert f"on pod {pod['metadata']['name']}" in downloading["message"]
        assert server["status"]["phase"] != "Ready"
        assert {c["type"]: c["status"] for c in server["status"]["conditions"]}["Ready"] == "False"

        crds.kubectl(
            "-n", namespace, "annotate", "pod", pod["metadata"]["name"], "kwok.gemma.ai/init-done=true"
        )
        ready = wait_for(
            lambda: (
                (s := _json(crds, namespace, "gemmaserver", NAME)).get("status", {}).get("phase") == "Ready"
                and s
            ),
            60,
            "the server to be Ready once the download is done",
        )
        loaded = next(c for c in ready["status"]["conditions"] if c["type"] == "SourcesReady")
        assert (loaded["status"], loaded["reason"]) == ("True", "Loaded")
        assert URI in loaded["message"]

        gets = hub.file_gets()
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "0 files downloaded, 3 skipped" in again.stdout
        assert hub.file_gets() == gets, "a kept cache downloads nothing"


def test_a_failed_download_degrades_the_server_with_the_fetch_error(
    crds: LocalCluster, running_operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    _apply_held_server(crds, namespace, "hf_RevokedTokenThatMustNotShow")
    with serving(populated(tiny_checkpoint())) as hub:
        pod = wait_for(lambda: _held_pod(crds, namespace), 60, "the pod to hold in its init containers")
        command, env = _kubelet_command(crds, namespace, pod, tmp_path / "node", hub.url)
        message = tmp_path / "termination-log"
        command[command.index("/dev/termination-log")] = str(message)
        fetch = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert fetch.returncode == 1
    name = pod["metadata"]["name"]
    crds.kubectl(
        "-n", namespace, "annotate", "pod", name, "kwok.gemma.ai/init-exit-code=1",
        f"kwok.gemma.ai/init-message={message.read_text()}",
    )  # fmt: skip

    degraded = wait_for(
        lambda: (
            (s := _json(crds, namespace, "gemmaserver", NAME)).get("status", {}).get("phase") == "Degraded"
            and s
        ),
        60,
        "the server to be Degraded by the failed download",
    )
    conds = {c["type"]: c for c in degraded["status"]["conditions"]}
    assert (conds["Degraded"]["reason"], conds["SourcesReady"]["reason"]) == ("SourceFailed", "Failed")
    expected = f"pod {name}: fetch-checkpoint ({URI}) failed with exit code 1: {URI}@main: the file list: "
    assert conds["SourcesReady"]["message"].startswith(expected + "the Hub answered 401 Unauthorized")
    assert conds["Degraded"]["message"] == conds["SourcesReady"]["message"]
    assert "hf_RevokedTokenThatMustNotShow" not in json.dumps(degraded)
    events = crds.kubectl("-n", namespace, "get", "events", "--field-selector", f"involvedObject.name={NAME}")
    assert "SourceFailed" in events
    version = _json(crds, namespace, "pod", name)["metadata"]["resourceVersion"]
    time.sleep(2)
    assert _json(crds, namespace, "pod", name)["metadata"]["resourceVersion"] == version, "kwok settled"
