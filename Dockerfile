# syntax=docker/dockerfile:1
# The ecssd agent's image: the ecssd package in a virtual environment, run as a non-root
# user that is in a "docker" group, so the host's Docker socket (mounted at
# /var/run/docker.sock) is usable without root.
#
#   docker build -t ecssd-agent .
#   docker build --build-arg DOCKER_GID=$(stat -c %g /var/run/docker.sock) -t ecssd-agent .
#
# DOCKER_GID must be a group that may use the host's socket: either the host's docker
# group's GID (above), or the GID the CloudFormation quickstart grants on the socket
# (its AgentSocketGroupId parameter, whose default equals this default). `docker run
# --group-add <gid>` is the run-time alternative.
#
# Offline builds (no index reachable from the build): put wheels for the project and all
# its dependencies, plus pip's own wheel, in dist/wheels/ first and set BASE_IMAGE to any
# image with python3 (python3 -m venv is all it needs):
#   python3 -m pip wheel --wheel-dir dist/wheels . pip
#   docker build --build-arg BASE_IMAGE=ecssd-python:3 -t ecssd-agent .
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

ARG DOCKER_GID=2375
ARG AGENT_UID=10001

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/ecssd/bin:${PATH} \
    ECSSD_STATUS_PORT=8053 \
    ECSSD_STATUS_ADDRESS=127.0.0.1 \
    ECSSD_LOG_FORMAT=json

# Only pyproject.toml, README.md, the two packages and an optional dist/wheels/ get here
# (see .dockerignore).
COPY . /src

RUN set -eu; \
    python3 -m venv --without-pip /opt/ecssd; \
    if [ -d /src/dist/wheels ]; then \
        pip_wheel=$(ls /src/dist/wheels/pip-*.whl | head -n 1); \
        /opt/ecssd/bin/python "$pip_wheel/pip" install --no-cache-dir --no-compile \
            --no-index --find-links /src/dist/wheels ecssd; \
    else \
        python3 -m pip --python /opt/ecssd/bin/python install --no-cache-dir --no-compile /src; \
    fi; \
    rm -rf /src; \
    groupadd --system --gid "${DOCKER_GID}" docker 2>/dev/null || groupmod --gid "${DOCKER_GID}" docker; \
    groupadd --gid "${AGENT_UID}" ecssd; \
    useradd --uid "${AGENT_UID}" --gid ecssd --groups docker --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin ecssd; \
    /opt/ecssd/bin/ecssd-agent --help >/dev/null

USER ecssd

# The agent's /healthz answers 200 while it can reconcile; curl is not in slim images, so
# Python's urllib asks (exit 1 on any error or non-2xx answer).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/ecssd/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ECSSD_STATUS_PORT', '8053'), timeout=3)"]

ENTRYPOINT ["ecssd-agent"]
