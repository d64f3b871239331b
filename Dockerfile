# it-relay container image: build the wheel, install it into a slim runtime as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY relay ./relay
COPY config ./config
COPY systemd ./systemd
COPY docs ./docs
RUN python -m pip install --no-cache-dir build && python -m build --wheel --outdir /dist

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin it-relay
USER it-relay
# /metrics, /healthz, /readyz; bind to all interfaces inside the container.
ENV IT_RELAY_SERVER__LISTEN=0.0.0.0:9464
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status == 200 else 1)"
# The configuration is mounted, never baked in:
#   docker run -v /etc/it-relay/relay.toml:/etc/it-relay/relay.toml:ro it-relay
# (or set IT_RELAY_CONFIG to where it is mounted). Without it the relay refuses to start, saying so;
# the example is in the image at /usr/local/share/it-relay/config/relay.example.toml.
ENV IT_RELAY_CONFIG=/etc/it-relay/relay.toml
ENTRYPOINT ["it-relay", "run"]
