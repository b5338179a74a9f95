# The shoppulse image: one image, one process per container (`shoppulse ingest`, `aggregate`, `sidecar`,
# `db migrate`…, as docker-compose.yml runs them). A regular (non-editable) install of the wheel: the
# migrations, dashboards, alerting files, action policies, detection sensitivity and scenarios travel
# inside the package.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY processors ./processors
COPY clickhouse ./clickhouse
COPY scenarios ./scenarios
COPY alerting ./alerting
COPY actions ./actions
COPY detection ./detection
COPY grafana ./grafana
COPY docs/events.md ./docs/events.md
COPY docs/schemas ./docs/schemas
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
# EXTRAS: the optional parts to install (llm: insights through an OpenAI model; local: the embedded
# ClickHouse, for `shoppulse up` inside a container). The processors need none of them.
ARG EXTRAS=llm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SHOPPULSE_DATA_DIR=/var/lib/shoppulse
COPY --from=build /wheels /wheels
# /provisioning/alerting: `shoppulse alerts render` writes Grafana's alerting files there (a volume).
RUN wheel="$(ls /wheels/shoppulse-*.whl)" \
    && pip install "${wheel}${EXTRAS:+[$EXTRAS]}" && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /var/lib/shoppulse --create-home shoppulse \
    && mkdir -p /provisioning/alerting && chown shoppulse /provisioning/alerting

USER shoppulse
WORKDIR /var/lib/shoppulse
EXPOSE 9464 9465 9466 9467
ENTRYPOINT ["shoppulse"]
CMD ["--help"]
