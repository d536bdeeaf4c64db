"""Our container images, built on this machine: a Docker engine (one already answering, else Debian's
``dockerd`` started here with its own folders), a local Python base made with debootstrap when the public
one cannot be pulled, a static pause image for the kubelet's sandboxes, and the operator and runtime
images from the repository's Dockerfile. pip's CA bundle reaches the build as a BuildKit secret.

Docker's data root is cached (``~/.cache/gemma-operator/docker``): a second run reuses the base image and
the Dockerfile's layers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.api_cases import REPO
from tests.cluster.harness.binaries import BuildError, Log, _stderr, cache_root
from tests.cluster.harness.control_plane import _die_with_parent, stop_process

BASE_IMAGE = "localhost/gemma-base:bookworm-py3.11"
PAUSE_IMAGE = "localhost/pause:gemma-1"
OPERATOR_IMAGE = "localhost/gemma-operator:test"
RUNTIME_IMAGE = "localhost/gemma-runtime:test"
# The public base the Dockerfile names; pulled when a registry answers, else BASE_IMAGE is made.
PUBLIC_BASE = "python:3.11.14-slim-bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_PACKAGES = "ca-certificates,python3,python3-venv,python-is-python3"

# The kubelet's sandbox process: sleeps until told to stop and reaps what it adopts.
PAUSE_C = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, stop);
  signal(SIGTERM, stop);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
"""


def docker_root() -> Path:
    return cache_root().parent / "docker"


def docker_client() -> str | None:
    """A docker CLI that can build with BuildKit: one with the buildx plugin, or a 20.10 client (which
    carries BuildKit's client itself); None when there is none."""
    candidates = [c for c in (shutil.which("docker"), "/usr/bin/docker") if c and os.access(c, os.X_OK)]
    for cli in dict.fromkeys(candidates):
        if _ok([cli, "buildx", "version"]):
            return cli
        version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=False).stdout
        if "version 20.10" in version:
            return cli
    return None


def _ok(args: list[str], env: dict[str, str] | None = None) -> bool:
    try:
        return subprocess.run(args, capture_output=True, check=False, timeout=30, env=env).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pip_ca_bundle() -> Path | None:
    """The CA bundle pip on this machine trusts (PIP_CERT, else the system's), for the build's secret."""
    for value in (os.environ.get("PIP_CA"), os.environ.get("PIP_CERT"), "/etc/ssl/certs/ca-certificates.crt"):
        if value and Path(value).is_file():
            return Path(value)
    return None


@dataclasses.dataclass
class Docker:
    """A Docker engine this process can use: ``run`` calls the CLI against it."""

    cli: str
    host: str | None = None  # DOCKER_HOST of an engine started here; None: the CLI's own
    process: subprocess.Popen[bytes] | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        if self.host:
            env["DOCKER_HOST"] = self.host
        return env

    def run(self, *args: str, timeout: float = 1800, **kwargs: object) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.cli, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise BuildError(
                f"docker {' '.join(args[:3])} failed:\n{(result.stdout + result.stderr)[-3000:]}"
            )
        return result

    def has_image(self, image: str) -> bool:
        return _ok([self.cli, "image", "inspect", image], env=self.env)

    def image_size_mb(self, image: str) -> float:
        return int(self.run("image", "inspect", "-f", "{{.Size}}", image).stdout.strip()) / 1e6


@contextlib.contextmanager
def docker_engine(workdir: Path, log: Log = _stderr) -> Iterator[Docker]:
    """A Docker engine that answers: the one already running, else ``dockerd`` started under ``workdir``
    with its data root in the cache, stopped on exit."""
    cli = docker_client()
    if cli is None:
        raise BuildError("no docker CLI that builds with BuildKit (install docker.io, or buildx)")
    if _ok([cli, "info"]):
        yield Docker(cli)
        return
    if shutil.which("dockerd") is None:
        raise BuildError("no Docker engine answers and dockerd is not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        raise BuildError("no Docker engine answers, and starting dockerd here needs root")
    started = time.monotonic()
    exec_root = Path(tempfile.mkdtemp(prefix="gd-", dir="/tmp"))  # short: it holds unix sockets
    docker_root().mkdir(parents=True, exist_ok=True)
    sock = workdir / "docker.sock"
    log_file = workdir / "dockerd.log"
    with log_file.open("wb") as out:
        process = subprocess.Popen(
            ["dockerd", f"--data-root={docker_root()}", f"--exec-root={exec_root}", f"--host=unix://{sock}",
             f"--pidfile={workdir / 'dockerd.pid'}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl
        )  # fmt: skip
    docker = Docker(cli, f"unix://{sock}", process)
    try:
        deadline = time.monotonic() + 60
        while not _ok([cli, "info"], env=docker.env):
            if process.poll() is not None or time.monotonic() > deadline:
                raise BuildError(f"dockerd did not start; log {log_file}:\n{log_file.read_text()[-2000:]}")
            time.sleep(0.5)
        docker.timings["dockerd"] = time.monotonic() - started
        log(f"[images] dockerd ready in {docker.timings['dockerd']:.1f} s (data root {docker_root()})")
        yield docker
    finally:
        stop_process(process, grace=20)
        shutil.rmtree(exec_root, ignore_errors=True)


def ensure_base(docker: Docker, log: Log = _stderr) -> str:
    """The Python base the Dockerfile builds on: the public image if it is here or can be pulled, else
    BASE_IMAGE, made once with debootstrap from Debian's mirror."""
    if docker.has_image(PUBLIC_BASE) or _ok([docker.cli, "pull", "-q", PUBLIC_BASE], env=docker.env):
        return PUBLIC_BASE
    if docker.has_image(BASE_IMAGE):
        return BASE_IMAGE
    if shutil.which("debootstrap") is None:
        raise BuildError(f"{PUBLIC_BASE} cannot be pulled and debootstrap is not installed to make a base")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gemma-rootfs-", dir="/var/tmp") as root:
        log(f"[images] {PUBLIC_BASE} cannot be pulled: making {BASE_IMAGE} with debootstrap (about 2 min)")
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={DEBOOTSTRAP_PACKAGES}", "bookworm", root,
             os.environ.get("GEMMA_DEBIAN_MIRROR", DEBIAN_MIRROR)],
            capture_output=True, text=True, check=False, timeout=1200,
        )  # fmt: skip
        if result.returncode != 0:
            raise BuildError(f"debootstrap failed:\n{(result.stdout + result.stderr)[-3000:]}")
        for trimmed in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                        "usr/share/locale"):  # fmt: skip
            shutil.rmtree(Path(root) / trimmed, ignore_errors=True)
        _import(docker, Path(root), BASE_IMAGE, ["ENV LANG=C.UTF-8", 'CMD ["python3"]'])
    docker.timings["base"] = time.monotonic() - started
    log(f"[images] {BASE_IMAGE} made in {docker.timings['base']:.0f} s")
    return BASE_IMAGE


def ensure_pause(docker: Docker) -> str:
    """PAUSE_IMAGE: the sandbox process above, compiled static, alone in an image."""
    if docker.has_image(PAUSE_IMAGE):
        return PAUSE_IMAGE
    if shutil.which("gcc") is None:
        raise BuildError("gcc is not installed to build the pause image")
    with tempfile.TemporaryDirectory(prefix="gemma-pause-") as work:
        source, root = Path(work) / "pause.c", Path(work) / "root"
        source.write_text(PAUSE_C)
        root.mkdir()
        result = subprocess.run(
            ["gcc", "-static", "-O2", "-o", str(root / "pause"), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BuildError(f"gcc -static pause.c failed (libc6-dev?):\n{result.stderr}")
        _import(docker, root, PAUSE_IMAGE, ['ENTRYPOINT ["/pause"]', "USER 65535:65535"])
    return PAUSE_IMAGE


def _import(docker: Docker, root: Path, image: str, changes: list[str]) -> None:
    flags = [arg for change in changes for arg in ("--change", change)]
    with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
        result = subprocess.run(
            [docker.cli, "import", *flags, "-", image],
            stdin=tar.stdout,
            env=docker.env,
            capture_output=True,
            check=False,
        )
    if result.returncode != 0 or tar.returncode != 0:
        raise BuildError(f"docker import {image} failed: {result.stderr.decode(errors='replace')}")


def build(
    docker: Docker, target: str, image: str, base: str, *, log: Log = _stderr, jax_variant: str = "cpu"
) -> float:
    """``docker build --target <target>`` of the repository as ``image`` on ``base``; seconds taken."""
    started = time.monotonic()
    secret = pip_ca_bundle()
    revision = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    docker.run(
        "build", "--target", target, "--build-arg", f"PYTHON_IMAGE={base}",
        "--build-arg", f"JAX_VARIANT={jax_variant}", "--build-arg", f"REVISION={revision.stdout.strip()}",
        *(["--secret", f"id=pip-ca,src={secret}"] if secret else []), "-t", image, str(REPO),
    )  # fmt: skip
    seconds = time.monotonic() - started
    log(f"[images] built {image} ({target}) in {seconds:.0f} s: {docker.image_size_mb(image):.0f} MB")
    return seconds


def build_all(docker: Docker, log: Log = _stderr) -> dict[str, float]:
    """The pause image, the base, and both of our images; seconds per step."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    ensure_pause(docker)
    base = ensure_base(docker, log)
    timings["base"] = time.monotonic() - started
    timings["operator"] = build(docker, "operator", OPERATOR_IMAGE, base, log=log)
    timings["runtime"] = build(docker, "runtime", RUNTIME_IMAGE, base, log=log)
    docker.run("image", "prune", "--force")  # the versions these tags left behind; the build cache stays
    return timings


def main(operator_image: str, runtime_image: str, jax_variant: str) -> int:
    """`make docker-build`: both images with this machine's engine (started here when none answers), the
    base made here when the public one cannot be pulled; sizes and times on stdout."""
    with tempfile.TemporaryDirectory(prefix="gemma-docker-") as work, docker_engine(Path(work)) as docker:
        started = time.monotonic()
        base = ensure_base(docker)
        base_seconds = time.monotonic() - started
        built = {
            operator_image: build(docker, "operator", operator_image, base),
            runtime_image: build(docker, "runtime", runtime_image, base, jax_variant=jax_variant),
        }
        print(f"base {base}: {base_seconds:.0f} s")
        for image, seconds in built.items():
            print(f"{image}: {docker.image_size_mb(image):.0f} MB, built in {seconds:.0f} s")
        if docker.host:
            print(f"(in the engine started here, data root {docker_root()}: DOCKER_HOST is gone with it)")
    return 0


def export(docker: Docker, images: list[str], load: list[str]) -> None:
    """``docker save`` the images into a command that imports a tar on stdin (``ctr images import -``)."""
    with subprocess.Popen([docker.cli, "save", *images], env=docker.env, stdout=subprocess.PIPE) as save:
        result = subprocess.run(
            load, stdin=save.stdout, capture_output=True, text=True, timeout=600, check=False
        )
    if result.returncode != 0 or save.returncode != 0:
        raise BuildError(f"loading {images} failed: {result.stderr[-2000:]}")
