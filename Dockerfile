# The PaxosKV image: the node (`paxoskv serve`), the CLI and the operator
# (`paxoskv-operator`, the same image with another entry point).
#
#   buildah bud -t paxoskv .                       # or: docker build -t paxoskv .
#   buildah bud --build-arg BASE=localhost/debian-python:bookworm -t paxoskv .
#
# BASE is any image with python3 (3.11 or newer) and its venv module on the PATH: a
# public Python image by default; the test cluster builds on a Debian base it makes with
# debootstrap (tests/k8s). Nothing but the virtual environment is added to it.
ARG BASE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE} AS build
# Wheels only: no compiler in this stage either, so nothing is built from source.
COPY pyproject.toml README.md /src/
COPY node /src/node
COPY operator /src/operator
RUN python3 -m venv /opt/paxoskv \
 && /opt/paxoskv/bin/pip install --no-cache-dir --disable-pip-version-check \
      --only-binary=:all: '/src[operator]' \
 && /opt/paxoskv/bin/pip uninstall --yes pip

FROM ${BASE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="paxoskv" \
      org.opencontainers.image.description="Strongly consistent, leaderless key-value store for coordination (CASPaxos), for Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /opt/paxoskv /opt/paxoskv
# A fixed, non-root user: its UID is what the pod's securityContext names (runAsUser,
# fsGroup), so that the data volume is writable without running as root.
RUN groupadd --gid 10001 paxoskv \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/paxoskv \
      --shell /usr/sbin/nologin paxoskv \
 && install -d -o 10001 -g 10001 /var/lib/paxoskv
ENV PATH=/opt/paxoskv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/paxoskv
EXPOSE 7001
ENTRYPOINT ["paxoskv"]
CMD ["serve", "--help"]
