# The shoppulse image: processors, anomaly sidecar, load generator and the `shoppulse` CLI.
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
# Editable, so the package finds clickhouse/ and scenarios/ beside it as in a checkout.
RUN pip install -e . \
    && useradd --system --uid 10001 --home-dir /var/lib/shoppulse --create-home shoppulse

USER shoppulse
EXPOSE 9464 9465 9466
ENTRYPOINT ["shoppulse"]
CMD ["up", "--no-live", "--no-prometheus"]
