# The shoppulse image: one image, one process per container (`shoppulse ingest`, `aggregate`, `sidecar`,
# `db migrate`…, as docker-compose.yml runs them); without a command it runs the whole local stack.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SHOPPULSE_DATA_DIR=/var/lib/shoppulse

WORKDIR /app
COPY pyproject.toml README.md ./
COPY processors ./processors
COPY clickhouse ./clickhouse
COPY scenarios ./scenarios
COPY alerting ./alerting
COPY grafana ./grafana
# Editable, so the package finds clickhouse/ and scenarios/ beside it as in a checkout.
# /provisioning/alerting: `shoppulse alerts render` writes Grafana's alerting files there (a volume).
RUN pip install -e . \
    && useradd --system --uid 10001 --home-dir /var/lib/shoppulse --create-home shoppulse \
    && mkdir -p /provisioning/alerting && chown shoppulse /provisioning/alerting

USER shoppulse
EXPOSE 9464 9465 9466 9467
ENTRYPOINT ["shoppulse"]
CMD ["up", "--no-live", "--no-prometheus"]
