# The shoppulse image: processors, anomaly sidecar, load generator and the `shoppulse` CLI.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SHOPPULSE_MIGRATIONS_DIR=/app/clickhouse \
    SHOPPULSE_DATA_DIR=/var/lib/shoppulse

WORKDIR /app
COPY pyproject.toml README.md ./
COPY processors ./processors
COPY clickhouse ./clickhouse
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /var/lib/shoppulse --create-home shoppulse

USER shoppulse
EXPOSE 9464
ENTRYPOINT ["shoppulse"]
CMD ["up", "--no-live", "--no-prometheus"]
