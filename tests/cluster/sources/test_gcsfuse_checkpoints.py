"""Training checkpoints to gs:// through Cloud Storage FUSE, for real: gcsfuse, built from its Go module,
mounts a flat bucket of fake-gcs-server with the mount options the operator renders for a GemmaTraining's
checkpoint output (turned into gcsfuse flags as GKE's sidecar turns them); the real runtime, run with the
operator's rendered config, saves asynchronously every 2 steps, gets SIGTERM, commits the current step
there (Orbax commits by renaming a folder) within the pod's rendered termination grace period and exits
for a restart; the next run resumes from that step. Without rename-dir-limit (what the output volume had
before) the same save fails as it does on GKE: gcsfuse refuses to rename the folder."""

from __future__ import annotations

import re
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from gemma_operator.api.validation import parse
from gemma_operator.config import Settings
from gemma_operator.offline import PLACEHOLDER_UID
from gemma_operator.render.training import render_workload
from gemma_runtime.config import INTERRUPTED_EXIT_CODE
from tests.api_cases import merge, sample
from tests.cluster.harness.gcs import FakeGcs
from tests.cluster.harness.gcsfuse import Mount, emulator_flags, sidecar_flags, usable_gcsfuse
from tests.cluster.harness.required import required
from tests.runtime.train import runner

PREFIX = "runs/tiny"


@pytest.fixture(scope="module")
def gcsfuse() -> Path:
    return required("Cloud Storage FUSE (gcsfuse)", usable_gcsfuse)


def _rendered(bucket: str, steps: int) -> tuple[str, str, dict[str, Any], int]:
    """(the output volume's mountOptions, its mount path, the runtime config, the termination grace
    period) of the tiny sample training with its checkpoints in ``gs://bucket/runs/tiny``."""
    doc = merge(
        sample("training-tiny-cpu"),
        {
            "metadata": {"namespace": "team", "uid": PLACEHOLDER_UID},
            "spec": {
                "training": {"steps": steps},
                "checkpoints": {"uri": f"gs://{bucket}/{PREFIX}", "intervalSteps": 2},
            },
        },
    )
    children = {c["kind"]: c for c in render_workload(doc, parse(doc), Settings(), 0)}
    pod = children["Job"]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"].startswith("out-gcs-")]
    assert volume["csi"]["volumeAttributes"]["bucketName"] == bucket
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    config = yaml.safe_load(children["ConfigMap"]["data"]["runtime.yaml"])
    options = volume["csi"]["volumeAttributes"]["mountOptions"]
    return options, mount["mountPath"], config, pod["terminationGracePeriodSeconds"]


def _on_this_machine(config: dict[str, Any], mount_path: str, mountpoint: Path, tmp: Path) -> Path:
    """The pod's config with the pod's paths made this machine's: the bucket where it is mounted here, the
    image's sample text from the package."""
    directory = config["checkpoints"]["directory"]
    assert directory == f"{mount_path}/{PREFIX}"
    config["checkpoints"]["directory"] = f"{mountpoint}/{PREFIX}"
    config["data"]["path"] = str(runner.sample())
    config["port"] = 0
    config.pop("compilation_cache", None)  # the pod's cache volume, not this test's subject
    path = tmp / f"train-{config['training']['steps']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _bucket(emulator: FakeGcs) -> str:
    name = f"checkpoints-{uuid.uuid4().hex[:8]}"
    emulator.create_bucket(name)
    return name


def _train(config: Path) -> tuple[int, str]:
    done = runner.train(["--config", str(config)], timeout=600)
    return done.returncode, done.stdout + done.stderr


def test_a_sigterm_save_commits_within_the_rendered_grace_and_the_next_run_resumes_from_it(
    gcs_emulator: FakeGcs, gcsfuse: Path, tmp_path: Path
) -> None:
    bucket = _bucket(gcs_emulator)
    options, mount_path, config, grace = _rendered(bucket, steps=100_000)
    assert "rename-dir-limit=200000" in options.split(",")
    flags = sidecar_flags(options) + emulator_flags(gcs_emulator)
    mountpoint, metrics = tmp_path / "mnt", tmp_path / "metrics.jsonl"
    with Mount(gcsfuse, bucket, mountpoint, flags, tmp_path / "gcsfuse.log"):
        # Saves every 2 steps: when SIGTERM comes, one is usually still writing, as the grace assumes.
        path = _on_this_machine(config, mount_path, mountpoint, tmp_path)
        proc = runner.start(["--config", str(path), "--metrics-file", str(metrics), "--log-every", "1"])
        try:
            deadline = time.monotonic() + 300
            while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 8):
                assert proc.poll() is None, proc.communicate()[0][-4000:]
                assert time.monotonic() < deadline
                time.sleep(0.05)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=grace)  # the kubelet's SIGKILL would come here
            took = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()  # reaped and its pipe closed
        assert proc.returncode == INTERRUPTED_EXIT_CODE, out[-4000:]
        saved = re.search(r"stop requested \(SIGTERM\): saving step (\d+) before exit", out)
        assert saved, out[-4000:]
        last = int(saved[1])
        assert f"checkpoint: step {last} committed to {mountpoint}/{PREFIX}/{last}" in out
        objects = gcs_emulator.objects(bucket)  # what the bucket holds, not what the mount shows
        assert f"{PREFIX}/{last}/_CHECKPOINT_METADATA" in objects
        assert f"{PREFIX}/{last}/state/manifest.ocdbt" in objects
        assert not [name for name in objects if "orbax-checkpoint-tmp" in name]  # every folder renamed
        assert took < grace, f"the SIGTERM save took {took:.1f} s of a {grace} s grace period"

        _, _, more, _ = _rendered(bucket, steps=last + 2)
        code, out = _train(_on_this_machine(more, mount_path, mountpoint, tmp_path))
        assert code == 0, out[-4000:]
        assert f"resumed from {mountpoint}/{PREFIX}/{last} at step {last}" in out
        objects = gcs_emulator.objects(bucket)
        assert f"{PREFIX}/{last + 2}/_CHECKPOINT_METADATA" in objects
        assert any(name.startswith(f"{PREFIX}/model/") for name in objects)  # the exported model


def test_without_rename_dir_limit_the_commit_fails_as_on_gke(
    gcs_emulator: FakeGcs, gcsfuse: Path, tmp_path: Path
) -> None:
    bucket = _bucket(gcs_emulator)
    options, mount_path, config, _ = _rendered(bucket, steps=4)
    plain = ",".join(o for o in options.split(",") if not o.startswith("rename-dir-limit="))
    assert plain == "implicit-dirs"
    mountpoint = tmp_path / "mnt"
    flags = sidecar_flags(plain) + emulator_flags(gcs_emulator)
    with Mount(gcsfuse, bucket, mountpoint, flags, tmp_path / "gcsfuse.log"):
        code, out = _train(_on_this_machine(config, mount_path, mountpoint, tmp_path))
    assert code != 0
    assert "Too many open files" in out  # gcsfuse's EMFILE: too many objects to rename
    assert "orbax-checkpoint-tmp" in out
    committed = [
        n for n in gcs_emulator.objects(bucket) if re.fullmatch(rf"{PREFIX}/\d+/_CHECKPOINT_METADATA", n)
    ]
    assert committed == []
