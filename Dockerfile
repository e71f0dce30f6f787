# syntax=docker/dockerfile:1
# Waystation: multi-stage build, runs as a non-root user, drains gracefully on SIGTERM.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/waystation
COPY pyproject.toml README.md ./
COPY server ./server
RUN /opt/waystation/bin/pip install --no-compile . \
    && /opt/waystation/bin/python -m compileall -q /opt/waystation/lib

FROM python:3.11-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 waystation \
    && useradd --system --uid 10001 --gid waystation --home-dir /data --shell /usr/sbin/nologin waystation \
    && mkdir -p /data && chown waystation:waystation /data
COPY --from=build /opt/waystation /opt/waystation
ENV PATH=/opt/waystation/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WAYSTATION_LISTEN=0.0.0.0:50051 \
    WAYSTATION_DB=sqlite:////data/waystation.db \
    WAYSTATION_GRACE=10
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "waystation.healthcheck", "127.0.0.1:50051"]
# Exec form: the server runs as PID 1 and receives SIGTERM directly (graceful drain).
STOPSIGNAL SIGTERM
ENTRYPOINT ["waystation", "serve"]
