# Two images from one file (make docker-build builds both):
#   docker build --target operator -t gemma-operator .                       kopf operator, no JAX
#   docker build --target runtime --build-arg JAX_VARIANT=tpu -t gemma-runtime .   JAX runtime
# JAX_VARIANT: cpu (default; CPU nodes and tests), cuda12 (NVIDIA GPUs; CUDA comes as pip wheels, the
# node brings the driver) or tpu (Cloud TPU; libtpu from PyPI).
#
# Each image is built in a "-build" stage into /opt/venv and copied into a clean final stage: no pip
# cache, no build tools, no sources. Dependencies are installed from the pyproject alone before the
# source is copied, so editing code reuses the dependency layer. Both images run as the non-root user
# 65532 and write nothing outside /tmp, so they run with a read-only root filesystem.

# Behind a TLS-intercepting proxy, pip needs the proxy's CA: pass it as a BuildKit secret, never a layer:
#   docker build --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt ...
# (make docker-build does when PIP_CA names a file). No `# syntax=` line: BuildKit's built-in frontend
# has RUN --mount, and a syntax image would have to be pulled, which an offline builder cannot.
#
# Pinned: an exact Python release on a fixed Debian release (pass PYTHON_IMAGE=...@sha256:... to pin
# the digest as well).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN groupadd --gid 65532 gemma \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gemma

# ---- operator ---------------------------------------------------------------------------------------

FROM base AS operator-build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY constraints.txt ./
COPY operator/pyproject.toml operator/README.md operator/
# Dependencies only: a stub package with the same metadata resolves them, then goes away.
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && mkdir -p operator/src/gemma_operator \
    && echo '__version__ = "0"' > operator/src/gemma_operator/__init__.py \
    && pip install -c constraints.txt ./operator \
    && pip uninstall -y gemma-operator
# The operator reads the runtime's JAX-free contract (config document, variants, accelerator table,
# memory model and the logical-axis table it counts with): those modules alone, installed as
# gemma-runtime without its dependencies (no JAX).
COPY runtime/pyproject.toml runtime/README.md runtime/
COPY runtime/src/gemma_runtime/__init__.py runtime/src/gemma_runtime/py.typed \
     runtime/src/gemma_runtime/config.py runtime/src/gemma_runtime/variants.py \
     runtime/src/gemma_runtime/accelerators.py runtime/src/gemma_runtime/memory.py \
     runtime/src/gemma_runtime/axes.py \
     runtime/src/gemma_runtime/metric_names.py runtime/src/gemma_runtime/
COPY operator/src operator/src
RUN --mount=type=secret,id=pip-ca if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && pip install --no-cache-dir --no-deps ./operator ./runtime \
    && python -m compileall -q /opt/venv

FROM base AS operator
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="gemma-operator" \
      org.opencontainers.image.description="Kubernetes operator for GemmaServer and GemmaTraining (kopf, no JAX)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/gemma-operator/gemma-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=operator-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["gemma-operator"]
CMD ["run"]

# ---- runtime ----------------------------------------------------------------------------------------

FROM base AS runtime-build
ARG JAX_VARIANT=cpu
WORKDIR /src
RUN case "${JAX_VARIANT}" in cpu|cuda12|tpu) ;; \
      *) echo "JAX_VARIANT must be cpu, cuda12 or tpu, not '${JAX_VARIANT}'" >&2; exit 1 ;; esac \
    && python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY constraints.txt ./
COPY runtime/pyproject.toml runtime/README.md runtime/
# Dependencies only (jax pinned by constraints.txt; the accelerator plugin matches that jax).
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && mkdir -p runtime/src/gemma_runtime \
    && echo '__version__ = "0"' > runtime/src/gemma_runtime/__init__.py \
    && pip install -c constraints.txt ./runtime \
    && if [ "${JAX_VARIANT}" != "cpu" ]; then pip install -c constraints.txt "jax[${JAX_VARIANT}]"; fi \
    && pip uninstall -y gemma-runtime
COPY runtime/src runtime/src
RUN --mount=type=secret,id=pip-ca if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && pip install --no-cache-dir --no-deps ./runtime \
    && python -m compileall -q /opt/venv

FROM base AS runtime
ARG VERSION=dev
ARG REVISION=unknown
ARG JAX_VARIANT=cpu
LABEL org.opencontainers.image.title="gemma-runtime" \
      org.opencontainers.image.description="JAX runtime for Gemma: sharded training and an OpenAI-compatible server (JAX ${JAX_VARIANT})" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/gemma-operator/gemma-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      ai.gemma.jax-variant="${JAX_VARIANT}"
COPY --from=runtime-build /opt/venv /opt/venv
# The sample dataset of manifests/samples/training-tiny-cpu.yaml (file:///opt/gemma/data/sample.txt).
COPY runtime/src/gemma_runtime/data/sample.txt /opt/gemma/data/sample.txt
# JAX and XLA keep caches under $HOME: /tmp is the pod's writable emptyDir. GKE mounts the node's NVIDIA
# driver (libcuda) at /usr/local/nvidia/lib64 and the CUDA wheels look for it on LD_LIBRARY_PATH.
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp LD_LIBRARY_PATH=/usr/local/nvidia/lib64
USER 65532:65532
EXPOSE 8000
ENTRYPOINT ["gemma-runtime"]
