# syntax=docker/dockerfile:1.7
# Two images from one file:
#   docker build --target operator -t gemma-operator .   (kopf operator, no JAX)
#   docker build --target runtime  -t gemma-runtime .    (JAX runtime; JAX_EXTRA=cpu|cuda12|tpu)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --gid 65532 gemma && useradd --uid 65532 --gid gemma --no-create-home --shell /sbin/nologin gemma
WORKDIR /app
COPY constraints.txt ./

FROM base AS operator
ARG VERSION=dev
LABEL org.opencontainers.image.title="gemma-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/gemma-operator/gemma-operator"
# Dependencies first (cached), then the source.
COPY operator/pyproject.toml operator/README.md operator/
RUN mkdir -p operator/src/gemma_operator && echo '__version__ = "0"' > operator/src/gemma_operator/__init__.py \
    && pip install -c constraints.txt ./operator && pip uninstall -y gemma-operator
COPY operator/ operator/
RUN pip install --no-deps -c constraints.txt ./operator && rm -rf operator
USER 65532:65532
ENTRYPOINT ["gemma-operator"]
CMD ["run"]

FROM base AS runtime
ARG VERSION=dev
ARG JAX_EXTRA=cpu
LABEL org.opencontainers.image.title="gemma-runtime" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/gemma-operator/gemma-operator"
COPY runtime/pyproject.toml runtime/README.md runtime/
RUN mkdir -p runtime/src/gemma_runtime && echo '__version__ = "0"' > runtime/src/gemma_runtime/__init__.py \
    && pip install -c constraints.txt ./runtime \
    && if [ "${JAX_EXTRA}" != "cpu" ]; then pip install "jax[${JAX_EXTRA}]"; fi \
    && pip uninstall -y gemma-runtime
COPY runtime/ runtime/
RUN pip install --no-deps -c constraints.txt ./runtime && rm -rf runtime
USER 65532:65532
ENTRYPOINT ["gemma-runtime"]
