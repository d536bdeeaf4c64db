"""The devices a process was promised, checked before anything loads.

A pod for a TPU or GPU names its platform in ``JAX_PLATFORMS`` (the operator renders it) and the serving
config names its accelerator. Without a check, a pod whose device did not come up would run on the CPU in
float32 without a word; here it stops with :class:`DeviceError`, whose message says what was promised and
what JAX found. JAX-free until :func:`local_devices` is called.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from gemma_runtime import accelerators

log = logging.getLogger(__name__)

# JAX_PLATFORMS names a plugin ("cuda"); jax.default_backend() names the backend ("gpu").
BACKEND_OF_PLATFORM = {"tpu": "tpu", "cuda": "gpu", "rocm": "gpu", "gpu": "gpu", "cpu": "cpu"}
ACCELERATOR_MISSING = "AcceleratorMissing"  # the reason the operator shows on the pod's owner


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
            f"start them: {str(err) or type(err).__name__}"
        ) from err
    problem = mismatch(promised, backend)
    if problem is not None:
        raise DeviceError(problem)
    log.info("devices: %d x %s (%s)", len(devices), devices[0].device_kind, backend)
    return devices, backend
