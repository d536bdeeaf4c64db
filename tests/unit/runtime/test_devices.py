"""Why a TPU did not come up, read from the container's device nodes: none at all (no google.com/tpu), or
nodes the runtime's user cannot open (a node runtime that leaves them to root). Real files stand in for
the device nodes: only their owner and mode matter."""

from __future__ import annotations

import os
from pathlib import Path

from gemma_runtime.devices import tpu_device_hint, unusable_devices

USER = 65532


def _node(path: Path, uid: int, gid: int, mode: int) -> str:
    path.write_bytes(b"")
    os.chown(path, uid, gid)
    path.chmod(mode)
    return str(path)


def test_a_root_only_device_is_unusable_to_the_runtime_user(tmp_path: Path) -> None:
    node = _node(tmp_path / "accel0", 0, 0, 0o600)
    assert unusable_devices([node], USER, {USER}) == [f"{node} (owner 0:0, mode 0600)"]
    # root owns it: the runAsRoot switch opens it without any capability
    assert unusable_devices([node], 0, {0, USER}) == []


def test_ownership_from_the_security_context_or_a_shared_group_makes_it_usable(tmp_path: Path) -> None:
    owned = _node(
        tmp_path / "accel0", USER, USER, 0o600
    )  # containerd's device_ownership_from_security_context
    grouped = _node(tmp_path / "accel1", 0, 1234, 0o660)
    open_to_all = _node(tmp_path / "accel2", 0, 0, 0o666)
    assert unusable_devices([owned, grouped, open_to_all], USER, {USER, 1234}) == []
    assert unusable_devices([grouped], USER, {USER}) == [f"{grouped} (owner 0:1234, mode 0660)"]


def test_the_hint_names_the_switch_or_the_missing_device_plugin(tmp_path: Path) -> None:
    pattern = str(tmp_path / "accel*")
    assert "did not get google.com/tpu" in tpu_device_hint([pattern])
    _node(tmp_path / "accel0", 4321, 4321, 0o600)
    hint = tpu_device_hint([pattern])
    if os.getuid() == 4321:  # pragma: no cover - the node is ours
        assert hint == ""
    else:
        assert "cannot open" in hint
        assert "accel0 (owner 4321:4321, mode 0600)" in hint
        assert "spec.pod.runAsRoot: true" in hint
        assert "device_ownership_from_security_context" in hint
