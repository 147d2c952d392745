# llm-service: the supervisor and its worker pool in one container (docs/deploy.md).
#
#   docker build -t llm-service .
#   docker build --build-arg BASE=localhost/debian:bookworm -t llm-service .   # any Debian-like base
#
# Two stages: `build` makes a virtualenv with the service's wheel only (no compilers, no pip cache,
# no development tools), `runtime` copies that virtualenv onto a clean base and runs as a non-root user.
# The supervisor is PID 1: it handles SIGTERM (drain, exit 0) and reaps every child.

ARG BASE=python:3.11-slim

# --- python: the base with Python 3.11 and venv (official python images have both; Debian needs two
# packages, installed only when missing).
FROM ${BASE} AS python
SHELL ["/bin/sh", "-eu", "-c"]
# Unpinned on purpose: the base's release decides the versions, and a pin breaks with every point release.
# hadolint ignore=DL3008
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv; \
        apt-get clean; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version'

# --- build: the service's wheel into /opt/llm-service.
FROM python AS build
# A CA bundle for pip where outbound HTTPS passes an inspecting proxy (empty: the system CAs).
ARG PIP_CERT=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY setup.cfg setup.py pyproject.toml README.md ./
COPY llm_service ./llm_service
COPY llm_worker ./llm_worker
COPY supervisor ./supervisor
COPY llmctl ./llmctl
RUN if [ -z "${PIP_CERT}" ]; then unset PIP_CERT; fi; \
    python3 -m venv /opt/llm-service; \
    /opt/llm-service/bin/pip install --no-cache-dir /src; \
    /opt/llm-service/bin/pip uninstall -y -q pip; \
    find /opt/llm-service -name __pycache__ -prune -exec rm -rf {} +

# --- runtime: the virtualenv, a service user, nothing else.
FROM python AS runtime
RUN groupadd --system --gid 10001 llm-service; \
    useradd --system --uid 10001 --gid llm-service --home-dir /var/lib/llm-service \
        --shell /usr/sbin/nologin llm-service; \
    install -d -o llm-service -g llm-service -m 0750 /var/lib/llm-service /run/llm-service /var/log/llm-service
COPY --from=build /opt/llm-service /opt/llm-service
# RUNTIME_DIRECTORY puts the status socket at /run/llm-service/llm-supervisor.sock, where llmctl
# (docker exec llm-service llmctl status) and the health check look, as on a systemd host.
ENV PATH=/opt/llm-service/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RUNTIME_DIRECTORY=/run/llm-service
# Numeric, so a runtime that checks for a non-root user can tell without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/llm-service
STOPSIGNAL SIGTERM
# Healthy unless failing: `llmctl health` exits 0 ok, 1 degraded, 2 failing or unreachable, and
# degraded (an alert, the service still working) must not make an orchestrator restart the container.
HEALTHCHECK --interval=30s --timeout=30s --start-period=60s --retries=3 \
    CMD ["/bin/sh", "-c", "llmctl health; [ $? -lt 2 ]"]
ENTRYPOINT ["llm-supervisor"]
