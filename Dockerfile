# Container image of the collector service, built for Cloud Run.
#
# Build:  docker build -t collector .
# Run:    docker run --rm -p 8080:8080 collector
#
# The builder stage installs the package and its dependencies, as declared in
# pyproject.toml, into a virtual environment. The runtime stage copies only that
# environment, so the image carries no compiler, pip cache or source tree.

# Both stages use the same base image, because the virtual environment links to
# the interpreter at /usr/local/bin/python3.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv

WORKDIR /src
COPY pyproject.toml README.md ./
# collector/static/tracker.js is a symbolic link to sdk/tracker.js.
COPY sdk/tracker.js ./sdk/tracker.js
COPY collector ./collector
# On x86_64 every dependency installs from a binary wheel, so the slim image
# needs no compiler. NOTE: arm64 builds were not tried, and a dependency without an
# arm64 wheel would fail here for lack of gcc.
RUN /opt/venv/bin/pip install --no-cache-dir .


FROM ${PYTHON_IMAGE} AS runtime

# COLLECTOR_HOST=0.0.0.0 makes the server reachable from outside the container.
# The port comes from COLLECTOR_PORT, else from PORT (which Cloud Run sets),
# else 8080.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    COLLECTOR_HOST=0.0.0.0 \
    COLLECTOR_DATA_DIR=/var/lib/collector

RUN groupadd --system --gid 10001 collector \
    && useradd --system --uid 10001 --gid collector --no-create-home \
        --home-dir /var/lib/collector --shell /usr/sbin/nologin collector \
    && install -d -o collector -g collector -m 0750 /var/lib/collector

COPY --from=builder /opt/venv /opt/venv

WORKDIR /var/lib/collector
USER 10001:10001
EXPOSE 8080

# Exec form: the collector is PID 1 and receives SIGTERM itself. uvicorn then
# stops accepting connections, lets in-flight requests finish for at most 7
# seconds and flushes the sink, inside the 10 seconds that Cloud Run waits
# before it sends SIGKILL.
STOPSIGNAL SIGTERM
ENTRYPOINT ["collector"]
CMD ["serve"]
