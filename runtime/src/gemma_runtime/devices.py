"""The devices a process was promised, checked before anything loads.

A pod for a TPU or GPU names its platform in ``JAX_PLATFORMS`` (the operator renders it) and the serving
config names its accelerator. Without a check, a pod whose device did not come up would run on the CPU in
float32 without a word; here it stops with :class:`DeviceError`, whose message says what was promised and
what JAX found. JAX-free until :func:`local_devices` is called.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from gemma_runtime import accelerators

log = logging.getLogger(__name__)

# JAX_PLATFORMS names a plugin ("cuda"); jax.default_backend() names the backend ("gpu").
BACKEND_OF_PLATFORM = {"tpu": "tpu", "cuda": "gpu", "rocm": "gpu", "gpu": "gpu", "cpu": "cpu"}
ACCELERATOR_MISSING = "AcceleratorMissing"  # the reason the operator shows on the pod's owner


# Where a TPU VM's chips appear in a container that was given google.com/tpu (v4/v5e: accel, v5p/v6e: vfio).
TPU_DEVICE_GLOBS = ("/dev/accel*", "/dev/vfio/[0-9]*")


class DeviceError(RuntimeError):
    """The accelerator this process was promised is not there."""


def promised_platform(environ: Mapping[str, str], accelerator_type: str | None = None) -> str | None:
    """The accelerator platform this process must run on: the config's accelerator, else a single
    platform in ``JAX_PLATFORMS``; None when no accelerator was promised (the CPU, or a run by hand that
    takes what it finds)."""
    if accelerator_type is not None:
        platform = accelerators.jax_platform(accelerator_type)
    else:
        names = [n.strip() for n in environ.get("JAX_PLATFORMS", "").split(",") if n.strip()]
        platform = names[0] if len(names) == 1 and names[0] in BACKEND_OF_PLATFORM else accelerators.CPU
    return None if platform == accelerators.CPU else platform


def mismatch(promised: str | None, backend: str) -> str | None:
    """Why the backend JAX started is not the promised platform, or None when it is."""
    if promised is None or BACKEND_OF_PLATFORM.get(promised, promised) == backend:
        return None
    return (
        f"accelerator: this pod was promised {promised} devices but JAX found only {backend}; the "
        f"{promised} device did not come up (driver, device plugin or node), refusing to run on {backend}"
    )


def unusable_devices(paths: Iterable[str], uid: int, gids: set[int]) -> list[str]:
    """The device nodes in ``paths`` that user ``uid`` with groups ``gids`` cannot open read-write, each
    with its owner and mode. Judged by the permission bits alone: the runtime runs without capabilities,
    so even UID 0 opens only what its owner, group or mode allow."""
    problems = []
    for path in paths:
        stat = os.stat(path)
        if stat.st_uid == uid:
            wanted = 0o600
        elif stat.st_gid in gids:
            wanted = 0o060
        else:
            wanted = 0o006
        if stat.st_mode & wanted != wanted:
            problems.append(f"{path} (owner {stat.st_uid}:{stat.st_gid}, mode {stat.st_mode & 0o777:04o})")
    return problems


def tpu_device_hint(globs: Iterable[str] = TPU_DEVICE_GLOBS) -> str:
    """Why a TPU backend may have failed, from the container's device nodes; empty when they look usable."""
    paths = sorted(p for pattern in globs for p in glob.glob(pattern))
    if not paths:
        return (
            f"; no TPU device node ({', '.join(globs)}) is in this container: the pod did not get "
            "google.com/tpu from the node's device plugin"
        )
    uid, gids = os.getuid(), {os.getgid(), *os.getgroups()}
    problems = unusable_devices(paths, uid, gids)
    if not problems:
        return ""
    return (
        f"; this process (uid {uid}, groups {sorted(gids)}) cannot open {', '.join(problems)}: the node's "
        "container runtime left the TPU devices to root. Set spec.pod.runAsRoot: true (the runtime runs as "
        "root without capabilities), or enable containerd's device_ownership_from_security_context on the "
        "node pool (README: TPU devices as a non-root user)"
    )


def _hint(promised: str | None) -> str:
    return tpu_device_hint() if promised == "tpu" else ""


def local_devices(promised: str | None) -> tuple[list[Any], str]:
    """This host's devices and JAX's backend; raises DeviceError when they are not the promised ones."""
    import jax

    try:
        devices, backend = jax.local_devices(), jax.default_backend()
    # JAX raises RuntimeError for a platform that fails to start, and AssertionError when no plugin for
    # the requested platform is installed at all.
    except (RuntimeError, AssertionError) as err:
        raise DeviceError(
            f"accelerator: this pod was promised {promised or 'accelerator'} devices but JAX could not "
            f"start them: {str(err) or type(err).__name__}{_hint(promised)}"
        ) from err
    problem = mismatch(promised, backend)
    if problem is not None:
        raise DeviceError(problem + _hint(promised))
    log.info("devices: %d x %s (%s)", len(devices), devices[0].device_kind, backend)
    return devices, backend
