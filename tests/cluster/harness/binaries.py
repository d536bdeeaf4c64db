"""Find or build the control-plane binaries the cluster tier needs.

Order of preference: a folder named by ``GEMMA_K8S_BIN`` or ``KUBEBUILDER_ASSETS`` that holds every
binary; the per-version cache (``~/.cache/gemma-operator/k8s/<version>/``); else build them from Go
modules with the ordinary ``go`` command and fill the cache. Nothing here is committed to the repo.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"  # the etcd that Kubernetes 1.36 is tested with (envtest's pairing)
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
ALL_BINARIES = ("etcd", *KUBE_COMMANDS, "kwok", "helm")

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Versions:
    """One pinned set: a Kubernetes release, its etcd, and the tools built beside it."""

    kubernetes: str = KUBERNETES_VERSION
    etcd: str = ETCD_VERSION
    kwok: str = KWOK_VERSION
    helm: str = HELM_VERSION

    @property
    def cache_key(self) -> str:
        return f"{self.kubernetes}-etcd{self.etcd}-kwok{self.kwok}-helm{self.helm}"


class BuildError(RuntimeError):
    """A binary could not be found or built; the message says which and why."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gemma-operator" / "k8s"


def _complete(folder: Path, names: Iterable[str] = ALL_BINARIES) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in names)


def find_binaries(versions: Versions = Versions()) -> Path | None:
    """Return a folder holding every binary, without building anything."""
    for var in ("GEMMA_K8S_BIN", "KUBEBUILDER_ASSETS"):
        value = os.environ.get(var)
        if value and _complete(Path(value)):
            return Path(value)
    cached = cache_root() / versions.cache_key
    return cached if _complete(cached) else None


def ensure_binaries(versions: Versions = Versions(), log: Log = _stderr) -> Path:
    """Return a folder with every binary, building the missing ones into the cache."""
    found = find_binaries(versions)
    if found is not None:
        return found
    if shutil.which("go") is None:
        raise BuildError(
            "control-plane binaries not found and Go is not installed: set GEMMA_K8S_BIN to a folder "
            f"holding {', '.join(ALL_BINARIES)}, or install Go 1.26+ so they can be built"
        )
    target = cache_root() / versions.cache_key
    target.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gemma-k8s-build-") as work:
        builders: list[tuple[tuple[str, ...], Callable[[Path, Path, Versions, Log], None]]] = [
            (KUBE_COMMANDS, _build_kubernetes),
            (("etcd",), _build_etcd),
            (("kwok",), _install_kwok),
            (("helm",), _install_helm),
        ]
        for names, build in builders:
            if _complete(target, names):
                log(f"[cluster-binaries] cached: {', '.join(names)}")
                continue
            step = time.monotonic()
            build(Path(work), target, versions, log)
            log(f"[cluster-binaries] built {', '.join(names)} in {time.monotonic() - step:.0f} s")
    if not _complete(target):
        missing = [n for n in ALL_BINARIES if not os.access(target / n, os.X_OK)]
        raise BuildError(f"build finished but {missing} are missing from {target}")
    log(f"[cluster-binaries] all binaries in {target} ({time.monotonic() - started:.0f} s)")
    return target


def find_or_build(name: str, path: Path, override: str, build: Callable[[Path], None], log: Log) -> Path:
    """The binary named by the ``override`` environment variable, else the cached ``path``, else
    ``build(path)`` with Go; a BuildError says why it cannot be built."""
    given = os.environ.get(override)
    if given and os.access(given, os.X_OK):
        return Path(given)
    if os.access(path, os.X_OK):
        return path
    if shutil.which("go") is None:
        raise BuildError(
            f"{name} not found and Go is not installed: set {override} to the binary, or install Go 1.26+ "
            "so it can be built"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    build(path)
    log(f"[cluster-binaries] built {name} in {time.monotonic() - started:.0f} s")
    return path


def _go(args: list[str], cwd: Path, log: Log, env: dict[str, str] | None = None) -> None:
    """Run ``go``, streaming its lines; ``-v`` package lines are folded into a counter."""
    full_env = {**os.environ, **(env or {})}
    log(f"[cluster-binaries] go {' '.join(args)}")
    counts = {"compiled": 0, "downloading": 0, "added": 0}
    last_report = time.monotonic()
    tail: list[str] = []
    # `with` closes the pipe: an unclosed one is a ResourceWarning (an error in the tests) when the
    # binaries are built inside a test session, as on a fresh machine.
    with subprocess.Popen(
        ["go", *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            tail = [*tail[-40:], line]
            kind = _line_kind(line)
            if kind is None:
                log(f"[cluster-binaries]   {line}")
                continue
            counts[kind] += 1
            if time.monotonic() - last_report > 15:
                done = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
                log(f"[cluster-binaries]   {done}; now {line}")
                last_report = time.monotonic()
        code = proc.wait()
    if code != 0:
        raise BuildError(f"go {' '.join(args)} failed in {cwd}:\n" + "\n".join(tail))


def _line_kind(line: str) -> str | None:
    """Fold go's per-package chatter into counters: module downloads, additions, compiled packages."""
    if line.startswith("go: downloading "):
        return "downloading"
    if line.startswith(("go: added ", "go: upgraded ")):
        return "added"
    if re.fullmatch(r"[\w.\-/~]+", line):  # a package name printed by -v
        return "compiled"
    return None


def module_download(module: str, version: str, cwd: Path) -> dict[str, str]:
    """``go mod download -json``: where the module's go.mod (``GoMod``) and source (``Dir``) are."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise BuildError(f"cannot download {module}@{version}: {out.stdout}{out.stderr}")
    info: dict[str, str] = json.loads(out.stdout)
    return info


def _module_gomod(module: str, version: str, cwd: Path) -> str:
    return Path(module_download(module, version, cwd)["GoMod"]).read_text()


def staging_replacements(kubernetes_gomod: str) -> list[str]:
    """The staging modules that ``k8s.io/kubernetes`` requires and replaces with ``./staging``.

    Read from the release's own go.mod so the list stays right for new releases.
    """
    staged = set(re.findall(r"^\s*(k8s\.io/[\w\-]+) => \./staging/", kubernetes_gomod, re.M))
    required = set(re.findall(r"^\s*(k8s\.io/[\w\-]+) v0\.0\.0", kubernetes_gomod, re.M))
    return sorted(staged & required)


def _version_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={date}",
        ]
    return "-s -w " + " ".join(flags)


def _build_kubernetes(
    work: Path, target: Path, versions: Versions, log: Log, commands: tuple[str, ...] = KUBE_COMMANDS
) -> None:
    """``k8s.io/kubernetes/cmd/<command>`` for each of ``commands``, built into ``target``."""
    mod = work / "kubernetes"
    mod.mkdir()
    k8s = versions.kubernetes
    staging = k8s.replace("v1.", "v0.", 1)
    (mod / "go.mod").write_text("module gemma-operator.local/k8s-build\n\ngo 1.26\n")
    gomod = _module_gomod("k8s.io/kubernetes", k8s, mod)
    replaces = "\n".join(f"\t{name} => {name} {staging}" for name in staging_replacements(gomod))
    (mod / "go.mod").write_text(
        f"module gemma-operator.local/k8s-build\n\ngo 1.26\n\nreplace (\n{replaces}\n)\n"
    )
    packages = [f"k8s.io/kubernetes/cmd/{name}" for name in commands]
    _go(["get", *[f"{p}@{k8s}" for p in packages]], mod, log)
    _go(
        [
            "build",
            "-mod=mod",
            "-v",
            "-trimpath",
            f"-ldflags={_version_ldflags(k8s)}",
            "-o",
            f"{target}/",
            *packages,
        ],
        mod,
        log,
    )


def _build_etcd(work: Path, target: Path, versions: Versions, log: Log) -> None:
    mod = work / "etcd"
    mod.mkdir()
    (mod / "go.mod").write_text("module gemma-operator.local/etcd-build\n\ngo 1.26\n")
    _go(["get", f"go.etcd.io/etcd/server/v3@{versions.etcd}"], mod, log)
    _go(
        [
            "build",
            "-mod=mod",
            "-v",
            "-trimpath",
            "-ldflags=-s -w",
            "-o",
            str(target / "etcd"),
            "go.etcd.io/etcd/server/v3",
        ],
        mod,
        log,
    )


def _go_install(package: str, work: Path, target: Path, log: Log) -> None:
    _go(["install", "-v", "-trimpath", "-ldflags=-s -w", package], work, log, env={"GOBIN": str(target)})


def _install_kwok(work: Path, target: Path, versions: Versions, log: Log) -> None:
    _go_install(f"sigs.k8s.io/kwok/cmd/kwok@{versions.kwok}", work, target, log)


def _install_helm(work: Path, target: Path, versions: Versions, log: Log) -> None:
    _go_install(f"helm.sh/helm/v3/cmd/helm@{versions.helm}", work, target, log)
